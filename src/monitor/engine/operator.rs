//! What operators ask of the running engine (`status`, `pause`, `resume`, `retry`), answered
//! from its own state. Pure like the rest of the engine: the request and the time in, the
//! reply and the actions out.

use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

use super::Engine;
use crate::clock::{Now, add};
use crate::config;
use crate::control::protocol::{
    EpisodeState, ProbeAnswer, ProbeReport, RecentReport, Reply, Request, SCHEMA, StatusReport,
    UnitReport,
};
use crate::monitor::narrate::{self, Override};
use crate::monitor::protocol::Action;
use crate::monitor::registry::{Recent, Watched};
use crate::policy::{Health, Hold};
use crate::unit::{UnitName, UnitPattern};

impl Engine {
    /// Answers one operator request; the actions (log lines, alerts, a restart for `retry`,
    /// the state write that keeps a pause) are for the shell to carry out.
    pub fn control(&mut self, request: Request, now: &Now) -> (Reply, Vec<Action>) {
        let reply = match request {
            Request::Status { unit } => self.status(unit.as_deref(), now),
            Request::Pause { units, for_ms } => {
                let until = for_ms.map(|ms| add(now.wall, Duration::from_millis(ms)));
                self.each(&units, true, now, |e, name, now| e.pause(name, until, now))
            }
            Request::Resume { units } => self.each(&units, true, now, |e, name, now| {
                if e.release(name, Override::Resumed { expired: false }, now) {
                    Ok(format!("resumed {name}"))
                } else {
                    Err(format!("{name} is not paused or stopped by an operator"))
                }
            }),
            Request::Retry { units } => {
                self.each(&units, false, now, |e, name, now| e.retry(name, now))
            }
        };
        self.tick_all(now);
        self.flush();
        (reply, std::mem::take(&mut self.out))
    }

    /// Applies `act` to every watched unit `args` name, collecting what was done and what not.
    fn each(
        &mut self,
        args: &[String],
        globs: bool,
        now: &Now,
        mut act: impl FnMut(&mut Engine, &UnitName, &Now) -> Result<String, String>,
    ) -> Reply {
        let mut done = Vec::new();
        let mut refused = Vec::new();
        if args.is_empty() {
            return Reply::error("no unit named");
        }
        for arg in args {
            match self.select(arg, globs) {
                Ok(names) => {
                    for name in names {
                        match act(self, &name, now) {
                            Ok(d) => done.push(d),
                            Err(r) => refused.push(r),
                        }
                    }
                }
                Err(r) => refused.push(r),
            }
        }
        Reply::outcome(done, refused)
    }

    /// The watched units `arg` names: an exact name (`.service` may be left out; an alias
    /// finds its unit) or, where allowed, a glob.
    fn select(&self, arg: &str, globs: bool) -> Result<Vec<UnitName>, String> {
        let shown = arg.escape_debug();
        let pattern = UnitPattern::parse(arg).map_err(|e| format!("{shown}: {e}"))?;
        let names: Vec<UnitName> = match &pattern {
            UnitPattern::Glob(_) if !globs => {
                return Err(format!("{shown}: name one unit, not a glob"));
            }
            UnitPattern::Glob(_) => self
                .units
                .iter()
                .filter(|(n, _)| pattern.matches(n))
                .map(|(n, _)| n.clone())
                .collect(),
            UnitPattern::Exact(name) => self
                .units
                .iter()
                .filter(|(n, w)| *n == name || w.alias.as_ref() == Some(name))
                .map(|(n, _)| n.clone())
                .collect(),
        };
        if names.is_empty() {
            return Err(format!("no watched unit matches {}", pattern.as_str()));
        }
        Ok(names)
    }

    fn pause(
        &mut self,
        name: &UnitName,
        until: Option<Timestamp>,
        now: &Now,
    ) -> Result<String, String> {
        let w = self.units.get_mut(name).ok_or("not watched")?;
        w.hold = Some(Box::new(Hold::Paused {
            since: now.wall,
            until,
        }));
        w.machine.suspend();
        w.unconfirmed = None;
        self.dirty = true;
        self.tell_override(name, Override::Paused { until }, now);
        Ok(match until {
            Some(t) => format!("paused {name} until {}", narrate::local(t, &self.tz)),
            None => format!("paused {name} until `unitwarden resume`"),
        })
    }

    fn retry(&mut self, name: &UnitName, now: &Now) -> Result<String, String> {
        let w = self.units.get_mut(name).ok_or("not watched")?;
        if w.hold.is_some() {
            return Err(format!(
                "{name} is paused or stopped by an operator: `unitwarden resume {name}` first"
            ));
        }
        if !w.machine.gave_up() {
            let state = episode_state(w).as_str();
            return Err(format!(
                "{name} has not given up ({state}); there is nothing to retry"
            ));
        }
        if self.shutting_down {
            return Err(format!("{name}: the manager is shutting down"));
        }
        let fx = w.machine.retry(&w.settings.policy, now);
        self.tell_override(name, Override::Retried, now);
        self.apply(name, fx, now);
        Ok(format!("retrying {name}: a fresh episode starts now"))
    }

    fn status(&self, unit: Option<&str>, now: &Now) -> Reply {
        let mut units = Vec::new();
        match unit {
            Some(arg) => match self.select(arg, false) {
                Ok(names) => {
                    for name in names {
                        if let Some(w) = self.units.get(&name) {
                            units.push(self.unit_report(&name, w, true, now));
                        }
                    }
                }
                Err(why) => return Reply::error(why),
            },
            None => {
                for (name, w) in self.units.iter() {
                    units.push(self.unit_report(name, w, false, now));
                }
            }
        }
        Reply::status(StatusReport {
            schema: SCHEMA,
            version: env!("CARGO_PKG_VERSION").to_string(),
            host: config::hostname(),
            pid: std::process::id(),
            config: self.settings.path.display().to_string(),
            started: self.started,
            now: now.wall,
            mode: if self.window.is_some() {
                "window"
            } else {
                "normal"
            }
            .to_string(),
            window: self.window.clone(),
            interval_ms: u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            next_poll: wall_of(now, self.next_poll),
            note: self.reload_note.clone(),
            shutting_down: self.shutting_down,
            // The shell knows the outbox.
            outbox: None,
            units,
        })
    }

    fn unit_report(&self, name: &UnitName, w: &Watched, detail: bool, now: &Now) -> UnitReport {
        let p = &w.settings.policy;
        let episode = episode_state(w);
        let until = match (w.hold.as_deref(), episode) {
            (Some(hold), _) => hold.until(),
            (None, EpisodeState::BackingOff) => w.machine.attempt_at().map(|at| wall_of(now, at)),
            (None, EpisodeState::GaveUp) => w
                .machine
                .episode()
                .and_then(|e| e.gave_up)
                .zip(p.give_up_cooldown)
                .map(|(at, cooldown)| add(at, cooldown)),
            _ => None,
        };
        let mut next = self.next_poll;
        if let Some(d) = w.machine.next_deadline(p, now) {
            next = next.min(d);
        }
        let obs = w.obs.as_ref();
        UnitReport {
            unit: name.to_string(),
            load: obs.map_or("unknown".into(), |o| o.load.to_string()),
            state: obs.map_or("unknown".into(), |o| o.active.to_string()),
            sub: obs.map_or("unknown".into(), |o| o.sub.to_string()),
            since: w.since,
            result: obs.and_then(|o| o.result.as_ref()).map(|r| r.to_string()),
            exec_status: obs.and_then(|o| o.exec_status()),
            n_restarts: obs.and_then(|o| o.n_restarts),
            attempts: w.machine.episode().map_or(0, |e| e.attempts),
            max_attempts: p.max_attempts,
            episode,
            until,
            last_action: w.last_action().map(recent),
            next_check: wall_of(now, next),
            recent: if detail {
                w.recent().map(recent).collect()
            } else {
                Vec::new()
            },
            probe: self.probe_report(w, now),
        }
    }

    fn probe_report(&self, w: &Watched, now: &Now) -> Option<ProbeReport> {
        let (ps, p) = (w.probe.as_deref()?, w.settings.probe.as_ref()?);
        Some(ProbeReport {
            check: p.check.describe(),
            last: ps.last.as_ref().map(|r| ProbeAnswer {
                at: r.at,
                ok: r.ok,
                detail: r.detail.to_string(),
                took_ms: u64::try_from(r.took.as_millis()).unwrap_or(u64::MAX),
            }),
            failures: ps.failures,
            of: self.probe_limit(p),
            down: ps.down,
            grace_until: ps
                .grace_until
                .filter(|_| ps.in_grace(now))
                .map(|g| wall_of(now, g)),
        })
    }
}

/// Where a unit stands, as `status` names it.
pub(super) fn episode_state(w: &Watched) -> EpisodeState {
    match w.hold.as_deref() {
        Some(Hold::Paused { .. }) => return EpisodeState::Paused,
        Some(Hold::OperatorStop { .. }) => return EpisodeState::StoppedByOperator,
        None => {}
    }
    let m = &w.machine;
    if m.job_running() {
        return EpisodeState::Restarting;
    }
    if m.recovering() {
        return EpisodeState::Recovering;
    }
    if m.waits_for_dependency() {
        return EpisodeState::WaitingForDependency;
    }
    if m.attempt_at().is_some() {
        return EpisodeState::BackingOff;
    }
    if m.current_attempt().is_some() {
        return EpisodeState::Verifying;
    }
    match m.health() {
        Some(Health::Down) if m.gave_up() => EpisodeState::GaveUp,
        Some(Health::Down) => EpisodeState::Down,
        Some(Health::Healthy) => EpisodeState::Healthy,
        Some(Health::Stopped) => EpisodeState::Stopped,
        Some(Health::Systemd) => EpisodeState::LeftToSystemd,
        Some(Health::Unloadable(_)) => EpisodeState::NotLoaded,
        None => EpisodeState::Unknown,
    }
}

fn recent(r: &Recent) -> RecentReport {
    RecentReport {
        at: r.at,
        action: r.action.map(str::to_string),
        text: r.text.to_string(),
    }
}

/// The wall time of instant `at`, assuming the wall clock keeps pace.
fn wall_of(now: &Now, at: Instant) -> Timestamp {
    add(now.wall, at.saturating_duration_since(now.at))
}
