//! The watch loop's decisions, without I/O: events and the time go in, actions come out.
//!
//! [`Engine::handle`] takes one [`Input`] (a decoded systemd signal, a poll's answer, a job's
//! end, a timer, a reload) with [`Now`] and returns the [`Action`]s the shell must carry out,
//! in order: D-Bus calls, state writes, log lines, alerts. [`Engine::wake_at`] says when the
//! next timer is due. The shell (`monitor::Monitor`) owns the bus, the files and the tasks.

mod host;
mod operator;
mod probes;

use std::collections::HashSet;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use tokio::time::Instant;

use super::attempts::Reset;
use super::narrate::{self, Line, Override, Scene};
pub use super::protocol::{Action, Input, Listing, Mode};
use super::registry::{ProbeState, Recent, Registry};
use super::status::{self, OnceReport, Schedule};
use crate::alert::EventKind;
use crate::clock::Now;
use crate::config::{self, Settings};
use crate::policy::{Effect, Episode, Health, Hold, newly_down};
use crate::state::Saved;
use crate::systemd::{Signal, UnitPath, UnitStatus};
use crate::unit::{ActiveState, Observation, UnitName, UnitPattern};

pub struct Engine {
    settings: Settings,
    /// `once` waits for units systemd is moving until then.
    settle_by: Option<Instant>,
    units: Registry,
    interval: Duration,
    next_poll: Instant,
    last_poll: Instant,
    window: Option<String>,
    /// The smallest `failures` of the active windows (`u32::MAX` when none sets one), read at
    /// each window boundary.
    window_failures: u32,
    reload_note: Option<String>,
    /// `READY=1` was sent; later polls after a connect are resynchronisations.
    ready: bool,
    resync: bool,
    /// Episodes changed since the last [`Action::Persist`].
    dirty: bool,
    /// The manager is going down: nothing is restarted any more.
    shutting_down: bool,
    /// When the engine started, for `status`.
    started: Timestamp,
    /// The host's zone, for times in log lines and alerts.
    tz: TimeZone,
    mode: Mode,
    /// Resource checks and pre-flight checks.
    host: host::Host,
    out: Vec<Action>,
}

impl Engine {
    /// Watches every configured name, with the episodes saved by an earlier run. Returns the
    /// actions that route their signals.
    pub fn new(
        settings: Settings,
        saved: Saved,
        mode: Mode,
        seed: u64,
        now: &Now,
    ) -> (Engine, Vec<Action>) {
        let mut e = Engine {
            interval: settings.daemon.interval,
            settings,
            settle_by: None,
            units: Registry::new(seed),
            next_poll: now.at,
            last_poll: now.at,
            window: None,
            window_failures: u32::MAX,
            reload_note: None,
            ready: false,
            resync: false,
            dirty: false,
            shutting_down: false,
            started: now.wall,
            tz: TimeZone::system(),
            mode,
            host: host::Host::default(),
            out: Vec::new(),
        };
        let Saved {
            mut episodes,
            holds,
        } = saved;
        for name in e.settings.exact_names() {
            let ep = episodes.remove(&name);
            e.watch(name, ep, now);
        }
        // Episodes of glob-matched units come back when the unit is seen again.
        for (name, ep) in episodes {
            e.watch(name, Some(ep), now);
        }
        for (name, hold) in holds {
            e.watch(name.clone(), None, now);
            if let Some(w) = e.units.get_mut(&name) {
                w.machine.suspend();
                w.hold = Some(Box::new(hold));
            }
        }
        if mode == Mode::Once {
            e.settle_by = Some(now.after(e.units.max_verify()));
        }
        e.refresh_window(now);
        e.plan_preflight(now);
        let out = std::mem::take(&mut e.out);
        (e, out)
    }

    /// Decides on one input. Time is `now` throughout.
    pub fn handle(&mut self, input: Input, now: &Now) -> Vec<Action> {
        match input {
            Input::Connected => {
                self.resync = self.ready;
                self.poll(now);
            }
            Input::Timer => {
                self.refresh_window(now);
                self.expire_pauses(now);
                self.tick_all(now);
                if now.at >= self.next_poll {
                    self.poll(now);
                }
                self.start_due_probes(now);
                self.check_resources_if_due(now);
                self.preflight_if_due(now);
                self.finish_preflight(now);
            }
            Input::ResourcesRead(readings) => self.resources_read(readings, now),
            Input::Probed { name, outcome } => self.probed(&name, outcome, now),
            Input::RecoveryDone { name, ok, detail } => {
                if let Some(w) = self.units.get_mut(&name) {
                    let fx = w
                        .machine
                        .recovery_finished(&w.settings.policy, ok, detail, now);
                    self.apply(&name, fx, now);
                }
                self.tick_all(now);
            }
            Input::Listed(listing) => self.listed(listing, now),
            Input::Polled { by_pattern } => self.polled(by_pattern, now),
            Input::Signal(sig) => self.signal(sig, now),
            Input::Confirmed { name, fresh } => self.confirmed(name, fresh, now),
            Input::Discovered(rows) => {
                for row in rows {
                    self.observe_listed(row, now);
                }
                self.tick_all(now);
            }
            Input::JobDone { name, outcome } => {
                if let Some(w) = self.units.get_mut(&name) {
                    // A probe's verdict was about the unit before our restart.
                    let mut probe_reset = false;
                    if let (Some(ps), Some(p)) = (w.probe.as_deref_mut(), &w.settings.probe)
                        && ps.down
                    {
                        ps.started(p.grace, now);
                        probe_reset = true;
                    }
                    let fx = w.machine.job_finished(&w.settings.policy, outcome, now);
                    self.apply(&name, fx, now);
                    // A stop queued while our job was out is decided on now, and so is a unit
                    // whose probe verdict the restart cleared.
                    if let Some(obs) = self
                        .units
                        .get(&name)
                        .filter(|w| w.foreign_job.is_some() || probe_reset)
                        .and_then(|w| w.obs.clone())
                    {
                        self.observe(&name, obs, now);
                    }
                }
                self.tick_all(now);
            }
            Input::Reload(settings) => self.reload(*settings, now),
            Input::ReloadFailed(why) => {
                self.log(
                    Line::error(format!(
                        "config reload failed, keeping the running config: {why}"
                    ))
                    .action("reload")
                    .result("failed"),
                );
                self.reload_note = Some("config reload failed".into());
                self.alert_self(
                    EventKind::ConfigReloadFailed,
                    format!("config reload failed, the running config stays: {why}"),
                    now,
                );
            }
            Input::Stopping => {
                self.log(Line::info("stopping"));
                self.alert_self(
                    EventKind::Stopping,
                    format!("unitwarden stopping on {}", config::hostname()),
                    now,
                );
                self.dirty = true;
            }
        }
        self.flush();
        std::mem::take(&mut self.out)
    }

    /// When the engine next needs [`Input::Timer`].
    pub fn wake_at(&self, now: &Now) -> Instant {
        let mut wake = self.next_poll;
        let probing = self.probing();
        for (_, w) in self.units.iter() {
            if let Some(d) = w.machine.next_deadline(&w.settings.policy, now) {
                wake = wake.min(d);
            }
            if let Some(at) = probing.then(|| probes::probe_due_at(w)).flatten() {
                wake = wake.min(at);
            }
            if let Some(until) = w.hold.as_deref().and_then(Hold::until) {
                wake = wake.min(now.instant_of(until));
            }
        }
        if let Some(t) = self.settings.calendar.next_transition(now.wall) {
            wake = wake.min(now.instant_of(t));
        }
        if let Some(at) = self.host_wake(now) {
            wake = wake.min(at);
        }
        if let Some(settle_by) = self.settle_by
            && self.settling(now)
        {
            wake = wake.min(settle_by);
        }
        wake
    }

    /// `once` is done: no attempt is pending, and no unit is being moved by systemd (or the
    /// wait for those is over; then an attempt held back by a dependency that systemd is
    /// still moving is not waited for either).
    pub fn settled(&self, now: &Now) -> bool {
        let waited_enough = self.settle_by.is_some_and(|by| now.at >= by);
        let pending = self.units.iter().any(|(_, w)| {
            w.machine.is_busy() && !(waited_enough && w.machine.waits_for_dependency())
        });
        !pending && !self.settling(now)
    }

    fn settling(&self, now: &Now) -> bool {
        let Some(settle_by) = self.settle_by else {
            return false;
        };
        now.at < settle_by
            && self
                .units
                .iter()
                .any(|(_, w)| w.machine.health() == Some(Health::Systemd))
    }

    pub fn status_line(&self, now: &Now) -> String {
        status::status_line(
            &self.units,
            &Schedule {
                window: self.window.as_deref(),
                interval: self.interval,
                next_check: self.next_poll.saturating_duration_since(now.at),
                note: self.reload_note.as_deref(),
            },
        )
    }

    pub fn once_report(&self) -> OnceReport {
        status::once_report(&self.units)
    }

    /// Whether `name` is watched (signals about other units are not decoded).
    pub fn watches(&self, name: &UnitName) -> bool {
        self.units.contains(name)
    }

    /// The episodes and holds as they stand, for the last write at shutdown.
    pub fn saved(&self) -> Saved {
        Saved {
            episodes: self.units.episodes(),
            holds: self.units.holds(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn log(&mut self, line: Line) {
        self.out.push(Action::Log(Box::new(line)));
    }

    fn alert_self(&mut self, kind: EventKind, detail: String, now: &Now) {
        let ev = narrate::about_self(kind, detail, self.window.as_deref(), now.wall);
        self.out.push(Action::Alert(Box::new(ev)));
    }

    fn flush(&mut self) {
        if std::mem::take(&mut self.dirty) {
            self.out.push(Action::Persist(self.saved()));
        }
    }

    fn watch(&mut self, name: UnitName, episode: Option<Episode>, now: &Now) -> bool {
        let Some(unit) = self.settings.unit_settings(&name) else {
            return false;
        };
        self.units.watch(name, unit, episode, now)
    }

    fn unwatch(&mut self, name: &UnitName) {
        if self.units.unwatch(name) {
            self.out.push(Action::Unwatch(name.clone()));
            self.dirty = true;
        }
    }

    /// The safety net: one call for the named units and one for the globs, whatever their
    /// number. Scheduled before the answer, so a refused poll waits a full interval instead
    /// of spinning.
    fn poll(&mut self, now: &Now) {
        self.last_poll = now.at;
        self.next_poll = now.after(self.interval);
        // Configured names are listed by name (which loads them, so not-found is seen); units
        // a glob picked up are listed by pattern, which shows only what systemd still holds.
        let names = self
            .units
            .iter()
            .filter(|(_, w)| w.settings.is_exact())
            .map(|(n, _)| n.clone())
            .collect();
        let patterns = self
            .settings
            .units
            .iter()
            .filter(|u| matches!(u.pattern, UnitPattern::Glob(_)))
            .map(|u| u.pattern.as_str().to_string())
            .collect();
        self.out.push(Action::Poll { names, patterns });
    }

    fn listed(&mut self, listing: Listing, now: &Now) {
        let Listing { asked, by_name } = listing;
        // One row per name, in order; `None` where the manager's answer could not be paired
        // with the names asked. An alias (`sshd` for `ssh.service`) comes back under the real
        // unit's name: signals for it arrive on that unit's path.
        for (name, row) in asked.into_iter().zip(by_name) {
            let Some(row) = row else { continue };
            if row.name != name
                && (self.units.contains(&row.name)
                    || self
                        .units
                        .iter()
                        .any(|(n, w)| *n != name && w.alias.as_ref() == Some(&row.name)))
            {
                // Two entries for one unit would restart it twice and split its signals.
                let line = Line::warn(format!(
                    "an alias of {}, which is watched already; not watching it twice",
                    row.name
                ))
                .unit(&name);
                self.log(line);
                self.unwatch(&name);
                continue;
            }
            if row.name != name
                && let Some(w) = self.units.get_mut(&name)
                && w.alias.as_ref() != Some(&row.name)
            {
                w.alias = Some(row.name.clone());
                let path = UnitPath::of(&row.name);
                self.out.push(Action::Follow(name.clone(), path));
                let mut line = Line::info(format!("an alias of {}; following that unit", row.name));
                line.unit = Some(name.clone());
                self.log(line);
            }
            self.observe_listed(UnitStatus { name, ..row }, now);
        }
    }

    fn polled(&mut self, by_pattern: Vec<UnitStatus>, now: &Now) {
        let seen: HashSet<UnitName> = by_pattern.iter().map(|r| r.name.clone()).collect();
        for row in by_pattern {
            self.observe_listed(row, now);
        }
        // Glob instances systemd no longer holds (stopped and unloaded) are no longer watched.
        let gone: Vec<UnitName> = self
            .units
            .iter()
            .filter(|(n, w)| !w.settings.is_exact() && !seen.contains(*n) && !w.machine.is_busy())
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            self.log(
                Line::info("unloaded by systemd; no longer watching this instance").unit(&name),
            );
            self.unwatch(&name);
        }
        self.tick_all(now);
        self.preflight_polled(now);
        if !self.ready {
            self.ready = true;
            self.out.push(Action::Ready);
            self.log(
                Line::info("watching")
                    .units(self.units.len())
                    .interval(self.interval),
            );
            let detail = format!(
                "unitwarden started on {}: {}",
                config::hostname(),
                self.status_line(now)
            );
            self.alert_self(EventKind::Started, detail, now);
        } else if std::mem::take(&mut self.resync) {
            self.log(Line::info(
                "connected again to the bus; subscribed and resynchronised",
            ));
        }
    }

    fn observe_listed(&mut self, status: UnitStatus, now: &Now) {
        let UnitStatus {
            name, observation, ..
        } = status;
        if !self.units.contains(&name) {
            if observation.active == ActiveState::Inactive && !observation.job_pending {
                // Merely loaded (`systemctl status celery@typo`): not a unit anyone runs. One
                // being started has its start job queued already when it is announced.
                return;
            }
            if !self.watch(name.clone(), None, now) {
                return;
            }
            let mut line = Line::info("watching new unit").unit(&name);
            line.state = Some(observation.active.to_string());
            self.log(line);
        }
        let Some(w) = self.units.get(&name) else {
            return;
        };
        // A listing carries no Result, NRestarts or exit status: keep what signals told.
        let mut obs = observation;
        if let Some(old) = &w.obs {
            obs.result = old.result.clone();
            obs.n_restarts = old.n_restarts;
            obs.exec_main = old.exec_main;
        }
        self.observe(&name, obs, now);
    }

    fn observe(&mut self, name: &UnitName, obs: Observation, now: &Now) {
        let Some(w) = self.units.get_mut(name) else {
            return;
        };
        let restart_inactive = w.settings.restarts_inactive();
        if w.obs.as_ref().is_none_or(|o| o.active != obs.active) {
            w.since = Some(now.wall);
            if let (Some(ps), Some(p)) = (w.probe.as_deref_mut(), &w.settings.probe) {
                if obs.active == ActiveState::Active {
                    ps.started(p.grace, now);
                } else {
                    ps.stopped();
                }
            }
        }
        let health = probes::with_probe(Health::of(&obs, restart_inactive), w);
        let p = &w.settings.policy;
        let mut fx = Vec::new();
        if let Some(n) = obs.n_restarts
            && w.obs.as_ref().and_then(|o| o.n_restarts) != Some(n)
        {
            fx.extend(w.machine.observe_restarts(p, n, now));
        }
        let before = w.obs.replace(obs);
        let was = before.as_ref().map(|o| Health::of(o, restart_inactive));
        if w.foreign_job.is_some() {
            if w.obs.as_ref().is_some_and(|o| o.job_pending) {
                // Someone else's job is moving the unit; how it ends decides.
                self.apply(name, fx, now);
                return;
            }
            // The job is over (its `JobRemoved` may have been missed): decide now.
            w.foreign_job = None;
            if health == Health::Down
                && w.hold.is_none()
                && w.obs
                    .as_ref()
                    .is_some_and(|o| o.active == ActiveState::Inactive)
            {
                w.hold = Some(Box::new(Hold::OperatorStop { since: now.wall }));
                w.machine.suspend();
                self.dirty = true;
                self.apply(name, fx, now);
                self.tell_override(name, Override::OperatorStop, now);
                return;
            }
        }
        match w.hold.as_deref() {
            Some(Hold::OperatorStop { .. }) => {
                let started = w.obs.as_ref().is_some_and(|o| {
                    matches!(
                        o.active,
                        ActiveState::Active | ActiveState::Activating | ActiveState::Reloading
                    )
                });
                if !started {
                    self.apply(name, fx, now);
                    return;
                }
                w.hold = None;
                w.machine.resume();
                self.dirty = true;
                self.tell_override(name, Override::StartedAgain, now);
            }
            Some(Hold::Paused { until, .. }) => {
                let until = *until;
                self.apply(name, fx, now);
                if health == Health::Down && was != Some(Health::Down) {
                    self.tell_override(name, Override::DownWhilePaused { until }, now);
                }
                return;
            }
            None => {}
        }
        let Some(w) = self.units.get_mut(name) else {
            return;
        };
        fx.extend(w.machine.observe(&w.settings.policy, health, now));
        self.apply(name, fx, now);
    }

    /// Tells (log line, alert) what an operator did to `name` or what happened under a hold.
    fn tell_override(&mut self, name: &UnitName, what: Override, now: &Now) {
        let Some(w) = self.units.get(name) else {
            return;
        };
        let scene = Scene {
            unit: name,
            obs: w.obs.as_ref(),
            policy: &w.settings.policy,
            window: self.window.as_deref(),
            min_interval: None,
            probe: probes::probe_error(w),
            recovery: w.settings.recovery.as_ref().map(|r| &r.unit),
            wall: now.wall,
        };
        let told = narrate::overridden(&scene, &what, &self.tz);
        self.remember(name, &told.line, now);
        self.out.push(Action::Log(Box::new(told.line)));
        if let Some(ev) = told.event {
            self.out.push(Action::Alert(Box::new(ev)));
        }
    }

    /// Keeps `line` in the unit's recent history for `status UNIT`.
    fn remember(&mut self, name: &UnitName, line: &Line, now: &Now) {
        if let Some(w) = self.units.get_mut(name) {
            let mut text = line.message.clone();
            if let Some((k, n)) = line.attempt {
                text = format!("{text} (attempt {k}/{n})");
            }
            w.remember(Recent {
                at: now.wall,
                action: line.action,
                text: text.into(),
            });
        }
    }

    /// Pauses whose time is up end by themselves.
    fn expire_pauses(&mut self, now: &Now) {
        let due: Vec<UnitName> = self
            .units
            .iter()
            .filter(|(_, w)| {
                w.hold
                    .as_deref()
                    .and_then(Hold::until)
                    .is_some_and(|t| t <= now.wall)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.release(&name, Override::Resumed { expired: true }, now);
        }
    }

    /// Ends `name`'s hold: told, then the unit's current state is decided on afresh.
    fn release(&mut self, name: &UnitName, why: Override, now: &Now) -> bool {
        let Some(w) = self.units.get_mut(name) else {
            return false;
        };
        if w.hold.take().is_none() {
            return false;
        }
        w.machine.resume();
        self.dirty = true;
        self.tell_override(name, why, now);
        if let Some(obs) = self.units.get(name).and_then(|w| w.obs.clone())
            && !self.shutting_down
        {
            self.observe(name, obs, now);
        }
        true
    }

    fn signal(&mut self, sig: Signal, now: &Now) {
        match sig {
            Signal::Unit { name, update } => {
                let Some(w) = self.units.get_mut(&name) else {
                    return;
                };
                let Some(mut obs) = w.obs.clone() else {
                    // No full picture yet; the poll that follows subscription provides it.
                    return;
                };
                update.apply(&mut obs);
                if Some(&obs) == w.obs.as_ref() {
                    return;
                }
                let health =
                    probes::with_probe(Health::of(&obs, w.settings.restarts_inactive()), w);
                let decides = w.hold.is_none() && w.foreign_job.is_none() && !self.shutting_down;
                if decides && newly_down(w.machine.health(), health) {
                    w.unconfirmed = Some(Box::new(obs));
                    self.out.push(Action::Confirm(name));
                    return;
                }
                self.observe(&name, obs, now);
                self.tick_all(now);
            }
            Signal::UnitNew(name) => {
                if !self.units.contains(&name) && self.settings.entry_for(&name).is_some() {
                    self.out.push(Action::Read(name));
                }
            }
            Signal::Reloaded => self.poll(now),
            Signal::JobNew { name, job } => {
                if let Some(w) = self.units.get_mut(&name)
                    && !w.machine.job_running()
                {
                    w.foreign_job = Some(Box::new(job));
                }
            }
            Signal::JobRemoved { name, job, .. } => {
                if let Some(w) = self.units.get(&name)
                    && w.foreign_job.as_deref() == Some(&job)
                    && let Some(mut obs) = w.obs.clone()
                {
                    // The unit's own signals came before this one: its state is final.
                    obs.job_pending = false;
                    self.observe(&name, obs, now);
                    self.tick_all(now);
                }
            }
            Signal::ShuttingDown => {
                if !self.shutting_down {
                    self.shutting_down = true;
                    for name in self.units.names() {
                        if let Some(w) = self.units.get_mut(&name) {
                            w.machine.suspend();
                        }
                    }
                    self.log(
                        Line::info("the manager is shutting down; restarting nothing from now on")
                            .action("shutdown"),
                    );
                }
            }
            Signal::ManagerRestarted => {
                self.log(Line::info("systemd manager restarted; subscribing again"));
                self.out.push(Action::Subscribe);
                self.poll(now);
            }
        }
    }

    fn confirmed(&mut self, name: UnitName, fresh: Option<UnitStatus>, now: &Now) {
        let Some(w) = self.units.get_mut(&name) else {
            return;
        };
        let Some(mut obs) = w.unconfirmed.take().map(|o| *o) else {
            return;
        };
        if let Some(fresh) = fresh {
            let f = fresh.observation;
            obs.load = f.load;
            obs.active = f.active;
            obs.sub = f.sub;
            obs.job_pending = f.job_pending;
        }
        self.observe(&name, obs, now);
        self.tick_all(now);
    }

    /// Lets every machine act on the time. A unit's change (a dependency verified, given up)
    /// can free another, whatever their order, so passes repeat until one changes nothing.
    fn tick_all(&mut self, now: &Now) {
        for _ in 0..=self.units.len() {
            let mut changed = false;
            for name in self.units.due(now) {
                let deps = self.units.deps(&name);
                let Some(w) = self.units.get_mut(&name) else {
                    continue;
                };
                let fx = w.machine.tick(&w.settings.policy, &deps, now);
                changed |= !fx.is_empty();
                self.apply(&name, fx, now);
            }
            if !changed {
                break;
            }
        }
    }

    /// Carries out one unit's effects: narration, state writes before attempts, attempts.
    fn apply(&mut self, name: &UnitName, fx: Vec<Effect>, now: &Now) {
        if fx.is_empty() {
            return;
        }
        let Some(w) = self.units.get(name) else {
            return;
        };
        // A window may ask for a stricter alert repeat suppression while it lasts.
        let min_interval = self.settings.email.as_ref().and_then(|e| {
            let m = self
                .settings
                .calendar
                .effective_min_interval(now.wall, e.min_interval);
            (m != e.min_interval).then_some(m)
        });
        let scene = Scene {
            unit: name,
            obs: w.obs.as_ref(),
            policy: &w.settings.policy,
            window: self.window.as_deref(),
            min_interval,
            probe: probes::probe_error(w),
            recovery: w.settings.recovery.as_ref().map(|r| &r.unit),
            wall: now.wall,
        };
        let told = narrate::narrate(&scene, &fx);
        let reset = if w
            .obs
            .as_ref()
            .is_some_and(|o| o.active == ActiveState::Failed)
        {
            Reset::Failed
        } else {
            Reset::None
        };
        // Lines and alerts first, in the machine's order; the attempt goes out last, after the
        // episode that counts it is on disk (a killed watchdog never repeats an attempt).
        for t in told {
            self.remember(name, &t.line, now);
            self.out.push(Action::Log(Box::new(t.line)));
            if let Some(ev) = t.event {
                self.out.push(Action::Alert(Box::new(ev)));
            }
        }
        for e in &fx {
            match e {
                Effect::Persist => self.dirty = true,
                Effect::Attempt { .. } => {
                    self.flush();
                    self.out.push(Action::Restart {
                        unit: name.clone(),
                        reset,
                    });
                }
                Effect::Recover => {
                    self.flush();
                    if let Some(r) = self
                        .units
                        .get(name)
                        .and_then(|w| w.settings.recovery.clone())
                    {
                        self.out.push(Action::Recover {
                            unit: name.clone(),
                            recovery: r,
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Switches the effective interval at window boundaries: the next poll moves to
    /// `last poll + new interval`, not to the old schedule.
    fn refresh_window(&mut self, now: &Now) {
        let cal = &self.settings.calendar;
        let base = self.settings.daemon.interval;
        let interval = cal.effective_interval(now.wall, base).min(base);
        let mode = cal.mode(now.wall);
        self.window_failures = cal.effective_failures(now.wall, u32::MAX);
        if mode != self.window {
            let line = match &mode {
                Some(w) => Line::info("critical window started").window(w.clone()),
                None => Line::info("critical window ended")
                    .window(self.window.clone().unwrap_or_else(|| "-".into())),
            };
            self.log(line.interval(interval));
            self.window = mode;
        }
        if interval != self.interval {
            self.interval = interval;
            self.next_poll = crate::clock::later(self.last_poll, interval).max(now.at);
        }
    }

    fn reload(&mut self, new: Settings, now: &Now) {
        let mut new = new;
        if new.daemon.bus != self.settings.daemon.bus
            || new.daemon.state_dir != self.settings.daemon.state_dir
            || new.daemon.control_socket != self.settings.daemon.control_socket
        {
            self.log(Line::warn(
                "bus, state_dir and control_socket changes take effect when unitwarden restarts",
            ));
        }
        if new.email.is_some() || self.settings.email.is_some() {
            // The alert task is built once at start, from the settings it was given then.
            self.log(Line::info(
                "[email] changes, if any, take effect when unitwarden restarts",
            ));
        }
        if new.alertmanager != self.settings.alertmanager {
            self.log(Line::warn(
                "[alertmanager] changes take effect when unitwarden restarts",
            ));
        }
        new.daemon.bus = self.settings.daemon.bus;
        new.daemon.state_dir = self.settings.daemon.state_dir.clone();
        new.daemon.control_socket = self.settings.daemon.control_socket.clone();
        self.settings = new;
        self.reload_note = None;
        // Units still configured keep their machines (and episodes) under their new rules.
        for name in self.units.names() {
            match self.settings.unit_settings(&name) {
                Some(unit) => {
                    if let Some(w) = self.units.get_mut(&name) {
                        // A probe added or taken away; one that stays keeps its count.
                        match (&unit.probe, w.probe.is_some()) {
                            (None, true) => w.probe = None,
                            (Some(_), false) => w.probe = Some(Box::new(ProbeState::new(now))),
                            _ => {}
                        }
                        w.settings = unit;
                    }
                }
                None => {
                    self.unwatch(&name);
                    self.log(Line::info("no longer configured; not watching").unit(&name));
                }
            }
        }
        for name in self.settings.exact_names() {
            self.watch(name, None, now);
        }
        self.interval = self.settings.daemon.interval;
        self.window = None;
        self.refresh_window(now);
        self.host.reloaded();
        self.plan_preflight(now);
        self.dirty = true;
        self.flush();
        self.poll(now);
        let line = Line::info("configuration reloaded")
            .action("reload")
            .result("ok")
            .units(self.units.len());
        self.log(line);
        self.out.push(Action::Ready);
    }
}
