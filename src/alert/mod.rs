//! Alerts: typed events from the watch loop, batched, deduplicated and delivered by email
//! through a durable outbox. Sending never blocks detection or restarts.

use jiff::Timestamp;
use tokio::sync::mpsc;

use crate::config::EventKind;
use crate::unit::UnitName;

/// How many events may wait for the alert task before the watch loop has to spill them.
pub const QUEUE: usize = 1024;

/// One thing worth telling the people on call.
#[derive(Clone, Debug, PartialEq)]
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
    pub n_restarts: Option<u32>,
    /// Names of the critical windows active at the time.
    pub window: Option<String>,
    /// What happened, one sentence.
    pub detail: String,
    /// What unitwarden will do next, one sentence.
    pub next: String,
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
            n_restarts: None,
            window: None,
            detail: detail.into(),
            next: String::new(),
        }
    }
}

/// The watch loop's end of the alert queue. Cheap to clone; `send` never waits.
#[derive(Clone)]
pub struct Alerts {
    tx: Option<mpsc::Sender<Event>>,
}

impl Alerts {
    /// No `[email]` section: events are only logged.
    pub fn disabled() -> Alerts {
        Alerts { tx: None }
    }

    pub fn new(tx: mpsc::Sender<Event>) -> Alerts {
        Alerts { tx: Some(tx) }
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `ev` without waiting. A full queue means the alert task is stuck far behind;
    /// the event is then logged as dropped (and counted) rather than stalling restarts.
    pub fn send(&self, ev: Event) {
        let Some(tx) = &self.tx else { return };
        if let Err(e) = tx.try_send(ev) {
            let ev = match e {
                mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => ev,
            };
            tracing::error!(
                event = ?ev.kind,
                unit = ev.unit.as_ref().map_or("-", |u| u.as_str()),
                "alert queue unavailable; alert dropped: {}",
                ev.detail
            );
        }
    }
}
