//! What the watch loop tells the people on call: [`Event`], and the [`EventKind`]s an operator
//! selects with `notify_on`.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::diagnosis::Diagnosis;
use crate::unit::UnitName;

/// One thing worth telling the people on call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// `None` for events about unitwarden itself (started, stopping, config_reload_failed).
    pub unit: Option<UnitName>,
    pub at: Timestamp,
    /// Attempt k of N, when the event is about a restart attempt or a give-up.
    pub attempt: Option<(u32, u32)>,
    /// systemd's `Result=` of the unit (`exit-code`, `signal`, `watchdog`, ...).
    pub result: Option<String>,
    /// The main process's end, e.g. `code=killed, status=9/KILL`.
    pub exec_status: Option<String>,
    /// What the `Result=` and the exit mean and what to check, for events about a failure.
    /// Defaults so that events persisted before it existed still load.
    #[serde(default)]
    pub diagnosis: Option<Diagnosis>,
    pub n_restarts: Option<u32>,
    /// Names of the critical windows active at the time.
    pub window: Option<String>,
    /// What happened, one sentence.
    pub detail: String,
    /// What unitwarden will do next, one sentence.
    pub next: String,
    /// The active window's `min_interval`, when it overrides `[email] min_interval`.
    #[serde(default)]
    pub min_interval: Option<Duration>,
}

impl Event {
    pub fn new(
        kind: EventKind,
        unit: Option<UnitName>,
        at: Timestamp,
        detail: impl Into<String>,
    ) -> Event {
        Event {
            kind,
            unit,
            at,
            attempt: None,
            result: None,
            exec_status: None,
            diagnosis: None,
            n_restarts: None,
            window: None,
            detail: detail.into(),
            next: String::new(),
            min_interval: None,
        }
    }
}

/// Alert events an operator can select with `notify_on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Down,
    Restarted,
    RestartFailed,
    GaveUp,
    Recovered,
    NotFound,
    ProbeFailed,
    Flapping,
    /// The main process died and systemd's `Restart=` brought it back.
    Crashed,
    /// Stopped by a stop job unitwarden did not issue: left stopped.
    OperatorStop,
    /// An operator paused, resumed or retried a unit (or a pause ran out).
    Operator,
    /// The unit's `recovery_unit` ran (the site's repair script), and how it ended.
    Recovery,
    /// The check before a critical window opens: all healthy, or what is wrong.
    Preflight,
    ConfigReloadFailed,
    /// A host resource (disk, memory, load) crossed its threshold.
    Resource,
    Started,
    Stopping,
}

impl EventKind {
    /// The name used in `notify_on` and in the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Down => "down",
            EventKind::Restarted => "restarted",
            EventKind::RestartFailed => "restart_failed",
            EventKind::GaveUp => "gave_up",
            EventKind::Recovered => "recovered",
            EventKind::NotFound => "not_found",
            EventKind::ProbeFailed => "probe_failed",
            EventKind::Flapping => "flapping",
            EventKind::Crashed => "crashed",
            EventKind::OperatorStop => "operator_stop",
            EventKind::Operator => "operator",
            EventKind::Recovery => "recovery",
            EventKind::Preflight => "preflight",
            EventKind::ConfigReloadFailed => "config_reload_failed",
            EventKind::Resource => "resource",
            EventKind::Started => "started",
            EventKind::Stopping => "stopping",
        }
    }
}

pub const ALL_EVENTS: [EventKind; 17] = [
    EventKind::Down,
    EventKind::Restarted,
    EventKind::RestartFailed,
    EventKind::GaveUp,
    EventKind::Recovered,
    EventKind::NotFound,
    EventKind::ProbeFailed,
    EventKind::Flapping,
    EventKind::Crashed,
    EventKind::OperatorStop,
    EventKind::Operator,
    EventKind::Recovery,
    EventKind::Preflight,
    EventKind::ConfigReloadFailed,
    EventKind::Resource,
    EventKind::Started,
    EventKind::Stopping,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_persisted_before_the_diagnosis_existed_still_load() {
        let ev = Event::new(
            EventKind::Down,
            Some(UnitName::parse("web").unwrap()),
            Timestamp::from_second(1_800_000_000).unwrap(),
            "web.service is down",
        );
        let mut json = serde_json::to_value(&ev).unwrap();
        json.as_object_mut().unwrap().remove("diagnosis").unwrap();
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
    }
}
