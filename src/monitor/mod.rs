//! The watch loop. [`engine`] decides, without I/O; this shell carries its actions out — the
//! D-Bus calls, the state file, log lines, alerts, `sd_notify` — and feeds it what happens:
//! signals, poll answers, job ends, timers, reloads. `run` (the daemon) and `once` (one pass)
//! drive the same engine through the same `Monitor::execute`.
//!
//! One task owns all unit state; restart jobs run as separate tasks (`attempts`) and report
//! back, so a slow job never delays detection of another unit.

mod attempts;
pub mod engine;
pub mod narrate;
mod protocol;
mod registry;
pub mod status;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::alert::Alerts;
use crate::clock::Now;
use crate::config::{self, Settings};
use crate::control::protocol::OutboxReport;
use crate::control::server::Ask;
use crate::logging::{LogHandle, format_duration};
use crate::metrics::Metrics;
use crate::notify::{self, Notifier};
use crate::state::Store;
use crate::systemd::{Jobs, Router, Signal, Signals, Systemd, SystemdError};
use crate::unit::UnitName;
use attempts::Attempts;
use engine::{Action, Engine, Input, Listing, Mode};
use narrate::Line;
pub use status::OnceReport;

/// Names per `ListUnitsByNames` call: a poll of a thousand units goes out as a few calls of
/// modest size rather than one reply of a few hundred KiB that the allocator keeps.
const POLL_BATCH: usize = 256;
/// Bound on waiting for in-flight restart jobs at shutdown.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Bound on one round of resource readings.
const RESOURCE_WAIT: Duration = Duration::from_secs(30);
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Requests from outside the loop: a reload (SIGHUP), an operator's request (the control
/// socket).
#[derive(Debug)]
pub enum Command {
    Reload,
    Control(Ask),
}

/// The daemon: runs until `shutdown` resolves. `commands` carries reload requests, `asks` the
/// control socket's requests (and the metrics server's); `metrics` is told what the loop does.
pub async fn run(
    settings: Settings,
    log: Option<LogHandle>,
    alerts: Alerts,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    commands: mpsc::Receiver<Command>,
    asks: mpsc::Receiver<Ask>,
) -> anyhow::Result<()> {
    let mut m = Monitor::new(settings, log, alerts, Mode::Daemon);
    m.metrics = metrics;
    m.run(shutdown, commands, asks).await;
    Ok(())
}

/// One check-and-restart pass: runs until no attempt is pending, then reports.
pub async fn once(settings: Settings, alerts: Alerts) -> anyhow::Result<OnceReport> {
    let mut m = Monitor::new(settings, None, alerts, Mode::Once);
    m.once().await
}

struct Monitor {
    engine: Engine,
    /// Actions decided before the first connection (routing of the configured units).
    startup: Vec<Action>,
    log: Option<LogHandle>,
    store: Store,
    notifier: Notifier,
    alerts: Alerts,
    metrics: Arc<Metrics>,
    router: Router,
    jobs: Jobs,
    attempts: Attempts,
    watchdog: Watchdog,
    /// Signals read while the loop waited for an answer from the manager, in order, with when
    /// each arrived.
    backlog: VecDeque<(Instant, Signal)>,
    /// When the signal being decided on arrived, for the detection latency: what it leads to
    /// includes the confirming read of a unit that looks down.
    arrived: Option<Instant>,
    /// Names the manager would not list, each reported once.
    odd: std::collections::HashSet<UnitName>,
    /// Work beside the loop that answers with an input: probes, recovery units, host checks.
    checks: JoinSet<Input>,
}

/// One connection to the manager: calls go out on `sd`, news comes in on `signals`.
struct Link {
    sd: Systemd,
    signals: Signals,
}

/// systemd's watchdog (`WatchdogSec=`), fed from the watch loop itself, so a hung loop is
/// noticed.
struct Watchdog {
    period: Option<Duration>,
    next: Instant,
}

impl Watchdog {
    fn from_env() -> Watchdog {
        Watchdog {
            period: notify::watchdog_period(),
            next: Instant::now(),
        }
    }

    /// When the loop must wake to feed it.
    fn due(&self) -> Option<Instant> {
        self.period.map(|_| self.next)
    }

    fn feed(&mut self, notifier: &Notifier) {
        if let Some(period) = self.period {
            notifier.watchdog();
            self.next = crate::clock::later(Instant::now(), period);
        }
    }

    fn feed_if_due(&mut self, notifier: &Notifier) {
        if self.due().is_some_and(|at| Instant::now() >= at) {
            self.feed(notifier);
        }
    }
}

impl Monitor {
    fn new(settings: Settings, log: Option<LogHandle>, alerts: Alerts, mode: Mode) -> Monitor {
        let store = Store::new(&settings.daemon.state_dir);
        let now = Now::read();
        let seed = u64::from(std::process::id()) ^ now.wall.as_nanosecond() as u64;
        let metrics = Metrics::new(&settings);
        let (engine, startup) = Engine::new(settings, store.load(), mode, seed, &now);
        Monitor {
            engine,
            startup,
            log,
            store,
            notifier: Notifier::from_env(),
            alerts,
            metrics,
            router: Router::default(),
            jobs: Jobs::default(),
            attempts: Attempts::default(),
            watchdog: Watchdog::from_env(),
            backlog: VecDeque::new(),
            arrived: None,
            odd: Default::default(),
            checks: JoinSet::new(),
        }
    }

    async fn connect(&mut self) -> Result<Link, SystemdError> {
        let sd = Systemd::connect(self.engine.settings().daemon.bus, self.jobs.clone()).await?;
        let signals = sd.signals().await?;
        // What was read on a lost connection is stale: the first poll resynchronises.
        self.backlog.clear();
        Ok(Link { sd, signals })
    }

    async fn run(
        &mut self,
        shutdown: impl Future<Output = ()>,
        mut commands: mpsc::Receiver<Command>,
        mut asks: mpsc::Receiver<Ask>,
    ) {
        tokio::pin!(shutdown);
        for action in std::mem::take(&mut self.startup) {
            self.perform_local(action);
        }
        let mut reconnect_delay = RECONNECT_FIRST;
        'connection: loop {
            // The loop is alive while it reconnects: each try (at most RECONNECT_MAX apart,
            // plus one call's timeout) keeps systemd's watchdog fed.
            self.watchdog.feed(&self.notifier);
            let connected = tokio::select! {
                _ = &mut shutdown => break 'connection,
                c = self.connect() => c,
            };
            let failure = match connected {
                Ok(mut link) => {
                    match self.step(&mut link, Input::Connected).await {
                        Ok(()) => {
                            reconnect_delay = RECONNECT_FIRST;
                            let ended = self
                                .watch(link, &mut shutdown, &mut commands, &mut asks)
                                .await;
                            match ended {
                                Ended::Shutdown => return,
                                Ended::ConnectionLost => continue 'connection,
                            }
                        }
                        // E.g. access denied: retrying at once would spin, so back off.
                        Err(e) => format!("cannot list units: {e}"),
                    }
                }
                Err(e) => e.to_string(),
            };
            tracing::warn!(delay = %format_duration(reconnect_delay), "{failure}; retrying");
            let wait = reconnect_delay;
            reconnect_delay = (reconnect_delay * 2).min(RECONNECT_MAX);
            tokio::select! {
                _ = &mut shutdown => break 'connection,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.stop(None).await;
    }

    /// Serves one connection until shutdown or until the connection is lost.
    async fn watch(
        &mut self,
        mut link: Link,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
        commands: &mut mpsc::Receiver<Command>,
        asks: &mut mpsc::Receiver<Ask>,
    ) -> Ended {
        loop {
            let now = Now::read();
            self.notifier.status(&self.engine.status_line(&now));
            let mut wake = self.engine.wake_at(&now);
            if let Some(at) = self.watchdog.due() {
                wake = wake.min(at);
            }
            let outside = async {
                tokio::select! {
                    _ = shutdown.as_mut() => None,
                    Some(cmd) = commands.recv() => Some(cmd),
                    Some(ask) = asks.recv() => Some(Command::Control(ask)),
                }
            };
            let woken = self.next(&mut link, wake, outside).await;
            // Every turn, not only on its timer: a stream of signals must not starve it.
            self.watchdog.feed_if_due(&self.notifier);
            let input = match woken {
                Woken::Input(input) => input,
                Woken::Outside(Some(Command::Reload)) => self.read_config(&mut link).await,
                Woken::Outside(Some(Command::Control(ask))) => {
                    match self.answer(&mut link, ask).await {
                        Err(e) if e.is_connection_lost() => {
                            tracing::warn!("{e}; reconnecting");
                            return Ended::ConnectionLost;
                        }
                        _ => continue,
                    }
                }
                Woken::Outside(None) => {
                    self.stop(Some(&mut link.signals)).await;
                    return Ended::Shutdown;
                }
                Woken::Lost => {
                    tracing::warn!("lost the D-Bus connection; reconnecting");
                    return Ended::ConnectionLost;
                }
            };
            match self.step(&mut link, input).await {
                Err(e) if e.is_connection_lost() => {
                    tracing::warn!("{e}; reconnecting");
                    return Ended::ConnectionLost;
                }
                Err(e) => tracing::warn!("poll refused by systemd: {e}"),
                Ok(()) => {}
            }
        }
    }

    /// One pass: connect, poll, restart what is down (honouring backoff and verification),
    /// until settled.
    async fn once(&mut self) -> anyhow::Result<OnceReport> {
        for action in std::mem::take(&mut self.startup) {
            self.perform_local(action);
        }
        let mut link = self.connect().await?;
        self.step(&mut link, Input::Connected).await?;
        loop {
            let now = Now::read();
            if self.engine.settled(&now) && self.attempts.is_empty() {
                break;
            }
            let wake = self.engine.wake_at(&now);
            match self.next(&mut link, wake, std::future::pending()).await {
                Woken::Input(input) => self.step(&mut link, input).await?,
                Woken::Lost => anyhow::bail!("lost the D-Bus connection"),
                Woken::Outside(_) => {}
            }
        }
        self.store.save_durably(&self.engine.saved());
        Ok(self.engine.once_report())
    }

    /// Waits for the next thing to decide on, the same for `run` and `once`: the backlog
    /// first, then a signal, a finished attempt, `outside` (the daemon's shutdown and
    /// commands) or the deadline `wake`.
    async fn next(
        &mut self,
        link: &mut Link,
        wake: Instant,
        outside: impl Future<Output = Option<Command>>,
    ) -> Woken {
        if let Some((at, sig)) = self.backlog.pop_front() {
            self.arrived = Some(at);
            return Woken::Input(Input::Signal(sig));
        }
        tokio::select! {
            sig = link.signals.next(&self.router, |n| self.engine.watches(n)) => match sig {
                Some(sig) => {
                    self.arrived = Some(Instant::now());
                    Woken::Input(Input::Signal(sig))
                }
                None => Woken::Lost,
            },
            (name, outcome) = self.attempts.next() => Woken::Input(Input::JobDone { name, outcome }),
            Some(Ok(input)) = self.checks.join_next(), if !self.checks.is_empty() => Woken::Input(input),
            cmd = outside => Woken::Outside(cmd),
            _ = tokio::time::sleep_until(wake) => Woken::Input(Input::Timer),
        }
    }

    /// Answers an operator's request. What it changes (a pause, a retry's attempt) is carried
    /// out, and the state written, before the reply: once `pause` returns, the pause survives
    /// a kill of the daemon.
    async fn answer(&mut self, link: &mut Link, ask: Ask) -> Result<(), SystemdError> {
        let (mut reply, actions) = self.engine.control(ask.request, &Now::read());
        let done = self.execute(link, actions).await;
        if let Some(status) = reply.status.as_mut() {
            let stats = self.alerts.stats();
            status.outbox = self.alerts.is_enabled().then_some(OutboxReport {
                messages: stats.outbox,
                oldest: stats.oldest,
            });
        }
        // The client may be gone; that is its business.
        let _ = ask.reply.send(reply);
        done
    }

    /// Reads the config file for a reload; the engine decides what follows. The file is read
    /// and parsed on a blocking thread while signals keep being read: whatever sits at the
    /// path (a slow disk, a FIFO, a large file) never holds the loop.
    async fn read_config(&mut self, link: &mut Link) -> Input {
        let path = self.engine.settings().path.clone();
        let read = tokio::task::spawn_blocking(move || config::load(&path));
        let loaded = match self.drain(&mut link.signals).call(read).await {
            Ok(loaded) => loaded,
            Err(e) => return Input::ReloadFailed(format!("reading the config failed: {e}")),
        };
        match loaded {
            Ok(new) => {
                for w in new.warnings() {
                    tracing::warn!("{}: {w}", new.path.display());
                }
                self.notifier.send("RELOADING=1");
                if let Some(log) = &self.log {
                    log.set_level(new.daemon.log.level);
                }
                self.metrics.reload(&new);
                Input::Reload(Box::new(new))
            }
            Err(e) => Input::ReloadFailed(e.to_string()),
        }
    }

    /// Hands `input` to the engine and carries out what it decides.
    async fn step(&mut self, link: &mut Link, input: Input) -> Result<(), SystemdError> {
        let actions = self.engine.handle(input, &Now::read());
        let done = self.execute(link, actions).await;
        self.arrived = None;
        done
    }

    /// Carries out `actions` in order. An action that asks the manager something feeds the
    /// answer straight back, and what the engine decides on it is carried out before the rest.
    /// Returns the first failed poll, after doing everything else.
    async fn execute(&mut self, link: &mut Link, actions: Vec<Action>) -> Result<(), SystemdError> {
        let mut todo = actions;
        todo.reverse();
        let mut failure = None;
        while let Some(action) = todo.pop() {
            let sd = &link.sd;
            // While a call is out, signals keep being read (into the backlog): the manager's
            // answer queues behind them on the socket.
            let mut drained = self.drain(&mut link.signals);
            let answer = match action {
                Action::Poll { names, patterns } => {
                    let (decided, failed) = self.poll(link, names, &patterns).await;
                    todo.extend(decided.into_iter().rev());
                    if let Some(e) = failed {
                        failure.get_or_insert(e);
                    }
                    None
                }
                Action::Confirm(name) => {
                    let fresh = match drained
                        .call(sd.list_by_names(std::slice::from_ref(&name)))
                        .await
                    {
                        Ok(rows) => rows.into_iter().next(),
                        Err(e) => {
                            tracing::debug!(unit = %name, "cannot confirm state: {e}");
                            None
                        }
                    };
                    if fresh.is_some() {
                        self.supersede(std::slice::from_ref(&name));
                    }
                    Some(Input::Confirmed { name, fresh })
                }
                Action::Read(name) => match drained
                    .call(sd.list_by_names(std::slice::from_ref(&name)))
                    .await
                {
                    Ok(rows) => Some(Input::Discovered(rows)),
                    Err(e) => {
                        tracing::warn!(unit = %name, "cannot read new unit: {e}");
                        None
                    }
                },
                Action::Subscribe => {
                    if let Err(e) = drained.call(sd.subscribe()).await {
                        tracing::warn!("subscribe failed: {e}");
                    }
                    None
                }
                Action::Restart { unit, reset } => {
                    self.attempts.start(sd, unit, reset);
                    None
                }
                Action::Recover { unit, recovery } => {
                    let sd = sd.clone();
                    self.checks.spawn(async move {
                        let (ok, detail) = attempts::recover(&sd, &recovery).await;
                        Input::RecoveryDone {
                            name: unit,
                            ok,
                            detail,
                        }
                    });
                    None
                }
                Action::CheckResources(settings) => {
                    let metrics = Arc::clone(&self.metrics);
                    self.checks.spawn(async move {
                        let s = settings.clone();
                        let read = tokio::task::spawn_blocking(move || crate::resources::read(&s));
                        let readings = match tokio::time::timeout(RESOURCE_WAIT, read).await {
                            Ok(Ok(readings)) => readings,
                            // A file system that stopped answering (statvfs on a dead NFS
                            // server) holds its thread, never the loop.
                            _ => crate::resources::all_unreadable(
                                &settings,
                                &format!(
                                    "no answer within {}s (a file system that stopped answering?)",
                                    RESOURCE_WAIT.as_secs()
                                ),
                            ),
                        };
                        metrics.resources(&readings);
                        Input::ResourcesRead(readings)
                    });
                    None
                }
                Action::Probe { unit, probe } => {
                    let metrics = Arc::clone(&self.metrics);
                    self.checks.spawn(async move {
                        let outcome = crate::probe::run(&probe).await;
                        metrics.probed(&unit, outcome.ok, outcome.took);
                        Input::Probed {
                            name: unit,
                            outcome,
                        }
                    });
                    None
                }
                local => {
                    self.perform_local(local);
                    None
                }
            };
            if let Some(input) = answer {
                let more = self.engine.handle(input, &Now::read());
                todo.extend(more.into_iter().rev());
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// A poll: the names in batches (each answer handed to the engine at once, so a poll of a
    /// thousand units never holds all their rows), then the globs. Returns what the engine
    /// decided on the answers it got, also when a later call failed: those decisions (alerts,
    /// state writes, an alias to follow) are made once and must not be lost.
    async fn poll(
        &mut self,
        link: &mut Link,
        names: Vec<UnitName>,
        patterns: &[String],
    ) -> (Vec<Action>, Option<SystemdError>) {
        let mut decided = Vec::new();
        let mut names = names.into_iter();
        loop {
            let asked: Vec<UnitName> = names.by_ref().take(POLL_BATCH).collect();
            if asked.is_empty() {
                break;
            }
            let answer = self
                .drain(&mut link.signals)
                .call(link.sd.list_by_names(&asked))
                .await;
            let by_name = match answer {
                Ok(rows) if rows.len() == asked.len() => rows.into_iter().map(Some).collect(),
                Err(e) if e.is_connection_lost() => return (decided, Some(e)),
                // Rows that cannot be paired with the names, or the whole call refused: one odd
                // name must not blind the others, so each is asked for on its own.
                _ => match self.one_by_one(link, &asked).await {
                    Ok(rows) => rows,
                    Err(e) => return (decided, Some(e)),
                },
            };
            self.supersede(&asked);
            let listing = Listing { asked, by_name };
            decided.extend(self.engine.handle(Input::Listed(listing), &Now::read()));
        }
        let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let by_pattern = match self
            .drain(&mut link.signals)
            .call(link.sd.list_by_patterns(&patterns))
            .await
        {
            Ok(rows) => rows,
            Err(e) => return (decided, Some(e)),
        };
        let listed: Vec<UnitName> = by_pattern.iter().map(|r| r.name.clone()).collect();
        self.supersede(&listed);
        decided.extend(
            self.engine
                .handle(Input::Polled { by_pattern }, &Now::read()),
        );
        (decided, None)
    }

    /// Lists `names` one call each, after a batch's answer surprised. A name the manager still
    /// refuses is logged once (until it answers again) and left out of this poll.
    async fn one_by_one(
        &mut self,
        link: &mut Link,
        names: &[UnitName],
    ) -> Result<Vec<Option<crate::systemd::UnitStatus>>, SystemdError> {
        let mut by_name = Vec::with_capacity(names.len());
        for name in names {
            let answer = self
                .drain(&mut link.signals)
                .call(link.sd.list_by_names(std::slice::from_ref(name)))
                .await;
            let why = match answer {
                Ok(mut rows) if rows.len() == 1 => {
                    if self.odd.remove(name) {
                        tracing::info!(unit = %name, "systemd answers for this unit again");
                    }
                    by_name.push(rows.pop());
                    continue;
                }
                Err(e) if e.is_connection_lost() => return Err(e),
                Err(e) => e.to_string(),
                Ok(rows) => format!("{} rows for one name", rows.len()),
            };
            if self.odd.insert(name.clone()) {
                tracing::warn!(unit = %name, "systemd does not list this unit ({why}); it is not checked until it does, the other units are");
            }
            by_name.push(None);
        }
        Ok(by_name)
    }

    /// A fresh read of `names` has arrived. The signals about them in the backlog came before
    /// it on the socket: their states are older than the read and would undo it. What only
    /// signals tell (`Result`, `NRestarts`, the exit status) is kept.
    fn supersede(&mut self, names: &[UnitName]) {
        if self.backlog.is_empty() {
            return;
        }
        let names: std::collections::HashSet<&UnitName> = names.iter().collect();
        self.backlog.retain_mut(|(_, sig)| match sig {
            Signal::Unit { name, update } if names.contains(name) => {
                update.load = None;
                update.active = None;
                update.sub = None;
                update.job_pending = None;
                *update != crate::systemd::UnitUpdate::default()
            }
            _ => true,
        });
    }

    /// Reads signals into the backlog while a call is out.
    fn drain<'a>(&'a mut self, signals: &'a mut Signals) -> Drain<'a> {
        Drain {
            signals,
            router: &self.router,
            engine: &self.engine,
            backlog: &mut self.backlog,
        }
    }

    /// An action that needs no bus: routing, files, logs, alerts, notifications.
    fn perform_local(&mut self, action: Action) {
        match action {
            Action::Follow(name, path) => {
                self.router.follow(&name, &path);
            }
            Action::Unwatch(name) => self.router.unwatch(&name),
            Action::Persist(saved) => self.store.save(&saved),
            Action::Log(line) => emit(&line),
            Action::Alert(ev) => {
                self.metrics.event(&ev, self.arrived);
                self.alerts.send(*ev);
            }
            Action::Ready => {
                let status = self.engine.status_line(&Now::read());
                self.notifier.ready(&status);
            }
            other => tracing::debug!("not carried out without a connection: {other:?}"),
        }
    }

    /// Waits (bounded) for restart jobs in flight, still reading signals so their job ends
    /// are delivered, then saves the state.
    async fn stop(&mut self, mut signals: Option<&mut Signals>) {
        self.notifier.send("STOPPING=1");
        for action in self.engine.handle(Input::Stopping, &Now::read()) {
            self.perform_local(action);
        }
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while !self.attempts.is_empty() {
            let signal = async {
                match signals.as_deref_mut() {
                    Some(s) => s.next(&self.router, |n| self.engine.watches(n)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                (name, outcome) = self.attempts.next() => {
                    tracing::info!(unit = %name, "restart job finished during shutdown: {outcome:?}");
                }
                sig = signal => if sig.is_none() {
                    signals = None;
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.store.save_durably(&self.engine.saved());
    }
}

enum Ended {
    Shutdown,
    ConnectionLost,
}

/// What woke the watch loop.
enum Woken {
    Input(Input),
    /// The connection is gone.
    Lost,
    /// A request from outside the loop; `None` asks it to stop.
    Outside(Option<Command>),
}

/// Reads signals into the backlog while a call to the manager is out.
struct Drain<'a> {
    signals: &'a mut Signals,
    router: &'a Router,
    engine: &'a Engine,
    backlog: &'a mut VecDeque<(Instant, Signal)>,
}

impl Drain<'_> {
    async fn call<F: Future>(&mut self, call: F) -> F::Output {
        tokio::pin!(call);
        loop {
            tokio::select! {
                biased;
                out = &mut call => return out,
                sig = self.signals.next(self.router, |n| self.engine.watches(n)) => match sig {
                    Some(sig) => self.backlog.push_back((Instant::now(), sig)),
                    // The connection is gone; the call fails by itself.
                    None => return call.await,
                },
            }
        }
    }
}

/// Writes `line` through tracing, with only the fields it has.
fn emit(line: &Line) {
    macro_rules! at {
        ($level:expr) => {
            tracing::event!(
                $level,
                unit = line.unit.as_ref().map(display),
                state = line.state.as_deref(),
                sub = line.sub.as_deref(),
                action = line.action,
                attempt = line.attempt.map(|(k, n)| display(format!("{k}/{n}"))),
                result = line.result.as_deref(),
                delay = line.delay.map(|d| display(format_duration(d))),
                dependency = line.dependency.as_ref().map(display),
                restarts = line.restarts,
                window = line.window.as_deref(),
                interval = line.interval.map(|d| display(format_duration(d))),
                units = line.units,
                "{}",
                line.message
            )
        };
    }
    match line.level {
        tracing::Level::ERROR => at!(tracing::Level::ERROR),
        tracing::Level::WARN => at!(tracing::Level::WARN),
        tracing::Level::INFO => at!(tracing::Level::INFO),
        tracing::Level::DEBUG => at!(tracing::Level::DEBUG),
        tracing::Level::TRACE => at!(tracing::Level::TRACE),
    }
}
