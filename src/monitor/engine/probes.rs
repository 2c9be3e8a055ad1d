//! Health probes in the engine: when each unit's probe is due, what its answers mean. A unit
//! whose probe has failed `failures` times in a row (outside `grace`) counts as down and goes
//! through the same episode, backoff and cap as a unit that failed.

use super::Engine;
use crate::clock::Now;
use crate::config::ProbeSettings;
use crate::monitor::narrate::Line;
use crate::monitor::protocol::Action;
use crate::monitor::registry::{ProbeResult, Watched};
use crate::policy::Health;
use crate::probe::ProbeOutcome;
use crate::unit::{ActiveState, UnitName};

impl Engine {
    /// Starts every probe that is due: one per unit at a time, only on active units nobody
    /// holds and no attempt of ours is moving.
    pub(super) fn start_due_probes(&mut self, now: &Now) {
        if !self.probing() {
            return;
        }
        let due: Vec<UnitName> = self
            .units
            .iter()
            .filter(|(_, w)| probe_due_at(w).is_some_and(|at| at <= now.at))
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.start_probe(&name, now);
        }
    }

    /// Sends `name`'s probe out now.
    pub(super) fn start_probe(&mut self, name: &UnitName, now: &Now) {
        let interval = self.interval;
        let Some(w) = self.units.get_mut(name) else {
            return;
        };
        let (Some(ps), Some(probe)) = (w.probe.as_deref_mut(), w.settings.probe.as_ref()) else {
            return;
        };
        ps.running = true;
        // From the start of this one: a slow probe delays its next, never piles up.
        ps.next_at = now.after(interval);
        let probe = probe.clone();
        self.out.push(Action::Probe {
            unit: name.clone(),
            probe,
        });
    }

    /// Whether probes run at all: in the daemon, until the host shuts down.
    pub(super) fn probing(&self) -> bool {
        self.mode == super::Mode::Daemon && !self.shutting_down
    }

    /// A probe has answered.
    pub(super) fn probed(&mut self, name: &UnitName, outcome: ProbeOutcome, now: &Now) {
        let ok = outcome.ok;
        let detail = self.decide_probe(name, outcome, now);
        self.preflight_probed(name, ok, &detail);
        self.finish_preflight(now);
    }

    /// How many failures in a row make a unit with `p` down now: a window may be stricter.
    pub(super) fn probe_limit(&self, p: &ProbeSettings) -> u32 {
        p.failures.min(self.window_failures)
    }

    /// Counts the answer; returns its detail.
    fn decide_probe(&mut self, name: &UnitName, outcome: ProbeOutcome, now: &Now) -> Box<str> {
        // Already one line and bounded: `probe::run` shapes every detail.
        let detail: Box<str> = outcome.detail.into();
        let Some(limit) = self
            .units
            .get(name)
            .and_then(|w| w.settings.probe.as_deref())
            .map(|p| self.probe_limit(p))
        else {
            return detail;
        };
        let Some(w) = self.units.get_mut(name) else {
            return detail;
        };
        let may_count = probe_may_run(w);
        let Some(ps) = w.probe.as_deref_mut() else {
            return detail;
        };
        ps.running = false;
        ps.last = Some(ProbeResult {
            ok: outcome.ok,
            detail: detail.clone(),
            at: now.wall,
            took: outcome.took,
        });
        if !may_count {
            // The unit stopped, was paused or is being restarted meanwhile: the answer is
            // about a unit that is gone.
            return detail;
        }
        if outcome.ok {
            let was_down = std::mem::take(&mut ps.down);
            let failed = std::mem::take(&mut ps.failures);
            if was_down || failed > 0 {
                let line = Line::info(format!("health probe passes again: {detail}"))
                    .unit(name)
                    .result("probe_ok");
                self.remember(name, &line, now);
                self.log(line);
            }
            if was_down && let Some(obs) = self.units.get(name).and_then(|w| w.obs.clone()) {
                self.observe(name, obs, now);
                self.tick_all(now);
            }
            return detail;
        }
        if ps.in_grace(now) {
            let line = Line::new(
                tracing::Level::DEBUG,
                format!("health probe failed within grace, not counted: {detail}"),
            )
            .unit(name);
            self.log(line);
            return detail;
        }
        if ps.down {
            // Down already: the episode is under way, and each attempt starts the count over.
            return detail;
        }
        ps.failures = ps.failures.saturating_add(1);
        let count = ps.failures;
        let reached = count >= limit;
        if reached {
            ps.down = true;
        }
        let line = Line::warn(format!("health probe failed ({count}/{limit}): {detail}"))
            .unit(name)
            .result("probe_failed");
        self.remember(name, &line, now);
        self.log(line);
        if reached && let Some(obs) = self.units.get(name).and_then(|w| w.obs.clone()) {
            self.observe(name, obs, now);
            self.tick_all(now);
        }
        detail
    }
}

/// Whether `w`'s probe may run now: it is active, nobody holds it, and no attempt of ours is
/// moving it.
pub(super) fn probe_may_run(w: &Watched) -> bool {
    w.settings.probe.is_some()
        && w.hold.is_none()
        && !w.machine.job_running()
        && w.obs
            .as_ref()
            .is_some_and(|o| o.active == ActiveState::Active)
}

/// When `w`'s next probe is due, if it may run and none is out.
pub(super) fn probe_due_at(w: &Watched) -> Option<tokio::time::Instant> {
    let ps = w.probe.as_deref()?;
    (probe_may_run(w) && !ps.running).then_some(ps.next_at)
}

/// The unit's health with its probe's verdict: an active unit whose probe failed `failures`
/// times in a row is down.
pub(super) fn with_probe(health: Health, w: &Watched) -> Health {
    match (health, w.probe.as_deref()) {
        (Health::Healthy, Some(ps)) if ps.down => Health::Down,
        (h, _) => h,
    }
}

/// The last probe error of a unit that is down by its probe, for narration.
pub(super) fn probe_error(w: &Watched) -> Option<&str> {
    let ps = w.probe.as_deref()?;
    if !ps.down {
        return None;
    }
    ps.last.as_ref().filter(|r| !r.ok).map(|r| &*r.detail)
}
