//! The batching task: turns queued events into emails in the outbox, keeps the planner state
//! on disk, and hands each email to the courier.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::batch::{Draft, Planner, Pushed, State};
use super::courier::{Courier, Poke, blocking};
use super::email::{Compose, Mailer};
use super::outbox::{Outbox, Stored};
use super::{Counters, Event, FLUSH_BOUND, Journal, journal, render};
use crate::config::EmailSettings;
use crate::files::{self, Durability};
use crate::unit::UnitName;

/// Batches events into emails and hands them to the courier; see the [`alert`](super) module doc.
pub struct AlertTask {
    pub(super) rx: mpsc::Receiver<Event>,
    pub(super) planner: Planner,
    /// Held while an email is written and the state saved, and by the courier while it lists
    /// the outbox.
    pub(super) gate: Arc<tokio::sync::Mutex<()>>,
    /// The state as last written, to write only on change.
    pub(super) saved: State,
    pub(super) state_path: PathBuf,
    pub(super) save_failing: bool,
    pub(super) mailer: Arc<Mailer>,
    pub(super) outbox: Outbox,
    pub(super) settings: EmailSettings,
    pub(super) journal: Journal,
    pub(super) counters: Arc<Counters>,
}

fn until(t: Timestamp) -> Duration {
    let d = t.duration_since(Timestamp::now());
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

impl AlertTask {
    /// Runs until `shutdown` resolves (or every [`Alerts`](super::Alerts) handle is dropped),
    /// then flushes as described in the [`alert`](super) module doc and returns.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let (poke_tx, poke_rx) = mpsc::unbounded_channel();
        let courier = Courier::new(
            Arc::clone(&self.gate),
            Arc::clone(&self.mailer),
            self.outbox.clone(),
            self.settings.outbox_max_age,
            Arc::clone(&self.counters),
        );
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
                    files::create_private_dir(dir)?;
                }
                files::write_atomic(&path, &json, Durability::Flushed)
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

    /// The journal excerpt of every unit the email details, read concurrently: a storm over
    /// hundreds of units runs `journalctl` only for the few the body shows.
    async fn journals(&self, draft: &Draft) -> BTreeMap<UnitName, render::Excerpt> {
        let lines = self.settings.journal_lines;
        let mut out = BTreeMap::new();
        if lines == 0 {
            return out;
        }
        let mut set = tokio::task::JoinSet::new();
        for unit in render::detailed(draft) {
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
