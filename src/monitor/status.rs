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
    for (name, w) in units.iter() {
        let short = name
            .as_str()
            .strip_suffix(".service")
            .unwrap_or(name.as_str());
        if let Some(k) = w.machine.current_attempt() {
            restarting.push(format!("{short} {k}/{}", w.rules.policy.max_attempts));
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
