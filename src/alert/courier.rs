//! The courier: delivers the outbox, oldest first, retrying with backoff while the server
//! fails, so a slow server never holds up the batching task.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Counters;
use super::email::{Mailer, Scope};
use super::outbox::{Outbox, Stored};

/// Retry delays for the outbox while the server fails: doubling from the first to the cap.
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What the batching task tells the courier.
pub(super) enum Poke {
    /// Something new is in the outbox: try now.
    Wake,
    /// An email that could not be written to the outbox: deliver it from memory.
    Memory(Box<Stored>),
    /// Shutdown: one last round until this instant, then stop.
    Finish(Instant),
}

/// Runs file system work (fsyncs included) off the runtime's only thread, so the watch loop
/// never waits for the alert files.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)
}

/// Delivers the outbox, oldest first, with backoff while the server fails.
pub(super) struct Courier {
    gate: Arc<tokio::sync::Mutex<()>>,
    mailer: Arc<Mailer>,
    outbox: Outbox,
    max_age: Duration,
    counters: Arc<Counters>,
    memory: Vec<Stored>,
    /// Unreadable files that could not be set aside: reported once, not at every round.
    unmovable: HashSet<PathBuf>,
    failures: u32,
    retry_at: Option<Instant>,
}

fn retry_delay(failures: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
        .min(RETRY_MAX)
}

impl Courier {
    pub(super) fn new(
        gate: Arc<tokio::sync::Mutex<()>>,
        mailer: Arc<Mailer>,
        outbox: Outbox,
        max_age: Duration,
        counters: Arc<Counters>,
    ) -> Courier {
        Courier {
            gate,
            mailer,
            outbox,
            max_age,
            counters,
            memory: Vec::new(),
            unmovable: HashSet::new(),
            failures: 0,
            retry_at: None,
        }
    }

    pub(super) async fn run(mut self, mut pokes: mpsc::UnboundedReceiver<Poke>) {
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
            if self.unmovable.contains(&b.path) {
                continue;
            }
            let outbox = self.outbox.clone();
            let path = b.path.clone();
            let aside = blocking(move || outbox.set_aside(&path))
                .await
                .and_then(|moved| moved);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            match aside {
                Ok(aside) => {
                    tracing::error!(path = %b.path.display(), "unreadable outbox file ({}); moved to {} and not sent", b.reason, aside.display())
                }
                Err(e) => {
                    tracing::error!(path = %b.path.display(), "unreadable outbox file ({}) that cannot be moved aside ({e}); left in place and not sent", b.reason);
                    self.unmovable.insert(b.path);
                }
            }
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
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
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
        let (stored, oldest) = blocking(move || (outbox.len(), outbox.oldest()))
            .await
            .unwrap_or((0, None));
        let waiting = stored + self.memory.len();
        self.counters.outbox.store(waiting, Ordering::Relaxed);
        self.counters.note_oldest(oldest);
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

    #[test]
    fn retries_back_off_to_a_cap() {
        let got: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(got, [5, 10, 20, 40, 80, 160, 300, 300]);
    }
}
