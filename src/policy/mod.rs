//! Restart policy: what to do about one unit, decided from what was observed and the time.
//!
//! This module does no I/O and reads no clock: every input carries
//! [`Now`](crate::clock::Now), and the caller turns the returned [`Effect`]s into D-Bus calls,
//! log lines and state writes.

mod machine;
#[cfg(test)]
mod props;

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::unit::{ActiveState, LoadState, Observation};
pub use machine::{Effect, JobOutcome, UnitMachine};

/// Restart settings of one unit, after `[restart]` defaults and per-unit overrides are merged.
#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_multiplier: f64,
    pub backoff_max: Duration,
    pub verify_after: Duration,
    pub reset_after: Duration,
    /// `None` = "never": a given-up unit stays given up until an operator intervenes.
    pub give_up_cooldown: Option<Duration>,
    pub restart_inactive: bool,
    pub flap_restarts: u32,
    pub flap_window: Duration,
    /// Failed attempts of an episode after which the unit's `recovery_unit` runs, once.
    pub recovery_after: Option<u32>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_attempts: 3,
            backoff_initial: Duration::from_secs(5),
            backoff_multiplier: 2.0,
            backoff_max: Duration::from_secs(300),
            verify_after: Duration::from_secs(10),
            reset_after: Duration::from_secs(600),
            give_up_cooldown: Some(Duration::from_secs(3600)),
            restart_inactive: true,
            flap_restarts: 5,
            flap_window: Duration::from_secs(600),
            recovery_after: None,
        }
    }
}

/// Delay before attempt `attempt` (1-based): `min(max, initial × multiplier^(attempt−1))`,
/// then spread by `jitter` ∈ [−1, 1] times 10%.
pub fn backoff(p: &RestartPolicy, attempt: u32, jitter: f64) -> Duration {
    let max = p.backoff_max.as_secs_f64();
    let exp = attempt.saturating_sub(1).min(1024) as i32;
    let raw = p.backoff_initial.as_secs_f64() * p.backoff_multiplier.powi(exp);
    let capped = if raw.is_finite() { raw.min(max) } else { max };
    let spread = capped * (1.0 + 0.1 * jitter.clamp(-1.0, 1.0));
    Duration::try_from_secs_f64(spread.max(0.0)).unwrap_or(p.backoff_max)
}

/// How the policy sees a unit at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Active: nothing to do.
    Healthy,
    /// Failed, or inactive with `restart_inactive`: ours to restart.
    Down,
    /// Inactive while `restart_inactive = false`: deliberately left alone.
    Stopped,
    /// systemd is moving it (activating, deactivating, reloading, auto-restart): never fight it.
    Systemd,
    /// Not loadable (not-found, masked, bad-setting): reported, never restarted.
    Unloadable(LoadState),
}

impl Health {
    pub fn of(obs: &Observation, restart_inactive: bool) -> Health {
        if obs.load != LoadState::Loaded {
            // An unloaded-but-existing unit is reported as loaded by ListUnitsByNames, so any
            // other load state means systemd cannot start it.
            return Health::Unloadable(obs.load);
        }
        if obs.sub.is_auto_restart() {
            return Health::Systemd;
        }
        // A queued job means systemd is about to move the unit (an operator's start, a
        // dependency pulling it in): it is not ours to touch until the job is done.
        if obs.job_pending && obs.active != ActiveState::Active {
            return Health::Systemd;
        }
        match obs.active {
            ActiveState::Active => Health::Healthy,
            ActiveState::Failed => Health::Down,
            ActiveState::Inactive if restart_inactive => Health::Down,
            ActiveState::Inactive => Health::Stopped,
            ActiveState::Activating
            | ActiveState::Deactivating
            | ActiveState::Reloading
            | ActiveState::Refreshing
            | ActiveState::Maintenance
            | ActiveState::Unknown => Health::Systemd,
        }
    }

    /// Whether `once` and the status line count this unit as fine.
    pub fn is_ok(self) -> bool {
        matches!(self, Health::Healthy | Health::Stopped)
    }
}

/// Whether news that a unit is `now` deserves a fresh read before acting: it went down just
/// now. systemd 252 passes through `failed` on its way to `auto-restart` and may signal both;
/// a read made after the transition tells a real failure from one systemd restarts itself.
pub fn newly_down(before: Option<Health>, now: Health) -> bool {
    now == Health::Down && before != Some(Health::Down)
}

/// The persisted part: one run of trouble, from first seen down until healthy for `reset_after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    pub started: Timestamp,
    /// Attempts made so far, successful or not; written before each attempt is made, so a
    /// killed watchdog never repeats one.
    pub attempts: u32,
    pub gave_up: Option<Timestamp>,
    /// Since when the unit has been healthy without interruption, while the episode lasts.
    pub healthy_since: Option<Timestamp>,
    /// The unit's `recovery_unit` was started in this episode (at most once per episode).
    /// Defaults so that state written before it existed still loads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovery_ran: bool,
}

/// An operator's hand on a unit: while it lasts the unit is watched and reported, never
/// restarted. Persisted with the episodes, so a restarted watchdog keeps its hands off too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hold {
    /// `unitwarden pause`; `until: None` lasts until `resume`.
    Paused {
        since: Timestamp,
        until: Option<Timestamp>,
    },
    /// Stopped by a stop job unitwarden did not issue (`systemctl stop`); lasts while it stays
    /// stopped.
    OperatorStop { since: Timestamp },
}

impl Hold {
    /// When the hold ends by itself.
    pub fn until(&self) -> Option<Timestamp> {
        match self {
            Hold::Paused { until, .. } => *until,
            Hold::OperatorStop { .. } => None,
        }
    }
}

/// Whether a unit's dependencies allow an attempt now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deps {
    Ready,
    /// The named dependency is still on its way back.
    Waiting(crate::unit::UnitName),
}

/// The dependency rule: a dependent's attempt waits while a dependency is on its way back —
/// down and still being restarted, moved by systemd, or restarted but not yet verified (a
/// database that crashes at start must not have the app restarted against it). One that gave
/// up, cannot be loaded or is deliberately stopped no longer blocks: it would block forever.
pub fn holds_dependents(dep: &UnitMachine) -> bool {
    if dep.is_suspended() {
        // Paused or stopped by an operator: nobody is bringing it back.
        return false;
    }
    match dep.health() {
        Some(Health::Healthy) => dep.is_busy(),
        Some(Health::Down) => !dep.gave_up(),
        Some(Health::Systemd) | None => true,
        Some(Health::Stopped) | Some(Health::Unloadable(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::SubState;

    pub(super) fn policy() -> RestartPolicy {
        RestartPolicy {
            max_attempts: 3,
            backoff_initial: Duration::from_secs(5),
            backoff_multiplier: 2.0,
            backoff_max: Duration::from_secs(15),
            verify_after: Duration::from_secs(10),
            reset_after: Duration::from_secs(600),
            give_up_cooldown: Some(Duration::from_secs(3600)),
            restart_inactive: true,
            flap_restarts: 3,
            flap_window: Duration::from_secs(60),
            recovery_after: None,
        }
    }

    fn obs(active: &str, sub: &str) -> Observation {
        Observation::new(
            LoadState::Loaded,
            ActiveState::parse(active),
            SubState::new(sub),
        )
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_ten_percent() {
        let p = policy();
        let table = [(1, 5.0), (2, 10.0), (3, 15.0), (4, 15.0), (1000, 15.0)];
        for (k, secs) in table {
            assert_eq!(
                backoff(&p, k, 0.0),
                Duration::from_secs_f64(secs),
                "attempt {k}"
            );
            let lo = backoff(&p, k, -1.0).as_secs_f64();
            let hi = backoff(&p, k, 1.0).as_secs_f64();
            assert!((lo - secs * 0.9).abs() < 1e-9 && (hi - secs * 1.1).abs() < 1e-9);
        }
        let huge = RestartPolicy {
            backoff_multiplier: 1e300,
            ..policy()
        };
        assert_eq!(backoff(&huge, 500, 0.0), Duration::from_secs(15));
    }

    #[test]
    fn classification_table() {
        let table = [
            (obs("active", "running"), true, Health::Healthy),
            (obs("failed", "failed"), true, Health::Down),
            (obs("inactive", "dead"), true, Health::Down),
            (obs("inactive", "dead"), false, Health::Stopped),
            (obs("activating", "auto-restart"), true, Health::Systemd),
            (obs("activating", "start"), true, Health::Systemd),
            (obs("deactivating", "stop-sigterm"), true, Health::Systemd),
            (obs("reloading", "reload"), true, Health::Systemd),
        ];
        for (o, ri, want) in table {
            assert_eq!(Health::of(&o, ri), want, "{o:?}");
        }
        let mut queued = obs("inactive", "dead");
        queued.job_pending = true;
        assert_eq!(Health::of(&queued, true), Health::Systemd);
        let nf = Observation::new(
            LoadState::NotFound,
            ActiveState::Inactive,
            SubState::new("dead"),
        );
        assert_eq!(
            Health::of(&nf, true),
            Health::Unloadable(LoadState::NotFound)
        );
    }

    #[test]
    fn only_the_step_into_down_is_newly_down() {
        let table = [
            (None, Health::Down, true),
            (Some(Health::Healthy), Health::Down, true),
            (Some(Health::Systemd), Health::Down, true),
            (Some(Health::Down), Health::Down, false),
            (Some(Health::Down), Health::Healthy, false),
            (None, Health::Systemd, false),
        ];
        for (before, now, want) in table {
            assert_eq!(newly_down(before, now), want, "{before:?} → {now:?}");
        }
    }
}
