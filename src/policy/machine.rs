//! One unit's restart state machine: episodes, backoff, verification, give-up, flapping.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::{Deps, Episode, Health, RestartPolicy, backoff};
use crate::clock::{Now, add};
use crate::unit::{JobResult, LoadState, UnitName};

/// How our restart job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// `JobRemoved` said how our job ended.
    Ended(JobResult),
    /// The manager refused the call; the text says why.
    Refused(String),
    /// We lost sight of the job (bus dropped, no `JobRemoved` in time): the unit's state after
    /// `verify_after` decides.
    Lost,
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
    WaitDependency(UnitName),
    Unloadable(LoadState),
    /// `recovery_after` attempts have failed: start the recovery unit now (once per episode;
    /// the episode was already updated: persist before acting).
    Recover,
    /// The recovery unit's run ended; the next attempt follows its backoff.
    RecoveryDone {
        ok: bool,
        detail: String,
    },
    /// Its main process died and systemd's own `Restart=` is bringing it back.
    Crashed {
        /// systemd's restart counter (`NRestarts`).
        restarts: u32,
    },
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
        at: Instant,
        blocked_on: Option<UnitName>,
    },
    Running {
        attempt: u32,
    },
    Verifying {
        attempt: u32,
        until: Instant,
    },
    /// The recovery unit runs after attempt `attempt` failed; the next attempt waits for it.
    Recovering {
        attempt: u32,
    },
}

/// One unit's restart state machine.
#[derive(Clone, Debug)]
pub struct UnitMachine {
    // Boxed: most units are healthy and have none, and a host may watch a thousand.
    episode: Option<Box<Episode>>,
    phase: Phase,
    last: Option<Health>,
    rng: u64,
    restarts_seen: Option<u32>,
    /// systemd's restarts within `flap_window`: when each rise was seen, and by how many
    /// (at most `flap_restarts`, which is all the count needs). One entry per rise rather than
    /// per restart, so a huge `flap_restarts` or a jump of `NRestarts` costs no more than one.
    restart_times: VecDeque<(Instant, u32)>,
    flapping: bool,
    /// A `Down` was reported and no `Recovered`/`Restarted` yet: recovery is worth telling once,
    /// not after each of systemd's own restarts.
    reported_down: bool,
    /// An operator's hold: nothing is planned or attempted until `resume`.
    suspended: bool,
}

impl UnitMachine {
    /// `seed` drives the backoff jitter; `episode` is what was persisted, if anything.
    pub fn new(episode: Option<Episode>, seed: u64) -> UnitMachine {
        UnitMachine {
            episode: episode.map(Box::new),
            phase: Phase::Idle,
            last: None,
            rng: seed | 1,
            restarts_seen: None,
            restart_times: VecDeque::new(),
            flapping: false,
            reported_down: false,
            suspended: false,
        }
    }

    /// Hands off (a pause, an operator's stop): a planned attempt or a verification is
    /// dropped; a job already out finishes, and its outcome is only remembered.
    pub fn suspend(&mut self) {
        self.suspended = true;
        if !self.owns_a_job() {
            self.phase = Phase::Idle;
        }
    }

    /// Hands on again: the next observation decides afresh, as if first seen.
    pub fn resume(&mut self) {
        self.suspended = false;
        self.last = None;
        if !self.owns_a_job() {
            self.phase = Phase::Idle;
        }
    }

    pub fn is_suspended(&self) -> bool {
        self.suspended
    }

    /// When the planned attempt is due, for status reports.
    pub fn attempt_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { at, .. } => Some(at),
            _ => None,
        }
    }

    pub fn episode(&self) -> Option<&Episode> {
        self.episode.as_deref()
    }

    pub fn health(&self) -> Option<Health> {
        self.last
    }

    /// Whether an attempt is scheduled, running or being verified.
    pub fn is_busy(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }

    /// Whether a due attempt is held back by a dependency.
    pub fn waits_for_dependency(&self) -> bool {
        matches!(
            self.phase,
            Phase::Waiting {
                blocked_on: Some(_),
                ..
            }
        )
    }

    /// Whether our restart job is out (between `Attempt` and `job_finished`).
    pub fn job_running(&self) -> bool {
        matches!(self.phase, Phase::Running { .. })
    }

    /// Whether the recovery unit runs (between `Recover` and `recovery_finished`).
    pub fn recovering(&self) -> bool {
        matches!(self.phase, Phase::Recovering { .. })
    }

    /// A job of ours is out, and its end will be reported whatever happens meanwhile.
    fn owns_a_job(&self) -> bool {
        matches!(self.phase, Phase::Running { .. } | Phase::Recovering { .. })
    }

    /// The attempt in progress or planned, for status lines.
    pub fn current_attempt(&self) -> Option<u32> {
        match self.phase {
            Phase::Idle => None,
            Phase::Waiting { attempt, .. }
            | Phase::Running { attempt }
            | Phase::Verifying { attempt, .. }
            | Phase::Recovering { attempt } => Some(attempt),
        }
    }

    pub fn gave_up(&self) -> bool {
        self.episode.as_ref().is_some_and(|e| e.gave_up.is_some())
    }

    /// When `tick` next has something to do.
    pub fn next_deadline(&self, p: &RestartPolicy, now: &Now) -> Option<Instant> {
        if self.suspended {
            return None;
        }
        match &self.phase {
            Phase::Waiting {
                at,
                blocked_on: None,
                ..
            } => Some(*at),
            Phase::Waiting { .. } | Phase::Running { .. } | Phase::Recovering { .. } => None,
            Phase::Verifying { until, .. } => Some(*until),
            Phase::Idle => {
                let ep = self.episode.as_ref()?;
                let wall = match (self.last?, ep.gave_up, ep.healthy_since) {
                    (Health::Healthy, _, Some(since)) => add(since, p.reset_after),
                    (Health::Down, Some(at), _) => add(at, p.give_up_cooldown?),
                    _ => return None,
                };
                Some(now.instant_of(wall))
            }
        }
    }

    /// Whether `tick` may have something to do at `now`; the watch loop ticks only these.
    pub fn due(&self, p: &RestartPolicy, now: &Now) -> bool {
        if self.suspended {
            return false;
        }
        match &self.phase {
            Phase::Waiting { at, .. } => *at <= now.at,
            Phase::Running { .. } | Phase::Recovering { .. } => false,
            Phase::Verifying { until, .. } => *until <= now.at,
            Phase::Idle => self.next_deadline(p, now).is_some_and(|d| d <= now.at),
        }
    }

    /// A new view of the unit (signal or poll).
    pub fn observe(&mut self, p: &RestartPolicy, h: Health, now: &Now) -> Vec<Effect> {
        if self.suspended {
            return Vec::new();
        }
        let prev = self.last.replace(h);
        let changed = prev != Some(h);
        let mut fx = Vec::new();
        if h != Health::Healthy
            && let Some(ep) = self.episode.as_deref_mut()
            && ep.healthy_since.take().is_some()
        {
            fx.push(Effect::Persist);
        }
        match self.phase.clone() {
            // Our own job decides; observations meanwhile are only remembered.
            Phase::Running { .. } | Phase::Recovering { .. } => {}
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
    pub fn observe_restarts(&mut self, p: &RestartPolicy, n: u32, now: &Now) -> Vec<Effect> {
        let prev = self.restarts_seen.replace(n);
        let mut fx = Vec::new();
        if let Some(prev) = prev
            && n > prev
        {
            fx.push(Effect::Crashed { restarts: n });
            let rise = (n - prev).min(p.flap_restarts.max(1));
            self.restart_times.push_back((now.at, rise));
        }
        let horizon = now.at.checked_sub(p.flap_window);
        while self
            .restart_times
            .front()
            .is_some_and(|(t, _)| horizon.is_some_and(|h| *t < h))
        {
            self.restart_times.pop_front();
        }
        let count = self
            .restart_times
            .iter()
            .fold(0u32, |sum, (_, rise)| sum.saturating_add(*rise));
        if p.flap_restarts > 0 && count >= p.flap_restarts {
            if !self.flapping {
                self.flapping = true;
                fx.push(Effect::Flapping { restarts: count });
            }
        } else {
            self.flapping = false;
        }
        // Only the newest rises that reach flap_restarts can matter: the older ones leave the
        // window before any of them, and by then the count is below the threshold either way.
        // Dropping them changes no decision and keeps the queue at most flap_restarts long,
        // however long flap_window is and however long systemd keeps restarting the unit.
        let mut newest = 0u32;
        if let Some(keep) = self.restart_times.iter().rev().position(|(_, rise)| {
            newest = newest.saturating_add(*rise);
            newest >= p.flap_restarts.max(1)
        }) {
            let old = self.restart_times.len() - keep - 1;
            self.restart_times.drain(..old);
        }
        fx
    }

    /// Time has passed: start a due attempt, conclude a verification, end or re-arm an episode.
    pub fn tick(&mut self, p: &RestartPolicy, deps: &Deps, now: &Now) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.suspended {
            return fx;
        }
        match self.phase.clone() {
            Phase::Waiting {
                attempt,
                at,
                blocked_on,
            } if at <= now.at => match deps {
                Deps::Waiting(dep) => {
                    if blocked_on.as_ref() != Some(dep) {
                        fx.push(Effect::WaitDependency(dep.clone()));
                    }
                    self.phase = Phase::Waiting {
                        attempt,
                        at,
                        blocked_on: Some(dep.clone()),
                    };
                }
                Deps::Ready => {
                    let ep = self
                        .episode
                        .get_or_insert_with(|| Box::new(new_episode(now)));
                    ep.attempts = attempt;
                    self.phase = Phase::Running { attempt };
                    fx.push(Effect::Persist);
                    fx.push(Effect::Attempt {
                        attempt,
                        of: p.max_attempts,
                    });
                }
            },
            Phase::Verifying { attempt, until } if until <= now.at => {
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
                if let Some(deadline) = self.next_deadline(p, now)
                    && deadline <= now.at
                {
                    match self.last {
                        Some(Health::Healthy) => {
                            self.episode = None;
                            fx.push(Effect::EpisodeEnded);
                            fx.push(Effect::Persist);
                        }
                        Some(Health::Down) => {
                            self.episode = Some(Box::new(new_episode(now)));
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
        now: &Now,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.suspended {
            if self.job_running() {
                self.phase = Phase::Idle;
            }
            return fx;
        }
        if let Phase::Running { attempt } = self.phase {
            match outcome {
                JobOutcome::Ended(JobResult::Done) | JobOutcome::Lost => {
                    self.phase = Phase::Verifying {
                        attempt,
                        until: now.after(p.verify_after),
                    };
                }
                JobOutcome::Ended(result) => {
                    self.attempt_failed(p, attempt, format!("job {result}"), now, &mut fx)
                }
                JobOutcome::Refused(why) => {
                    self.attempt_failed(p, attempt, format!("refused ({why})"), now, &mut fx)
                }
            }
        }
        fx
    }

    /// The recovery unit's run has ended (`detail` says how); the restarts go on.
    pub fn recovery_finished(
        &mut self,
        p: &RestartPolicy,
        ok: bool,
        detail: String,
        now: &Now,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        let Phase::Recovering { attempt } = self.phase else {
            return fx;
        };
        self.phase = Phase::Idle;
        fx.push(Effect::RecoveryDone { ok, detail });
        if self.suspended {
            return fx;
        }
        match self.last {
            Some(Health::Down) => self.schedule(p, attempt + 1, now, &mut fx),
            Some(Health::Healthy) => {
                // The repair brought it back by itself.
                self.mark_healthy(now, &mut fx);
                self.recovered(&mut fx);
            }
            _ => {}
        }
        fx
    }

    /// Operator override: forget the give-up and start a fresh episode now.
    pub fn retry(&mut self, p: &RestartPolicy, now: &Now) -> Vec<Effect> {
        let mut fx = vec![Effect::Persist];
        self.episode = Some(Box::new(new_episode(now)));
        if self.last == Some(Health::Down) && !self.job_running() {
            self.phase = Phase::Waiting {
                attempt: 1,
                at: now.at,
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

    fn on_down(&mut self, p: &RestartPolicy, changed: bool, now: &Now, fx: &mut Vec<Effect>) {
        let ep = match self.episode.as_deref_mut() {
            Some(ep) => ep,
            None => {
                fx.push(Effect::Persist);
                self.episode.insert(Box::new(new_episode(now)))
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
            self.follow_up(p, done, now, fx);
        }
    }

    /// After `failed` attempts and before the next: the recovery unit, when its time has come
    /// and it has not run in this episode, else the next attempt after its backoff.
    fn follow_up(&mut self, p: &RestartPolicy, failed: u32, now: &Now, fx: &mut Vec<Effect>) {
        if let Some(after) = p.recovery_after
            && failed >= after
            && let Some(ep) = self.episode.as_deref_mut()
            && !ep.recovery_ran
        {
            ep.recovery_ran = true;
            self.phase = Phase::Recovering { attempt: failed };
            fx.push(Effect::Persist);
            fx.push(Effect::Recover);
            return;
        }
        self.schedule(p, failed + 1, now, fx);
    }

    fn attempt_failed(
        &mut self,
        p: &RestartPolicy,
        attempt: u32,
        reason: String,
        now: &Now,
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
            self.follow_up(p, attempt, now, fx);
        }
        // Otherwise (systemd is moving it, or it came back) the next observation decides.
    }

    fn give_up(&mut self, attempts: u32, now: &Now, fx: &mut Vec<Effect>) {
        let ep = self
            .episode
            .get_or_insert_with(|| Box::new(new_episode(now)));
        ep.gave_up = Some(now.wall);
        self.phase = Phase::Idle;
        fx.push(Effect::GaveUp { attempts });
        fx.push(Effect::Persist);
    }

    fn schedule(&mut self, p: &RestartPolicy, attempt: u32, now: &Now, fx: &mut Vec<Effect>) {
        let delay = backoff(p, attempt, self.jitter());
        self.phase = Phase::Waiting {
            attempt,
            at: now.after(delay),
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

    fn mark_healthy(&mut self, now: &Now, fx: &mut Vec<Effect>) {
        if let Some(ep) = self.episode.as_deref_mut()
            && ep.healthy_since.is_none()
        {
            ep.healthy_since = Some(now.wall);
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

fn new_episode(now: &Now) -> Episode {
    Episode {
        started: now.wall,
        attempts: 0,
        gave_up: None,
        healthy_since: None,
        recovery_ran: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::policy;

    fn start() -> Now {
        Now {
            at: Instant::now(),
            wall: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        }
    }

    /// The moment `i`, on both clocks.
    fn at(base: &Now, i: Instant) -> Now {
        base.advanced(i - base.at)
    }

    fn secs(base: &Now, s: u64) -> Now {
        base.advanced(Duration::from_secs(s))
    }

    fn attempts_of(fx: &[Effect]) -> Vec<u32> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Attempt { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .collect()
    }

    const DONE: JobOutcome = JobOutcome::Ended(JobResult::Done);

    /// Drives a unit that never comes back: exactly max_attempts attempts, then give-up.
    #[test]
    fn always_failing_unit_gets_exactly_max_attempts_then_gives_up() {
        let p = policy();
        let base = start();
        let mut m = UnitMachine::new(None, 7);
        let mut now = base;
        let mut fx = m.observe(&p, Health::Down, &now);
        assert!(fx.contains(&Effect::Down));
        let mut made = Vec::new();
        for _ in 0..50 {
            if m.gave_up() {
                break;
            }
            let Some(d) = m.next_deadline(&p, &now) else {
                break;
            };
            now = at(&base, d);
            let step = m.tick(&p, &Deps::Ready, &now);
            made.extend(attempts_of(&step));
            fx.extend(step.clone());
            if !attempts_of(&step).is_empty() {
                fx.extend(m.job_finished(&p, DONE, &now));
                fx.extend(m.observe(&p, Health::Down, &now));
            }
        }
        assert_eq!(made, vec![1, 2, 3]);
        assert!(fx.contains(&Effect::GaveUp { attempts: 3 }));
        assert!(m.gave_up());
        // Cooldown passes while still down: a new episode, attempt 1 again.
        let cd = m.next_deadline(&p, &now).expect("cooldown deadline");
        assert_eq!(cd - now.at, Duration::from_secs(3600));
        let fx = m.tick(&p, &Deps::Ready, &at(&base, cd));
        assert!(fx.contains(&Effect::Rearmed));
        assert!(matches!(
            fx.last(),
            Some(Effect::Scheduled { attempt: 1, .. })
        ));
    }

    #[test]
    fn successful_restart_is_verified_then_episode_resets() {
        let p = policy();
        let base = start();
        let mut m = UnitMachine::new(None, 1);
        m.observe(&p, Health::Down, &base);
        let t1 = at(&base, m.next_deadline(&p, &base).unwrap());
        let fx = m.tick(&p, &Deps::Ready, &t1);
        assert_eq!(
            fx,
            vec![Effect::Persist, Effect::Attempt { attempt: 1, of: 3 }]
        );
        assert_eq!(m.episode().unwrap().attempts, 1);
        assert!(m.job_finished(&p, DONE, &t1).is_empty());
        m.observe(&p, Health::Healthy, &t1);
        let until = m.next_deadline(&p, &t1).unwrap();
        assert_eq!(until - t1.at, p.verify_after);
        let t2 = at(&base, until);
        let fx = m.tick(&p, &Deps::Ready, &t2);
        assert!(fx.contains(&Effect::Restarted { attempt: 1, of: 3 }));
        // Dies again within reset_after: same episode, attempt 2.
        let t3 = t2.advanced(Duration::from_secs(30));
        let fx = m.observe(&p, Health::Down, &t3);
        assert!(matches!(
            fx.last(),
            Some(Effect::Scheduled { attempt: 2, .. })
        ));
        let t4 = at(&base, m.next_deadline(&p, &t3).unwrap());
        m.tick(&p, &Deps::Ready, &t4);
        m.job_finished(&p, DONE, &t4);
        m.observe(&p, Health::Healthy, &t4);
        let t5 = at(&base, m.next_deadline(&p, &t4).unwrap());
        m.tick(&p, &Deps::Ready, &t5);
        let reset = m.next_deadline(&p, &t5).unwrap();
        assert_eq!(reset - t5.at, p.reset_after);
        let fx = m.tick(&p, &Deps::Ready, &at(&base, reset));
        assert_eq!(fx, vec![Effect::EpisodeEnded, Effect::Persist]);
        assert!(m.episode().is_none());
    }

    #[test]
    fn failure_during_verification_counts_and_reschedules() {
        let p = policy();
        let base = start();
        let mut m = UnitMachine::new(None, 1);
        m.observe(&p, Health::Down, &base);
        let t1 = at(&base, m.next_deadline(&p, &base).unwrap());
        m.tick(&p, &Deps::Ready, &t1);
        m.job_finished(&p, DONE, &t1);
        m.observe(&p, Health::Healthy, &t1);
        let fx = m.observe(&p, Health::Down, &t1.advanced(Duration::from_secs(2)));
        assert!(matches!(fx[0], Effect::AttemptFailed { attempt: 1, .. }));
        assert!(matches!(
            fx.last(),
            Some(Effect::Scheduled { attempt: 2, .. })
        ));
    }

    #[test]
    fn failed_or_refused_job_counts_as_failed_attempt() {
        let p = policy();
        let cases = [
            (JobOutcome::Ended(JobResult::Failed), "job failed"),
            (JobOutcome::Ended(JobResult::Canceled), "job canceled"),
            (
                JobOutcome::Refused("org.freedesktop.DBus.Error.AccessDenied: no".into()),
                "refused (org.freedesktop.DBus.Error.AccessDenied: no)",
            ),
        ];
        for (outcome, reason) in cases {
            let base = start();
            let mut m = UnitMachine::new(None, 1);
            m.observe(&p, Health::Down, &base);
            let t1 = at(&base, m.next_deadline(&p, &base).unwrap());
            m.tick(&p, &Deps::Ready, &t1);
            let fx = m.job_finished(&p, outcome, &t1);
            assert_eq!(
                fx[0],
                Effect::AttemptFailed {
                    attempt: 1,
                    of: 3,
                    reason: reason.into()
                }
            );
            assert!(matches!(fx[1], Effect::Scheduled { attempt: 2, .. }));
        }
    }

    #[test]
    fn units_systemd_is_handling_are_left_alone() {
        let p = policy();
        let base = start();
        let mut m = UnitMachine::new(None, 1);
        assert_eq!(
            m.observe(&p, Health::Systemd, &base),
            vec![Effect::WaitSystemd]
        );
        assert!(m.observe(&p, Health::Systemd, &secs(&base, 1)).is_empty());
        assert!(m.next_deadline(&p, &base).is_none());
        assert!(m.observe(&p, Health::Healthy, &secs(&base, 2)).is_empty());
        // Down, then systemd takes over before our attempt: the attempt is cancelled.
        m.observe(&p, Health::Down, &secs(&base, 3));
        assert!(m.is_busy());
        assert_eq!(
            m.observe(&p, Health::Systemd, &secs(&base, 4)),
            vec![Effect::WaitSystemd]
        );
        assert!(!m.is_busy());
    }

    #[test]
    fn recovery_is_reported_once_not_after_each_of_systemds_restarts() {
        let p = policy();
        let base = start();
        let mut m = UnitMachine::new(None, 1);
        let mut fx = m.observe(&p, Health::Down, &base);
        for i in 1..20 {
            fx.extend(m.observe(&p, Health::Systemd, &secs(&base, 2 * i)));
            fx.extend(m.observe(&p, Health::Healthy, &secs(&base, 2 * i + 1)));
        }
        assert_eq!(fx.iter().filter(|e| **e == Effect::Recovered).count(), 1);
        assert_eq!(fx.iter().filter(|e| **e == Effect::Down).count(), 1);
    }

    #[test]
    fn unit_back_by_itself_before_attempt_is_recovered_not_restarted() {
        let p = policy();
        let base = start();
        let mut m = UnitMachine::new(None, 1);
        m.observe(&p, Health::Down, &base);
        let fx = m.observe(&p, Health::Healthy, &secs(&base, 1));
        assert!(fx.contains(&Effect::Recovered));
        assert!(!m.is_busy());
        assert_eq!(m.episode().unwrap().attempts, 0);
    }

    #[test]
    fn restored_episode_continues_counting_and_never_repeats_attempts() {
        let p = policy();
        let base = start();
        let ep = Episode {
            started: base.wall,
            attempts: 2,
            gave_up: None,
            healthy_since: None,
            recovery_ran: false,
        };
        let mut m = UnitMachine::new(Some(ep.clone()), 1);
        let fx = m.observe(&p, Health::Down, &secs(&base, 100));
        assert!(matches!(
            fx.last(),
            Some(Effect::Scheduled { attempt: 3, .. })
        ));
        let full = Episode { attempts: 3, ..ep };
        let mut m = UnitMachine::new(Some(full), 1);
        let fx = m.observe(&p, Health::Down, &secs(&base, 100));
        assert!(fx.contains(&Effect::GaveUp { attempts: 3 }));
        assert!(attempts_of(&fx).is_empty());
    }

    #[test]
    fn a_restored_give_up_counts_its_cooldown_on_the_wall_clock() {
        let p = policy();
        let base = start();
        let ep = Episode {
            started: base.wall,
            attempts: 3,
            gave_up: Some(base.wall),
            healthy_since: None,
            recovery_ran: false,
        };
        // unitwarden restarts 20 minutes after the give-up: 40 minutes remain.
        let later = secs(&base, 1200);
        let mut m = UnitMachine::new(Some(ep), 1);
        assert!(attempts_of(&m.observe(&p, Health::Down, &later)).is_empty());
        let due = m.next_deadline(&p, &later).unwrap();
        assert_eq!(due - later.at, Duration::from_secs(2400));
    }

    #[test]
    fn never_cooldown_stays_given_up_until_retry() {
        let p = RestartPolicy {
            give_up_cooldown: None,
            max_attempts: 1,
            ..policy()
        };
        let base = start();
        let mut m = UnitMachine::new(None, 1);
        m.observe(&p, Health::Down, &base);
        let t1 = at(&base, m.next_deadline(&p, &base).unwrap());
        m.tick(&p, &Deps::Ready, &t1);
        let fx = m.job_finished(&p, JobOutcome::Ended(JobResult::Failed), &t1);
        assert!(fx.contains(&Effect::GaveUp { attempts: 1 }));
        assert!(m.next_deadline(&p, &t1).is_none());
        let fx = m.retry(&p, &secs(&base, 99_999));
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
        let base = start();
        let mut m = UnitMachine::new(None, 1);
        m.observe(&p, Health::Down, &base);
        let t1 = at(&base, m.next_deadline(&p, &base).unwrap());
        let pg = UnitName::parse("postgresql").unwrap();
        let wait = Deps::Waiting(pg.clone());
        assert_eq!(m.tick(&p, &wait, &t1), vec![Effect::WaitDependency(pg)]);
        assert!(
            m.tick(&p, &wait, &t1.advanced(Duration::from_secs(1)))
                .is_empty()
        );
        assert_eq!(m.episode().unwrap().attempts, 0);
        let fx = m.tick(&p, &Deps::Ready, &t1.advanced(Duration::from_secs(2)));
        assert_eq!(attempts_of(&fx), vec![1]);
    }

    #[test]
    fn every_crash_is_reported_and_a_burst_once_as_flapping() {
        let p = policy();
        let base = start();
        let mut m = UnitMachine::new(None, 1);
        let s = |n| secs(&base, n);
        let crash = |n| Effect::Crashed { restarts: n };
        // The first count seen is where systemd stands, not a crash.
        assert!(m.observe_restarts(&p, 0, &s(0)).is_empty());
        assert_eq!(m.observe_restarts(&p, 1, &s(1)), vec![crash(1)]);
        assert_eq!(m.observe_restarts(&p, 2, &s(2)), vec![crash(2)]);
        assert_eq!(
            m.observe_restarts(&p, 3, &s(3)),
            vec![crash(3), Effect::Flapping { restarts: 3 }]
        );
        assert_eq!(m.observe_restarts(&p, 4, &s(4)), vec![crash(4)]);
        // The same count again is no news.
        assert!(m.observe_restarts(&p, 4, &s(5)).is_empty());
        // Quiet for longer than flap_window, then a new burst is reported again.
        assert!(m.observe_restarts(&p, 4, &s(200)).is_empty());
        m.observe_restarts(&p, 5, &s(201));
        m.observe_restarts(&p, 6, &s(202));
        assert_eq!(
            m.observe_restarts(&p, 7, &s(203)),
            vec![crash(7), Effect::Flapping { restarts: 3 }]
        );
    }

    #[test]
    fn a_huge_flap_restarts_and_a_jump_of_nrestarts_cost_one_entry() {
        // Found by the fuzzer: `flap_restarts = 2147483648` and NRestarts going from 0 to
        // u32::MAX queued one instant per restart, two billion of them, in one call.
        let p = RestartPolicy {
            flap_restarts: 1 << 31,
            ..policy()
        };
        let base = start();
        let mut m = UnitMachine::new(None, 1);
        assert!(m.observe_restarts(&p, 0, &base).is_empty());
        assert_eq!(
            m.observe_restarts(&p, u32::MAX, &secs(&base, 1)),
            vec![
                Effect::Crashed { restarts: u32::MAX },
                Effect::Flapping { restarts: 1 << 31 }
            ]
        );
        assert_eq!(m.restart_times.len(), 1);
        // A burst bigger than flap_restarts is still reported as flapping, once.
        let p = policy();
        let mut m = UnitMachine::new(None, 1);
        m.observe_restarts(&p, 0, &base);
        assert_eq!(
            m.observe_restarts(&p, 1000, &secs(&base, 1)),
            vec![
                Effect::Crashed { restarts: 1000 },
                Effect::Flapping { restarts: 3 }
            ]
        );
    }

    #[test]
    fn a_long_flap_window_keeps_only_the_restarts_that_can_matter() {
        // A unit systemd restarts every 100 ms for a day, with flap_window = "100y": one entry
        // per rise would be 864,000 of them, each observation counting them all.
        let p = RestartPolicy {
            flap_restarts: 5,
            flap_window: Duration::from_secs(100 * 365 * 86_400),
            ..policy()
        };
        let base = start();
        let mut m = UnitMachine::new(None, 1);
        let at = |ms: u64| base.advanced(Duration::from_millis(ms));
        m.observe_restarts(&p, 0, &at(0));
        let mut flapping = 0;
        for n in 1..=10_000 {
            let fx = m.observe_restarts(&p, n, &at(100 * u64::from(n)));
            flapping += fx
                .iter()
                .filter(|e| matches!(e, Effect::Flapping { .. }))
                .count();
        }
        assert_eq!(flapping, 1, "reported once, when the fifth restart came");
        assert!(m.restart_times.len() <= 5, "{}", m.restart_times.len());
        // With the usual window, a quiet spell still ends it and a new burst is reported.
        let p = policy();
        let mut m = UnitMachine::new(None, 1);
        m.observe_restarts(&p, 0, &at(0));
        for n in 1..=100 {
            m.observe_restarts(&p, n, &at(1000 * u64::from(n)));
        }
        assert!(m.observe_restarts(&p, 100, &at(400_000)).is_empty());
        m.observe_restarts(&p, 101, &at(401_000));
        m.observe_restarts(&p, 102, &at(402_000));
        assert_eq!(
            m.observe_restarts(&p, 103, &at(403_000)),
            vec![
                Effect::Crashed { restarts: 103 },
                Effect::Flapping { restarts: 3 }
            ]
        );
    }

    #[test]
    fn a_suspended_machine_plans_nothing_and_decides_afresh_on_resume() {
        let p = policy();
        let base = start();
        let mut m = UnitMachine::new(None, 1);
        m.observe(&p, Health::Down, &base);
        assert!(m.next_deadline(&p, &base).is_some());
        m.suspend();
        assert!(m.next_deadline(&p, &base).is_none());
        let later = secs(&base, 60);
        assert!(m.tick(&p, &Deps::Ready, &later).is_empty());
        assert!(m.observe(&p, Health::Down, &later).is_empty());
        m.resume();
        let fx = m.observe(&p, Health::Down, &later);
        assert!(matches!(
            fx.last(),
            Some(Effect::Scheduled { attempt: 1, .. })
        ));
    }
}
