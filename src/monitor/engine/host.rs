//! The host beside the units: resource checks every `resource_interval`, told once when a
//! threshold is crossed and once when back below; and the pre-flight check before a critical
//! window opens: every unit read, every probe run, the resources read, one report.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::Engine;
use super::operator::episode_state;
use crate::alert::EventKind;
use crate::clock::Now;
use crate::control::protocol::EpisodeState;
use crate::monitor::narrate::Line;
use crate::monitor::protocol::Action;
use crate::resources::{Crossing, Reading};
use crate::unit::UnitName;
use crate::window::Preflight;

/// A pre-flight check waits at most this long past its slowest probe's timeout for the
/// answers; what has not answered by then is reported as such.
const PREFLIGHT_SLACK: Duration = Duration::from_secs(30);

/// A pre-flight check under way: what it still waits for.
#[derive(Debug)]
pub(super) struct PreflightRun {
    due: Preflight,
    probes: BTreeSet<UnitName>,
    polled: bool,
    resources: bool,
    deadline: Instant,
    /// Units whose probe failed during the check, with the error.
    failed_probes: Vec<(UnitName, String)>,
}

/// Resource checks between their turns.
#[derive(Debug, Default)]
pub(super) struct Host {
    tracker: crate::resources::Tracker,
    /// The last round, for the pre-flight report.
    readings: Vec<Reading>,
    next: Option<Instant>,
    running: bool,
    /// Pre-flight checks made, as (window, opening), until the window has opened.
    preflights_done: Vec<(String, jiff::Timestamp)>,
    next_preflight: Option<Preflight>,
    pub(super) preflight: Option<Box<PreflightRun>>,
}

impl Host {
    /// A new config: its resource checks are read at once (a tracked check it no longer has
    /// is forgotten with the next round).
    pub(super) fn reloaded(&mut self) {
        self.next = None;
    }
}

impl Engine {
    /// Reads the host when its turn has come (the first time at once).
    pub(super) fn check_resources_if_due(&mut self, now: &Now) {
        if self.mode != super::Mode::Daemon || self.host.running {
            return;
        }
        if self.settings.resources.is_none() || self.host.next.is_some_and(|at| at > now.at) {
            return;
        }
        self.start_resource_check(now);
    }

    /// Sends a round of resource readings out now; the next is due an interval later.
    fn start_resource_check(&mut self, now: &Now) {
        let Some(r) = self.settings.resources.as_ref() else {
            return;
        };
        self.host.next = Some(now.after(r.interval));
        self.host.running = true;
        self.out.push(Action::CheckResources(Box::new(r.clone())));
    }

    /// A round of readings has come back.
    pub(super) fn resources_read(&mut self, readings: Vec<Reading>, now: &Now) {
        self.host.running = false;
        if self.settings.resources.is_none() {
            // Configured away by a reload while it ran.
            self.host.tracker.assess(Vec::new());
            return;
        }
        self.host.readings = readings.clone();
        for crossing in self.host.tracker.assess(readings) {
            let (kind, line) = match &crossing {
                Crossing::Over(r) => (
                    EventKind::Resource,
                    Line::warn(format!(
                        "{} is over its threshold of {}",
                        r.detail,
                        r.resource.show(r.threshold)
                    ))
                    .result("over"),
                ),
                Crossing::Back(r) => (
                    EventKind::Recovered,
                    Line::info(format!(
                        "{} is back below {}",
                        r.detail,
                        r.resource.show(r.back_below)
                    ))
                    .result("recovered"),
                ),
                Crossing::Unreadable(r) => (
                    EventKind::Resource,
                    Line::warn(format!("cannot check {}", r.detail)).result("unreadable"),
                ),
            };
            let line = line.action("resource");
            let detail = line.message.clone();
            self.log(line);
            self.alert_self(kind, detail, now);
        }
        if let Some(run) = self.host.preflight.as_deref_mut() {
            run.resources = true;
        }
        self.finish_preflight(now);
    }

    /// When the host next needs the engine: a resource check or a pre-flight check.
    pub(super) fn host_wake(&self, now: &Now) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        if !self.host.running
            && self.settings.resources.is_some()
            && self.mode == super::Mode::Daemon
        {
            at(self.host.next.unwrap_or(now.at));
        }
        match &self.host.preflight {
            // One check at a time: the next is due once this one has reported.
            Some(run) => at(run.deadline),
            None if self.shutting_down => {}
            None => {
                if let Some(p) = &self.host.next_preflight {
                    at(now.instant_of(p.at));
                }
            }
        }
        wake
    }

    /// Plans the next pre-flight check (after a start, a reload, or a check made).
    pub(super) fn plan_preflight(&mut self, now: &Now) {
        if self.mode != super::Mode::Daemon {
            return;
        }
        self.host
            .preflights_done
            .retain(|(_, opens)| *opens > now.wall);
        self.host.next_preflight = self
            .settings
            .calendar
            .next_preflight(now.wall, &self.host.preflights_done);
    }

    /// Starts the pre-flight check when its time has come.
    pub(super) fn preflight_if_due(&mut self, now: &Now) {
        if self.host.preflight.is_some() || self.shutting_down {
            return;
        }
        let Some(due) = self.host.next_preflight.clone() else {
            return;
        };
        if due.at > now.wall {
            return;
        }
        self.host
            .preflights_done
            .push((due.window.clone(), due.opens));
        self.plan_preflight(now);
        let mut probes = BTreeSet::new();
        let mut slowest = Duration::ZERO;
        let mut start = Vec::new();
        for (name, w) in self.units.iter() {
            let (Some(ps), Some(p)) = (w.probe.as_deref(), w.settings.probe.as_ref()) else {
                continue;
            };
            if !super::probes::probe_may_run(w) {
                continue;
            }
            slowest = slowest.max(p.timeout);
            probes.insert(name.clone());
            if !ps.running {
                start.push(name.clone());
            }
        }
        for name in start {
            self.start_probe(&name, now);
        }
        // Done already when there is nothing to read; a round under way counts for the check.
        let resources = self.settings.resources.is_none();
        if !resources && !self.host.running {
            self.start_resource_check(now);
        }
        self.log(
            Line::info(format!(
                "pre-flight check before {} opens at {}",
                due.window,
                crate::monitor::narrate::local(due.opens, &self.tz)
            ))
            .action("preflight")
            .window(due.window.clone()),
        );
        self.host.preflight = Some(Box::new(PreflightRun {
            due,
            probes,
            polled: false,
            resources,
            deadline: now.after(slowest + PREFLIGHT_SLACK),
            failed_probes: Vec::new(),
        }));
        self.poll(now);
    }

    /// A probe answered during a pre-flight check.
    pub(super) fn preflight_probed(&mut self, name: &UnitName, ok: bool, detail: &str) {
        if let Some(run) = self.host.preflight.as_deref_mut()
            && run.probes.remove(name)
            && !ok
        {
            run.failed_probes.push((name.clone(), detail.to_string()));
        }
    }

    /// A poll completed during a pre-flight check.
    pub(super) fn preflight_polled(&mut self, now: &Now) {
        if let Some(run) = self.host.preflight.as_deref_mut() {
            run.polled = true;
        }
        self.finish_preflight(now);
    }

    /// Reports the pre-flight check once everything has answered or its time is up.
    pub(super) fn finish_preflight(&mut self, now: &Now) {
        let Some(run) = self.host.preflight.as_deref() else {
            return;
        };
        let complete = run.polled && run.resources && run.probes.is_empty();
        if !complete && now.at < run.deadline {
            return;
        }
        let Some(run) = self.host.preflight.take() else {
            return;
        };
        let mut problems: Vec<String> = Vec::new();
        let mut healthy = 0usize;
        for (name, w) in self.units.iter() {
            match episode_state(w) {
                EpisodeState::Healthy => {
                    if !run.failed_probes.iter().any(|(n, _)| n == name) {
                        healthy += 1;
                    }
                }
                state => {
                    let mut what = format!("{name} {}", state.as_str());
                    if let Some(o) = &w.obs {
                        what.push_str(&format!(" ({}/{})", o.active, o.sub));
                    }
                    problems.push(what);
                }
            }
        }
        for (name, detail) in &run.failed_probes {
            problems.push(format!("{name} health probe failed: {detail}"));
        }
        for name in &run.probes {
            problems.push(format!("{name} health probe did not answer in time"));
        }
        if !run.polled {
            problems.push("systemd did not answer the check of the units in time".into());
        }
        for r in &self.host.readings {
            let over = self.host.tracker.over().any(|o| *o == r.resource);
            if over || r.value.is_err() {
                problems.push(r.detail.clone());
            }
        }
        if !run.resources && self.settings.resources.is_some() {
            problems.push("the resource check did not answer in time".into());
        }
        let opens = crate::monitor::narrate::local(run.due.opens, &self.tz);
        let n = self.units.len();
        let (line, detail) = if problems.is_empty() {
            let text = format!(
                "pre-flight before {} opens at {opens}: all {n} units healthy{}{}",
                run.due.window,
                if self.units.iter().any(|(_, w)| w.probe.is_some()) {
                    ", probes pass"
                } else {
                    ""
                },
                if self.settings.resources.is_some() {
                    ", resources below their thresholds"
                } else {
                    ""
                }
            );
            (Line::info(text.clone()).result("ok"), text)
        } else {
            let text = format!(
                "pre-flight before {} opens at {opens}: {} of {n} units healthy; {} to look at: {}",
                run.due.window,
                healthy,
                problems.len(),
                problems.join("; ")
            );
            (Line::warn(text.clone()).result("problems"), text)
        };
        self.log(line.action("preflight").window(run.due.window.clone()));
        self.alert_self(EventKind::Preflight, detail, now);
    }
}
