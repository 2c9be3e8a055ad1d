//! The control socket's protocol, version 1: one JSON object per line in each direction, one
//! request per connection. Every request and reply carries `"v": 1`; a daemon answers a
//! version it does not speak with an error naming the one it does. The `status` document's
//! own layout is versioned separately (`"schema": 1`), so scripts that read `--json` can tell.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// The `status` document's schema version.
pub const SCHEMA: u32 = 1;
/// The longest request line a daemon reads; a longer one is refused unread.
pub const MAX_REQUEST: usize = 1 << 20;

/// A request line: `{"v":1,"cmd":"pause","units":["nginx"],"for_ms":1800000}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The daemon's view; with `unit`, that unit's recent history too.
    Status {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
    },
    /// Names or globs; `for_ms` absent = until `resume`.
    Pause {
        units: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        for_ms: Option<u64>,
    },
    Resume {
        units: Vec<String>,
    },
    /// Names only: a fresh episode for each given-up unit.
    Retry {
        units: Vec<String>,
    },
}

impl Request {
    /// Whether the request changes what the daemon does (and so needs more than read access).
    pub fn changes_anything(&self) -> bool {
        !matches!(self, Request::Status { .. })
    }
}

/// The answer line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub v: u32,
    /// The request was understood and every unit it named was acted on.
    pub ok: bool,
    /// Why nothing was done (a malformed request, no permission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One sentence per unit acted on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done: Vec<String>,
    /// One sentence per name that was not acted on, saying why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<StatusReport>>,
}

impl Reply {
    pub fn error(why: impl Into<String>) -> Reply {
        Reply {
            v: VERSION,
            ok: false,
            error: Some(why.into()),
            ..Reply::default()
        }
    }

    /// The outcome of an operator command: ok when nothing was refused.
    pub fn outcome(done: Vec<String>, refused: Vec<String>) -> Reply {
        Reply {
            v: VERSION,
            ok: refused.is_empty(),
            done,
            refused,
            ..Reply::default()
        }
    }

    pub fn status(report: StatusReport) -> Reply {
        Reply {
            v: VERSION,
            ok: true,
            status: Some(Box::new(report)),
            ..Reply::default()
        }
    }
}

/// `unitwarden status --json`, schema 1. Times are RFC 3339 in UTC; durations in
/// milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub schema: u32,
    /// unitwarden's version.
    pub version: String,
    pub host: String,
    pub pid: u32,
    pub config: String,
    pub started: Timestamp,
    /// When the daemon made this report.
    pub now: Timestamp,
    /// `normal` or `window`.
    pub mode: String,
    /// The active critical window(s).
    pub window: Option<String>,
    /// The effective poll interval.
    pub interval_ms: u64,
    pub next_poll: Timestamp,
    /// E.g. "config reload failed", until the next good reload.
    pub note: Option<String>,
    /// The manager is going down: nothing is restarted.
    pub shutting_down: bool,
    /// `None` when there is no `[email]`.
    pub outbox: Option<OutboxReport>,
    pub units: Vec<UnitReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxReport {
    /// Emails waiting for delivery.
    pub messages: usize,
    /// When the oldest of them was written.
    pub oldest: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitReport {
    pub unit: String,
    pub load: String,
    pub state: String,
    pub sub: String,
    /// When unitwarden saw it enter its current state (or started watching it).
    pub since: Option<Timestamp>,
    /// systemd's `Result=`, when known.
    pub result: Option<String>,
    /// How the main process last ended, e.g. `code=killed, status=9/KILL`.
    pub exec_status: Option<String>,
    /// systemd's own restart counter.
    pub n_restarts: Option<u32>,
    /// Attempts made in the current episode.
    pub attempts: u32,
    pub max_attempts: u32,
    pub episode: EpisodeState,
    /// Until when the episode state lasts: the next attempt, the end of a pause, the end of
    /// a give-up's cooldown.
    pub until: Option<Timestamp>,
    pub last_action: Option<RecentReport>,
    /// When unitwarden next looks at the unit (its next poll or deadline).
    pub next_check: Timestamp,
    /// The unit's last lines, oldest first; only in `status UNIT`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<RecentReport>,
    /// Its health probe, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeReport>,
}

/// Where a unit's health probe stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// `http GET URL`, `tcp HOST:PORT` or `exec PROGRAM ARGS`.
    pub check: String,
    /// The last answer; `None` before the first.
    pub last: Option<ProbeAnswer>,
    /// Failures in a row that count, and how many make the unit down (window-adjusted).
    pub failures: u32,
    pub of: u32,
    /// The count reached `of`: the unit is down by its probe.
    pub down: bool,
    /// Failures before then do not count: the unit (re)started recently.
    pub grace_until: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeAnswer {
    pub at: Timestamp,
    pub ok: bool,
    pub detail: String,
    pub took_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpisodeState {
    /// Active, nothing pending.
    Healthy,
    /// Down, nothing planned yet.
    Down,
    /// The next attempt waits for its backoff (`until`).
    BackingOff,
    /// The next attempt waits for a dependency to come back.
    WaitingForDependency,
    /// Our restart job is out.
    Restarting,
    /// The unit's `recovery_unit` runs; the next attempt waits for it.
    Recovering,
    /// Restarted; checking it stays up for `verify_after`.
    Verifying,
    /// No more attempts until the cooldown ends (`until`) or `retry`.
    GaveUp,
    /// `unitwarden pause`, until `until` (or `resume`).
    Paused,
    /// Stopped by a stop job unitwarden did not issue.
    StoppedByOperator,
    /// systemd is moving it (auto-restart, starting, stopping).
    LeftToSystemd,
    /// systemd cannot load it.
    NotLoaded,
    /// Inactive with `restart_inactive = false`.
    Stopped,
    /// Not seen yet.
    Unknown,
}

impl EpisodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            EpisodeState::Healthy => "healthy",
            EpisodeState::Down => "down",
            EpisodeState::BackingOff => "backing off",
            EpisodeState::WaitingForDependency => "waiting for dependency",
            EpisodeState::Restarting => "restarting",
            EpisodeState::Recovering => "recovering",
            EpisodeState::Verifying => "verifying",
            EpisodeState::GaveUp => "gave up",
            EpisodeState::Paused => "paused",
            EpisodeState::StoppedByOperator => "stopped by operator",
            EpisodeState::LeftToSystemd => "left to systemd",
            EpisodeState::NotLoaded => "not loaded",
            EpisodeState::Stopped => "stopped",
            EpisodeState::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecentReport {
    pub at: Timestamp,
    /// `restart`, `pause`, `resume`, `retry`, `give_up`, ... when the line was an action.
    pub action: Option<String>,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_documented() {
        let table = [
            (r#"{"v":1,"cmd":"status"}"#, Request::Status { unit: None }),
            (
                r#"{"v":1,"cmd":"pause","units":["nginx","celery@*"],"for_ms":1800000}"#,
                Request::Pause {
                    units: vec!["nginx".into(), "celery@*".into()],
                    for_ms: Some(1_800_000),
                },
            ),
            (
                r#"{"v":1,"cmd":"retry","units":["gunicorn"]}"#,
                Request::Retry {
                    units: vec!["gunicorn".into()],
                },
            ),
        ];
        for (text, want) in table {
            let env: Envelope = serde_json::from_str(text).unwrap();
            assert_eq!(env.v, 1);
            assert_eq!(env.request, want);
            let again = serde_json::to_string(&env).unwrap();
            assert_eq!(serde_json::from_str::<Envelope>(&again).unwrap(), env);
        }
        for bad in [
            r#"{"v":1,"cmd":"reboot"}"#,
            r#"{"v":1,"cmd":"pause"}"#,
            r#"{"cmd":"status"}"#,
            r#"[1,2]"#,
            "",
        ] {
            assert!(serde_json::from_str::<Envelope>(bad).is_err(), "{bad}");
        }
    }
}
