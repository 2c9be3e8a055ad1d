//! Alertmanager as a sink beside email: every event the watch loop sends through
//! [`Alerts`](crate::alert::Alerts) also reaches this sink's task, which keeps the alerts
//! Alertmanager must know of ([`book`]) and posts them to its v2 API
//! (`POST /api/v2/alerts`), with the labels `alertname`, `host`, `unit`, `event` and
//! `severity`, and the annotations `summary`, `description` and `journal`.
//!
//! Like the email path, it never holds up the loop (`Alerts::send` only `try_send`s here) and
//! loses nothing to an Alertmanager that is down: the book is written to
//! `state_dir/alertmanager.json` before each post, a failed post is retried with backoff
//! (1 s doubling to 30 s), and active alerts are posted again every minute, so a restarted
//! Alertmanager, or a restarted unitwarden, has them all again within a minute.
//!
//! Only plain `http://` is spoken (`client`, a small HTTP/1.1 POST on tokio): Alertmanager
//! runs on the host or its LAN; across untrusted networks, a local proxy adds TLS.

pub mod book;
mod client;
mod url;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::alert::{Event, Journal, journal};
use crate::config::AlertmanagerSettings;
use crate::files::{self, Durability, Loaded};
use book::{Book, REFRESH};
pub use url::Url;

const STATE_FILE: &str = "alertmanager.json";
/// Events that may wait for the task before the loop drops them (and counts them).
const QUEUE: usize = 1024;
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long shutdown may spend on a last post.
const FLUSH_BOUND: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Counters {
    /// Alerts Alertmanager took (each alert of a post counted once per post).
    sent: AtomicU64,
    /// Posts that failed, and alerts dropped (queue full, book over its bound).
    failed: AtomicU64,
    /// Alerts not yet posted in their latest version.
    waiting: AtomicUsize,
}

/// The loop's end: queues events for the sink without waiting.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Event>,
    counters: Arc<Counters>,
}

impl Handle {
    pub fn send(&self, ev: &Event) {
        if self.tx.try_send(ev.clone()).is_err() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                event = ev.kind.as_str(),
                unit = ev.unit.as_ref().map_or("-", |u| u.as_str()),
                "alertmanager queue full; alert dropped: {}",
                ev.detail
            );
        }
    }

    /// What `/metrics` says of this sink.
    pub fn stats(&self) -> crate::metrics::SinkStats {
        let c = &self.counters;
        crate::metrics::SinkStats {
            sink: "alertmanager",
            sent: c.sent.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            waiting: c.waiting.load(Ordering::Relaxed),
        }
    }
}

/// Sets up the sink: the handle for [`Alerts`](crate::alert::Alerts) and the task that posts
/// (run it with [`Sink::run`]). What an earlier run left in `state_dir` is posted again.
pub fn start(
    settings: &AlertmanagerSettings,
    state_dir: &Path,
    journal: Journal,
) -> (Handle, Sink) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let counters = Arc::new(Counters::default());
    let path = state_dir.join(STATE_FILE);
    for stale in files::remove_stale_temporaries(state_dir, Some(STATE_FILE)) {
        tracing::info!(path = %stale.display(), "removed the temporary file of an interrupted alert write");
    }
    let book = load(&path).unposted();
    if !book.alerts.is_empty() {
        tracing::info!(
            alerts = book.alerts.len(),
            "{} alert(s) from an earlier run go to the Alertmanager at {}",
            book.alerts.len(),
            settings.url
        );
    }
    counters.waiting.store(book.alerts.len(), Ordering::Relaxed);
    let handle = Handle {
        tx,
        counters: Arc::clone(&counters),
    };
    let sink = Sink {
        rx,
        book,
        saved: None,
        path,
        settings: settings.clone(),
        journal,
        host: crate::config::hostname(),
        counters,
        failures: 0,
    };
    (handle, sink)
}

fn load(path: &Path) -> Book {
    match files::read_json(path) {
        Loaded::Missing => Book::default(),
        Loaded::Parsed(book) => book,
        Loaded::Unreadable(reason) => {
            match files::set_aside(path) {
                Ok(aside) => {
                    tracing::error!(path = %path.display(), "Alertmanager state is corrupt ({reason}); moved to {}, starting without the alerts it held", aside.display())
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), "Alertmanager state is corrupt ({reason}) and cannot be moved aside ({e}); starting without the alerts it held")
                }
            }
            Book::default()
        }
    }
}

/// The task that keeps the book and posts it.
pub struct Sink {
    rx: mpsc::Receiver<Event>,
    book: Book,
    /// The book as last written, to write only on change.
    saved: Option<Book>,
    path: PathBuf,
    settings: AlertmanagerSettings,
    journal: Journal,
    host: String,
    counters: Arc<Counters>,
    failures: u32,
}

fn retry_delay(failures: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(RETRY_MAX)
}

impl Sink {
    /// Runs until `shutdown` resolves (or every handle is gone); then takes what is queued
    /// (the `stopping` event among it) and makes one last post, bounded by a few seconds.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut next_post = Instant::now();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                ev = self.rx.recv() => match ev {
                    Some(ev) => {
                        self.take(ev).await;
                        while let Ok(ev) = self.rx.try_recv() {
                            self.take(ev).await;
                        }
                        // One write for a burst, before anything of it is posted.
                        self.save().await;
                        // News goes out now, unless a failure's backoff is running.
                        if self.failures == 0 {
                            next_post = Instant::now();
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(next_post) => {}
            }
            if Instant::now() < next_post {
                continue;
            }
            next_post = match self.post().await {
                _ if !self.book.has_news() && !self.book.has_active() => {
                    Instant::now() + REFRESH * 60
                }
                Ok(()) => Instant::now() + REFRESH,
                Err(()) => Instant::now() + retry_delay(self.failures),
            };
        }
        self.rx.close();
        while let Ok(ev) = self.rx.try_recv() {
            self.take(ev).await;
        }
        self.save().await;
        if self.book.has_news() {
            let _ = tokio::time::timeout(FLUSH_BOUND, self.post()).await;
        }
    }

    /// Adds one event to the book, with its journal excerpt where the alert is about a
    /// unit's failure.
    async fn take(&mut self, ev: Event) {
        let mut annotations = BTreeMap::new();
        annotations.insert("summary".to_string(), ev.detail.clone());
        let mut description = Vec::new();
        if let Some((k, n)) = ev.attempt {
            description.push(format!("Attempt {k}/{n}."));
        }
        if let Some(d) = &ev.diagnosis {
            description.push(format!("{d}."));
        } else if let Some(r) = &ev.result {
            description.push(format!("Result: {r}."));
        }
        if !ev.next.is_empty() {
            description.push(format!("Next: {}.", ev.next));
        }
        if let Some(w) = &ev.window {
            description.push(format!("Critical window: {w}."));
        }
        if !description.is_empty() {
            annotations.insert("description".to_string(), description.join(" "));
        }
        let lines = self.settings.journal_lines;
        if lines > 0
            && let Some(unit) = &ev.unit
            && book::severity(ev.kind) != "info"
        {
            let x = journal::excerpt(self.journal, unit, lines).await;
            let text = match x.lines {
                Ok(l) if l.is_empty() => format!("(no lines) {}", x.command),
                Ok(l) => l.join("\n"),
                Err(why) => format!("{why} ({})", x.command),
            };
            annotations.insert("journal".to_string(), text);
        }
        let dropped = self.book.take(&ev, &self.host, annotations);
        if dropped > 0 {
            self.counters
                .failed
                .fetch_add(dropped as u64, Ordering::Relaxed);
            tracing::error!(
                dropped,
                "more than {} alerts wait for the Alertmanager; the oldest were dropped",
                book::MAX_ALERTS
            );
        }
        self.count_waiting();
    }

    /// Posts the whole book; `Err` when Alertmanager did not take it (logged, counted).
    async fn post(&mut self) -> Result<(), ()> {
        let alerts = self.book.postable(Timestamp::now());
        if alerts.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_vec(&alerts).unwrap_or_default();
        let url = &self.settings.url;
        match client::post(url, &url.alerts_path(), &body, self.settings.timeout).await {
            Ok(()) => {
                if self.failures > 0 {
                    tracing::info!(
                        alerts = alerts.len(),
                        "the Alertmanager at {url} takes alerts again"
                    );
                }
                self.failures = 0;
                self.counters
                    .sent
                    .fetch_add(alerts.len() as u64, Ordering::Relaxed);
                self.book.delivered();
                self.count_waiting();
                self.save().await;
                Ok(())
            }
            Err(e) => {
                self.failures += 1;
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    alerts = alerts.len(),
                    "alerts not posted: {e}; they wait in {}, next attempt in {}",
                    self.path.display(),
                    humantime::format_duration(retry_delay(self.failures))
                );
                Err(())
            }
        }
    }

    fn count_waiting(&self) {
        let waiting = self.book.alerts.iter().filter(|a| !a.posted).count();
        self.counters.waiting.store(waiting, Ordering::Relaxed);
    }

    /// Writes the book (off the runtime's thread) when it changed. A failed write is logged;
    /// the alerts are still posted from memory.
    async fn save(&mut self) {
        if self.saved.as_ref() == Some(&self.book) {
            return;
        }
        let json = match serde_json::to_vec(&self.book) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!("cannot encode the Alertmanager state: {e}");
                return;
            }
        };
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                files::create_private_dir(dir)?;
            }
            files::write_atomic(&path, &json, Durability::Flushed)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match written {
            Ok(()) => self.saved = Some(self.book.clone()),
            Err(e) => {
                tracing::error!(path = %self.path.display(), "cannot write the Alertmanager state: {e}; alerts are kept in memory")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_cap() {
        let got: Vec<u64> = (1..=7).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
    }
}
