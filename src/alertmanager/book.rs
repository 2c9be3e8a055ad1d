//! The sink's record of alerts, pure: events in, the alerts Alertmanager must hear about out.
//! Persisted whole as `state_dir/alertmanager.json`, so an alert not yet delivered survives a
//! kill of the daemon, and an active one is posted again after a restart.
//!
//! Two kinds of alert:
//! - **conditions** (`down`, `restart_failed`, `gave_up`, `not_found`, `probe_failed`,
//!   `operator_stop`) stay active, posted again every [`REFRESH`] with `endsAt` [`HOLD`] ahead,
//!   until the unit is `restarted` or `recovered` (and, for `gave_up` and `operator_stop`, an
//!   operator's `retry`, `resume` or `pause`): then they are posted once more, ending now;
//! - **happenings** (`crashed`, `flapping`, `recovery`, `preflight`, `operator`, `resource`,
//!   `config_reload_failed`, `started`, `stopping`) are posted once, ending [`HAPPENING_TTL`]
//!   after they happened, long enough for Alertmanager to notify.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::alert::{Event, EventKind};
use crate::clock::add;

/// How often active alerts are posted again.
pub const REFRESH: Duration = Duration::from_secs(60);
/// How far ahead an active alert's `endsAt` is set: if unitwarden stops posting (it is down,
/// or cannot reach Alertmanager), the alert resolves by itself this long after the last post.
pub const HOLD: Duration = Duration::from_secs(300);
/// How long a happening stays active in Alertmanager.
pub const HAPPENING_TTL: Duration = Duration::from_secs(900);
/// Alerts kept at most; beyond that the oldest delivered-or-ended ones go first.
pub const MAX_ALERTS: usize = 5000;

/// One alert as unitwarden keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tracked {
    pub unit: Option<String>,
    pub event: EventKind,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: Timestamp,
    /// `None` while a condition lasts; when it ended, or when a happening expires.
    pub ends_at: Option<Timestamp>,
    /// Alertmanager has this version of it.
    pub posted: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Book {
    pub alerts: Vec<Tracked>,
}

/// Whether `kind` is a condition that lasts until something resolves it.
fn lasting(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Down
            | EventKind::RestartFailed
            | EventKind::GaveUp
            | EventKind::NotFound
            | EventKind::ProbeFailed
            | EventKind::OperatorStop
    )
}

/// Whether an event `by` ends a unit's condition `cond`: the unit is back, or an operator has
/// taken it in hand (retry, resume, pause).
fn ends(by: EventKind, cond: EventKind) -> bool {
    match by {
        EventKind::Restarted | EventKind::Recovered => lasting(cond),
        EventKind::Operator => matches!(cond, EventKind::GaveUp | EventKind::OperatorStop),
        _ => false,
    }
}

/// `severity`: what the people on call should do about it.
pub fn severity(kind: EventKind) -> &'static str {
    match kind {
        EventKind::GaveUp | EventKind::NotFound => "critical",
        EventKind::Down
        | EventKind::RestartFailed
        | EventKind::ProbeFailed
        | EventKind::Flapping
        | EventKind::Crashed
        | EventKind::Resource
        | EventKind::ConfigReloadFailed => "warning",
        _ => "info",
    }
}

/// `alertname`: `Unitwarden` and the event in CamelCase (`UnitwardenGaveUp`).
pub fn alertname(kind: EventKind) -> String {
    let mut name = String::from("Unitwarden");
    for word in kind.as_str().split('_') {
        let mut c = word.chars();
        if let Some(first) = c.next() {
            name.push(first.to_ascii_uppercase());
            name.push_str(c.as_str());
        }
    }
    name
}

impl Book {
    /// Takes one event: opens, updates or ends alerts. `host` is the `host` label;
    /// `annotations` what the alert says. Returns how many alerts had to be dropped to stay
    /// within [`MAX_ALERTS`].
    pub fn take(&mut self, ev: &Event, host: &str, annotations: BTreeMap<String, String>) -> usize {
        let unit = ev.unit.as_ref().map(|u| u.as_str().to_string());
        for a in &mut self.alerts {
            if a.unit == unit && a.ends_at.is_none() && ends(ev.kind, a.event) {
                a.ends_at = Some(ev.at);
                a.posted = false;
            }
        }
        // The unit is back: that ends alerts and is none of its own.
        if matches!(ev.kind, EventKind::Restarted | EventKind::Recovered) {
            return 0;
        }
        let ends_at = (!lasting(ev.kind)).then(|| add(ev.at, HAPPENING_TTL));
        // A condition continues the active alert; a happening replaces one not yet delivered.
        // An ended condition still to be posted stays as it is: the new one is a new alert.
        let same = self.alerts.iter_mut().find(|a| {
            a.unit == unit
                && a.event == ev.kind
                && if lasting(ev.kind) {
                    a.ends_at.is_none()
                } else {
                    !a.posted
                }
        });
        match same {
            // The condition goes on (another failed attempt): same alert, what it says now.
            Some(a) if lasting(ev.kind) => {
                a.annotations = annotations;
                a.posted = false;
            }
            // A happening not yet delivered: the newer one replaces it.
            Some(a) => {
                a.annotations = annotations;
                a.starts_at = ev.at;
                a.ends_at = ends_at;
                a.posted = false;
            }
            None => {
                let mut labels = BTreeMap::new();
                labels.insert("alertname".into(), alertname(ev.kind));
                labels.insert("host".into(), host.to_string());
                labels.insert("event".into(), ev.kind.as_str().to_string());
                labels.insert("severity".into(), severity(ev.kind).to_string());
                if let Some(u) = &unit {
                    labels.insert("unit".into(), u.clone());
                }
                self.alerts.push(Tracked {
                    unit,
                    event: ev.kind,
                    labels,
                    annotations,
                    starts_at: ev.at,
                    ends_at,
                    posted: false,
                });
            }
        }
        self.bound()
    }

    /// Drops the oldest alerts beyond [`MAX_ALERTS`], ended ones first.
    fn bound(&mut self) -> usize {
        let mut dropped = 0;
        while self.alerts.len() > MAX_ALERTS {
            let victim = self
                .alerts
                .iter()
                .position(|a| a.ends_at.is_some())
                .unwrap_or(0);
            self.alerts.remove(victim);
            dropped += 1;
        }
        dropped
    }

    /// Whether a post is due now: something changed, or the active ones need refreshing.
    pub fn has_news(&self) -> bool {
        self.alerts.iter().any(|a| !a.posted)
    }

    /// Whether anything is active (to be refreshed every [`REFRESH`]).
    pub fn has_active(&self) -> bool {
        self.alerts.iter().any(|a| a.ends_at.is_none())
    }

    /// The v2 API's `postableAlerts`: every alert, active ones ending [`HOLD`] after `now`.
    pub fn postable(&self, now: Timestamp) -> Vec<serde_json::Value> {
        self.alerts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": a.starts_at,
                    "endsAt": a.ends_at.unwrap_or_else(|| add(now, HOLD)),
                })
            })
            .collect()
    }

    /// Alertmanager took everything: ended alerts are done with, active ones are posted.
    pub fn delivered(&mut self) {
        self.alerts.retain(|a| a.ends_at.is_none());
        for a in &mut self.alerts {
            a.posted = true;
        }
    }

    /// After a restart: everything is posted again.
    pub fn unposted(mut self) -> Book {
        for a in &mut self.alerts {
            a.posted = false;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::UnitName;

    fn ev(kind: EventKind, unit: &str, at: i64) -> Event {
        Event::new(
            kind,
            Some(UnitName::parse(unit).unwrap()),
            Timestamp::from_second(at).unwrap(),
            format!("{unit} {}", kind.as_str()),
        )
    }

    fn take(b: &mut Book, e: Event) {
        let mut ann = BTreeMap::new();
        ann.insert("summary".to_string(), e.detail.clone());
        b.take(&e, "h", ann);
    }

    fn active(b: &Book) -> Vec<(String, &str)> {
        b.alerts
            .iter()
            .filter(|a| a.ends_at.is_none())
            .map(|a| (a.labels["alertname"].clone(), a.labels["unit"].as_str()))
            .collect()
    }

    #[test]
    fn a_give_up_is_one_alert_with_its_labels_until_a_retry_or_a_recovery_ends_it() {
        let mut b = Book::default();
        take(&mut b, ev(EventKind::Down, "web", 100));
        take(&mut b, ev(EventKind::RestartFailed, "web", 101));
        take(&mut b, ev(EventKind::RestartFailed, "web", 102));
        take(&mut b, ev(EventKind::GaveUp, "web", 103));
        assert_eq!(
            active(&b),
            [
                ("UnitwardenDown".to_string(), "web.service"),
                ("UnitwardenRestartFailed".to_string(), "web.service"),
                ("UnitwardenGaveUp".to_string(), "web.service"),
            ]
        );
        let g = &b.alerts[2];
        assert_eq!(g.labels["severity"], "critical");
        assert_eq!(g.labels["event"], "gave_up");
        assert_eq!(g.labels["host"], "h");
        assert_eq!(
            b.alerts[1].starts_at.as_second(),
            101,
            "same alert, first start"
        );
        b.delivered();
        assert!(!b.has_news());

        // retry: the give-up ends, the unit is still down.
        take(&mut b, ev(EventKind::Operator, "web", 200));
        assert_eq!(active(&b).len(), 2);
        assert_eq!(b.alerts[2].ends_at.unwrap().as_second(), 200);
        assert!(b.has_news());
        // The operator event itself is a happening.
        assert!(b.alerts.iter().any(|a| a.event == EventKind::Operator));

        take(&mut b, ev(EventKind::Restarted, "web", 300));
        assert!(active(&b).is_empty());
        let posted = b.postable(Timestamp::from_second(301).unwrap());
        let ended = posted
            .iter()
            .filter(|p| p["endsAt"] == "1970-01-01T00:05:00Z")
            .count();
        assert_eq!(
            ended, 2,
            "down and restart_failed end at the restart: {posted:?}"
        );
        b.delivered();
        // Delivered, ended alerts are Alertmanager's to keep.
        assert!(!b.has_active());
        assert!(b.alerts.is_empty());
        // Down again: a new alert, though the last one's end is not posted yet.
        take(&mut b, ev(EventKind::Down, "web", 400));
        take(&mut b, ev(EventKind::Recovered, "web", 401));
        take(&mut b, ev(EventKind::Down, "web", 402));
        assert_eq!(b.alerts.len(), 2);
        assert_eq!(b.alerts[0].ends_at.unwrap().as_second(), 401);
        assert_eq!(b.alerts[1].ends_at, None);
    }

    #[test]
    fn happenings_end_by_themselves_and_other_units_are_left_alone() {
        let mut b = Book::default();
        take(&mut b, ev(EventKind::Down, "db", 10));
        take(&mut b, ev(EventKind::Crashed, "web", 20));
        take(&mut b, ev(EventKind::Crashed, "web", 30));
        assert_eq!(
            b.alerts.len(),
            2,
            "an undelivered repeat replaces the first"
        );
        let c = &b.alerts[1];
        assert_eq!(c.starts_at.as_second(), 30);
        assert_eq!(c.ends_at.unwrap().as_second(), 30 + 900);
        assert_eq!(c.labels["severity"], "warning");
        take(&mut b, ev(EventKind::Recovered, "web", 40));
        assert_eq!(active(&b), [("UnitwardenDown".to_string(), "db.service")]);
        let now = Timestamp::from_second(50).unwrap();
        let p = b.postable(now);
        assert_eq!(p[0]["endsAt"], serde_json::json!(add(now, HOLD)));
        assert_eq!(p[0]["labels"]["alertname"], "UnitwardenDown");
    }

    #[test]
    fn the_book_is_bounded_and_drops_ended_alerts_first() {
        let mut b = Book::default();
        take(&mut b, ev(EventKind::Crashed, "old", 1));
        for i in 0..MAX_ALERTS {
            take(&mut b, ev(EventKind::Down, &format!("u{i}"), 2));
        }
        assert_eq!(b.alerts.len(), MAX_ALERTS);
        assert!(b.alerts.iter().all(|a| a.event == EventKind::Down));
        let mut ann = BTreeMap::new();
        ann.insert("summary".into(), String::new());
        assert_eq!(b.take(&ev(EventKind::Down, "one-more", 3), "h", ann), 1);
    }

    #[test]
    fn names_are_camel_case_and_every_event_has_a_severity() {
        assert_eq!(alertname(EventKind::GaveUp), "UnitwardenGaveUp");
        assert_eq!(
            alertname(EventKind::ConfigReloadFailed),
            "UnitwardenConfigReloadFailed"
        );
        for k in crate::alert::ALL_EVENTS {
            assert!(["critical", "warning", "info"].contains(&severity(k)));
        }
    }
}
