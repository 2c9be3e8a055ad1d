//! The engine on tokio's paused clock: whole scenarios (backoff, give-up, cooldown,
//! verification, reset, windows, dependencies, reload, flapping) in no real time.
//!
//! The scenario's units are a table the test sets; each action the engine asks for is
//! answered from it at once (a poll lists the table, a restart changes it as the test said it
//! would). The real manager's behaviour is the integration suite's concern (tests/it).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use super::engine::{Action, Engine, Input, Listing, Mode};
use super::narrate::Line;
use crate::alert::Event;
use crate::alert::EventKind;
use crate::clock::{Now, add};
use crate::config;
use crate::policy::{Episode, JobOutcome};
use crate::state::Saved;
use crate::systemd::{Signal, UnitStatus, UnitUpdate};
use crate::unit::{
    ActiveState, JobResult, LoadState, Observation, SubState, UnitName, UnitPattern,
};

/// Monday 2026-11-30 07:00:00 UTC.
const MONDAY_7AM: i64 = 1_796_022_000;

/// What a restart does to a unit in the scenario.
#[derive(Clone, Copy, Debug)]
enum OnRestart {
    /// The job ends `done` and the unit stays active.
    Starts,
    /// The job ends `failed` and the unit is failed.
    Fails,
    /// The job ends `done`, the unit is active, then fails again after this long.
    StartsThenDies(Duration),
}

#[derive(Debug)]
struct Restart {
    unit: String,
    at: Duration,
}

struct Sim {
    engine: Engine,
    at0: Instant,
    wall0: Timestamp,
    table: BTreeMap<UnitName, Observation>,
    on_restart: BTreeMap<UnitName, OnRestart>,
    deaths: Vec<(Instant, UnitName)>,
    inbox: VecDeque<Input>,
    restarts: Vec<Restart>,
    lines: Vec<Line>,
    alerts: Vec<Event>,
    persisted: Vec<BTreeMap<UnitName, Episode>>,
    /// The last state written, holds included.
    saved: Saved,
    polls: Vec<Duration>,
    /// Units whose probes fail; the others pass.
    probe_fails: BTreeMap<UnitName, String>,
    /// Probes asked for, in order: (unit, when).
    probes: Vec<(UnitName, Duration)>,
    /// Probes not answered yet, when the test answers them itself.
    held_probes: Option<Vec<UnitName>>,
    /// Recovery units started, in order: (the unit they are for, when). Each run succeeds and
    /// makes the unit's next restart start it.
    recoveries: Vec<(UnitName, Duration)>,
    /// What a resource check reads.
    readings: Vec<crate::resources::Reading>,
}

fn name(s: &str) -> UnitName {
    UnitName::parse(s).unwrap()
}

fn obs(active: ActiveState, sub: &str) -> Observation {
    Observation::new(LoadState::Loaded, active, SubState::new(sub))
}

impl Sim {
    /// A daemon on `config` (TOML), with `units` as (name, active) at the start.
    fn new(config: &str, units: &[(&str, ActiveState)]) -> Sim {
        Sim::restored(config, units, BTreeMap::new())
    }

    fn restored(
        config: &str,
        units: &[(&str, ActiveState)],
        saved: BTreeMap<UnitName, Episode>,
    ) -> Sim {
        Sim::build(config, units, saved, Mode::Daemon)
    }

    fn build(
        config: &str,
        units: &[(&str, ActiveState)],
        saved: BTreeMap<UnitName, Episode>,
        mode: Mode,
    ) -> Sim {
        let saved = Saved {
            episodes: saved,
            holds: BTreeMap::new(),
        };
        Sim::with_saved(config, units, saved, mode)
    }

    fn with_saved(config: &str, units: &[(&str, ActiveState)], saved: Saved, mode: Mode) -> Sim {
        let settings = config::parse(Path::new("/sim.toml"), config).expect("valid config");
        let at0 = Instant::now();
        let wall0 = Timestamp::from_second(MONDAY_7AM).unwrap();
        let now = Now {
            at: at0,
            wall: wall0,
        };
        let (engine, actions) = Engine::new(settings, saved, mode, 42, &now);
        let mut sim = Sim {
            engine,
            at0,
            wall0,
            table: units
                .iter()
                .map(|(n, a)| (name(n), obs(*a, sub_of(*a))))
                .collect(),
            on_restart: BTreeMap::new(),
            deaths: Vec::new(),
            inbox: VecDeque::new(),
            restarts: Vec::new(),
            lines: Vec::new(),
            alerts: Vec::new(),
            persisted: Vec::new(),
            saved: Saved::default(),
            polls: Vec::new(),
            probe_fails: BTreeMap::new(),
            probes: Vec::new(),
            held_probes: None,
            recoveries: Vec::new(),
            readings: Vec::new(),
        };
        sim.carry(actions);
        sim.feed(Input::Connected);
        sim
    }

    fn now(&self) -> Now {
        let at = Instant::now();
        Now {
            at,
            wall: add(self.wall0, at - self.at0),
        }
    }

    fn elapsed(&self) -> Duration {
        Instant::now() - self.at0
    }

    fn feed(&mut self, input: Input) {
        self.inbox.push_back(input);
        while let Some(input) = self.inbox.pop_front() {
            let actions = self.engine.handle(input, &self.now());
            self.carry(actions);
        }
    }

    fn carry(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Poll { names, patterns } => {
                    self.polls.push(self.elapsed());
                    let listing = Listing {
                        by_name: names.iter().map(|n| Some(self.row(n))).collect(),
                        asked: names,
                    };
                    let more = self.engine.handle(Input::Listed(listing), &self.now());
                    self.carry(more);
                    let by_pattern = self.by_pattern(&patterns);
                    let more = self
                        .engine
                        .handle(Input::Polled { by_pattern }, &self.now());
                    self.carry(more);
                }
                Action::Confirm(n) => {
                    let fresh = self.row(&n);
                    let more = self.engine.handle(
                        Input::Confirmed {
                            name: n,
                            fresh: Some(fresh),
                        },
                        &self.now(),
                    );
                    self.carry(more);
                }
                Action::Read(n) => {
                    let rows = vec![self.row(&n)];
                    let more = self.engine.handle(Input::Discovered(rows), &self.now());
                    self.carry(more);
                }
                Action::Restart { unit, .. } => self.restart(unit),
                Action::CheckResources(_) => {
                    let readings = self.readings.clone();
                    self.inbox.push_back(Input::ResourcesRead(readings));
                }
                Action::Recover { unit, recovery } => {
                    self.recoveries.push((unit.clone(), self.elapsed()));
                    self.on_restart.insert(unit.clone(), OnRestart::Starts);
                    self.inbox.push_back(Input::RecoveryDone {
                        name: unit,
                        ok: true,
                        detail: format!("{} finished (done)", recovery.unit),
                    });
                }
                Action::Probe { unit, .. } => {
                    self.probes.push((unit.clone(), self.elapsed()));
                    match &mut self.held_probes {
                        Some(held) => held.push(unit),
                        None => {
                            let input = self.probe_answer(unit);
                            self.inbox.push_back(input);
                        }
                    }
                }
                Action::Persist(saved) => {
                    self.persisted.push(saved.episodes.clone());
                    self.saved = saved;
                }
                Action::Log(line) => self.lines.push(*line),
                Action::Alert(ev) => self.alerts.push(*ev),
                Action::Subscribe | Action::Follow(..) | Action::Unwatch(_) | Action::Ready => {}
            }
        }
    }

    fn probe_answer(&self, unit: UnitName) -> Input {
        let outcome = match self.probe_fails.get(&unit) {
            Some(why) => crate::probe::ProbeOutcome {
                ok: false,
                detail: why.clone(),
                took: Duration::from_millis(3),
            },
            None => crate::probe::ProbeOutcome {
                ok: true,
                detail: "HTTP 200 OK".into(),
                took: Duration::from_millis(1),
            },
        };
        Input::Probed {
            name: unit,
            outcome,
        }
    }

    fn probes_of(&self, unit: &str) -> Vec<Duration> {
        let n = name(unit);
        self.probes
            .iter()
            .filter(|(u, _)| *u == n)
            .map(|(_, at)| *at)
            .collect()
    }

    fn row(&self, n: &UnitName) -> UnitStatus {
        let observation = self.table.get(n).cloned().unwrap_or_else(|| {
            Observation::new(
                LoadState::NotFound,
                ActiveState::Inactive,
                SubState::new("dead"),
            )
        });
        UnitStatus {
            name: n.clone(),
            observation,
        }
    }

    fn by_pattern(&self, patterns: &[String]) -> Vec<UnitStatus> {
        let globs: Vec<UnitPattern> = patterns
            .iter()
            .map(|p| UnitPattern::parse(p).unwrap())
            .collect();
        self.table
            .keys()
            .filter(|n| globs.iter().any(|g| g.matches(n)))
            .map(|n| self.row(n))
            .collect()
    }

    /// The unit changes state, and systemd signals it.
    fn set(&mut self, unit: &str, active: ActiveState) {
        let n = name(unit);
        self.change(n, active);
        self.feed_inbox();
    }

    /// The table changes, and the signal systemd would send about it is queued.
    fn change(&mut self, n: UnitName, active: ActiveState) {
        self.table.insert(n.clone(), obs(active, sub_of(active)));
        self.inbox.push_back(Input::Signal(Signal::Unit {
            name: n,
            update: UnitUpdate {
                active: Some(active),
                sub: Some(SubState::new(sub_of(active))),
                ..UnitUpdate::default()
            },
        }));
    }

    fn feed_inbox(&mut self) {
        while let Some(input) = self.inbox.pop_front() {
            let actions = self.engine.handle(input, &self.now());
            self.carry(actions);
        }
    }

    fn restart(&mut self, unit: UnitName) {
        self.restarts.push(Restart {
            unit: unit.to_string(),
            at: self.elapsed(),
        });
        let how = self
            .on_restart
            .get(&unit)
            .copied()
            .unwrap_or(OnRestart::Starts);
        let (active, result) = match how {
            OnRestart::Starts => (ActiveState::Active, JobResult::Done),
            OnRestart::Fails => (ActiveState::Failed, JobResult::Failed),
            OnRestart::StartsThenDies(after) => {
                let at = self.now().after(after);
                self.deaths.push((at, unit.clone()));
                (ActiveState::Active, JobResult::Done)
            }
        };
        self.change(unit.clone(), active);
        self.inbox.push_back(Input::JobDone {
            name: unit,
            outcome: JobOutcome::Ended(result),
        });
    }

    /// Lets time pass for `d`, serving every timer the engine asks for on the way.
    async fn run_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        for _ in 0..100_000 {
            self.feed_inbox();
            let now = self.now();
            let mut wake = self.engine.wake_at(&now);
            if let Some((death, _)) = self.deaths.iter().min_by_key(|(t, _)| *t) {
                wake = wake.min(*death);
            }
            if wake > end {
                tokio::time::sleep_until(end).await;
                return;
            }
            tokio::time::sleep_until(wake).await;
            let now = Instant::now();
            let due: Vec<UnitName> = self
                .deaths
                .iter()
                .filter(|(t, _)| *t <= now)
                .map(|(_, n)| n.clone())
                .collect();
            self.deaths.retain(|(t, _)| *t > now);
            for n in due {
                self.set(n.as_str(), ActiveState::Failed);
            }
            self.feed(Input::Timer);
        }
        panic!("the engine kept asking to be woken without time passing");
    }

    /// Drives it as `once` does: timers until the engine says it is done (or 100 turns).
    async fn run_until_settled(&mut self) {
        for _ in 0..100 {
            if self.engine.settled(&self.now()) {
                return;
            }
            let wake = self.engine.wake_at(&self.now());
            tokio::time::sleep_until(wake).await;
            self.feed(Input::Timer);
        }
    }

    fn restarts_of(&self, unit: &str) -> Vec<Duration> {
        let full = name(unit).to_string();
        self.restarts
            .iter()
            .filter(|r| r.unit == full)
            .map(|r| r.at)
            .collect()
    }

    fn lines_with(&self, unit: &str, action: Option<&str>, message: &str) -> Vec<&Line> {
        let full = name(unit);
        self.lines
            .iter()
            .filter(|l| l.unit.as_ref() == Some(&full))
            .filter(|l| action.is_none() || l.action == action)
            .filter(|l| l.message.contains(message))
            .collect()
    }

    fn alerts_of(&self, kind: EventKind) -> Vec<&Event> {
        self.alerts.iter().filter(|e| e.kind == kind).collect()
    }
}

#[cfg(test)]
mod operator;
#[cfg(test)]
mod probes;

fn sub_of(a: ActiveState) -> &'static str {
    match a {
        ActiveState::Active => "running",
        ActiveState::Failed => "failed",
        ActiveState::Inactive => "dead",
        ActiveState::Activating => "start",
        _ => "dead",
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// `d` within ±10 % (the jitter) of `want`.
fn about(d: Duration, want: f64) -> bool {
    let d = d.as_secs_f64();
    d >= want * 0.9 - 1e-6 && d <= want * 1.1 + 1e-6
}

const BASE: &str = "[daemon]\ninterval = \"60s\"\n[restart]\nbackoff_initial = \"5s\"\nbackoff_multiplier = 2.0\nbackoff_max = \"15s\"\nverify_after = \"10s\"\nreset_after = \"10m\"\n";

#[tokio::test(start_paused = true)]
async fn backoff_spaces_the_attempts_then_the_unit_is_given_up() {
    let cfg = format!("{BASE}give_up_cooldown = \"never\"\n[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    sim.on_restart.insert(name("web"), OnRestart::Fails);
    sim.set("web", ActiveState::Failed);
    sim.run_for(secs(3600.0)).await;
    let at = sim.restarts_of("web");
    assert_eq!(at.len(), 3, "exactly max_attempts: {at:?}");
    // Attempt 1 after ~5 s; 2 after ~10 s more; 3 after ~15 s (the cap) more.
    assert!(about(at[0], 5.0), "{at:?}");
    assert!(about(at[1] - at[0], 10.0), "{at:?}");
    assert!(about(at[2] - at[1], 15.0), "{at:?}");
    assert_eq!(sim.lines_with("web", Some("give_up"), "giving up").len(), 1);
    let gave_up = sim.alerts_of(EventKind::GaveUp);
    assert_eq!(gave_up.len(), 1);
    assert_eq!(gave_up[0].attempt, Some((3, 3)));
    assert!(
        gave_up[0].next.contains("`unitwarden retry web.service`"),
        "the way out is named: {}",
        gave_up[0].next
    );
    assert!(
        sim.engine
            .status_line(&sim.now())
            .contains("1 gave up (web)")
    );
}

#[tokio::test(start_paused = true)]
async fn after_give_up_cooldown_a_new_episode_starts_at_attempt_one() {
    let cfg =
        format!("{BASE}max_attempts = 1\ngive_up_cooldown = \"1h\"\n[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    sim.on_restart.insert(name("web"), OnRestart::Fails);
    sim.set("web", ActiveState::Failed);
    sim.run_for(secs(600.0)).await;
    assert_eq!(sim.restarts_of("web").len(), 1);
    let given_up_at = sim.restarts_of("web")[0];
    sim.run_for(secs(3600.0)).await;
    let at = sim.restarts_of("web");
    assert_eq!(at.len(), 2, "{at:?}");
    // The cooldown counts from the give-up, then attempt 1 follows its own backoff.
    assert!(about(at[1] - given_up_at - secs(3600.0), 5.0), "{at:?}");
    assert_eq!(sim.lines_with("web", Some("retry"), "new episode").len(), 1);
    assert_eq!(
        sim.lines_with("web", Some("restart"), "restarting")
            .iter()
            .map(|l| l.attempt)
            .collect::<Vec<_>>(),
        vec![Some((1, 1)), Some((1, 1))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_counts_only_once_verified_and_an_early_death_fails_it() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    // Dies 2 s after each start: before verify_after (10 s).
    sim.on_restart
        .insert(name("web"), OnRestart::StartsThenDies(secs(2.0)));
    sim.set("web", ActiveState::Failed);
    sim.run_for(secs(6.0)).await;
    assert_eq!(sim.restarts_of("web").len(), 1);
    assert!(sim.alerts_of(EventKind::Restarted).is_empty());
    sim.run_for(secs(2.0)).await;
    let failed = sim.lines_with(
        "web",
        Some("restart"),
        "restart attempt failed: unit failed again",
    );
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempt, Some((1, 3)));
    // Now it starts and stays: restarted is told only after verify_after.
    sim.on_restart.insert(name("web"), OnRestart::Starts);
    sim.run_for(secs(12.0)).await;
    let at = sim.restarts_of("web");
    assert_eq!(at.len(), 2);
    let done = sim.lines_with("web", Some("restart"), "still active after verify_after");
    assert!(done.is_empty(), "not before verify_after");
    sim.run_for(secs(10.0)).await;
    let done = sim.lines_with("web", Some("restart"), "still active after verify_after");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].attempt, Some((2, 3)));
    assert_eq!(sim.alerts_of(EventKind::Restarted).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn healthy_for_reset_after_ends_the_episode() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    sim.set("web", ActiveState::Failed);
    sim.run_for(secs(60.0)).await;
    sim.set("web", ActiveState::Failed);
    sim.run_for(secs(60.0)).await;
    // Two deaths within reset_after: one episode, attempts 1 and 2.
    let attempts: Vec<_> = sim
        .lines_with("web", Some("restart"), "restarting")
        .iter()
        .map(|l| l.attempt)
        .collect();
    assert_eq!(attempts, vec![Some((1, 3)), Some((2, 3))]);
    assert!(
        sim.lines_with("web", None, "attempt counter reset")
            .is_empty()
    );
    sim.run_for(secs(600.0)).await;
    assert_eq!(
        sim.lines_with("web", None, "attempt counter reset").len(),
        1
    );
    assert!(
        sim.persisted.last().unwrap().is_empty(),
        "the episode is gone from disk"
    );
    sim.set("web", ActiveState::Failed);
    sim.run_for(secs(60.0)).await;
    let last = sim.lines_with("web", Some("restart"), "restarting");
    assert_eq!(
        last.last().unwrap().attempt,
        Some((1, 3)),
        "a fresh episode"
    );
}

#[tokio::test(start_paused = true)]
async fn each_attempt_is_on_disk_before_it_is_made() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    sim.on_restart.insert(name("web"), OnRestart::Fails);
    sim.set("web", ActiveState::Failed);
    let now = sim.now();
    let actions = {
        // Step to the first attempt by hand to see the order of actions within the turn.
        tokio::time::sleep_until(sim.engine.wake_at(&now)).await;
        sim.engine.handle(Input::Timer, &sim.now())
    };
    let persist = actions.iter().position(
        |a| matches!(a, Action::Persist(saved) if saved.episodes.values().any(|e| e.attempts == 1)),
    );
    let restart = actions
        .iter()
        .position(|a| matches!(a, Action::Restart { .. }));
    assert!(persist.is_some() && restart.is_some(), "{actions:#?}");
    assert!(persist < restart, "{actions:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_restored_episode_continues_its_count_and_its_give_up() {
    let cfg = format!(
        "{BASE}give_up_cooldown = \"never\"\n[[unit]]\nname = \"web\"\n[[unit]]\nname = \"db\"\n"
    );
    let wall0 = Timestamp::from_second(MONDAY_7AM).unwrap();
    let mut saved = BTreeMap::new();
    saved.insert(
        name("web"),
        Episode {
            started: wall0,
            attempts: 2,
            gave_up: None,
            healthy_since: None,
            recovery_ran: false,
        },
    );
    saved.insert(
        name("db"),
        Episode {
            started: wall0,
            attempts: 3,
            gave_up: Some(wall0),
            healthy_since: None,
            recovery_ran: false,
        },
    );
    let mut sim = Sim::restored(
        &cfg,
        &[("web", ActiveState::Failed), ("db", ActiveState::Failed)],
        saved,
    );
    sim.on_restart.insert(name("web"), OnRestart::Fails);
    sim.run_for(secs(3600.0)).await;
    let attempts: Vec<_> = sim
        .lines_with("web", Some("restart"), "restarting")
        .iter()
        .map(|l| l.attempt)
        .collect();
    assert_eq!(attempts, vec![Some((3, 3))]);
    assert!(
        sim.restarts_of("db").is_empty(),
        "a persisted give-up holds"
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_takes_effect_at_its_boundary_not_at_the_next_old_tick() {
    // Opens 07:30 UTC on this Monday, 30 minutes in; base interval 1 h.
    let cfg = "[daemon]\ninterval = \"1h\"\n[[window]]\nname = \"rush\"\ndays = [\"mon\"]\nstart = \"07:30\"\nend = \"08:30\"\ntimezone = \"UTC\"\ninterval = \"10s\"\n[[unit]]\nname = \"web\"\n";
    let mut sim = Sim::new(cfg, &[("web", ActiveState::Active)]);
    sim.run_for(secs(1799.0)).await;
    assert_eq!(
        sim.polls,
        vec![Duration::ZERO],
        "one poll before the window"
    );
    sim.run_for(secs(31.0)).await;
    let started = sim
        .lines
        .iter()
        .find(|l| l.message == "critical window started")
        .expect("window start line");
    assert_eq!(started.window.as_deref(), Some("rush"));
    assert_eq!(started.interval, Some(secs(10.0)));
    assert_eq!(
        sim.polls[1..],
        [secs(1800.0), secs(1810.0), secs(1820.0), secs(1830.0)],
        "polls every 10 s from the boundary on"
    );
    assert!(sim.engine.status_line(&sim.now()).contains("window rush"));
    // 08:30: back to the hourly poll, counted from the last one.
    sim.run_for(secs(3600.0 + 3600.0 - 30.0)).await;
    assert!(
        sim.lines
            .iter()
            .any(|l| l.message == "critical window ended")
    );
    let after: Vec<_> = sim.polls.iter().filter(|p| **p >= secs(5400.0)).collect();
    assert_eq!(after, [&secs(5390.0 + 3600.0)]);
}

#[tokio::test(start_paused = true)]
async fn a_dependent_waits_for_its_dependency_to_be_verified() {
    let cfg =
        format!("{BASE}[[unit]]\nname = \"db\"\n[[unit]]\nname = \"app\"\ndepends_on = [\"db\"]\n");
    let mut sim = Sim::new(
        &cfg,
        &[("db", ActiveState::Active), ("app", ActiveState::Active)],
    );
    // The database crashes at start twice before it comes up for good.
    sim.on_restart
        .insert(name("db"), OnRestart::StartsThenDies(secs(3.0)));
    sim.set("db", ActiveState::Failed);
    sim.set("app", ActiveState::Failed);
    sim.run_for(secs(12.0)).await;
    sim.on_restart.insert(name("db"), OnRestart::Starts);
    sim.run_for(secs(120.0)).await;
    let db = sim.restarts_of("db");
    let app = sim.restarts_of("app");
    assert!(db.len() >= 2, "{db:?}");
    assert_eq!(app.len(), 1, "{app:?}");
    let verified = sim.lines_with("db", Some("restart"), "still active after verify_after");
    assert_eq!(verified.len(), 1);
    // The app went only after the database's last start had held for verify_after, and at
    // once then (not at the next poll).
    assert_eq!(
        app[0],
        *db.last().unwrap() + secs(10.0),
        "db {db:?}, app {app:?}"
    );
    let waits = sim.lines_with("app", Some("wait_dependency"), "");
    assert!(!waits.is_empty());
    assert_eq!(
        sim.lines_with("app", Some("restart"), "restarting")[0].attempt,
        Some((1, 3)),
        "waiting spent no attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dependency_that_gives_up_releases_its_dependent() {
    let cfg = format!(
        "{BASE}max_attempts = 1\ngive_up_cooldown = \"never\"\n[[unit]]\nname = \"db\"\n[[unit]]\nname = \"app\"\ndepends_on = [\"db\"]\n"
    );
    let mut sim = Sim::new(
        &cfg,
        &[("db", ActiveState::Active), ("app", ActiveState::Active)],
    );
    sim.on_restart.insert(name("db"), OnRestart::Fails);
    sim.set("db", ActiveState::Failed);
    sim.set("app", ActiveState::Failed);
    sim.run_for(secs(120.0)).await;
    assert_eq!(sim.lines_with("db", Some("give_up"), "").len(), 1);
    assert_eq!(sim.restarts_of("app").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn reload_keeps_episodes_of_units_still_configured() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n[[unit]]\nname = \"old\"\n");
    let mut sim = Sim::new(
        &cfg,
        &[("web", ActiveState::Active), ("old", ActiveState::Active)],
    );
    sim.on_restart.insert(name("web"), OnRestart::Fails);
    sim.set("web", ActiveState::Failed);
    sim.run_for(secs(6.0)).await;
    assert_eq!(sim.restarts_of("web").len(), 1);
    let new = config::parse(
        Path::new("/sim.toml"),
        &format!("{BASE}max_attempts = 3\n[[unit]]\nname = \"web\"\n"),
    )
    .unwrap();
    sim.feed(Input::Reload(Box::new(new)));
    assert_eq!(sim.lines_with("old", None, "no longer configured").len(), 1);
    assert!(
        sim.lines
            .iter()
            .any(|l| l.message == "configuration reloaded")
    );
    sim.run_for(secs(60.0)).await;
    let attempts: Vec<_> = sim
        .lines_with("web", Some("restart"), "restarting")
        .iter()
        .map(|l| l.attempt)
        .collect();
    assert_eq!(attempts, vec![Some((1, 3)), Some((2, 3)), Some((3, 3))]);
    assert!(!sim.persisted.last().unwrap().contains_key(&name("old")));
}

#[tokio::test(start_paused = true)]
async fn a_refused_reload_keeps_the_old_config_and_says_so() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    sim.feed(Input::ReloadFailed(
        "/sim.toml:2:1: unknown field `intervall`".into(),
    ));
    assert_eq!(sim.alerts_of(EventKind::ConfigReloadFailed).len(), 1);
    assert!(
        sim.engine
            .status_line(&sim.now())
            .ends_with("config reload failed")
    );
    sim.set("web", ActiveState::Failed);
    sim.run_for(secs(30.0)).await;
    assert_eq!(sim.restarts_of("web").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn systemd_restarting_a_unit_again_and_again_is_flapping_once() {
    let cfg = "[restart]\nflap_restarts = 3\nflap_window = \"1m\"\n[[unit]]\nname = \"flappy\"\n";
    let mut sim = Sim::new(cfg, &[("flappy", ActiveState::Active)]);
    for n in 0..8u32 {
        sim.inbox.push_back(Input::Signal(Signal::Unit {
            name: name("flappy"),
            update: UnitUpdate {
                n_restarts: Some(n),
                ..UnitUpdate::default()
            },
        }));
        sim.run_for(secs(2.0)).await;
    }
    assert_eq!(sim.alerts_of(EventKind::Flapping).len(), 1);
    assert!(sim.restarts.is_empty(), "left to systemd");
}

#[tokio::test(start_paused = true)]
async fn a_unit_systemd_is_moving_is_never_acted_on() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    // Fails, but by the time the fresh read is made systemd is restarting it itself.
    sim.table
        .insert(name("web"), obs(ActiveState::Activating, "auto-restart"));
    sim.inbox.push_back(Input::Signal(Signal::Unit {
        name: name("web"),
        update: UnitUpdate {
            active: Some(ActiveState::Failed),
            sub: Some(SubState::new("failed")),
            ..UnitUpdate::default()
        },
    }));
    sim.run_for(secs(120.0)).await;
    assert!(sim.restarts.is_empty());
    assert_eq!(sim.lines_with("web", Some("wait_systemd"), "").len(), 1);
    assert!(sim.alerts_of(EventKind::Down).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_glob_picks_up_a_started_instance_but_not_one_merely_loaded() {
    let cfg = format!("{BASE}[[unit]]\nname = \"worker@*\"\n");
    let mut sim = Sim::new(&cfg, &[]);
    sim.table
        .insert(name("worker@typo"), obs(ActiveState::Inactive, "dead"));
    sim.feed(Input::Signal(Signal::UnitNew(name("worker@typo"))));
    sim.table
        .insert(name("worker@blue"), obs(ActiveState::Active, "running"));
    sim.feed(Input::Signal(Signal::UnitNew(name("worker@blue"))));
    assert_eq!(
        sim.lines_with("worker@blue", None, "watching new unit")
            .len(),
        1
    );
    assert!(sim.lines_with("worker@typo", None, "").is_empty());
    sim.set("worker@blue", ActiveState::Failed);
    sim.run_for(secs(30.0)).await;
    assert_eq!(sim.restarts_of("worker@blue").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn once_settles_after_the_attempts_and_their_verification() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n[[unit]]\nname = \"beat\"\n");
    let mut sim = Sim::build(
        &cfg,
        &[
            ("web", ActiveState::Failed),
            ("beat", ActiveState::Activating),
        ],
        BTreeMap::new(),
        Mode::Once,
    );
    assert!(!sim.engine.settled(&sim.now()), "an attempt is due");
    sim.run_until_settled().await;
    assert!(sim.engine.settled(&sim.now()));
    // Done when web's attempt (after its ~5 s backoff) has been verified (10 s later); the unit
    // systemd is moving was waited for only up to the longest verify_after, already past.
    assert_eq!(sim.elapsed(), sim.restarts_of("web")[0] + secs(10.0));
    let report = sim.engine.once_report();
    assert_eq!(
        report.lines,
        [
            "beat.service activating/start DOWN",
            "web.service active/running",
        ]
    );
    assert!(!report.all_ok);
}

#[tokio::test(start_paused = true)]
async fn once_does_not_wait_forever_behind_a_dependency_systemd_keeps_moving() {
    let cfg =
        format!("{BASE}[[unit]]\nname = \"db\"\n[[unit]]\nname = \"app\"\ndepends_on = [\"db\"]\n");
    let mut sim = Sim::build(
        &cfg,
        &[
            ("db", ActiveState::Activating),
            ("app", ActiveState::Failed),
        ],
        BTreeMap::new(),
        Mode::Once,
    );
    sim.run_until_settled().await;
    assert!(sim.engine.settled(&sim.now()), "once must end");
    assert_eq!(sim.elapsed(), secs(10.0), "after the longest verify_after");
    assert!(
        sim.restarts.is_empty(),
        "app never went against a db still starting"
    );
    assert!(!sim.engine.once_report().all_ok);
}

#[tokio::test(start_paused = true)]
async fn an_alias_of_a_unit_watched_under_its_own_name_is_not_watched_twice() {
    let cfg = format!("{BASE}[[unit]]\nname = \"mariadb\"\n[[unit]]\nname = \"mysql\"\n");
    let settings = config::parse(Path::new("/sim.toml"), &cfg).unwrap();
    let at0 = Instant::now();
    let now = Now {
        at: at0,
        wall: Timestamp::from_second(MONDAY_7AM).unwrap(),
    };
    let (mut engine, _) = Engine::new(settings, Saved::default(), Mode::Daemon, 1, &now);
    // As the manager answers: `mysql` is listed under the real unit's name.
    let row = |n: &str| {
        Some(UnitStatus {
            name: name(n),
            observation: obs(ActiveState::Active, "running"),
        })
    };
    let listing = Listing {
        asked: vec![name("mariadb"), name("mysql")],
        by_name: vec![row("mariadb"), row("mariadb")],
    };
    let actions = engine.handle(Input::Listed(listing), &now);
    assert!(engine.watches(&name("mariadb")));
    assert!(!engine.watches(&name("mysql")));
    assert!(actions.contains(&Action::Unwatch(name("mysql"))));
    assert!(!actions.iter().any(|a| matches!(a, Action::Follow(..))));
}
