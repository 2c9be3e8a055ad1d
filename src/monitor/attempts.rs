//! Restart attempts in flight: each one a task that asks systemd to restart the unit and waits
//! for its own job, so a slow job never delays the watch loop.

use std::time::Duration;

use tokio::task::JoinSet;

use crate::policy::JobOutcome;
use crate::systemd::{Systemd, SystemdError};
use crate::unit::UnitName;

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
