//! Alerts: typed events from the watch loop, batched, deduplicated and delivered by email
//! through a durable outbox. Sending never blocks detection or restarts.
//!
//! # Wiring
//!
//! ```text
//! // at daemon start, when settings.email is Some:
//! let (alerts, task) = alert::start(email, &settings.daemon.state_dir,
//!                                   alert::Journal::from(settings.daemon.bus))?;
//! let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
//! let handle = tokio::spawn(task.run(async move { let _ = stop_rx.await; }));
//! // the watch loop owns `alerts` (cheap to clone) and calls `alerts.send(event)`;
//! // `alerts.stats()` / `alerts.outbox_len()` feed status reporting.
//! // at shutdown, after the last event (`stopping`) was sent:
//! let _ = stop_tx.send(());
//! let _ = handle.await; // returns within FLUSH_BOUND (10 s) plus a moment
//! ```
//! Without `[email]`, use `Alerts::disabled()`. `start` fails only when `from`/`to` cannot be
//! used as addresses at all; everything else (password file, CA file, server down) shows up
//! as warnings at start and as delivery errors, with the emails kept in the outbox.
//!
//! On shutdown, [`AlertTask::run`] takes every event already queued (so a `stopping` sent
//! before the shutdown future resolves is included), sends the open batch at once, and tries
//! to deliver the outbox until [`FLUSH_BOUND`]; whatever is still unsent stays in
//! `state_dir/outbox` for the next start.
//!
//! # Inside
//! - `event`: `Event` and its `EventKind` (the names `notify_on` selects).
//! - `batch`: the pure planner (batching, dedup, reminders, threads), state in
//!   `state_dir/alerts.json` (pending events included, so `kill -9` loses none).
//! - `render`: subject and body. `journal`: the unit's last journal lines.
//! - `outbox`: one file per email, written before the first attempt, removed after delivery.
//! - `email`: lettre. A separate courier task delivers, so a slow or hung server (cut off by
//!   `timeout`) delays neither the batching nor the watch loop, whose `send` never waits.

pub mod batch;
pub mod email;
mod event;
pub mod journal;
pub mod outbox;
pub mod render;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::EmailSettings;
use crate::unit::UnitName;
use batch::{Draft, Planner, Pushed, Rules, State};
pub use email::test_email;
use email::{Compose, Mailer, Scope};
pub use event::{ALL_EVENTS, Event, EventKind};
pub use journal::Journal;
use outbox::{Outbox, Stored};

/// How many events may wait for the alert task before the watch loop has to spill them.
pub const QUEUE: usize = 1024;
/// How long shutdown may spend delivering the last emails.
pub const FLUSH_BOUND: Duration = Duration::from_secs(10);
/// Retry delays for the outbox while the server fails: doubling from the first to the cap.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);
const STATE_FILE: &str = "alerts.json";

#[derive(Default)]
struct Counters {
    outbox: AtomicUsize,
    sent: AtomicU64,
    dropped: AtomicU64,
    suppressed: AtomicU64,
}

/// A snapshot of the alert pipeline for status reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertStats {
    /// Emails waiting in `state_dir/outbox`.
    pub outbox: usize,
    /// Emails the server accepted since start.
    pub sent: u64,
    /// Events or emails lost since start (queue full, older than `outbox_max_age`, unreadable
    /// outbox file); each was logged at error level.
    pub dropped: u64,
    /// Events left out as repeats within `min_interval` since start.
    pub suppressed: u64,
}

/// The watch loop's end of the alert queue. Cheap to clone; `send` never waits.
#[derive(Clone)]
pub struct Alerts {
    tx: Option<mpsc::Sender<Event>>,
    counters: Arc<Counters>,
}

impl Alerts {
    /// No `[email]` section: events are only logged.
    pub fn disabled() -> Alerts {
        Alerts {
            tx: None,
            counters: Arc::default(),
        }
    }

    pub fn new(tx: mpsc::Sender<Event>) -> Alerts {
        Alerts {
            tx: Some(tx),
            counters: Arc::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `ev` without waiting. A full queue means the alert task is stuck far behind;
    /// the event is then logged as dropped (and counted) rather than stalling restarts.
    pub fn send(&self, ev: Event) {
        let Some(tx) = &self.tx else { return };
        if let Err(e) = tx.try_send(ev) {
            let ev = match e {
                mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => ev,
            };
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                event = ev.kind.as_str(),
                unit = ev.unit.as_ref().map_or("-", |u| u.as_str()),
                "alert queue unavailable; alert dropped: {}",
                ev.detail
            );
        }
    }

    pub fn stats(&self) -> AlertStats {
        let c = &self.counters;
        AlertStats {
            outbox: c.outbox.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            suppressed: c.suppressed.load(Ordering::Relaxed),
        }
    }

    /// Emails waiting in the outbox.
    pub fn outbox_len(&self) -> usize {
        self.counters.outbox.load(Ordering::Relaxed)
    }
}

/// Sets up email alerts: returns the sending handle for the watch loop and the task that
/// batches and delivers (run it with [`AlertTask::run`]). Logs the config warnings (inline
/// password, password file readable by others, ...) once.
pub fn start(
    email: &EmailSettings,
    state_dir: &Path,
    journal: Journal,
) -> anyhow::Result<(Alerts, AlertTask)> {
    let mailer = Mailer::new(email).map_err(anyhow::Error::msg)?;
    for w in email.warnings() {
        tracing::warn!("{w}");
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let counters = Arc::new(Counters::default());
    let outbox = Outbox::new(state_dir);
    outbox.clean_temporaries();
    let waiting = outbox.len();
    counters.outbox.store(waiting, Ordering::Relaxed);
    if waiting > 0 {
        tracing::info!(
            outbox = waiting,
            "{waiting} alert email(s) from an earlier run wait in {}; sending now",
            outbox.dir().display()
        );
    }
    let state_path = state_dir.join(STATE_FILE);
    let state = load_state(&state_path);
    let mut planner = Planner::new(
        Rules::from_settings(email),
        state.clone(),
        mailer.id_source(),
    );
    // Killed after writing a batch's email but before saving the state without the batch: the
    // email is in the outbox already, so the batch only needs closing, not a second email.
    if let Some(id) = planner.pending_id()
        && outbox.has(id)
    {
        planner.flush(Timestamp::now());
    }
    let alerts = Alerts {
        tx: Some(tx),
        counters: Arc::clone(&counters),
    };
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let task = AlertTask {
        rx,
        planner,
        gate,
        saved: state,
        state_path,
        save_failing: false,
        mailer: Arc::new(mailer),
        outbox,
        settings: email.clone(),
        journal,
        counters,
    };
    Ok((alerts, task))
}

fn load_state(path: &Path) -> State {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return State::default(),
        Err(e) => {
            tracing::error!(path = %path.display(), "cannot read alert state: {e}; starting without threads, reminders or pending events");
            return State::default();
        }
    };
    match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            let aside = path.with_extension("json.corrupt");
            let _ = std::fs::rename(path, &aside);
            tracing::error!(path = %path.display(), "alert state is corrupt ({e}); moved to {}, starting fresh", aside.display());
            State::default()
        }
    }
}

enum Poke {
    /// Something new is in the outbox: try now.
    Wake,
    /// An email that could not be written to the outbox: deliver it from memory.
    Memory(Box<Stored>),
    /// Shutdown: one last round until this instant, then stop.
    Finish(Instant),
}

/// Batches events into emails and hands them to the courier; see the module doc.
pub struct AlertTask {
    rx: mpsc::Receiver<Event>,
    planner: Planner,
    /// Held while an email is written and the state saved, and by the courier while it lists
    /// the outbox.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// The state as last written, to write only on change.
    saved: State,
    state_path: PathBuf,
    save_failing: bool,
    mailer: Arc<Mailer>,
    outbox: Outbox,
    settings: EmailSettings,
    journal: Journal,
    counters: Arc<Counters>,
}

/// Runs file system work (fsyncs included) off the runtime's only thread, so the watch loop
/// never waits for the alert files.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)
}

fn until(t: Timestamp) -> Duration {
    let d = t.duration_since(Timestamp::now());
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

impl AlertTask {
    /// Runs until `shutdown` resolves (or every [`Alerts`] handle is dropped), then flushes as
    /// described in the module doc and returns.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let (poke_tx, poke_rx) = mpsc::unbounded_channel();
        let courier = Courier {
            gate: Arc::clone(&self.gate),
            mailer: Arc::clone(&self.mailer),
            outbox: self.outbox.clone(),
            max_age: self.settings.outbox_max_age,
            counters: Arc::clone(&self.counters),
            memory: Vec::new(),
            failures: 0,
            retry_at: None,
        };
        let mut courier = tokio::spawn(courier.run(poke_rx));
        // Whatever an earlier run left in the outbox goes out now.
        let _ = poke_tx.send(Poke::Wake);
        tokio::pin!(shutdown);
        loop {
            let wait = self.planner.next_deadline().map(until);
            tokio::select! {
                _ = &mut shutdown => break,
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.take(ev),
                    None => break,
                },
                _ = async {
                    match wait {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            self.tick(&poke_tx, false).await;
        }
        let deadline = Instant::now() + FLUSH_BOUND;
        while let Ok(ev) = self.rx.try_recv() {
            self.take(ev);
        }
        self.tick(&poke_tx, true).await;
        let _ = poke_tx.send(Poke::Finish(deadline));
        // The courier stops by itself at the deadline; the margin covers its last bookkeeping.
        if tokio::time::timeout_at(deadline + Duration::from_secs(1), &mut courier)
            .await
            .is_err()
        {
            courier.abort();
        }
        let outbox = self.outbox.clone();
        let left = blocking(move || outbox.len()).await.unwrap_or(0);
        if left > 0 {
            tracing::warn!(
                outbox = left,
                "{left} alert email(s) not delivered before shutdown; they stay in {} for the next start",
                self.outbox.dir().display()
            );
        }
    }

    fn take(&mut self, ev: Event) {
        let kind = ev.kind.as_str();
        let unit = ev.unit.as_ref().map_or("-", |u| u.as_str()).to_string();
        match self.planner.push(ev, Timestamp::now()) {
            Pushed::Accepted => tracing::debug!(event = kind, unit, "alert queued"),
            Pushed::Suppressed => {
                self.counters.suppressed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    event = kind,
                    unit,
                    "alert suppressed: the same event for this unit was sent within min_interval"
                );
            }
            Pushed::Ignored => {}
        }
    }

    /// Sends what is due (everything, when `all`), then saves the planner state if it changed.
    async fn tick(&mut self, poke: &mpsc::UnboundedSender<Poke>, all: bool) {
        let now = Timestamp::now();
        let due = self.planner.poll(now);
        let draft = if due || all {
            self.planner.flush(now)
        } else {
            None
        };
        let Some(draft) = draft else {
            self.save().await;
            return;
        };
        let stored = self.render(&draft).await;
        // The courier lists the outbox only under this gate, so it cannot deliver the new email
        // before the state without its batch is on disk: a kill in between then finds the
        // batch and its file, and does not send the batch a second time (see `start`).
        let gate = Arc::clone(&self.gate);
        let fence = gate.lock().await;
        let wake = match stored {
            Some(stored) => Some(self.store(stored).await),
            None => None,
        };
        self.save().await;
        drop(fence);
        if let Some(p) = wake {
            let _ = poke.send(p);
        }
    }

    async fn save(&mut self) {
        if self.planner.state() == &self.saved {
            return;
        }
        let path = self.state_path.clone();
        let result = match serde_json::to_vec(self.planner.state()) {
            Ok(json) => blocking(move || {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                outbox::write_atomic(&path, &json)
            })
            .await
            .and_then(|r| r),
            Err(e) => Err(std::io::Error::other(e)),
        };
        match result {
            Ok(()) => {
                self.saved = self.planner.state().clone();
                self.save_failing = false;
            }
            Err(e) => {
                if !self.save_failing {
                    tracing::error!(path = %self.state_path.display(), "cannot write alert state: {e}; pending alerts and threads will not survive a restart until this is fixed");
                }
                self.save_failing = true;
            }
        }
    }

    /// The email of `draft`, journal excerpts included; `None` if it cannot be built.
    async fn render(&self, draft: &Draft) -> Option<Stored> {
        let host = crate::config::hostname();
        let tz = jiff::tz::TimeZone::system();
        let journal = self.journals(draft).await;
        let ctx = render::Context {
            host: &host,
            prefix: &self.settings.subject_prefix,
            tz: &tz,
            min_interval: self.settings.min_interval,
            remind_after: &self.planner_remind_after(),
            journal_lines: self.settings.journal_lines,
            journal: &journal,
        };
        let subject = render::subject(draft, &ctx);
        let body = render::body(draft, &ctx);
        let stored = match self.mailer.compose(&Compose {
            message_id: &draft.message_id,
            date: draft.at,
            subject: &subject,
            body: &body,
            in_reply_to: draft.in_reply_to.as_deref(),
            references: &draft.references,
        }) {
            Ok(s) => s,
            Err(e) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(subject, "alert email dropped: {e}");
                return None;
            }
        };
        tracing::info!(
            subject,
            message_id = %draft.message_id,
            events = draft.items.len(),
            "alert email queued"
        );
        Some(stored)
    }

    /// Writes `stored` to the outbox; what to tell the courier.
    async fn store(&self, stored: Stored) -> Poke {
        let outbox = self.outbox.clone();
        let copy = stored.clone();
        match blocking(move || outbox.put(&copy)).await.and_then(|r| r) {
            Ok(_) => {
                self.counters.outbox.fetch_add(1, Ordering::Relaxed);
                Poke::Wake
            }
            Err(e) => {
                tracing::error!(dir = %self.outbox.dir().display(), subject = %stored.subject, "cannot write to the outbox: {e}; sending from memory, the email is lost if unitwarden stops before it is delivered");
                Poke::Memory(Box::new(stored))
            }
        }
    }

    fn planner_remind_after(&self) -> Vec<Duration> {
        let mut r = self.settings.remind_after.clone();
        r.sort();
        r
    }

    /// The journal excerpt of every unit in `draft`, read concurrently.
    async fn journals(&self, draft: &Draft) -> BTreeMap<UnitName, render::Excerpt> {
        let lines = self.settings.journal_lines;
        let mut out = BTreeMap::new();
        if lines == 0 {
            return out;
        }
        let mut set = tokio::task::JoinSet::new();
        for unit in draft.units() {
            let unit = unit.clone();
            let journal = self.journal;
            set.spawn(async move {
                let x = journal::excerpt(journal, &unit, lines).await;
                (unit, x)
            });
        }
        while let Some(r) = set.join_next().await {
            if let Ok((unit, x)) = r {
                out.insert(unit, x);
            }
        }
        out
    }
}

/// Delivers the outbox, oldest first, with backoff while the server fails.
struct Courier {
    gate: Arc<tokio::sync::Mutex<()>>,
    mailer: Arc<Mailer>,
    outbox: Outbox,
    max_age: Duration,
    counters: Arc<Counters>,
    memory: Vec<Stored>,
    failures: u32,
    retry_at: Option<Instant>,
}

fn retry_delay(failures: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(RETRY_MAX)
}

impl Courier {
    async fn run(mut self, mut pokes: mpsc::UnboundedReceiver<Poke>) {
        loop {
            let retry_at = self.retry_at;
            let finish = tokio::select! {
                p = pokes.recv() => match p {
                    Some(Poke::Wake) => None,
                    Some(Poke::Memory(m)) => {
                        self.memory.push(*m);
                        None
                    }
                    Some(Poke::Finish(deadline)) => Some(deadline),
                    None => return,
                },
                _ = async {
                    match retry_at {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => None,
            };
            self.round(finish).await;
            if finish.is_some() {
                return;
            }
        }
    }

    /// One pass over the outbox. With a deadline (shutdown), stops when it passes.
    async fn round(&mut self, deadline: Option<Instant>) {
        let outbox = self.outbox.clone();
        let fence = self.gate.lock().await;
        let (stored, bad) = blocking(move || outbox.list()).await.unwrap_or_default();
        drop(fence);
        for b in bad {
            let outbox = self.outbox.clone();
            let path = b.path.clone();
            let aside = blocking(move || outbox.set_aside(&path))
                .await
                .unwrap_or_default();
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(path = %b.path.display(), "unreadable outbox file ({}); moved to {} and not sent", b.reason, aside.display());
        }
        let mut queue: Vec<(Option<PathBuf>, Stored)> = stored
            .into_iter()
            .map(|(p, m)| (Some(p), m))
            .chain(self.memory.drain(..).map(|m| (None, m)))
            .collect();
        queue.sort_by_key(|(_, m)| m.created);
        let mut server_failed = false;
        let now = Timestamp::now();
        for (path, mut m) in queue {
            let past_deadline = deadline.is_some_and(|d| Instant::now() >= d);
            if server_failed || past_deadline {
                if path.is_none() {
                    self.memory.push(m);
                }
                continue;
            }
            let age = Duration::try_from(now.duration_since(m.created)).unwrap_or_default();
            if age > self.max_age {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    subject = %m.subject, message_id = %m.message_id, attempts = m.attempts,
                    last_error = m.last_error.as_deref().unwrap_or("-"),
                    "alert email dropped: undelivered for longer than outbox_max_age"
                );
                self.forget(path).await;
                continue;
            }
            let attempt = self.mailer.deliver(&m);
            let result = match deadline {
                Some(d) => match tokio::time::timeout_at(d, attempt).await {
                    Ok(r) => r,
                    Err(_) => {
                        if path.is_none() {
                            self.memory.push(m);
                        }
                        continue;
                    }
                },
                None => attempt.await,
            };
            match result {
                Ok(response) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(subject = %m.subject, message_id = %m.message_id, response, "alert email sent");
                    self.forget(path).await;
                }
                Err(e) => {
                    m.attempts += 1;
                    m.last_error = Some(e.message.clone());
                    tracing::warn!(
                        subject = %m.subject, message_id = %m.message_id, attempts = m.attempts,
                        "alert email not sent: {e}"
                    );
                    server_failed |= e.scope == Scope::Server;
                    match path {
                        Some(p) => {
                            let outbox = self.outbox.clone();
                            let _ = blocking(move || outbox.update(&p, &m)).await;
                        }
                        None => self.memory.push(m),
                    }
                }
            }
        }
        let outbox = self.outbox.clone();
        let waiting = blocking(move || outbox.len()).await.unwrap_or(0) + self.memory.len();
        self.counters.outbox.store(waiting, Ordering::Relaxed);
        if waiting == 0 {
            self.failures = 0;
            self.retry_at = None;
        } else if deadline.is_none() {
            self.failures += 1;
            let delay = retry_delay(self.failures);
            self.retry_at = Some(Instant::now() + delay);
            tracing::warn!(
                outbox = waiting,
                "{waiting} alert email(s) wait in the outbox; next attempt in {}",
                humantime::format_duration(delay)
            );
        }
    }

    async fn forget(&self, path: Option<PathBuf>) {
        let Some(p) = path else { return };
        let outbox = self.outbox.clone();
        let shown = p.display().to_string();
        if let Err(e) = blocking(move || outbox.remove(&p)).await.and_then(|r| r) {
            tracing::error!(path = %shown, "cannot remove a delivered email from the outbox: {e}; it may be sent again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email_settings() -> EmailSettings {
        crate::config::parse(
            Path::new("/t.toml"),
            "[email]\nto = [\"ops@example.com\"]\nfrom = \"uw@example.com\"\n",
        )
        .unwrap()
        .email
        .unwrap()
    }

    /// A state dir as left by a kill: a batch waiting, its email in the outbox or not.
    fn killed_with_a_pending_batch(email_written: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let rules = Rules::from_settings(&email_settings());
        let mut p = Planner::new(rules, State::default(), Box::new(|_| "<x@test>".into()));
        let now = Timestamp::now();
        p.push(Event::new(EventKind::Started, None, now, "x"), now);
        std::fs::write(
            dir.path().join(STATE_FILE),
            serde_json::to_vec(p.state()).unwrap(),
        )
        .unwrap();
        if email_written {
            let m = Stored::new(
                "<x@test>".into(),
                "s".into(),
                now,
                "uw@example.com".into(),
                vec!["ops@example.com".into()],
                "m".into(),
            );
            Outbox::new(dir.path()).put(&m).unwrap();
        }
        dir
    }

    #[test]
    fn a_batch_whose_email_reached_the_outbox_is_not_sent_twice_after_a_kill() {
        let dir = killed_with_a_pending_batch(true);
        let (_, task) = start(&email_settings(), dir.path(), Journal::System).unwrap();
        assert_eq!(task.planner.pending_id(), None, "closed, not sent again");

        let dir = killed_with_a_pending_batch(false);
        let (_, task) = start(&email_settings(), dir.path(), Journal::System).unwrap();
        assert_eq!(
            task.planner.pending_id(),
            Some("<x@test>"),
            "still to be sent"
        );
    }

    #[test]
    fn retries_back_off_to_a_cap() {
        let got: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(got, [5, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = mpsc::channel(1);
        let a = Alerts::new(tx);
        let ev = || Event::new(EventKind::Started, None, Timestamp::now(), "x");
        a.send(ev());
        a.send(ev());
        assert_eq!(a.stats().dropped, 1);
        assert_eq!(Alerts::disabled().stats(), AlertStats::default());
    }
}
