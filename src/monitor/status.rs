//! What the daemon tells about itself: the `STATUS=` line for `systemctl status`, and the
//! report `once` prints. Pure: the registry and the schedule in, text out.

use std::time::Duration;

use super::registry::Registry;
use crate::logging::format_duration;
use crate::policy::Health;

/// The schedule part of the status line.
pub struct Schedule<'a> {
    /// The active critical window, if any.
    pub window: Option<&'a str>,
    pub interval: Duration,
    pub next_check: Duration,
    /// E.g. "config reload failed", until the next good reload.
    pub note: Option<&'a str>,
}

/// The one-line story for `systemctl status`, e.g.
/// `5 units: 4 active, 1 restarting (gunicorn 2/3) · window monday-morning · interval 10s · next check 4s`.
pub fn status_line(units: &Registry, schedule: &Schedule<'_>) -> String {
    let mut active = 0;
    let mut restarting = Vec::new();
    let mut gave_up = Vec::new();
    let mut down = Vec::new();
    let mut systemd = 0;
    let mut missing = Vec::new();
    let mut paused = Vec::new();
    let mut stopped = Vec::new();
    for (name, w) in units.iter() {
        let short = name
            .as_str()
            .strip_suffix(".service")
            .unwrap_or(name.as_str());
        match w.hold.as_deref() {
            Some(crate::policy::Hold::Paused { .. }) => {
                paused.push(short.to_string());
                continue;
            }
            Some(crate::policy::Hold::OperatorStop { .. }) => {
                stopped.push(short.to_string());
                continue;
            }
            None => {}
        }
        if let Some(k) = w.machine.current_attempt() {
            restarting.push(format!("{short} {k}/{}", w.settings.policy.max_attempts));
            continue;
        }
        match w.machine.health() {
            Some(Health::Healthy) | Some(Health::Stopped) => active += 1,
            Some(Health::Down) if w.machine.gave_up() => gave_up.push(short.to_string()),
            Some(Health::Down) => down.push(short.to_string()),
            Some(Health::Systemd) => systemd += 1,
            Some(Health::Unloadable(_)) => missing.push(short.to_string()),
            None => {}
        }
    }
    let mut parts = vec![format!("{active} active")];
    let mut listed = |label: &str, names: &[String]| {
        if !names.is_empty() {
            parts.push(format!("{} {label} ({})", names.len(), names.join(", ")));
        }
    };
    listed("restarting", &restarting);
    listed("down", &down);
    listed("gave up", &gave_up);
    listed("paused", &paused);
    listed("stopped by operator", &stopped);
    if systemd > 0 {
        parts.push(format!("{systemd} left to systemd"));
    }
    if !missing.is_empty() {
        parts.push(format!(
            "{} not found ({})",
            missing.len(),
            missing.join(", ")
        ));
    }
    let n = units.len();
    let mut line = format!(
        "{n} unit{}: {}",
        if n == 1 { "" } else { "s" },
        parts.join(", ")
    );
    match schedule.window {
        Some(w) => line.push_str(&format!(" · window {w}")),
        None => line.push_str(" · normal"),
    }
    let next = Duration::from_secs(schedule.next_check.as_secs_f64().round() as u64);
    line.push_str(&format!(
        " · interval {} · next check {}",
        format_duration(schedule.interval),
        format_duration(next)
    ));
    if let Some(note) = schedule.note {
        line.push_str(&format!(" · {note}"));
    }
    line
}

/// The outcome of `once`: one line per unit, and whether every one ended healthy.
#[derive(Debug, PartialEq, Eq)]
pub struct OnceReport {
    pub lines: Vec<String>,
    pub all_ok: bool,
}

pub fn once_report(units: &Registry) -> OnceReport {
    let mut lines = Vec::new();
    let mut all_ok = true;
    for (name, w) in units.iter() {
        let ok = w.machine.health().is_some_and(Health::is_ok);
        all_ok &= ok;
        let state = w
            .obs
            .as_ref()
            .map_or("unknown".to_string(), |o| format!("{}/{}", o.active, o.sub));
        let down = if ok { "" } else { " DOWN" };
        let note = if w.machine.gave_up() {
            " (gave up)"
        } else {
            ""
        };
        lines.push(format!("{name} {state}{down}{note}"));
    }
    OnceReport { lines, all_ok }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Now;
    use crate::config::UnitSettings;
    use crate::policy::{Episode, RestartPolicy};
    use crate::unit::{ActiveState, LoadState, Observation, SubState, UnitName, UnitPattern};
    use std::sync::Arc;

    fn settings(name: &UnitName) -> Arc<UnitSettings> {
        Arc::new(UnitSettings {
            pattern: UnitPattern::Exact(name.clone()),
            depends_on: Vec::new(),
            policy: Arc::new(RestartPolicy::default()),
            probe: None,
            recovery: None,
        })
    }

    /// A registry with one unit per state the line distinguishes.
    fn registry() -> Registry {
        let now = Now::read();
        let mut r = Registry::new(1);
        let mut add =
            |name: &str, active: ActiveState, sub: &str, load: LoadState, ep: Option<Episode>| {
                let n = UnitName::parse(name).unwrap();
                r.watch(n.clone(), settings(&n), ep, &now);
                let w = r.get_mut(&n).unwrap();
                let o = Observation::new(load, active, SubState::new(sub));
                let h = crate::policy::Health::of(&o, true);
                w.obs = Some(o);
                let p = w.settings.policy.clone();
                w.machine.observe(&p, h, &now);
            };
        add(
            "nginx",
            ActiveState::Active,
            "running",
            LoadState::Loaded,
            None,
        );
        add(
            "gunicorn",
            ActiveState::Failed,
            "failed",
            LoadState::Loaded,
            None,
        );
        let gave_up = Episode {
            started: now.wall,
            attempts: 3,
            gave_up: Some(now.wall),
            healthy_since: None,
            recovery_ran: false,
        };
        add(
            "celery",
            ActiveState::Failed,
            "failed",
            LoadState::Loaded,
            Some(gave_up),
        );
        add(
            "beat",
            ActiveState::Activating,
            "auto-restart",
            LoadState::Loaded,
            None,
        );
        add(
            "ghost",
            ActiveState::Inactive,
            "dead",
            LoadState::NotFound,
            None,
        );
        r
    }

    #[test]
    fn the_status_line_tells_the_story_in_one_line() {
        let r = registry();
        let line = status_line(
            &r,
            &Schedule {
                window: Some("monday-morning"),
                interval: Duration::from_secs(10),
                next_check: Duration::from_millis(3600),
                note: Some("config reload failed"),
            },
        );
        assert_eq!(
            line,
            "5 units: 1 active, 1 restarting (gunicorn 1/3), 1 gave up (celery), 1 left to systemd, \
             1 not found (ghost) · window monday-morning · interval 10s · next check 4s · config reload failed"
        );
        let quiet = status_line(
            &Registry::new(1),
            &Schedule {
                window: None,
                interval: Duration::from_secs(60),
                next_check: Duration::ZERO,
                note: None,
            },
        );
        assert_eq!(
            quiet,
            "0 units: 0 active · normal · interval 1m · next check 0s"
        );
    }

    #[test]
    fn once_reports_each_unit_and_fails_if_any_is_down() {
        let r = registry();
        let report = once_report(&r);
        assert!(!report.all_ok);
        assert_eq!(
            report.lines,
            [
                "beat.service activating/auto-restart DOWN",
                "celery.service failed/failed DOWN (gave up)",
                "ghost.service inactive/dead DOWN",
                "gunicorn.service failed/failed DOWN",
                "nginx.service active/running",
            ]
        );
    }
}
