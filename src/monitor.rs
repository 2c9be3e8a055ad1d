//! The watch loop: feeds systemd's signals and polls into each unit's [`UnitMachine`], carries
//! out what the machines decide (restart jobs, log lines, state writes), and keeps systemd told
//! of our status.
//!
//! One task owns all unit state; restart jobs run as separate tasks and report back, so a slow
//! job never delays detection of another unit.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::alert::{Alerts, Event, EventKind};
use crate::config::{self, Settings};
use crate::logging::{LogHandle, format_duration};
use crate::notify::{self, Notifier};
use crate::policy::{Deps, Effect, Episode, Health, JobOutcome, RestartPolicy, UnitMachine};
use crate::state::Store;
use crate::systemd::{Signal, Signals, Systemd, SystemdError, UnitStatus};
use crate::unit::{ActiveState, Observation, UnitName, UnitPattern};

/// How long a restart job may stay queued or running before we stop waiting for its
/// `JobRemoved` and let the unit's state after `verify_after` decide.
const JOB_WAIT: Duration = Duration::from_secs(300);
/// Bound on waiting for in-flight restart jobs at shutdown.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Requests from outside the loop (signals today; the control socket later).
#[derive(Debug)]
pub enum Command {
    Reload,
}

/// Whether the loop runs until stopped or makes one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Daemon,
    Once,
}

struct Watched {
    /// Index of the `[[unit]]` entry that selected this unit.
    entry: usize,
    machine: UnitMachine,
    obs: Option<Observation>,
}

#[derive(Clone, Debug)]
struct JobDone {
    job: String,
    result: String,
}

pub struct Engine {
    settings: Settings,
    log: Option<LogHandle>,
    units: BTreeMap<UnitName, Watched>,
    by_path: HashMap<String, UnitName>,
    store: Store,
    notifier: Notifier,
    jobs: broadcast::Sender<JobDone>,
    attempts: JoinSet<(UnitName, JobOutcome)>,
    next_poll: Instant,
    last_poll: Instant,
    interval: Duration,
    mode_name: Option<String>,
    reload_note: Option<String>,
    seed: u64,
    /// Attempts decided but not yet started: they need the bus, which the pure paths lack.
    pending: Vec<(UnitName, u32, u32)>,
    alerts: Alerts,
    /// Bumped whenever `by_path` changes, so the signal filter is refreshed.
    paths_gen: u64,
    /// Episodes changed since the last write of `state.json`.
    dirty: bool,
}

/// The outcome of `once`: whether every watched unit ended healthy.
pub struct OnceReport {
    pub lines: Vec<String>,
    pub all_ok: bool,
}

impl Engine {
    pub fn new(settings: Settings, log: Option<LogHandle>, alerts: Alerts) -> Engine {
        let store = Store::new(&settings.daemon.state_dir);
        let (jobs, _) = broadcast::channel(256);
        let now = Instant::now();
        let interval = settings.daemon.interval;
        let seed = std::process::id() as u64 ^ Timestamp::now().as_nanosecond() as u64;
        Engine {
            settings,
            log,
            units: BTreeMap::new(),
            by_path: HashMap::new(),
            store,
            notifier: Notifier::from_env(),
            jobs,
            attempts: JoinSet::new(),
            next_poll: now,
            last_poll: now,
            interval,
            mode_name: None,
            reload_note: None,
            seed,
            pending: Vec::new(),
            alerts,
            paths_gen: 0,
            dirty: false,
        }
    }

    /// The daemon: runs until `shutdown` resolves. `commands` carries reload requests.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut commands: tokio::sync::mpsc::Receiver<Command>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        self.restore();
        self.refresh_window();
        let mut ready_sent = false;
        let mut reconnect_delay = Duration::from_millis(100);
        let watchdog = notify::watchdog_period();
        let mut next_watchdog = Instant::now();
        'connection: loop {
            // The loop is alive while it reconnects: each try (at most RECONNECT_MAX apart,
            // plus one call's timeout) keeps systemd's watchdog fed.
            if watchdog.is_some() {
                self.notifier.watchdog();
            }
            let (sd, mut signals) = tokio::select! {
                _ = &mut shutdown => break 'connection,
                c = self.connect() => match c {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(delay = %format_duration(reconnect_delay), "{e}; retrying");
                        let wait = reconnect_delay;
                        reconnect_delay = (reconnect_delay * 2).min(RECONNECT_MAX);
                        tokio::select! {
                            _ = &mut shutdown => break 'connection,
                            _ = tokio::time::sleep(wait) => continue 'connection,
                        }
                    }
                },
            };
            if let Err(e) = self.poll(&sd).await {
                // E.g. access denied: retrying at once would spin, so back off as for connects.
                tracing::warn!(delay = %format_duration(reconnect_delay), "cannot list units: {e}; retrying");
                let wait = reconnect_delay;
                reconnect_delay = (reconnect_delay * 2).min(RECONNECT_MAX);
                tokio::select! {
                    _ = &mut shutdown => break 'connection,
                    _ = tokio::time::sleep(wait) => continue 'connection,
                }
            }
            reconnect_delay = Duration::from_millis(100);
            signals.set_watched(self.by_path.keys().cloned());
            let mut signals_gen = self.paths_gen;
            if ready_sent {
                tracing::info!("connected again to the bus; subscribed and resynchronised");
            }
            if !ready_sent {
                ready_sent = true;
                let status = self.status_line();
                self.notifier.ready(&status);
                tracing::info!(
                    units = self.units.len(),
                    interval = %format_duration(self.interval),
                    "watching"
                );
                self.alert_self(
                    EventKind::Started,
                    format!(
                        "unitwarden started on {}: {}",
                        config::hostname(),
                        self.status_line()
                    ),
                );
            }
            loop {
                self.spawn_pending(&sd);
                self.update_status();
                if self.paths_gen != signals_gen {
                    signals.set_watched(self.by_path.keys().cloned());
                    signals_gen = self.paths_gen;
                }
                let wake = self.next_wake(watchdog.map(|_| next_watchdog));
                tokio::select! {
                    _ = &mut shutdown => {
                        self.stop(Some(&mut signals)).await;
                        return Ok(());
                    }
                    sig = signals.next() => match sig {
                        Some(sig) => self.on_signal(&sd, sig).await,
                        None => {
                            tracing::warn!("lost the D-Bus connection; reconnecting");
                            continue 'connection;
                        }
                    },
                    Some(done) = self.attempts.join_next(), if !self.attempts.is_empty() => {
                        if let Ok((name, outcome)) = done {
                            self.on_job(&name, outcome);
                        }
                    }
                    Some(cmd) = commands.recv() => match cmd {
                        Command::Reload => self.reload(&sd).await,
                    },
                    _ = tokio::time::sleep_until(wake) => {
                        if let Some(period) = watchdog
                            && Instant::now() >= next_watchdog
                        {
                            self.notifier.watchdog();
                            next_watchdog = Instant::now() + period;
                        }
                        match self.on_timer(&sd).await {
                            Err(e) if e.is_connection_lost() => {
                                tracing::warn!("{e}; reconnecting");
                                continue 'connection;
                            }
                            Err(e) => tracing::warn!("poll refused by systemd: {e}"),
                            Ok(()) => {}
                        }
                    }
                }
            }
        }
        self.stop(None).await;
        Ok(())
    }

    /// One check-and-restart pass: runs until no attempt is pending, then reports.
    pub async fn once(mut self) -> anyhow::Result<OnceReport> {
        self.restore();
        self.refresh_window();
        let (sd, mut signals) = self.connect().await?;
        self.poll(&sd).await?;
        let settle_deadline = Instant::now() + self.max_verify();
        let mut signals_gen = None;
        loop {
            self.spawn_pending(&sd);
            if signals_gen != Some(self.paths_gen) {
                signals.set_watched(self.by_path.keys().cloned());
                signals_gen = Some(self.paths_gen);
            }
            let settling = self
                .units
                .values()
                .any(|w| w.machine.health() == Some(Health::Systemd))
                && Instant::now() < settle_deadline;
            if !self.units.values().any(|w| w.machine.is_busy())
                && self.attempts.is_empty()
                && !settling
            {
                break;
            }
            let mut wake = self.next_wake(None);
            if settling {
                wake = wake.min(settle_deadline);
            }
            tokio::select! {
                sig = signals.next() => match sig {
                    Some(sig) => self.on_signal(&sd, sig).await,
                    None => anyhow::bail!("lost the D-Bus connection"),
                },
                Some(done) = self.attempts.join_next(), if !self.attempts.is_empty() => {
                    if let Ok((name, outcome)) = done {
                        self.on_job(&name, outcome);
                    }
                }
                _ = tokio::time::sleep_until(wake) => { self.on_timer(&sd).await?; }
            }
        }
        self.persist();
        let mut lines = Vec::new();
        let mut all_ok = true;
        for (name, w) in &self.units {
            let ok = w.machine.health().is_some_and(Health::is_ok);
            all_ok &= ok;
            let state = w
                .obs
                .as_ref()
                .map_or("unknown".to_string(), |o| format!("{}/{}", o.active, o.sub));
            let note = if w.machine.gave_up() {
                " (gave up)"
            } else {
                ""
            };
            lines.push(format!(
                "{name} {state}{}{note}",
                if ok { "" } else { " DOWN" }
            ));
        }
        Ok(OnceReport { lines, all_ok })
    }

    fn max_verify(&self) -> Duration {
        self.settings
            .units
            .iter()
            .map(|u| u.policy.verify_after)
            .max()
            .unwrap_or_default()
    }

    async fn connect(&self) -> Result<(Systemd, Signals), SystemdError> {
        let sd = Systemd::connect(self.settings.daemon.bus).await?;
        let signals = sd.signals().await?;
        Ok((sd, signals))
    }

    fn restore(&mut self) {
        let saved = self.store.load();
        for name in self.settings.exact_names() {
            let ep = saved.get(&name).cloned();
            self.watch(name, ep);
        }
        // Episodes of glob-matched units come back when the unit is seen again.
        for (name, ep) in saved {
            if !self.units.contains_key(&name) && self.settings.entry_for(&name).is_some() {
                self.watch(name, Some(ep));
            }
        }
    }

    fn watch(&mut self, name: UnitName, episode: Option<Episode>) -> bool {
        let Some(entry) = self.settings.entry_for(&name) else {
            return false;
        };
        if self.units.contains_key(&name) {
            return false;
        }
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.by_path.insert(name.object_path(), name.clone());
        self.paths_gen += 1;
        self.units.insert(
            name,
            Watched {
                entry,
                machine: UnitMachine::new(episode, self.seed),
                obs: None,
            },
        );
        true
    }

    fn policy_of(&self, name: &UnitName) -> Option<RestartPolicy> {
        let w = self.units.get(name)?;
        Some(self.settings.units[w.entry].policy.clone())
    }

    /// The safety net: one `ListUnitsByNames` for the named units and one `ListUnitsByPatterns`
    /// for the globs, whatever the number of units.
    async fn poll(&mut self, sd: &Systemd) -> Result<(), SystemdError> {
        // Scheduled before the calls, so a refused poll waits a full interval instead of spinning.
        let now_i = Instant::now();
        self.last_poll = now_i;
        self.next_poll = now_i + self.interval;
        // Configured names are listed by name (which loads them, so not-found is seen); units
        // a glob picked up are listed by pattern, which shows only what systemd still holds.
        let exact: Vec<UnitName> = self
            .units
            .iter()
            .filter(|(_, w)| self.is_exact(w.entry))
            .map(|(n, _)| n.clone())
            .collect();
        let names: Vec<&str> = exact.iter().map(|n| n.as_str()).collect();
        let globs: Vec<&str> = self
            .settings
            .units
            .iter()
            .filter(|u| matches!(u.pattern, UnitPattern::Glob(_)))
            .map(|u| u.pattern.as_str())
            .collect();
        let by_name = sd.list_by_names(&names).await?;
        let by_pattern = sd.list_by_patterns(&globs).await?;
        // One row per name, in order. An alias (`sshd` for `ssh.service`) comes back under the
        // real unit's name and path: signals for it arrive on that path.
        if by_name.len() == exact.len() {
            for (name, row) in exact.iter().zip(by_name) {
                if row.name != *name && !self.by_path.contains_key(&row.path) {
                    tracing::info!(unit = %name, "an alias of {}; following that unit", row.name);
                    self.by_path.insert(row.path.clone(), name.clone());
                    self.paths_gen += 1;
                }
                self.observe_listed(UnitStatus {
                    name: name.clone(),
                    ..row
                });
            }
        }
        let seen: std::collections::HashSet<UnitName> =
            by_pattern.iter().map(|r| r.name.clone()).collect();
        for row in by_pattern {
            self.observe_listed(row);
        }
        // Glob instances systemd no longer holds (stopped and unloaded) are no longer watched.
        let gone: Vec<UnitName> = self
            .units
            .iter()
            .filter(|(n, w)| !self.is_exact(w.entry) && !seen.contains(*n) && !w.machine.is_busy())
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            tracing::info!(unit = %name, "unloaded by systemd; no longer watching this instance");
            self.unwatch(&name);
        }
        self.tick_all();
        Ok(())
    }

    fn is_exact(&self, entry: usize) -> bool {
        matches!(self.settings.units[entry].pattern, UnitPattern::Exact(_))
    }

    /// `restart_inactive` applies to configured names only: glob instances come and go, and
    /// one an operator stopped (or only looked at) must not be started again.
    fn restart_inactive_of(&self, w: &Watched) -> bool {
        self.is_exact(w.entry) && self.settings.units[w.entry].policy.restart_inactive
    }

    fn unwatch(&mut self, name: &UnitName) {
        if self.units.remove(name).is_some() {
            self.by_path.retain(|_, n| n != name);
            self.paths_gen += 1;
            self.dirty = true;
        }
    }

    fn observe_listed(&mut self, status: UnitStatus) {
        let UnitStatus {
            name, observation, ..
        } = status;
        if !self.units.contains_key(&name) {
            if observation.active == ActiveState::Inactive && !observation.job_pending {
                // Merely loaded (`systemctl status celery@typo`): not a unit anyone runs. One
                // being started has its start job queued already when it is announced.
                return;
            }
            if !self.watch(name.clone(), None) {
                return;
            }
            tracing::info!(unit = %name, state = %observation.active, "watching new unit");
        }
        let Some(w) = self.units.get_mut(&name) else {
            return;
        };
        let mut obs = observation;
        if let Some(old) = &w.obs {
            obs.result = old.result.clone();
            obs.n_restarts = old.n_restarts;
            obs.exec_main = old.exec_main;
        }
        self.observe(&name, obs);
    }

    fn observe(&mut self, name: &UnitName, obs: Observation) {
        let Some(policy) = self.policy_of(name) else {
            return;
        };
        let restart_inactive = self
            .units
            .get(name)
            .is_some_and(|w| self.restart_inactive_of(w));
        let health = Health::of(&obs, restart_inactive);
        let Some(w) = self.units.get_mut(name) else {
            return;
        };
        let now = Timestamp::now();
        let mut fx = Vec::new();
        if let Some(n) = obs.n_restarts
            && w.obs.as_ref().and_then(|o| o.n_restarts) != Some(n)
        {
            fx.extend(w.machine.observe_restarts(&policy, n, now));
        }
        w.obs = Some(obs);
        fx.extend(w.machine.observe(&policy, health, now));
        self.apply(name, fx);
    }

    async fn on_signal(&mut self, sd: &Systemd, sig: Signal) {
        match sig {
            Signal::Unit { path, update } => {
                let Some(name) = self.by_path.get(&path).cloned() else {
                    return;
                };
                let Some(w) = self.units.get(&name) else {
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
                let restart_inactive = self.restart_inactive_of(w);
                let newly_down = Health::of(&obs, restart_inactive) == Health::Down
                    && w.machine.health() != Some(Health::Down);
                if newly_down {
                    // systemd 252 passes through `failed` on its way to `auto-restart` and may
                    // signal both; a fresh read (handled after the transition completed) tells
                    // a real failure from one systemd is about to restart itself.
                    match sd.list_by_names(&[name.as_str()]).await {
                        Ok(listed) => {
                            if let Some(fresh) = listed.into_iter().next() {
                                obs.load = fresh.observation.load;
                                obs.active = fresh.observation.active;
                                obs.sub = fresh.observation.sub;
                                obs.job_pending = fresh.observation.job_pending;
                            }
                        }
                        Err(e) => tracing::debug!(unit = %name, "cannot confirm state: {e}"),
                    }
                }
                self.observe(&name, obs);
                self.tick_all();
            }
            Signal::JobRemoved { job, result, .. } => {
                // No receiver just means no attempt of ours is waiting.
                let _ = self.jobs.send(JobDone { job, result });
            }
            Signal::UnitNew { name } => {
                let Ok(name) = UnitName::parse(&name) else {
                    return;
                };
                if self.units.contains_key(&name) || self.settings.entry_for(&name).is_none() {
                    return;
                }
                match sd.list_by_names(&[name.as_str()]).await {
                    Ok(listed) => listed.into_iter().for_each(|s| self.observe_listed(s)),
                    Err(e) => tracing::warn!(unit = %name, "cannot read new unit: {e}"),
                }
                self.tick_all();
            }
            Signal::Reloaded | Signal::ManagerRestarted => {
                if sig == Signal::ManagerRestarted {
                    tracing::info!("systemd manager restarted; subscribing again");
                    if let Err(e) = sd.subscribe().await {
                        tracing::warn!("subscribe failed: {e}");
                    }
                }
                if let Err(e) = self.poll(sd).await {
                    tracing::warn!("poll after manager reload failed: {e}");
                }
            }
        }
    }

    fn on_job(&mut self, name: &UnitName, outcome: JobOutcome) {
        let Some(policy) = self.policy_of(name) else {
            return;
        };
        let Some(w) = self.units.get_mut(name) else {
            return;
        };
        let fx = w.machine.job_finished(&policy, outcome, Timestamp::now());
        self.apply(name, fx);
        self.tick_all();
    }

    async fn on_timer(&mut self, sd: &Systemd) -> Result<(), SystemdError> {
        self.refresh_window();
        if Instant::now() >= self.next_poll {
            self.poll(sd).await?;
        } else {
            self.tick_all();
        }
        self.spawn_pending(sd);
        Ok(())
    }

    /// Switches the effective interval at window boundaries: the next poll moves to
    /// `last poll + new interval`, not to the old schedule.
    fn refresh_window(&mut self) {
        let now = Timestamp::now();
        let cal = &self.settings.calendar;
        let base = self.settings.daemon.interval;
        let interval = cal.effective_interval(now, base).min(base);
        let mode = cal.mode(now);
        if mode != self.mode_name {
            match &mode {
                Some(w) => {
                    tracing::info!(window = %w, interval = %format_duration(interval), "critical window started")
                }
                None => tracing::info!(
                    window = %self.mode_name.as_deref().unwrap_or("-"),
                    interval = %format_duration(interval),
                    "critical window ended"
                ),
            }
            self.mode_name = mode;
        }
        if interval != self.interval {
            self.interval = interval;
            self.next_poll = (self.last_poll + interval).max(Instant::now());
        }
    }

    fn next_wake(&self, watchdog: Option<Instant>) -> Instant {
        let now_ts = Timestamp::now();
        let now = Instant::now();
        let to_instant = |t: Timestamp| {
            let d = t.duration_since(now_ts);
            now + Duration::try_from(d).unwrap_or(Duration::ZERO)
        };
        let mut wake = self.next_poll;
        for w in self.units.values() {
            if let Some(d) = w
                .machine
                .next_deadline(&self.settings.units[w.entry].policy)
            {
                wake = wake.min(to_instant(d));
            }
        }
        if let Some(t) = self.settings.calendar.next_transition(now_ts) {
            wake = wake.min(to_instant(t));
        }
        if let Some(w) = watchdog {
            wake = wake.min(w);
        }
        wake
    }

    fn tick_all(&mut self) {
        let now = Timestamp::now();
        let names: Vec<UnitName> = self.units.keys().cloned().collect();
        for name in names {
            let deps = self.deps_of(&name);
            let Some(policy) = self.policy_of(&name) else {
                continue;
            };
            let Some(w) = self.units.get_mut(&name) else {
                continue;
            };
            let fx = w.machine.tick(&policy, &deps, now);
            self.apply(&name, fx);
        }
    }

    fn deps_of(&self, name: &UnitName) -> Deps {
        let Some(w) = self.units.get(name) else {
            return Deps::Ready;
        };
        for dep in &self.settings.units[w.entry].depends_on {
            let Some(d) = self.units.get(dep) else {
                continue;
            };
            // Wait only for a dependency that is on its way back; one that gave up, cannot be
            // loaded or is deliberately stopped would block the dependent forever.
            let coming_back = match d.machine.health() {
                Some(Health::Healthy) => false,
                Some(Health::Down) => !d.machine.gave_up(),
                Some(Health::Systemd) | None => true,
                Some(Health::Stopped) | Some(Health::Unloadable(_)) => false,
            };
            if coming_back {
                return Deps::Waiting(dep.to_string());
            }
        }
        Deps::Ready
    }

    /// Turns decisions into log lines, alert events and state writes; attempts are queued for
    /// `spawn_pending`.
    fn apply(&mut self, name: &UnitName, fx: Vec<Effect>) {
        if fx.is_empty() {
            return;
        }
        let Some(w) = self.units.get(name) else {
            return;
        };
        let policy = &self.settings.units[w.entry].policy;
        let max = policy.max_attempts;
        let cooldown = policy.give_up_cooldown;
        let obs = w.obs.clone();
        let state = obs.as_ref().map_or("unknown", |o| o.active.as_str());
        let sub = obs.as_ref().map_or(String::new(), |o| o.sub.to_string());
        let result = obs
            .as_ref()
            .and_then(|o| o.result.clone())
            .unwrap_or_else(|| "-".into());
        let window = self.mode_name.clone().unwrap_or_else(|| "-".into());
        let now = Timestamp::now();
        // A window may ask for a stricter alert repeat suppression while it lasts.
        let window_min_interval = self.settings.email.as_ref().and_then(|e| {
            let m = self
                .settings
                .calendar
                .effective_min_interval(now, e.min_interval);
            (m != e.min_interval).then_some(m)
        });
        let mut events: Vec<Event> = Vec::new();
        let event = |kind: EventKind, detail: String| {
            let mut ev = Event::new(kind, Some(name.clone()), now, detail);
            ev.result = obs.as_ref().and_then(|o| o.result.clone());
            ev.exec_status = obs.as_ref().and_then(|o| o.exec_status());
            ev.n_restarts = obs.as_ref().and_then(|o| o.n_restarts);
            ev.window = self.mode_name.clone();
            ev.min_interval = window_min_interval;
            ev
        };
        for e in fx {
            match e {
                Effect::Down => {
                    tracing::warn!(unit = %name, state, sub = %sub, result = %result, window = %window, "unit is down");
                    events.push(event(
                        EventKind::Down,
                        format!("{name} is down ({state}/{sub})"),
                    ));
                }
                Effect::Scheduled { attempt, of, delay } => {
                    tracing::info!(
                        unit = %name, state, action = "restart", attempt = %format!("{attempt}/{of}"),
                        delay = %format_duration(delay), "restart scheduled"
                    );
                    if let Some(last) = events.last_mut() {
                        last.next = format!(
                            "restart attempt {attempt}/{of} in {}",
                            format_duration(delay)
                        );
                    }
                }
                Effect::Attempt { attempt, of } => {
                    self.pending.push((name.clone(), attempt, of));
                }
                Effect::Restarted { attempt, of } => {
                    tracing::info!(
                        unit = %name, state, action = "restart", attempt = %format!("{attempt}/{of}"),
                        result = "restarted", "unit restarted and still active after verify_after"
                    );
                    let mut ev = event(
                        EventKind::Restarted,
                        format!("{name} was restarted and is active"),
                    );
                    ev.attempt = Some((attempt, of));
                    ev.next = "keep watching; the attempt counter resets once it has been healthy for reset_after".into();
                    events.push(ev);
                }
                Effect::AttemptFailed {
                    attempt,
                    of,
                    reason,
                } => {
                    tracing::warn!(
                        unit = %name, state, action = "restart", attempt = %format!("{attempt}/{of}"),
                        result = "failed", "restart attempt failed: {reason}"
                    );
                    let mut ev = event(
                        EventKind::RestartFailed,
                        format!("restart attempt {attempt}/{of} of {name} failed: {reason}"),
                    );
                    ev.attempt = Some((attempt, of));
                    events.push(ev);
                }
                Effect::GaveUp { attempts } => {
                    tracing::error!(
                        unit = %name, state, action = "give_up", attempt = %format!("{attempts}/{max}"),
                        "giving up: no more restarts until give_up_cooldown passes or an operator runs `unitwarden retry`"
                    );
                    let mut ev = event(
                        EventKind::GaveUp,
                        format!("{name} gave up after {attempts}/{max} restarts"),
                    );
                    ev.attempt = Some((attempts, max));
                    ev.next = match cooldown {
                        Some(c) => format!(
                            "no more restarts; a new episode starts in {} if it is still down, or now with `unitwarden retry {name}`",
                            format_duration(c)
                        ),
                        None => format!(
                            "no more restarts until an operator runs `unitwarden retry {name}` or fixes it"
                        ),
                    };
                    events.push(ev);
                }
                Effect::Recovered => {
                    tracing::info!(unit = %name, state, result = "recovered", "unit is active again");
                    let mut ev = event(EventKind::Recovered, format!("{name} is active again"));
                    ev.next = "keep watching".into();
                    events.push(ev);
                }
                Effect::EpisodeEnded => {
                    tracing::info!(unit = %name, state, "healthy for reset_after; attempt counter reset")
                }
                Effect::Rearmed => tracing::info!(
                    unit = %name, state, action = "retry", "give_up_cooldown passed; starting a new episode"
                ),
                Effect::WaitSystemd => tracing::info!(
                    unit = %name, state, sub = %sub, action = "wait_systemd", "systemd is handling this unit; leaving it alone"
                ),
                Effect::WaitDependency(dep) => tracing::info!(
                    unit = %name, state, action = "wait_dependency", dependency = %dep,
                    "restart waits for a dependency to be active"
                ),
                Effect::Unloadable(load) => {
                    tracing::error!(
                        unit = %name, state = %load, "unit cannot be loaded; reporting only, never restarting"
                    );
                    let mut ev = event(
                        EventKind::NotFound,
                        format!("{name} cannot be loaded ({load})"),
                    );
                    ev.next =
                        "report only; unitwarden never restarts a unit systemd cannot load".into();
                    events.push(ev);
                }
                Effect::Flapping { restarts } => {
                    tracing::warn!(unit = %name, state, restarts, "flapping: systemd keeps restarting this unit");
                    let mut ev = event(
                        EventKind::Flapping,
                        format!("systemd restarted {name} {restarts} times within flap_window"),
                    );
                    ev.next =
                        "left to systemd's Restart=; unitwarden acts if systemd gives up".into();
                    events.push(ev);
                }
                Effect::Persist => self.dirty = true,
            }
        }
        for ev in events {
            self.alerts.send(ev);
        }
    }

    /// An event about unitwarden itself.
    fn alert_self(&self, kind: EventKind, detail: String) {
        let mut ev = Event::new(kind, None, Timestamp::now(), detail);
        ev.window = self.mode_name.clone();
        self.alerts.send(ev);
    }

    /// Writes the episodes if anything changed since the last write. Called before attempts
    /// are started and once per loop turn, so one event costs at most one fsync.
    fn flush_state(&mut self) {
        if std::mem::take(&mut self.dirty) {
            self.persist();
        }
    }

    fn persist(&mut self) {
        let episodes: BTreeMap<UnitName, Episode> = self
            .units
            .iter()
            .filter_map(|(n, w)| Some((n.clone(), w.machine.episode()?.clone())))
            .collect();
        self.store.save(&episodes);
    }

    /// Starts the attempts the machines asked for; the episode was persisted before this.
    fn spawn_pending(&mut self, sd: &Systemd) {
        // The attempt must be on disk before it is made: a killed watchdog never repeats one.
        self.flush_state();
        for (name, attempt, of) in std::mem::take(&mut self.pending) {
            let failed = self
                .units
                .get(&name)
                .and_then(|w| w.obs.as_ref())
                .is_some_and(|o| o.active == ActiveState::Failed);
            let jobs = self.jobs.subscribe();
            let sd = sd.clone();
            if failed {
                tracing::info!(unit = %name, action = "reset_failed", "clearing the failed state before restarting");
            }
            tracing::info!(
                unit = %name, action = "restart", attempt = %format!("{attempt}/{of}"), "restarting"
            );
            self.attempts.spawn(async move {
                let outcome = run_attempt(&sd, &name, failed, jobs).await;
                (name, outcome)
            });
        }
    }

    async fn reload(&mut self, sd: &Systemd) {
        let path = self.settings.path.clone();
        let new = match config::load(&path) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(
                    action = "reload",
                    result = "failed",
                    "config reload failed, keeping the running config: {e}"
                );
                self.reload_note = Some("config reload failed".into());
                self.alert_self(
                    EventKind::ConfigReloadFailed,
                    format!("config reload failed, the running config stays: {e}"),
                );
                return;
            }
        };
        self.notifier.send("RELOADING=1");
        self.reload_note = None;
        if let Some(log) = &self.log {
            log.set_level(new.daemon.log.level);
        }
        if new.daemon.bus != self.settings.daemon.bus
            || new.daemon.state_dir != self.settings.daemon.state_dir
        {
            tracing::warn!("bus and state_dir changes take effect when unitwarden restarts");
        }
        if new.email.is_some() || self.settings.email.is_some() {
            // The alert task is built once at start, from the settings it was given then.
            tracing::info!("[email] changes, if any, take effect when unitwarden restarts");
        }
        let mut new = new;
        new.daemon.bus = self.settings.daemon.bus;
        new.daemon.state_dir = self.settings.daemon.state_dir.clone();
        self.settings = new;
        // Keep the machines (and their episodes) of units still configured; drop the others.
        let names: Vec<UnitName> = self.units.keys().cloned().collect();
        for name in names {
            match self.settings.entry_for(&name) {
                Some(entry) => {
                    if let Some(w) = self.units.get_mut(&name) {
                        w.entry = entry;
                    }
                }
                None => {
                    self.unwatch(&name);
                    tracing::info!(unit = %name, "no longer configured; not watching");
                }
            }
        }
        for name in self.settings.exact_names() {
            self.watch(name, None);
        }
        self.interval = self.settings.daemon.interval;
        self.mode_name = None;
        self.refresh_window();
        self.persist();
        if let Err(e) = self.poll(sd).await {
            tracing::warn!("poll after reload failed: {e}");
        }
        tracing::info!(
            action = "reload",
            result = "ok",
            units = self.units.len(),
            "configuration reloaded"
        );
        let status = self.status_line();
        self.notifier.ready(&status);
    }

    /// Waits (bounded) for restart jobs in flight, still forwarding their `JobRemoved` so they
    /// can finish, then saves the state.
    async fn stop(&mut self, mut signals: Option<&mut Signals>) {
        self.notifier.send("STOPPING=1");
        tracing::info!("stopping");
        self.alert_self(
            EventKind::Stopping,
            format!("unitwarden stopping on {}", config::hostname()),
        );
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while !self.attempts.is_empty() {
            let signal = async {
                match signals.as_deref_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                done = self.attempts.join_next() => match done {
                    Some(Ok((name, outcome))) => {
                        tracing::info!(unit = %name, "restart job finished during shutdown: {outcome:?}");
                    }
                    Some(Err(_)) => {}
                    None => break,
                },
                sig = signal => match sig {
                    Some(Signal::JobRemoved { job, result, .. }) => {
                        let _ = self.jobs.send(JobDone { job, result });
                    }
                    Some(_) => {}
                    None => signals = None,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.persist();
    }

    fn update_status(&mut self) {
        let s = self.status_line();
        self.notifier.status(&s);
    }

    /// The one-line story for `systemctl status`.
    fn status_line(&self) -> String {
        let mut active = 0;
        let mut restarting = Vec::new();
        let mut gave_up = Vec::new();
        let mut down = Vec::new();
        let mut systemd = 0;
        let mut missing = Vec::new();
        for (name, w) in &self.units {
            let short = name
                .as_str()
                .strip_suffix(".service")
                .unwrap_or(name.as_str());
            let of = self.settings.units[w.entry].policy.max_attempts;
            if let Some(k) = w.machine.current_attempt() {
                restarting.push(format!("{short} {k}/{of}"));
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
        if !restarting.is_empty() {
            parts.push(format!(
                "{} restarting ({})",
                restarting.len(),
                restarting.join(", ")
            ));
        }
        if !down.is_empty() {
            parts.push(format!("{} down ({})", down.len(), down.join(", ")));
        }
        if !gave_up.is_empty() {
            parts.push(format!(
                "{} gave up ({})",
                gave_up.len(),
                gave_up.join(", ")
            ));
        }
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
        let n = self.units.len();
        let mut line = format!(
            "{n} unit{}: {}",
            if n == 1 { "" } else { "s" },
            parts.join(", ")
        );
        match &self.mode_name {
            Some(w) => line.push_str(&format!(" · window {w}")),
            None => line.push_str(" · normal"),
        }
        let next = self.next_poll.saturating_duration_since(Instant::now());
        line.push_str(&format!(
            " · interval {} · next check {}",
            format_duration(self.interval),
            format_duration(Duration::from_secs(next.as_secs_f64().round() as u64))
        ));
        if let Some(note) = &self.reload_note {
            line.push_str(&format!(" · {note}"));
        }
        line
    }
}

/// One restart attempt: `ResetFailedUnit` when failed (clears the start limiter), then
/// `RestartUnit`, then wait for the `JobRemoved` of our own job.
async fn run_attempt(
    sd: &Systemd,
    name: &UnitName,
    failed: bool,
    mut jobs: broadcast::Receiver<JobDone>,
) -> JobOutcome {
    if failed && let Err(e) = sd.reset_failed(name).await {
        tracing::warn!(unit = %name, action = "reset_failed", "ResetFailedUnit failed: {e}");
    }
    let job = match sd.restart(name).await {
        Ok(job) => job,
        Err(SystemdError::Refused { name: err, message }) => {
            return JobOutcome::Failed(format!("refused ({err}: {message})"));
        }
        Err(e) => {
            tracing::warn!(unit = %name, "RestartUnit: {e}");
            return JobOutcome::Unknown;
        }
    };
    let deadline = Instant::now() + JOB_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, jobs.recv()).await {
            Ok(Ok(done)) if done.job == job => {
                return match done.result.as_str() {
                    "done" => JobOutcome::Done,
                    other => JobOutcome::Failed(other.to_string()),
                };
            }
            Ok(Ok(_)) => continue,
            // Ours may have been among the skipped: let the unit's state decide.
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => return JobOutcome::Unknown,
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return JobOutcome::Unknown,
        }
    }
}
