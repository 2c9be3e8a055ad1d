//! One accepted config through the engine for a simulated day, on tokio's paused clock, with
//! the wall clock at an extreme but valid instant. Random news from a simulated manager goes
//! in (listings with odd states, signals, job ends, operators' requests, reloads, a restart of
//! the daemon); every action is answered as the shell would answer it, and what the shell
//! does with the rest (log fields, status lines, the alert planner, the state file, the
//! control socket's replies) is done too. A panic anywhere is a finding, and so is a hang:
//! the engine asking to be woken, again and again, at a moment that has already come.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use tokio::time::Instant;

use unitwarden::alert::batch::{Planner, Rules, State as AlertState};
use unitwarden::alert::render::{self, Context, Excerpt};
use unitwarden::clock::{Now, add, later};
use unitwarden::config::{self, EmailSettings, Settings};
use unitwarden::control::protocol::{Reply, Request};
use unitwarden::control::render::{self as table, Colour};
use unitwarden::logging::format_duration;
use unitwarden::monitor::engine::{Action, Engine, Input, Listing, Mode};
use unitwarden::policy::JobOutcome;
use unitwarden::state::{Saved, Store};
use unitwarden::systemd::{JobPath, Signal, UnitStatus, UnitUpdate};
use unitwarden::unit::{
    ActiveState, JobResult, LoadState, Observation, ServiceResult, SubState, UnitName, UnitPattern,
};

use crate::generate;
use crate::mutate;
use crate::rng::Rng;
use crate::trace;

const DAY: Duration = Duration::from_secs(86_400);
/// Timers in a row at one moment before the engine counts as spinning: the shell would wake
/// at once each time, a busy loop.
const SPIN_LIMIT: usize = 50;
/// Actions one input may cause (answers included) before it counts as a runaway.
const ACTION_LIMIT: usize = 200_000;
/// Names per `ListUnitsByNames` call, as the shell batches them.
const POLL_BATCH: usize = 256;

/// What a day found worth counting.
#[derive(Default, Clone, Copy)]
pub struct DayStats {
    pub inputs: u64,
    pub restarts: u64,
    /// The most timers one moment took before the engine's next wake was in the future.
    pub max_rewakes: usize,
}

/// The instant the wall clock starts at, as (label, time): the ends of the range a daemon can
/// see, the 2038 rollover, DST changes in zones with odd rules, a skipped day, leap days.
pub fn start_instant(rng: &mut Rng) -> (String, Timestamp) {
    let before = |ts: &str, rng: &mut Rng| -> Timestamp {
        let t: Timestamp = ts.parse().expect("a valid instant");
        t.checked_sub(SignedDuration::from_secs(rng.between(0, 6 * 3600) as i64))
            .unwrap_or(t)
    };
    let max_minus_day = Timestamp::MAX
        .checked_sub(SignedDuration::from_hours(24))
        .expect("a day before the end");
    let (label, t) = match rng.below(16) {
        0 => ("1970", Timestamp::UNIX_EPOCH),
        1 => (
            "1970-ish",
            Timestamp::from_second(rng.between(0, 3 * 86_400) as i64).unwrap(),
        ),
        2 => ("2038", before("2038-01-19T03:14:07Z", rng)),
        3 => ("max-1d", max_minus_day),
        4 => (
            "max-1d+",
            max_minus_day
                .checked_add(SignedDuration::from_secs(rng.between(0, 86_399) as i64))
                .unwrap(),
        ),
        5 => ("eu-spring", before("2026-03-29T01:00:00Z", rng)),
        6 => ("eu-autumn", before("2026-10-25T01:00:00Z", rng)),
        7 => ("us-spring", before("2026-03-08T07:00:00Z", rng)),
        8 => ("us-autumn", before("2026-11-01T06:00:00Z", rng)),
        9 => ("lord-howe", before("2026-04-04T15:00:00Z", rng)),
        10 => ("apia-2011", before("2011-12-30T10:00:00Z", rng)),
        11 => ("troll", before("2026-03-29T01:00:00Z", rng)),
        12 => ("leap-2024", before("2024-02-29T00:00:00Z", rng)),
        13 => ("leap-2000", before("2000-02-29T12:00:00Z", rng)),
        14 => ("not-leap-2100", before("2100-03-01T00:00:00Z", rng)),
        _ => (
            "random",
            Timestamp::from_second(rng.between(0, 253_402_000_000) as i64).unwrap(),
        ),
    };
    (label.to_string(), t)
}

/// Runs the day. `pool` holds other accepted configs, for reloads.
pub fn run(seed: u64, text: &str, settings: Settings, pool: &[String]) -> DayStats {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a paused runtime");
    rt.block_on(async move {
        let mut day = Day::new(seed, text, settings, pool);
        day.run().await;
        day.stats
    })
}

struct Job {
    name: UnitName,
    due: Instant,
    outcome: JobOutcome,
    /// What the unit is once the job is over.
    then: ActiveState,
}

struct Day<'a> {
    rng: Rng,
    text: String,
    engine: Engine,
    mode: Mode,
    pool: &'a [String],
    /// The wall clock reads `wall_base` at `at_base` and keeps pace from there (until the
    /// simulated NTP steps it).
    at_base: Instant,
    wall_base: Timestamp,
    end: Instant,
    /// When the engine last asked for a poll: the next one is due within the configured
    /// `interval` of it, whatever happens, or the daemon is blind.
    last_poll: Option<Instant>,
    table: BTreeMap<UnitName, Observation>,
    jobs: Vec<Job>,
    next_job: u64,
    alerts: Option<Alerts>,
    state_dir: Option<tempfile::TempDir>,
    host_tz: TimeZone,
    stats: DayStats,
}

/// The alert task's pure part, fed as the shell feeds it.
struct Alerts {
    planner: Planner,
    settings: EmailSettings,
}

impl Alerts {
    fn new(settings: &EmailSettings, state: AlertState) -> Alerts {
        let mut n = 0u64;
        let ids = Box::new(move |at: Timestamp| {
            n += 1;
            format!("<{n}.{}@fuzz>", at.as_second())
        });
        Alerts {
            planner: Planner::new(Rules::from_settings(settings), state, ids),
            settings: settings.clone(),
        }
    }
}

impl<'a> Day<'a> {
    fn new(seed: u64, text: &str, settings: Settings, pool: &'a [String]) -> Day<'a> {
        let mut rng = Rng::new(seed);
        let (label, wall0) = start_instant(&mut rng);
        trace::note(|| format!("wall clock starts at {wall0} ({label})"));
        let mode = if rng.percent(10) {
            Mode::Once
        } else {
            Mode::Daemon
        };
        let at0 = Instant::now();
        let now = Now {
            at: at0,
            wall: wall0,
        };
        let alerts = settings
            .email
            .as_ref()
            .map(|e| Alerts::new(e, AlertState::default()));
        let mut table = BTreeMap::new();
        populate(&mut rng, &settings, &mut table);
        for _ in 0..rng.below(3) {
            if let Ok(n) = UnitName::parse(&generate::unit_name(&mut rng, false, false)) {
                table.insert(n, observation(&mut rng));
            }
        }
        let saved = saved_state(&mut rng, &settings, wall0);
        let (engine, actions) = Engine::new(settings, saved, mode, rng.next_u64(), &now);
        let mut day = Day {
            rng,
            text: text.to_string(),
            engine,
            mode,
            pool,
            at_base: at0,
            wall_base: wall0,
            end: at0 + DAY,
            last_poll: None,
            table,
            jobs: Vec::new(),
            next_job: 1,
            alerts,
            state_dir: None,
            host_tz: TimeZone::system(),
            stats: DayStats::default(),
        };
        day.carry(actions);
        day
    }

    fn now(&self) -> Now {
        let at = Instant::now();
        Now {
            at,
            wall: add(self.wall_base, at - self.at_base),
        }
    }

    async fn run(&mut self) {
        self.feed(Input::Connected);
        let steps = 30 + self.rng.below(170);
        for step in 0..steps {
            if Instant::now() >= self.end {
                break;
            }
            match self.rng.below(1000) {
                0..=469 => self.advance(steps - step).await,
                470..=659 => self.unit_changes(true),
                660..=689 => self.unit_changes(false),
                690..=749 => self.manager_news(),
                750..=769 => self.feed(Input::Connected),
                770..=829 => self.operator(),
                830..=854 => self.reload(),
                855..=869 => {
                    let why = generate::evil_string(&mut self.rng);
                    self.feed(Input::ReloadFailed(why));
                }
                870..=874 => self.restart_daemon(),
                875..=884 => self.step_wall_clock(),
                _ => self.finish_jobs(true),
            }
        }
        if self.mode == Mode::Once {
            for _ in 0..200 {
                if self.engine.settled(&self.now()) {
                    break;
                }
                self.advance(1).await;
            }
            self.engine.once_report();
        } else {
            let left = self.end.saturating_duration_since(Instant::now());
            tokio::time::advance(left).await;
            self.timer();
        }
        self.feed(Input::Stopping);
        self.shell_side();
    }

    /// Lets time pass to the engine's next deadline, a job's end, or (as a shell that was
    /// late, suspended or busy would) some way beyond, then serves what is due.
    async fn advance(&mut self, steps_left: usize) {
        let now = self.now();
        let mut target = self.engine.wake_at(&now);
        if let Some(job) = self.jobs.iter().map(|j| j.due).min() {
            target = target.min(job);
        }
        if self.rng.percent(40) {
            let left = self.end.saturating_duration_since(now.at);
            let stride = left / steps_left.max(1) as u32;
            target = target.max(now.at + stride.mul_f64(self.rng.below(300) as f64 / 100.0));
        }
        let target = target.min(self.end).max(now.at);
        tokio::time::advance(target - now.at).await;
        self.finish_jobs(false);
        let now = self.now();
        if self.engine.wake_at(&now) <= now.at {
            self.timer();
        }
    }

    /// `Input::Timer`, then more at the same moment for as long as the engine asks to be
    /// woken at or before it, as the shell's `sleep_until` would.
    fn timer(&mut self) {
        for rewakes in 0..=SPIN_LIMIT {
            self.feed(Input::Timer);
            let now = self.now();
            let wake = self.engine.wake_at(&now);
            if wake > now.at {
                self.stats.max_rewakes = self.stats.max_rewakes.max(rewakes);
                if let Some(last) = self.last_poll {
                    let interval = self.engine.settings().daemon.interval;
                    assert!(
                        wake <= later(last, interval),
                        "blind: the next wake {wake:?} is past the last poll {last:?} + interval {interval:?}"
                    );
                }
                return;
            }
        }
        let now = self.now();
        panic!(
            "hang: after {SPIN_LIMIT} timers at {} the engine still asks to be woken at {:?} (now {:?})",
            now.wall,
            self.engine.wake_at(&now),
            now.at
        );
    }

    /// One input, and everything it leads to, carried out as the shell carries it out.
    fn feed(&mut self, input: Input) {
        trace::input(&input);
        self.stats.inputs += 1;
        let actions = self.engine.handle(input, &self.now());
        self.carry(actions);
        self.shell_side();
    }

    /// Carries out `actions` in order; an answer's own actions come before the rest.
    fn carry(&mut self, actions: Vec<Action>) {
        let mut todo = actions;
        todo.reverse();
        let mut done = 0usize;
        while let Some(action) = todo.pop() {
            done += 1;
            assert!(
                done <= ACTION_LIMIT,
                "runaway: more than {ACTION_LIMIT} actions from one input"
            );
            for input in self.answer(action) {
                trace::input(&input);
                let more = self.engine.handle(input, &self.now());
                todo.extend(more.into_iter().rev());
            }
        }
    }

    /// What the shell feeds back for `action` (nothing for most), after doing its own part.
    fn answer(&mut self, action: Action) -> Vec<Input> {
        let now = self.now();
        match action {
            Action::Poll { names, patterns } => {
                self.last_poll = Some(now.at);
                self.poll(names, &patterns)
            }
            Action::Confirm(name) => {
                let fresh = self.rng.percent(92).then(|| self.row(&name));
                vec![Input::Confirmed { name, fresh }]
            }
            Action::Read(name) => match self.rng.percent(92) {
                true => vec![Input::Discovered(vec![self.row(&name)])],
                false => Vec::new(),
            },
            Action::Restart { unit, .. } => {
                self.stats.restarts += 1;
                self.start_job(unit);
                Vec::new()
            }
            Action::Persist(saved) if self.rng.percent(10) => {
                // What the state file holds: it must come back as it went in.
                let episodes = serde_json::to_string(&saved.episodes).unwrap();
                let holds = serde_json::to_string(&saved.holds).unwrap();
                assert_eq!(
                    serde_json::from_str::<BTreeMap<_, _>>(&episodes).unwrap(),
                    saved.episodes
                );
                assert_eq!(
                    serde_json::from_str::<BTreeMap<_, _>>(&holds).unwrap(),
                    saved.holds
                );
                Vec::new()
            }
            Action::Persist(_) => Vec::new(),
            Action::Log(line) => {
                // What `monitor::emit` renders of a line's fields.
                line.delay.map(format_duration);
                line.interval.map(format_duration);
                Vec::new()
            }
            Action::Alert(ev) => {
                if self.alerts.is_some() && self.rng.percent(10) {
                    // What the outbox and alerts.json hold: it must read back.
                    let json = serde_json::to_string(&ev).unwrap();
                    let back: unitwarden::alert::Event = serde_json::from_str(&json).unwrap();
                    assert_eq!(back, *ev);
                }
                if let Some(a) = &mut self.alerts {
                    a.planner.push(*ev, now.wall);
                }
                Vec::new()
            }
            Action::Ready => {
                self.engine.status_line(&now);
                Vec::new()
            }
            Action::CheckResources(settings) => {
                let mut readings = unitwarden::resources::all_unreadable(&settings, "x\ny");
                for r in &mut readings {
                    if self.rng.percent(80) {
                        r.value = Ok(self.rng.below(1001) as f64 / 1000.0);
                    }
                }
                vec![Input::ResourcesRead(readings)]
            }
            Action::Recover { unit, .. } => {
                let ok = self.rng.percent(60);
                vec![Input::RecoveryDone {
                    name: unit,
                    ok,
                    detail: if ok {
                        "finished (done)"
                    } else {
                        "failed \u{7}"
                    }
                    .into(),
                }]
            }
            Action::Probe { unit, probe } => {
                let ok = self.rng.percent(70);
                vec![Input::Probed {
                    name: unit,
                    outcome: unitwarden::probe::ProbeOutcome {
                        ok,
                        detail: if ok {
                            "HTTP 200 OK"
                        } else {
                            "HTTP 500 \u{1b}[31m\nX"
                        }
                        .into(),
                        took: probe
                            .timeout
                            .min(Duration::from_millis(self.rng.below(5000) as u64)),
                    },
                }]
            }
            Action::Subscribe | Action::Follow(..) | Action::Unwatch(_) => Vec::new(),
        }
    }

    /// The shell's part between turns: the status line for `sd_notify`, and the alert task's
    /// planner, due batches rendered into emails.
    fn shell_side(&mut self) {
        let now = self.now();
        self.engine.status_line(&now);
        let Some(a) = &mut self.alerts else {
            return;
        };
        if let Some(t) = a.planner.next_deadline() {
            // How the alert task turns the deadline into a sleep.
            let _ = Duration::try_from(t.duration_since(now.wall));
        }
        let all = self.rng.percent(2);
        if (a.planner.poll(now.wall) || all)
            && let Some(draft) = a.planner.flush(now.wall)
        {
            let mut journal = BTreeMap::new();
            if let Some(u) = draft.units().first() {
                journal.insert(
                    (*u).clone(),
                    Excerpt {
                        command: format!("journalctl -u {u}"),
                        lines: Ok(vec![generate::evil_string(&mut self.rng)]),
                    },
                );
            }
            let ctx = Context {
                host: "fuzz-host",
                prefix: &a.settings.subject_prefix,
                tz: &self.host_tz,
                min_interval: a.settings.min_interval,
                remind_after: &a.settings.remind_after,
                journal_lines: a.settings.journal_lines,
                journal: &journal,
            };
            render::subject(&draft, &ctx);
            render::body(&draft, &ctx);
        }
    }

    /// A poll answered in batches, each by name (a name systemd cannot find is `not-found`),
    /// then the globs; now and then a batch comes back short, an alias answers for a name, or
    /// the call fails (then the poll ends there, as the shell's does).
    fn poll(&mut self, names: Vec<UnitName>, patterns: &[String]) -> Vec<Input> {
        let mut out = Vec::new();
        for batch in names.chunks(POLL_BATCH) {
            if self.rng.percent(2) {
                return out;
            }
            let asked = batch.to_vec();
            let by_name = if self.rng.percent(2) {
                asked.iter().map(|_| None).collect()
            } else {
                asked
                    .iter()
                    .map(|n| {
                        let mut row = self.row(n);
                        if self.rng.percent(2) {
                            // An alias: the manager answers with the real unit's name.
                            let other = self
                                .table
                                .keys()
                                .nth(self.rng.below(self.table.len().max(1)));
                            row.name = match other {
                                Some(o) if self.rng.percent(50) => o.clone(),
                                _ => UnitName::parse("mariadb").unwrap(),
                            };
                        }
                        Some(row)
                    })
                    .collect()
            };
            out.push(Input::Listed(Listing { asked, by_name }));
        }
        if self.rng.percent(2) {
            return out;
        }
        let globs: Vec<UnitPattern> = patterns
            .iter()
            .filter_map(|p| UnitPattern::parse(p).ok())
            .collect();
        let by_pattern = self
            .table
            .iter()
            .filter(|(n, o)| o.load == LoadState::Loaded && globs.iter().any(|g| g.matches(n)))
            .map(|(n, o)| UnitStatus {
                name: n.clone(),
                observation: o.clone(),
            })
            .collect();
        out.push(Input::Polled { by_pattern });
        out
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

    /// Our restart job goes out: the manager announces it, and it ends some time later.
    fn start_job(&mut self, name: UnitName) {
        let path = JobPath::from_bus(&format!("/org/freedesktop/systemd1/job/{}", self.next_job));
        self.next_job += 1;
        let r = &mut self.rng;
        let outcome = match r.below(12) {
            0..=5 => JobOutcome::Ended(JobResult::Done),
            6..=7 => JobOutcome::Ended(JobResult::Failed),
            8 => JobOutcome::Ended(JobResult::parse(r.pick(&[
                "canceled",
                "timeout",
                "dependency",
                "skipped",
                "invalid",
                "assert",
                "unsupported",
                "collected",
                "once",
                "new-in-systemd-300",
                "",
            ]))),
            9 => JobOutcome::Refused(generate::evil_string(r)),
            _ => JobOutcome::Lost,
        };
        let then = match (&outcome, r.below(5)) {
            (JobOutcome::Ended(JobResult::Done), 0) => ActiveState::Activating,
            (JobOutcome::Ended(JobResult::Done), 1) => ActiveState::Failed,
            (JobOutcome::Ended(JobResult::Done) | JobOutcome::Lost, _) => ActiveState::Active,
            _ => ActiveState::Failed,
        };
        let after = match r.below(4) {
            0 => Duration::ZERO,
            1 => Duration::from_millis(r.between(1, 999)),
            2 => Duration::from_secs(r.between(1, 120)),
            _ => Duration::from_secs(r.between(1, 4 * 3600)),
        };
        if !matches!(outcome, JobOutcome::Refused(_)) && self.rng.percent(70) {
            self.feed(Input::Signal(Signal::JobNew {
                name: name.clone(),
                job: path,
            }));
        }
        self.jobs.push(Job {
            name,
            due: self.now().after(after),
            outcome,
            then,
        });
    }

    /// Ends the jobs that are due (or, with `early`, one job at random: the manager may answer
    /// sooner than planned): the unit's new state is signalled, then the job's end.
    fn finish_jobs(&mut self, early: bool) {
        let now = Instant::now();
        let due: Vec<usize> = if early {
            match self.jobs.len() {
                0 => return,
                n => vec![self.rng.below(n)],
            }
        } else {
            (0..self.jobs.len())
                .filter(|i| self.jobs[*i].due <= now)
                .collect()
        };
        for i in due.into_iter().rev() {
            let job = self.jobs.remove(i);
            if !matches!(job.outcome, JobOutcome::Refused(_)) {
                let mut obs = self.table.get(&job.name).cloned().unwrap_or_else(|| {
                    Observation::new(
                        LoadState::Loaded,
                        job.then,
                        SubState::new(sub_for(job.then)),
                    )
                });
                obs.active = job.then;
                obs.sub = SubState::new(sub_for(job.then));
                obs.job_pending = false;
                self.table.insert(job.name.clone(), obs);
                if self.rng.percent(85) {
                    self.feed(Input::Signal(Signal::Unit {
                        name: job.name.clone(),
                        update: UnitUpdate {
                            active: Some(job.then),
                            sub: Some(SubState::new(sub_for(job.then))),
                            job_pending: Some(false),
                            ..UnitUpdate::default()
                        },
                    }));
                }
            }
            self.feed(Input::JobDone {
                name: job.name,
                outcome: job.outcome,
            });
        }
    }

    /// A unit moves: a new state, a crash systemd heals (`NRestarts` jumps), a queued job.
    fn unit_changes(&mut self, signalled: bool) {
        let name = match self.pick_unit() {
            Some(n) => n,
            None => return,
        };
        let update = unit_update(&mut self.rng, self.table.get(&name));
        let obs = self.table.entry(name.clone()).or_insert_with(|| {
            Observation::new(
                LoadState::Loaded,
                ActiveState::Inactive,
                SubState::new("dead"),
            )
        });
        update.apply(obs);
        if signalled {
            self.feed(Input::Signal(Signal::Unit { name, update }));
        }
    }

    fn pick_unit(&mut self) -> Option<UnitName> {
        if self.table.is_empty() || self.rng.percent(5) {
            return UnitName::parse(&generate::unit_name(&mut self.rng, false, false)).ok();
        }
        self.table
            .keys()
            .nth(self.rng.below(self.table.len()))
            .cloned()
    }

    /// Other news from the manager: a unit loaded (a glob's new instance), a reload, a
    /// re-exec, jobs an operator queued, the host shutting down.
    fn manager_news(&mut self) {
        let sig = match self.rng.below(20) {
            0..=4 => {
                let globs: Vec<String> = self
                    .engine
                    .settings()
                    .units
                    .iter()
                    .filter_map(|u| match &u.pattern {
                        UnitPattern::Glob(g) => Some(g.clone()),
                        UnitPattern::Exact(_) => None,
                    })
                    .collect();
                let name = match globs.is_empty() {
                    false => {
                        let g = self.rng.pick_ref(&globs).clone();
                        instance_of(&mut self.rng, &g)
                    }
                    true => None,
                };
                let Some(name) = name.or_else(|| self.pick_unit()) else {
                    return;
                };
                if self.rng.percent(70) {
                    let obs = observation(&mut self.rng);
                    self.table.insert(name.clone(), obs);
                }
                Signal::UnitNew(name)
            }
            5..=6 => Signal::Reloaded,
            7 => Signal::ManagerRestarted,
            8..=14 => {
                let Some(name) = self.pick_unit() else { return };
                let job = JobPath::from_bus(&format!(
                    "/org/freedesktop/systemd1/job/f{}",
                    self.rng.below(4)
                ));
                if let Some(o) = self.table.get_mut(&name) {
                    o.job_pending = true;
                }
                Signal::JobNew { name, job }
            }
            15..=18 => {
                let Some(name) = self.pick_unit() else { return };
                let job = JobPath::from_bus(&format!(
                    "/org/freedesktop/systemd1/job/f{}",
                    self.rng.below(4)
                ));
                let stopped = self.rng.percent(60);
                if let Some(o) = self.table.get_mut(&name) {
                    o.job_pending = false;
                    if stopped {
                        o.active = ActiveState::Inactive;
                        o.sub = SubState::new("dead");
                    }
                }
                let result = JobResult::parse(self.rng.pick(&["done", "canceled", "failed"]));
                Signal::JobRemoved { name, job, result }
            }
            _ => Signal::ShuttingDown,
        };
        self.feed(Input::Signal(sig));
    }

    /// An operator's request over the control socket; the reply is serialised and read back
    /// as the client reads it, and a status report is rendered as `unitwarden status` does.
    fn operator(&mut self) {
        let units: Vec<String> = (0..self.rng.below(4))
            .map(|_| self.operator_arg())
            .collect();
        let request = match self.rng.below(4) {
            0 => Request::Status {
                unit: self.rng.percent(50).then(|| self.operator_arg()),
            },
            1 => Request::Pause {
                units,
                for_ms: match self.rng.below(6) {
                    0 => None,
                    1 => Some(0),
                    2 => Some(u64::MAX),
                    3 => Some(self.rng.next_u64()),
                    4 => Some(self.rng.between(1, 86_400_000 * 2)),
                    _ => Some(i64::MAX as u64),
                },
            },
            2 => Request::Resume { units },
            _ => Request::Retry { units },
        };
        trace::note(|| format!("control {request:?}"));
        let now = self.now();
        let (reply, actions) = self.engine.control(request, &now);
        self.carry(actions);
        self.shell_side();
        let json = serde_json::to_string(&reply).unwrap();
        let back: Reply = serde_json::from_str(&json).unwrap();
        if let Some(report) = &back.status {
            let tz = &self.host_tz;
            table::table(report, Colour::No, tz);
            table::table(report, Colour::Yes, tz);
            for u in report.units.iter().take(3) {
                table::detail(report, u, tz);
            }
        }
    }

    fn operator_arg(&mut self) -> String {
        let r = &mut self.rng;
        match r.below(10) {
            0..=4 => match self.table.keys().nth(r.below(self.table.len().max(1))) {
                Some(n) if r.percent(50) => n.as_str().trim_end_matches(".service").to_string(),
                Some(n) => n.to_string(),
                None => "web".into(),
            },
            5..=6 => r
                .pick(&["*", "*.service", "web*", "?", "[", "[!a]*", "**", "*@*"])
                .to_string(),
            7 => generate::unit_name(r, true, true),
            8 => generate::evil_string(r),
            _ => "nonexistent".into(),
        }
    }

    /// SIGHUP: another accepted config (from the pool or a mutation of this one), or the
    /// refusal of a bad one.
    fn reload(&mut self) {
        let candidate = match (self.pool.is_empty(), self.rng.percent(50)) {
            (false, true) => self.rng.pick_ref(self.pool).clone(),
            _ => mutate::mutate(&mut self.rng, &self.text, ""),
        };
        match config::parse(Path::new("/fuzz/reload.toml"), &candidate) {
            Ok(settings) => {
                trace::note(|| format!("reload to:\n{candidate}"));
                populate(&mut self.rng, &settings, &mut self.table);
                self.text = candidate;
                self.feed(Input::Reload(Box::new(settings)));
            }
            Err(e) => self.feed(Input::ReloadFailed(e.to_string())),
        }
    }

    /// unitwarden stops and starts again: the state goes through the real state file, the
    /// alert planner's through JSON, and the new engine starts from them.
    fn restart_daemon(&mut self) {
        self.feed(Input::Stopping);
        let dir = self.state_dir.get_or_insert_with(|| {
            let shm = Path::new("/dev/shm");
            match shm.is_dir() {
                true => tempfile::tempdir_in(shm),
                false => tempfile::tempdir(),
            }
            .expect("a temporary state_dir")
        });
        let mut store = Store::new(dir.path());
        store.save(&self.engine.saved());
        let saved = store.load();
        assert_eq!(
            saved,
            self.engine.saved(),
            "the state file gives back what was saved"
        );
        let settings = config::parse(Path::new("/fuzz/restart.toml"), &self.text)
            .expect("the running config is accepted again");
        if let (Some(a), Some(e)) = (&self.alerts, &settings.email) {
            let json = serde_json::to_string(a.planner.state()).unwrap();
            let state: AlertState = serde_json::from_str(&json).unwrap();
            self.alerts = Some(Alerts::new(e, state));
        } else {
            self.alerts = settings
                .email
                .as_ref()
                .map(|e| Alerts::new(e, AlertState::default()));
        }
        trace::note(|| "daemon restarted".into());
        let seed = self.rng.next_u64();
        let (engine, actions) = Engine::new(settings, saved, self.mode, seed, &self.now());
        self.engine = engine;
        self.last_poll = None;
        self.carry(actions);
        self.feed(Input::Connected);
    }

    /// The wall clock is stepped (NTP, an operator, a dead RTC battery); the monotonic clock
    /// is not.
    fn step_wall_clock(&mut self) {
        let now = self.now();
        let step = |h: i64| now.wall.checked_add(SignedDuration::from_hours(h)).ok();
        let to = match self.rng.below(7) {
            0 => step(1),
            1 => step(-1),
            2 => step(-24),
            3 => step(24 * 30),
            4 => step(-24 * 3650),
            5 => Some(Timestamp::UNIX_EPOCH),
            _ => Timestamp::MAX
                .checked_sub(SignedDuration::from_hours(1))
                .ok(),
        };
        if let Some(to) = to {
            trace::note(|| format!("wall clock stepped to {to}"));
            self.at_base = now.at;
            self.wall_base = to;
        }
    }
}

/// The units of `settings` as the manager has them: most configured names exist, and a few
/// instances of each glob run.
fn populate(rng: &mut Rng, settings: &Settings, table: &mut BTreeMap<UnitName, Observation>) {
    for u in &settings.units {
        match &u.pattern {
            UnitPattern::Exact(n) => {
                if !table.contains_key(n) && rng.percent(90) {
                    table.insert(n.clone(), observation(rng));
                }
            }
            UnitPattern::Glob(g) => {
                for _ in 0..rng.below(4) {
                    if let Some(n) = instance_of(rng, g)
                        && u.pattern.matches(&n)
                    {
                        table.entry(n).or_insert_with(|| observation(rng));
                    }
                }
            }
        }
    }
}

/// A name the glob `g` matches, made by filling its wildcards.
fn instance_of(rng: &mut Rng, g: &str) -> Option<UnitName> {
    let mut out = String::new();
    let mut chars = g.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                for _ in 0..rng.below(6) {
                    out.push(rng.pick(&['a', 'b', '1', '-', '_']));
                }
            }
            '?' => out.push('x'),
            '[' => {
                // The first member of the class (good enough for `[12]`, `[a-z]`).
                let class: String = chars.by_ref().take_while(|c| *c != ']').collect();
                out.extend(class.chars().find(|c| *c != '!' && *c != '^'));
            }
            c => out.push(c),
        }
    }
    UnitName::parse(&out).ok()
}

fn sub_for(a: ActiveState) -> &'static str {
    match a {
        ActiveState::Active => "running",
        ActiveState::Failed => "failed",
        ActiveState::Activating => "start",
        ActiveState::Deactivating => "stop-sigterm",
        ActiveState::Reloading => "reload",
        _ => "dead",
    }
}

fn active_state(rng: &mut Rng) -> ActiveState {
    rng.pick(&[
        ActiveState::Active,
        ActiveState::Active,
        ActiveState::Active,
        ActiveState::Failed,
        ActiveState::Failed,
        ActiveState::Inactive,
        ActiveState::Inactive,
        ActiveState::Activating,
        ActiveState::Deactivating,
        ActiveState::Reloading,
        ActiveState::Maintenance,
        ActiveState::Refreshing,
        ActiveState::Unknown,
    ])
}

fn sub_state(rng: &mut Rng, a: ActiveState) -> SubState {
    match rng.below(10) {
        0 => SubState::new("auto-restart"),
        1 => SubState::new(rng.pick(&["exited", "", "weird\nsub", "start-pre", "dead"])),
        _ => SubState::new(sub_for(a)),
    }
}

fn load_state(rng: &mut Rng) -> LoadState {
    match rng.below(14) {
        0 => LoadState::NotFound,
        1 => LoadState::Masked,
        2 => rng.pick(&[
            LoadState::BadSetting,
            LoadState::Error,
            LoadState::Stub,
            LoadState::Merged,
            LoadState::Unknown,
        ]),
        _ => LoadState::Loaded,
    }
}

fn service_result(rng: &mut Rng) -> ServiceResult {
    ServiceResult::parse(rng.pick(&[
        "success",
        "exit-code",
        "signal",
        "core-dump",
        "watchdog",
        "start-limit-hit",
        "timeout",
        "resources",
        "oom-kill",
        "protocol",
        "exec-condition",
        "",
        "new\u{1b}[31m",
    ]))
}

fn exec_main(rng: &mut Rng) -> (i32, i32) {
    let code = rng.pick(&[0, 1, 2, 3, 4, -1, i32::MAX, i32::MIN]);
    let status = rng.pick(&[0, 1, 2, 9, 15, 143, 203, 255, 256, -1, i32::MAX, i32::MIN]);
    (code, status)
}

fn observation(rng: &mut Rng) -> Observation {
    let active = active_state(rng);
    let mut o = Observation::new(load_state(rng), active, sub_state(rng, active));
    o.job_pending = rng.percent(10);
    if rng.percent(50) {
        o.result = Some(service_result(rng));
    }
    if rng.percent(50) {
        o.n_restarts = Some(rng.pick(&[0, 1, 2, 5, 1000, u32::MAX - 1, u32::MAX]));
    }
    if rng.percent(40) {
        o.exec_main = Some(exec_main(rng));
    }
    o
}

fn unit_update(rng: &mut Rng, before: Option<&Observation>) -> UnitUpdate {
    let mut u = UnitUpdate::default();
    if rng.percent(8) {
        u.load = Some(load_state(rng));
    }
    if rng.percent(80) {
        let a = active_state(rng);
        u.active = Some(a);
        u.sub = Some(sub_state(rng, a));
    }
    if rng.percent(30) {
        u.result = Some(service_result(rng));
    }
    if rng.percent(30) {
        let prev = before.and_then(|o| o.n_restarts).unwrap_or(0);
        u.n_restarts = Some(match rng.below(6) {
            0 => 0,
            1 => prev.saturating_add(1000),
            2 => u32::MAX,
            3 => prev.wrapping_sub(1),
            _ => prev.saturating_add(1),
        });
    }
    if rng.percent(20) {
        u.job_pending = Some(rng.percent(50));
    }
    if rng.percent(30) {
        let (c, s) = exec_main(rng);
        u.exec_main_code = Some(c);
        u.exec_main_status = Some(s);
    }
    u
}

/// The episodes and holds of an earlier run, as a state file may hold them: written at another
/// time (the clock was wrong, the file is old), with counts beyond any `max_attempts`.
fn saved_state(rng: &mut Rng, settings: &Settings, wall: Timestamp) -> Saved {
    let mut saved = Saved::default();
    if rng.percent(60) {
        return saved;
    }
    let at = |rng: &mut Rng| -> Timestamp {
        match rng.below(5) {
            0 => wall,
            1 => Timestamp::UNIX_EPOCH,
            2 => Timestamp::MAX,
            3 => Timestamp::MIN,
            _ => add(wall, Duration::from_secs(rng.between(0, 86_400 * 400)))
                .checked_sub(SignedDuration::from_hours(24 * 200))
                .unwrap_or(wall),
        }
    };
    for name in settings.exact_names() {
        if rng.percent(50) {
            saved.episodes.insert(
                name.clone(),
                unitwarden::policy::Episode {
                    started: at(rng),
                    attempts: rng.pick(&[0, 1, 2, 3, 100, u32::MAX]),
                    gave_up: rng.percent(40).then(|| at(rng)),
                    healthy_since: rng.percent(40).then(|| at(rng)),
                    recovery_ran: false,
                },
            );
        }
        if rng.percent(20) {
            let since = at(rng);
            let hold = match rng.below(3) {
                0 => unitwarden::policy::Hold::OperatorStop { since },
                _ => unitwarden::policy::Hold::Paused {
                    since,
                    until: rng.percent(60).then(|| at(rng)),
                },
            };
            saved.holds.insert(name, hold);
        }
    }
    saved
}
