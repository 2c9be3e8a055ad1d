//! Properties of the restart state machine under arbitrary sequences of observations, ticks,
//! job outcomes and operator retries.

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::tests::policy;
use super::{Deps, Effect, Episode, Health, JobOutcome, RestartPolicy, UnitMachine};
use crate::clock::Now;
use crate::unit::{JobResult, LoadState, UnitName};

#[derive(Clone, Debug)]
enum Step {
    Observe(Health),
    Advance(u64),
    /// Straight to the machine's next deadline, as the watch loop's timer would.
    ToDeadline,
    Tick {
        blocked: bool,
    },
    Job(JobOutcome),
    Retry,
    Restarts(u32),
}

fn health() -> impl Strategy<Value = Health> {
    prop_oneof![
        3 => Just(Health::Down),
        2 => Just(Health::Healthy),
        2 => Just(Health::Systemd),
        1 => Just(Health::Stopped),
        1 => Just(Health::Unloadable(LoadState::NotFound)),
    ]
}

fn outcome() -> impl Strategy<Value = JobOutcome> {
    prop_oneof![
        Just(JobOutcome::Ended(JobResult::Done)),
        Just(JobOutcome::Ended(JobResult::Failed)),
        Just(JobOutcome::Ended(JobResult::Canceled)),
        Just(JobOutcome::Refused("denied".into())),
        Just(JobOutcome::Lost),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => health().prop_map(Step::Observe),
        2 => (0u64..4000).prop_map(Step::Advance),
        4 => Just(Step::ToDeadline),
        3 => any::<bool>().prop_map(|blocked| Step::Tick { blocked }),
        3 => outcome().prop_map(Step::Job),
        1 => Just(Step::Retry),
        1 => (0u32..4).prop_map(Step::Restarts),
    ]
}

fn restored() -> impl Strategy<Value = Option<(u32, bool)>> {
    proptest::option::of((0u32..6, any::<bool>()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Never more than `max_attempts` attempts per episode, never an attempt while our job is
    /// out, and never an attempt unless the unit was last seen down (so never one on a unit
    /// systemd is moving). A machine that is not `due` has nothing to do when ticked, so the
    /// watch loop may skip it.
    #[test]
    fn the_restart_machine_keeps_its_promises(
        max in 1u32..5,
        cooldown in proptest::option::of(0u64..5000),
        seed in any::<u64>(),
        saved in restored(),
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let p = RestartPolicy {
            max_attempts: max,
            give_up_cooldown: cooldown.map(Duration::from_secs),
            ..policy()
        };
        let mut now = Now {
            at: Instant::now(),
            wall: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        };
        let episode = saved.map(|(attempts, gave_up)| Episode {
            started: now.wall,
            attempts: attempts.min(max),
            gave_up: gave_up.then_some(now.wall),
            healthy_since: None,
            recovery_ran: false,
        });
        let mut in_episode = episode.as_ref().map_or(0, |e| e.attempts);
        let mut m = UnitMachine::new(episode, seed);
        let mut job_out = false;
        let dep = UnitName::parse("db").unwrap();
        for step in steps {
            let before = m.health();
            let fx = match step {
                Step::Observe(h) => m.observe(&p, h, &now),
                Step::Advance(s) => {
                    now = now.advanced(Duration::from_secs(s));
                    Vec::new()
                }
                Step::ToDeadline => {
                    if let Some(d) = m.next_deadline(&p, &now) && d > now.at {
                        now = now.advanced(d - now.at);
                    }
                    let due = m.due(&p, &now);
                    let fx = m.tick(&p, &Deps::Ready, &now);
                    prop_assert!(due || fx.is_empty(), "a tick that was not due did {fx:?}");
                    fx
                }
                Step::Tick { blocked } => {
                    let deps = if blocked { Deps::Waiting(dep.clone()) } else { Deps::Ready };
                    let due = m.due(&p, &now);
                    let fx = m.tick(&p, &deps, &now);
                    prop_assert!(due || fx.is_empty(), "a tick that was not due did {fx:?}");
                    fx
                }
                Step::Job(o) => {
                    // Only our own job's end is ever delivered.
                    if !job_out {
                        continue;
                    }
                    job_out = false;
                    m.job_finished(&p, o, &now)
                }
                Step::Retry => {
                    in_episode = 0;
                    m.retry(&p, &now)
                }
                Step::Restarts(n) => m.observe_restarts(&p, n, &now),
            };
            for e in &fx {
                match e {
                    Effect::Attempt { attempt, of } => {
                        prop_assert!(!job_out, "an attempt while our job is out: {fx:?}");
                        prop_assert_eq!(before, Some(Health::Down), "an attempt on a unit not seen down");
                        prop_assert_eq!(*of, max);
                        prop_assert!(*attempt <= max);
                        in_episode += 1;
                        prop_assert!(in_episode <= max, "attempt {} of {} in one episode", in_episode, max);
                        job_out = true;
                    }
                    Effect::EpisodeEnded | Effect::Rearmed => in_episode = 0,
                    _ => {}
                }
            }
            prop_assert_eq!(m.job_running(), job_out);
            if let Some(ep) = m.episode() {
                prop_assert!(ep.attempts <= max);
            }
        }
    }
}
