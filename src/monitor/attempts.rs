//! Restart attempts in flight: each one a task that asks systemd to restart the unit and waits
//! for its own job, so a slow job never delays the watch loop.

use std::time::Duration;

use tokio::task::JoinSet;

use crate::config::RecoverySettings;
use crate::policy::JobOutcome;
use crate::systemd::{Systemd, SystemdError};
use crate::unit::{JobResult, UnitName};

/// How long a restart job may stay queued or running before we stop waiting for its
/// `JobRemoved` and let the unit's state after `verify_after` decide.
const JOB_WAIT: Duration = Duration::from_secs(300);

/// Whether the attempt clears the failed state first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// `ResetFailedUnit` first: clears systemd's start limiter of a failed unit.
    Failed,
    None,
}

#[derive(Default)]
pub struct Attempts {
    running: JoinSet<(UnitName, JobOutcome)>,
}

impl Attempts {
    pub fn start(&mut self, sd: &Systemd, unit: UnitName, reset: Reset) {
        let sd = sd.clone();
        self.running.spawn(async move {
            let outcome = attempt(&sd, &unit, reset).await;
            (unit, outcome)
        });
    }

    /// The next attempt to end; never resolves while none is in flight.
    pub async fn next(&mut self) -> (UnitName, JobOutcome) {
        loop {
            match self.running.join_next().await {
                Some(Ok(done)) => return done,
                // A task only ends in error by panicking, which aborts the daemon.
                Some(Err(_)) => continue,
                None => std::future::pending().await,
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

async fn attempt(sd: &Systemd, unit: &UnitName, reset: Reset) -> JobOutcome {
    let queued = match reset {
        Reset::Failed => sd.reset_and_restart(unit).await,
        Reset::None => sd.restart(unit).await,
    };
    let job = match queued {
        Ok(job) => job,
        Err(SystemdError::Refused { name, message }) => {
            return JobOutcome::Refused(format!("{name}: {message}"));
        }
        Err(e) => {
            tracing::warn!(unit = %unit, "RestartUnit: {e}");
            return JobOutcome::Lost;
        }
    };
    match tokio::time::timeout(JOB_WAIT, job.finished()).await {
        Ok(Some(result)) => JobOutcome::Ended(result),
        Ok(None) | Err(_) => JobOutcome::Lost,
    }
}

/// Starts a recovery unit and waits for its job, bounded by its `recovery_timeout`: whether
/// it ended well, and how, in words.
pub async fn recover(sd: &Systemd, r: &RecoverySettings) -> (bool, String) {
    let started = tokio::time::Instant::now();
    let waited = tokio::time::timeout(r.timeout, async {
        match sd.start(&r.unit).await {
            Ok(job) => Ok(job.finished().await),
            Err(e) => Err(e),
        }
    })
    .await;
    let took = crate::logging::format_duration(started.elapsed());
    match waited {
        Ok(Ok(Some(JobResult::Done))) => (true, format!("finished (done) after {took}")),
        Ok(Ok(Some(result))) => (false, format!("ended {result} after {took}")),
        Ok(Ok(None)) => (
            false,
            format!("lost sight of its job after {took} (the bus went away)"),
        ),
        Ok(Err(SystemdError::Refused { message, .. })) => {
            (false, format!("could not be started: {message}"))
        }
        Ok(Err(e)) => (false, format!("could not be started: {e}")),
        Err(_) => (
            false,
            format!(
                "still running after recovery_timeout ({}); not waiting any longer",
                crate::logging::format_duration(r.timeout)
            ),
        ),
    }
}
