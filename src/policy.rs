//! Restart policy: what to do about one unit, decided from what was observed and the time.
//!
//! This module does no I/O and reads no clock: every input carries `now`, and the caller turns
//! the returned [`Effect`]s into D-Bus calls, log lines and state writes.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::unit::{ActiveState, LoadState, Observation};

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
    Duration::from_secs_f64(spread.max(0.0))
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
}

/// Whether a unit's dependencies allow an attempt now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deps {
    Ready,
    /// The named dependency is not healthy yet.
    Waiting(String),
}

/// How our restart job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// `JobRemoved` said `done`.
    Done,
    /// `JobRemoved` said something else (`failed`, `canceled`, `timeout`, `dependency`, ...), or
    /// the call itself was refused; the text says which.
    Failed(String),
    /// We lost sight of the job (bus dropped): the unit's state after `verify_after` decides.
    Unknown,
}

/// What the caller must do or report, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// First seen down in this stretch of trouble.
    Down,
    /// The next attempt is planned.
    Scheduled {
        attempt: u32,
        of: u32,
        delay: Duration,
    },
    /// Make the attempt now (the episode was already updated: persist before acting).
    Attempt {
        attempt: u32,
        of: u32,
    },
    /// Our job finished `done` and the unit was still active after `verify_after`.
    Restarted {
        attempt: u32,
        of: u32,
    },
    AttemptFailed {
        attempt: u32,
        of: u32,
        reason: String,
    },
    GaveUp {
        attempts: u32,
    },
    /// Healthy again without a successful attempt of ours (by itself, by systemd, by an operator).
    Recovered,
    /// Healthy for `reset_after`: the attempt counter is reset.
    EpisodeEnded,
    /// `give_up_cooldown` has passed while still down: a new episode starts.
    Rearmed,
    /// Left to systemd's own handling.
    WaitSystemd,
    /// An attempt waits for a dependency; it does not count while it waits.
    WaitDependency(String),
    Unloadable(LoadState),
    /// systemd restarted it `restarts` times within `flap_window` by itself.
    Flapping {
        restarts: u32,
    },
    /// The episode changed: write it to disk.
    Persist,
}

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Idle,
    Waiting {
        attempt: u32,
        at: Timestamp,
        blocked_on: Option<String>,
    },
    Running {
        attempt: u32,
    },
    Verifying {
        attempt: u32,
        until: Timestamp,
    },
}

/// One unit's restart state machine.
#[derive(Clone, Debug)]
pub struct UnitMachine {
    episode: Option<Episode>,
    phase: Phase,
    last: Option<Health>,
    rng: u64,
    restarts_seen: Option<u32>,
    restart_times: VecDeque<Timestamp>,
    flapping: bool,
    /// A `Down` was reported and no `Recovered`/`Restarted` yet: recovery is worth telling once,
    /// not after each of systemd's own restarts.
    reported_down: bool,
}

impl UnitMachine {
    /// `seed` drives the backoff jitter; `episode` is what was persisted, if anything.
    pub fn new(episode: Option<Episode>, seed: u64) -> UnitMachine {
        UnitMachine {
            episode,
            phase: Phase::Idle,
            last: None,
            rng: seed | 1,
            restarts_seen: None,
            restart_times: VecDeque::new(),
            flapping: false,
            reported_down: false,
        }
    }

    pub fn episode(&self) -> Option<&Episode> {
        self.episode.as_ref()
    }

    pub fn health(&self) -> Option<Health> {
        self.last
    }

    /// Whether an attempt is scheduled, running or being verified.
    pub fn is_busy(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }

    /// The attempt in progress or planned, for status lines.
    pub fn current_attempt(&self) -> Option<u32> {
        match self.phase {
            Phase::Idle => None,
            Phase::Waiting { attempt, .. }
            | Phase::Running { attempt }
            | Phase::Verifying { attempt, .. } => Some(attempt),
        }
    }

    pub fn gave_up(&self) -> bool {
        self.episode.as_ref().is_some_and(|e| e.gave_up.is_some())
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self, p: &RestartPolicy) -> Option<Timestamp> {
        match &self.phase {
            Phase::Waiting {
                at,
                blocked_on: None,
                ..
            } => Some(*at),
            Phase::Waiting { .. } | Phase::Running { .. } => None,
            Phase::Verifying { until, .. } => Some(*until),
            Phase::Idle => {
                let ep = self.episode.as_ref()?;
                match (self.last?, ep.gave_up, ep.healthy_since) {
                    (Health::Healthy, _, Some(since)) => Some(add(since, p.reset_after)),
                    (Health::Down, Some(at), _) => p.give_up_cooldown.map(|c| add(at, c)),
                    _ => None,
                }
            }
        }
    }

    /// A new view of the unit (signal or poll).
    pub fn observe(&mut self, p: &RestartPolicy, h: Health, now: Timestamp) -> Vec<Effect> {
        let prev = self.last.replace(h);
        let changed = prev != Some(h);
        let mut fx = Vec::new();
        if h != Health::Healthy
            && let Some(ep) = self.episode.as_mut()
            && ep.healthy_since.take().is_some()
        {
            fx.push(Effect::Persist);
        }
        match self.phase.clone() {
            // Our own job decides; observations meanwhile are only remembered.
            Phase::Running { .. } => {}
            Phase::Verifying { attempt, .. } => {
                if h == Health::Down {
                    self.attempt_failed(p, attempt, "unit failed again".into(), now, &mut fx);
                }
            }
            Phase::Waiting { .. } => match h {
                Health::Down => {}
                Health::Healthy => {
                    self.phase = Phase::Idle;
                    self.mark_healthy(now, &mut fx);
                    self.recovered(&mut fx);
                }
                Health::Systemd => {
                    self.phase = Phase::Idle;
                    fx.push(Effect::WaitSystemd);
                }
                Health::Stopped | Health::Unloadable(_) => {
                    self.phase = Phase::Idle;
                    if let Health::Unloadable(l) = h {
                        fx.push(Effect::Unloadable(l));
                    }
                }
            },
            Phase::Idle => match h {
                Health::Healthy => {
                    if self.episode.is_some() && changed {
                        self.mark_healthy(now, &mut fx);
                        self.recovered(&mut fx);
                    }
                }
                Health::Down => self.on_down(p, changed, now, &mut fx),
                Health::Systemd => {
                    if changed {
                        fx.push(Effect::WaitSystemd);
                    }
                }
                Health::Unloadable(l) => {
                    if changed {
                        fx.push(Effect::Unloadable(l));
                    }
                }
                Health::Stopped => {}
            },
        }
        fx
    }

    /// systemd's own restart counter, for flap detection.
    pub fn observe_restarts(&mut self, p: &RestartPolicy, n: u32, now: Timestamp) -> Vec<Effect> {
        let prev = self.restarts_seen.replace(n);
        if let Some(prev) = prev
            && n > prev
        {
            for _ in 0..(n - prev).min(p.flap_restarts.max(1)) {
                self.restart_times.push_back(now);
            }
        }
        let horizon = sub(now, p.flap_window);
        while self.restart_times.front().is_some_and(|t| *t < horizon) {
            self.restart_times.pop_front();
        }
        let count = self.restart_times.len() as u32;
        if p.flap_restarts > 0 && count >= p.flap_restarts {
            if !self.flapping {
                self.flapping = true;
                return vec![Effect::Flapping { restarts: count }];
            }
        } else {
            self.flapping = false;
        }
        Vec::new()
    }

    /// Time has passed: start a due attempt, conclude a verification, end or re-arm an episode.
    pub fn tick(&mut self, p: &RestartPolicy, deps: &Deps, now: Timestamp) -> Vec<Effect> {
        let mut fx = Vec::new();
        match self.phase.clone() {
            Phase::Waiting {
                attempt,
                at,
                blocked_on,
            } if at <= now => match deps {
                Deps::Waiting(dep) => {
                    if blocked_on.as_deref() != Some(dep.as_str()) {
                        fx.push(Effect::WaitDependency(dep.clone()));
                    }
                    self.phase = Phase::Waiting {
                        attempt,
                        at,
                        blocked_on: Some(dep.clone()),
                    };
                }
                Deps::Ready => {
                    let ep = self.episode.get_or_insert_with(|| new_episode(now));
                    ep.attempts = attempt;
                    self.phase = Phase::Running { attempt };
                    fx.push(Effect::Persist);
                    fx.push(Effect::Attempt {
                        attempt,
                        of: p.max_attempts,
                    });
                }
            },
            Phase::Verifying { attempt, until } if until <= now => {
                if self.last == Some(Health::Healthy) {
                    self.phase = Phase::Idle;
                    self.reported_down = false;
                    self.mark_healthy(now, &mut fx);
                    fx.push(Effect::Restarted {
                        attempt,
                        of: p.max_attempts,
                    });
                } else {
                    let state = match self.last {
                        Some(Health::Systemd) => "unit still changing state",
                        _ => "unit not active",
                    };
                    let reason = format!("{state} after verify_after");
                    self.attempt_failed(p, attempt, reason, now, &mut fx);
                }
            }
            Phase::Idle => {
                if let Some(deadline) = self.next_deadline(p)
                    && deadline <= now
                {
                    match self.last {
                        Some(Health::Healthy) => {
                            self.episode = None;
                            fx.push(Effect::EpisodeEnded);
                            fx.push(Effect::Persist);
                        }
                        Some(Health::Down) => {
                            self.episode = Some(new_episode(now));
                            fx.push(Effect::Rearmed);
                            fx.push(Effect::Persist);
                            self.schedule(p, 1, now, &mut fx);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        fx
    }

    /// Our restart job has ended.
    pub fn job_finished(
        &mut self,
        p: &RestartPolicy,
        outcome: JobOutcome,
        now: Timestamp,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        if let Phase::Running { attempt } = self.phase {
            match outcome {
                JobOutcome::Done | JobOutcome::Unknown => {
                    self.phase = Phase::Verifying {
                        attempt,
                        until: add(now, p.verify_after),
                    };
                }
                JobOutcome::Failed(reason) => {
                    self.attempt_failed(p, attempt, format!("job {reason}"), now, &mut fx)
                }
            }
        }
        fx
    }

    /// Operator override: forget the give-up and start a fresh episode now.
    pub fn retry(&mut self, p: &RestartPolicy, now: Timestamp) -> Vec<Effect> {
        let mut fx = vec![Effect::Persist];
        self.episode = Some(new_episode(now));
        if self.last == Some(Health::Down) && !matches!(self.phase, Phase::Running { .. }) {
            self.phase = Phase::Waiting {
                attempt: 1,
                at: now,
                blocked_on: None,
            };
            fx.push(Effect::Scheduled {
                attempt: 1,
                of: p.max_attempts,
                delay: Duration::ZERO,
            });
        }
        fx
    }

    fn on_down(&mut self, p: &RestartPolicy, changed: bool, now: Timestamp, fx: &mut Vec<Effect>) {
        let ep = match self.episode.as_mut() {
            Some(ep) => ep,
            None => {
                fx.push(Effect::Persist);
                self.episode.insert(new_episode(now))
            }
        };
        let gave_up = ep.gave_up.is_some();
        let done = ep.attempts;
        if changed && !self.reported_down {
            self.reported_down = true;
            fx.push(Effect::Down);
        }
        if gave_up {
            return;
        }
        if done >= p.max_attempts {
            self.give_up(done, now, fx);
        } else {
            self.schedule(p, done + 1, now, fx);
        }
    }

    fn attempt_failed(
        &mut self,
        p: &RestartPolicy,
        attempt: u32,
        reason: String,
        now: Timestamp,
        fx: &mut Vec<Effect>,
    ) {
        fx.push(Effect::AttemptFailed {
            attempt,
            of: p.max_attempts,
            reason,
        });
        self.phase = Phase::Idle;
        if attempt >= p.max_attempts {
            self.give_up(attempt, now, fx);
        } else if self.last == Some(Health::Down) {
            self.schedule(p, attempt + 1, now, fx);
        }
        // Otherwise (systemd is moving it, or it came back) the next observation decides.
    }

    fn give_up(&mut self, attempts: u32, now: Timestamp, fx: &mut Vec<Effect>) {
        let ep = self.episode.get_or_insert_with(|| new_episode(now));
        ep.gave_up = Some(now);
        self.phase = Phase::Idle;
        fx.push(Effect::GaveUp { attempts });
        fx.push(Effect::Persist);
    }

    fn schedule(&mut self, p: &RestartPolicy, attempt: u32, now: Timestamp, fx: &mut Vec<Effect>) {
        let delay = backoff(p, attempt, self.jitter());
        self.phase = Phase::Waiting {
            attempt,
            at: add(now, delay),
            blocked_on: None,
        };
        fx.push(Effect::Scheduled {
            attempt,
            of: p.max_attempts,
            delay,
        });
    }

    fn recovered(&mut self, fx: &mut Vec<Effect>) {
        if std::mem::take(&mut self.reported_down) {
            fx.push(Effect::Recovered);
        }
    }

    fn mark_healthy(&mut self, now: Timestamp, fx: &mut Vec<Effect>) {
        if let Some(ep) = self.episode.as_mut()
            && ep.healthy_since.is_none()
        {
            ep.healthy_since = Some(now);
            fx.push(Effect::Persist);
        }
    }

    /// xorshift64: jitter needs spread, not cryptographic quality.
    fn jitter(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

fn new_episode(now: Timestamp) -> Episode {
    Episode {
        started: now,
        attempts: 0,
        gave_up: None,
        healthy_since: None,
    }
}

/// Saturating: a duration too large for the calendar means "never" in practice.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    let d = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    let d = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    t.checked_sub(d).unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::SubState;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn policy() -> RestartPolicy {
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
        }
    }

    fn attempts_of(fx: &[Effect]) -> Vec<u32> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Attempt { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .collect()
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

    /// Drives a unit that never comes back: exactly max_attempts attempts, then give-up.
    #[test]
    fn always_failing_unit_gets_exactly_max_attempts_then_gives_up() {
        let p = policy();
        let mut m = UnitMachine::new(None, 7);
        let mut now = t(0);
        let mut fx = m.observe(&p, Health::Down, now);
        assert!(fx.contains(&Effect::Down));
        let mut made = Vec::new();
        for _ in 0..50 {
            if m.gave_up() {
                break;
            }
            let Some(d) = m.next_deadline(&p) else { break };
            now = d;
            let step = m.tick(&p, &Deps::Ready, now);
            made.extend(attempts_of(&step));
            fx.extend(step.clone());
            if !attempts_of(&step).is_empty() {
                fx.extend(m.job_finished(&p, JobOutcome::Done, now));
                fx.extend(m.observe(&p, Health::Down, now));
            }
        }
        assert_eq!(made, vec![1, 2, 3]);
        assert!(fx.contains(&Effect::GaveUp { attempts: 3 }));
        assert!(m.gave_up());
        // Cooldown passes while still down: a new episode, attempt 1 again.
        let cd = m.next_deadline(&p).expect("cooldown deadline");
        assert_eq!(
            cd,
            add(
                m.episode().unwrap().gave_up.unwrap(),
                Duration::from_secs(3600)
            )
        );
        let fx = m.tick(&p, &Deps::Ready, cd);
        assert!(fx.contains(&Effect::Rearmed));
        assert!(matches!(
            fx.last(),
            Some(Effect::Scheduled { attempt: 1, .. })
        ));
    }

    #[test]
    fn successful_restart_is_verified_then_episode_resets() {
        let p = policy();
        let mut m = UnitMachine::new(None, 1);
        m.observe(&p, Health::Down, t(0));
        let at = m.next_deadline(&p).unwrap();
        let fx = m.tick(&p, &Deps::Ready, at);
        assert_eq!(
            fx,
            vec![Effect::Persist, Effect::Attempt { attempt: 1, of: 3 }]
        );
        assert_eq!(m.episode().unwrap().attempts, 1);
        assert!(m.job_finished(&p, JobOutcome::Done, at).is_empty());
        m.observe(&p, Health::Healthy, at);
        let until = m.next_deadline(&p).unwrap();
        assert_eq!(until, add(at, p.verify_after));
        let fx = m.tick(&p, &Deps::Ready, until);
        assert!(fx.contains(&Effect::Restarted { attempt: 1, of: 3 }));
        // Dies again within reset_after: same episode, attempt 2.
        let fx = m.observe(&p, Health::Down, add(until, Duration::from_secs(30)));
        assert!(matches!(
            fx.last(),
            Some(Effect::Scheduled { attempt: 2, .. })
        ));
        let at2 = m.next_deadline(&p).unwrap();
        m.tick(&p, &Deps::Ready, at2);
        m.job_finished(&p, JobOutcome::Done, at2);
        m.observe(&p, Health::Healthy, at2);
        let v = m.next_deadline(&p).unwrap();
        m.tick(&p, &Deps::Ready, v);
        let reset = m.next_deadline(&p).unwrap();
        assert_eq!(reset, add(v, p.reset_after));
        let fx = m.tick(&p, &Deps::Ready, reset);
        assert_eq!(fx, vec![Effect::EpisodeEnded, Effect::Persist]);
        assert!(m.episode().is_none());
    }

    #[test]
    fn failure_during_verification_counts_and_reschedules() {
        let p = policy();
        let mut m = UnitMachine::new(None, 1);
        m.observe(&p, Health::Down, t(0));
        let at = m.next_deadline(&p).unwrap();
        m.tick(&p, &Deps::Ready, at);
        m.job_finished(&p, JobOutcome::Done, at);
        m.observe(&p, Health::Healthy, at);
        let fx = m.observe(&p, Health::Down, add(at, Duration::from_secs(2)));
        assert!(matches!(fx[0], Effect::AttemptFailed { attempt: 1, .. }));
        assert!(matches!(
            fx.last(),
            Some(Effect::Scheduled { attempt: 2, .. })
        ));
    }

    #[test]
    fn failed_job_counts_as_failed_attempt() {
        let p = policy();
        let mut m = UnitMachine::new(None, 1);
        m.observe(&p, Health::Down, t(0));
        let at = m.next_deadline(&p).unwrap();
        m.tick(&p, &Deps::Ready, at);
        let fx = m.job_finished(&p, JobOutcome::Failed("failed".into()), at);
        assert_eq!(
            fx[0],
            Effect::AttemptFailed {
                attempt: 1,
                of: 3,
                reason: "job failed".into()
            }
        );
        assert!(matches!(fx[1], Effect::Scheduled { attempt: 2, .. }));
    }

    #[test]
    fn units_systemd_is_handling_are_left_alone() {
        let p = policy();
        let mut m = UnitMachine::new(None, 1);
        assert_eq!(
            m.observe(&p, Health::Systemd, t(0)),
            vec![Effect::WaitSystemd]
        );
        assert!(m.observe(&p, Health::Systemd, t(1)).is_empty());
        assert!(m.next_deadline(&p).is_none());
        assert!(m.observe(&p, Health::Healthy, t(2)).is_empty());
        // Down, then systemd takes over before our attempt: the attempt is cancelled.
        m.observe(&p, Health::Down, t(3));
        assert!(m.is_busy());
        assert_eq!(
            m.observe(&p, Health::Systemd, t(4)),
            vec![Effect::WaitSystemd]
        );
        assert!(!m.is_busy());
    }

    #[test]
    fn recovery_is_reported_once_not_after_each_of_systemds_restarts() {
        let p = policy();
        let mut m = UnitMachine::new(None, 1);
        let mut recovered = 0;
        let mut fx = m.observe(&p, Health::Down, t(0));
        for i in 1..20 {
            fx.extend(m.observe(&p, Health::Systemd, t(2 * i)));
            fx.extend(m.observe(&p, Health::Healthy, t(2 * i + 1)));
        }
        recovered += fx.iter().filter(|e| **e == Effect::Recovered).count();
        assert_eq!(recovered, 1);
        assert_eq!(fx.iter().filter(|e| **e == Effect::Down).count(), 1);
    }

    #[test]
    fn unit_back_by_itself_before_attempt_is_recovered_not_restarted() {
        let p = policy();
        let mut m = UnitMachine::new(None, 1);
        m.observe(&p, Health::Down, t(0));
        let fx = m.observe(&p, Health::Healthy, t(1));
        assert!(fx.contains(&Effect::Recovered));
        assert!(!m.is_busy());
        assert_eq!(m.episode().unwrap().attempts, 0);
    }

    #[test]
    fn restored_episode_continues_counting_and_never_repeats_attempts() {
        let p = policy();
        let ep = Episode {
            started: t(0),
            attempts: 2,
            gave_up: None,
            healthy_since: None,
        };
        let mut m = UnitMachine::new(Some(ep.clone()), 1);
        let fx = m.observe(&p, Health::Down, t(100));
        assert!(matches!(
            fx.last(),
            Some(Effect::Scheduled { attempt: 3, .. })
        ));
        let full = Episode { attempts: 3, ..ep };
        let mut m = UnitMachine::new(Some(full), 1);
        let fx = m.observe(&p, Health::Down, t(100));
        assert!(fx.contains(&Effect::GaveUp { attempts: 3 }));
        assert!(attempts_of(&fx).is_empty());
    }

    #[test]
    fn never_cooldown_stays_given_up_until_retry() {
        let p = RestartPolicy {
            give_up_cooldown: None,
            max_attempts: 1,
            ..policy()
        };
        let mut m = UnitMachine::new(None, 1);
        m.observe(&p, Health::Down, t(0));
        let at = m.next_deadline(&p).unwrap();
        m.tick(&p, &Deps::Ready, at);
        let fx = m.job_finished(&p, JobOutcome::Failed("failed".into()), at);
        assert!(fx.contains(&Effect::GaveUp { attempts: 1 }));
        assert!(m.next_deadline(&p).is_none());
        let fx = m.retry(&p, t(99_999));
        assert!(fx.contains(&Effect::Scheduled {
            attempt: 1,
            of: 1,
            delay: Duration::ZERO
        }));
        assert!(!m.gave_up());
    }

    #[test]
    fn dependency_wait_does_not_count() {
        let p = policy();
        let mut m = UnitMachine::new(None, 1);
        m.observe(&p, Health::Down, t(0));
        let at = m.next_deadline(&p).unwrap();
        let wait = Deps::Waiting("postgresql.service".into());
        let fx = m.tick(&p, &wait, at);
        assert_eq!(
            fx,
            vec![Effect::WaitDependency("postgresql.service".into())]
        );
        assert!(
            m.tick(&p, &wait, add(at, Duration::from_secs(1)))
                .is_empty()
        );
        assert_eq!(m.episode().unwrap().attempts, 0);
        let fx = m.tick(&p, &Deps::Ready, add(at, Duration::from_secs(2)));
        assert_eq!(attempts_of(&fx), vec![1]);
    }

    #[test]
    fn flapping_is_reported_once_per_burst() {
        let p = policy();
        let mut m = UnitMachine::new(None, 1);
        assert!(m.observe_restarts(&p, 0, t(0)).is_empty());
        assert!(m.observe_restarts(&p, 1, t(1)).is_empty());
        assert!(m.observe_restarts(&p, 2, t(2)).is_empty());
        assert_eq!(
            m.observe_restarts(&p, 3, t(3)),
            vec![Effect::Flapping { restarts: 3 }]
        );
        assert!(m.observe_restarts(&p, 4, t(4)).is_empty());
        // Quiet for longer than flap_window, then a new burst is reported again.
        assert!(m.observe_restarts(&p, 4, t(200)).is_empty());
        m.observe_restarts(&p, 5, t(201));
        m.observe_restarts(&p, 6, t(202));
        assert_eq!(
            m.observe_restarts(&p, 7, t(203)),
            vec![Effect::Flapping { restarts: 3 }]
        );
    }
}
