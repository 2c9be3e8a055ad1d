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
//! - `task`: [`AlertTask`], which batches events through the planner, writes each email to the
//!   outbox and keeps `alerts.json` current.
//! - `courier`: delivers the outbox with backoff, as a task of its own, so a slow or hung
//!   server (cut off by `timeout`) delays neither the batching nor the watch loop, whose `send`
//!   never waits.
//! - `email`: lettre.

pub mod batch;
mod courier;
pub mod email;
mod event;
pub mod journal;
pub mod outbox;
pub mod render;
mod task;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;

use crate::config::EmailSettings;
use crate::files::Loaded;
use batch::{Planner, Rules, State};
use email::Mailer;
pub use email::test_email;
pub use event::{ALL_EVENTS, Event, EventKind};
pub use journal::Journal;
use outbox::Outbox;
pub use task::AlertTask;

/// How many events may wait for the alert task before the watch loop has to spill them.
pub const QUEUE: usize = 1024;
/// How long shutdown may spend delivering the last emails.
pub const FLUSH_BOUND: Duration = Duration::from_secs(10);
const STATE_FILE: &str = "alerts.json";

impl Counters {
    fn note_oldest(&self, oldest: Option<Timestamp>) {
        let ms = oldest.map_or(0, |t| t.as_millisecond().max(1));
        self.oldest_ms.store(ms, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Counters {
    outbox: AtomicUsize,
    /// When the oldest email in the outbox was written (Unix milliseconds; 0 = none).
    oldest_ms: std::sync::atomic::AtomicI64,
    sent: AtomicU64,
    /// Delivery attempts the server refused or that failed on the way.
    failed: AtomicU64,
    dropped: AtomicU64,
    suppressed: AtomicU64,
}

/// A snapshot of the alert pipeline for status reporting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertStats {
    /// Emails waiting in `state_dir/outbox`.
    pub outbox: usize,
    /// When the oldest of them was written.
    pub oldest: Option<Timestamp>,
    /// Emails the server accepted since start.
    pub sent: u64,
    /// Delivery attempts that failed since start (each retried later).
    pub failed: u64,
    /// Events or emails lost since start (queue full, older than `outbox_max_age`, unreadable
    /// outbox file); each was logged at error level.
    pub dropped: u64,
    /// Events left out as repeats within `min_interval` since start.
    pub suppressed: u64,
}

/// The watch loop's end of the alert queue (and of the Alertmanager sink's, when configured).
/// Cheap to clone; `send` never waits.
#[derive(Clone)]
pub struct Alerts {
    tx: Option<mpsc::Sender<Event>>,
    counters: Arc<Counters>,
    alertmanager: Option<crate::alertmanager::Handle>,
}

impl Alerts {
    /// No `[email]` section: events are only logged.
    pub fn disabled() -> Alerts {
        Alerts {
            tx: None,
            counters: Arc::default(),
            alertmanager: None,
        }
    }

    pub fn new(tx: mpsc::Sender<Event>) -> Alerts {
        Alerts {
            tx: Some(tx),
            counters: Arc::default(),
            alertmanager: None,
        }
    }

    /// Whether email is on (the outbox `status` reports).
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Events also go to the Alertmanager sink behind `handle`.
    pub fn with_alertmanager(mut self, handle: crate::alertmanager::Handle) -> Alerts {
        self.alertmanager = Some(handle);
        self
    }

    /// Queues `ev` without waiting. A full queue means the alert task is stuck far behind;
    /// the event is then logged as dropped (and counted) rather than stalling restarts.
    pub fn send(&self, ev: Event) {
        if let Some(am) = &self.alertmanager {
            am.send(&ev);
        }
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
            oldest: match c.oldest_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Timestamp::from_millisecond(ms).ok(),
            },
            sent: c.sent.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            suppressed: c.suppressed.load(Ordering::Relaxed),
        }
    }

    /// What `/metrics` says of each sink that is configured.
    pub fn sink_stats(&self) -> Vec<crate::metrics::SinkStats> {
        let mut out = Vec::new();
        if self.is_enabled() {
            let s = self.stats();
            out.push(crate::metrics::SinkStats {
                sink: "email",
                sent: s.sent,
                failed: s.failed + s.dropped,
                waiting: s.outbox,
            });
        }
        out.extend(self.alertmanager.as_ref().map(|am| am.stats()));
        out
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
    let stale = outbox
        .prepare()
        .into_iter()
        .chain(crate::files::remove_stale_temporaries(
            state_dir,
            Some(STATE_FILE),
        ));
    for path in stale {
        tracing::info!(path = %path.display(), "removed the temporary file of an interrupted alert write");
    }
    let waiting = outbox.len();
    counters.outbox.store(waiting, Ordering::Relaxed);
    counters.note_oldest(outbox.oldest());
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
        alertmanager: None,
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

/// The planner's saved state; one that cannot be read, is not UTF-8 or not alert state is set
/// aside (`alerts.json.corrupt`, never overwritten by the next save) and reported once.
fn load_state(path: &Path) -> State {
    match crate::files::read_json(path) {
        Loaded::Missing => State::default(),
        Loaded::Parsed(state) => state,
        Loaded::Unreadable(reason) => {
            match crate::files::set_aside(path) {
                Ok(aside) => {
                    tracing::error!(path = %path.display(), "alert state is corrupt ({reason}); moved to {}, starting without threads, reminders or pending events", aside.display())
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), "alert state is corrupt ({reason}) and cannot be moved aside ({e}); starting without threads, reminders or pending events")
                }
            }
            State::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox::Stored;

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
    fn corrupt_alert_state_is_set_aside_and_temporaries_of_a_crash_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE_FILE);
        std::fs::write(&state, b"\xff not json").unwrap();
        // No process has a PID above the kernel's limit (4194304).
        let stale = dir.path().join("alerts.json.tmp.4194305");
        std::fs::write(&stale, b"{half").unwrap();
        let (_, task) = start(&email_settings(), dir.path(), Journal::System).unwrap();
        assert_eq!(task.planner.pending_id(), None);
        assert!(!state.exists() && !stale.exists());
        assert_eq!(
            std::fs::read(dir.path().join("alerts.json.corrupt")).unwrap(),
            b"\xff not json"
        );
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
