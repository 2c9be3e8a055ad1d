//! Delivers each `JobRemoved` to the restart attempt that owns the job, instead of
//! broadcasting every job of the host to every attempt.
//!
//! The manager sends the reply to `RestartUnit` (which names the job) before the job's
//! `JobRemoved`, but the reply and the signal reach different tasks: the attempt that called
//! and the watch loop that reads signals. While a call is out, results nobody has claimed yet
//! are kept, so an attempt that learns its job path late still finds its result.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::path::JobPath;
use crate::unit::JobResult;

/// Results kept while a call is out. A burst of the host's other jobs larger than this within
/// one round trip could push ours out; the attempt then decides by the unit's state.
const EARLY_MAX: usize = 4096;

/// Shared by the connection's signal reader and the attempts; one per daemon, so jobs started
/// before a reconnect are still delivered after it (job paths belong to the manager, not to
/// the bus connection).
#[derive(Clone, Default)]
pub struct Jobs(Arc<Mutex<Table>>);

#[derive(Default)]
struct Table {
    waiting: HashMap<JobPath, oneshot::Sender<JobResult>>,
    early: VecDeque<(JobPath, JobResult)>,
    calls_out: usize,
}

/// Held while a job-creating call is out; results arriving meanwhile are kept for it.
pub(super) struct CallOut(Jobs);

impl Drop for CallOut {
    fn drop(&mut self) {
        let mut t = self.0.lock();
        t.calls_out -= 1;
        if t.calls_out == 0 {
            t.early.clear();
        }
    }
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding it; a poisoned table is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn call_out(&self) -> CallOut {
        self.lock().calls_out += 1;
        CallOut(self.clone())
    }

    /// Registers interest in `job`; the receiver resolves when it is removed. Must be called
    /// while the [`CallOut`] of the call that returned `job` is still held.
    pub(super) fn claim(&self, job: JobPath) -> oneshot::Receiver<JobResult> {
        let (tx, rx) = oneshot::channel();
        let mut t = self.lock();
        // Attempts that stopped waiting (their bound passed) leave closed senders behind.
        t.waiting.retain(|_, tx| !tx.is_closed());
        if let Some(i) = t.early.iter().position(|(p, _)| *p == job) {
            if let Some((_, result)) = t.early.remove(i) {
                let _ = tx.send(result);
            }
        } else {
            t.waiting.insert(job, tx);
        }
        rx
    }

    /// The jobs attempts still wait for.
    pub fn waiting(&self) -> Vec<JobPath> {
        let mut t = self.lock();
        t.waiting.retain(|_, tx| !tx.is_closed());
        t.waiting.keys().cloned().collect()
    }

    /// `job` is gone and its `JobRemoved` was missed (sent while the bus was down): its
    /// attempt stops waiting, and the unit's state decides.
    pub fn missed(&self, job: &JobPath) {
        // Dropping the sender ends the attempt's wait with "no result".
        self.lock().waiting.remove(job);
    }

    /// A `JobRemoved` arrived.
    pub(super) fn removed(&self, job: JobPath, result: JobResult) {
        let mut t = self.lock();
        if let Some(tx) = t.waiting.remove(&job) {
            // The attempt may have given up waiting; then nobody needs the result.
            let _ = tx.send(result);
        } else if t.calls_out > 0 {
            if t.early.len() == EARLY_MAX {
                t.early.pop_front();
            }
            t.early.push_back((job, result));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: u32) -> JobPath {
        JobPath::from_bus(&format!("/org/freedesktop/systemd1/job/{n}"))
    }

    #[test]
    fn a_result_reaches_only_the_attempt_that_owns_the_job() {
        let jobs = Jobs::default();
        let call = jobs.call_out();
        let mut mine = jobs.claim(job(1));
        drop(call);
        jobs.removed(job(2), JobResult::Failed);
        assert!(mine.try_recv().is_err(), "another job's result is not ours");
        jobs.removed(job(1), JobResult::Done);
        assert_eq!(mine.try_recv().unwrap(), JobResult::Done);
    }

    #[test]
    fn a_missed_job_ends_its_wait_without_a_result() {
        let jobs = Jobs::default();
        let call = jobs.call_out();
        let mut rx = jobs.claim(job(3));
        drop(call);
        assert_eq!(jobs.waiting(), vec![job(3)]);
        jobs.missed(&job(3));
        assert!(matches!(
            rx.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ));
        assert!(jobs.waiting().is_empty());
    }

    #[test]
    fn a_result_that_beats_the_reply_is_kept_for_its_owner() {
        let jobs = Jobs::default();
        let call = jobs.call_out();
        jobs.removed(job(7), JobResult::Canceled);
        let mut rx = jobs.claim(job(7));
        drop(call);
        assert_eq!(rx.try_recv().unwrap(), JobResult::Canceled);
    }

    #[test]
    fn results_nobody_waits_for_are_not_kept() {
        let jobs = Jobs::default();
        jobs.removed(job(3), JobResult::Done);
        let call = jobs.call_out();
        let mut rx = jobs.claim(job(3));
        drop(call);
        assert!(rx.try_recv().is_err());
        assert!(jobs.lock().early.is_empty());
    }

    #[test]
    fn abandoned_waits_are_forgotten() {
        let jobs = Jobs::default();
        let call = jobs.call_out();
        drop(jobs.claim(job(4)));
        let _kept = jobs.claim(job(5));
        drop(call);
        assert_eq!(jobs.lock().waiting.len(), 1);
    }
}
