//! Narration: what the restart machines decided, told as log lines and alert events. Pure:
//! the same effects in the same context always read the same.

use std::time::Duration;

use jiff::Timestamp;
use tracing::Level;

use crate::alert::Event;
use crate::alert::EventKind;
use crate::diagnosis::{self, Diagnosis};
use crate::logging::format_duration;
use crate::policy::{Effect, RestartPolicy};
use crate::unit::{ActiveState, Observation, UnitName};

/// One log line: a level, the `key=value` fields the SPEC names (each optional), a message.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub level: Level,
    pub unit: Option<UnitName>,
    pub state: Option<String>,
    pub sub: Option<String>,
    pub action: Option<&'static str>,
    pub attempt: Option<(u32, u32)>,
    pub result: Option<String>,
    pub delay: Option<Duration>,
    pub dependency: Option<UnitName>,
    pub restarts: Option<u32>,
    pub window: Option<String>,
    pub interval: Option<Duration>,
    pub units: Option<usize>,
    pub message: String,
}

impl Line {
    pub fn new(level: Level, message: impl Into<String>) -> Line {
        Line {
            level,
            unit: None,
            state: None,
            sub: None,
            action: None,
            attempt: None,
            result: None,
            delay: None,
            dependency: None,
            restarts: None,
            window: None,
            interval: None,
            units: None,
            message: message.into(),
        }
    }

    pub fn info(message: impl Into<String>) -> Line {
        Line::new(Level::INFO, message)
    }

    pub fn warn(message: impl Into<String>) -> Line {
        Line::new(Level::WARN, message)
    }

    pub fn error(message: impl Into<String>) -> Line {
        Line::new(Level::ERROR, message)
    }

    pub fn unit(mut self, unit: &UnitName) -> Line {
        self.unit = Some(unit.clone());
        self
    }

    pub fn action(mut self, action: &'static str) -> Line {
        self.action = Some(action);
        self
    }

    pub fn result(mut self, result: impl Into<String>) -> Line {
        self.result = Some(result.into());
        self
    }

    pub fn window(mut self, window: impl Into<String>) -> Line {
        self.window = Some(window.into());
        self
    }

    pub fn interval(mut self, interval: Duration) -> Line {
        self.interval = Some(interval);
        self
    }

    pub fn units(mut self, units: usize) -> Line {
        self.units = Some(units);
        self
    }
}

/// What narration needs to know besides the effects.
pub struct Scene<'a> {
    pub unit: &'a UnitName,
    pub obs: Option<&'a Observation>,
    pub policy: &'a RestartPolicy,
    /// The active critical window, if any.
    pub window: Option<&'a str>,
    /// The active window's `min_interval`, where it overrides `[email] min_interval`.
    pub min_interval: Option<Duration>,
    /// The last error of the unit's health probe, when the probe is why it is down.
    pub probe: Option<&'a str>,
    /// The unit's `recovery_unit`, if it has one.
    pub recovery: Option<&'a UnitName>,
    pub wall: Timestamp,
}

/// A log line and, when the people on call should hear of it, an alert event.
#[derive(Clone, Debug, PartialEq)]
pub struct Told {
    pub line: Line,
    pub event: Option<Event>,
}

/// What the unit's last end means, for every event about a failure (`down`, `restart_failed`,
/// `gave_up`, `crashed`).
pub fn diagnose(s: &Scene<'_>) -> Option<Diagnosis> {
    let o = s.obs?;
    // Peak memory is systemd's `MemoryPeak` (256 and later), which the D-Bus layer does not read
    // yet: an OOM kill is told without it.
    diagnosis::diagnose(s.unit, o.result.as_ref(), o.exec_main, None)
}

/// Tells the diagnosis in the line's message and in the event: the probe's error when the
/// probe is why the unit is down (systemd's view of an active unit explains nothing), else
/// what systemd's `Result=` and exit status mean.
fn explain(s: &Scene<'_>, line: &mut Line, ev: &mut Event) {
    if let Some(err) = s.probe {
        line.message = format!("{}; health probe: {err}", line.message);
        ev.detail = format!("{}; health probe: {err}", ev.detail);
        return;
    }
    if let Some(d) = diagnose(s) {
        line.message = format!("{}. {d}", line.message);
        ev.diagnosis = Some(d);
    }
}

/// The lines and events for `effects` of one unit, in order. `Persist` tells nothing.
pub fn narrate(scene: &Scene<'_>, effects: &[Effect]) -> Vec<Told> {
    let mut told: Vec<Told> = Vec::new();
    for effect in effects {
        if let Effect::Scheduled { attempt, of, delay } = effect {
            // The plan belongs in the email about what just happened.
            if let Some(ev) = told.iter_mut().rev().find_map(|t| t.event.as_mut()) {
                ev.next = format!(
                    "restart attempt {attempt}/{of} in {}",
                    format_duration(*delay)
                );
            }
        }
        told.extend(tell(scene, effect));
    }
    told
}

fn tell(s: &Scene<'_>, effect: &Effect) -> Vec<Told> {
    let name = s.unit;
    let state = s.obs.map_or("unknown", |o| o.active.as_str());
    let sub = s.obs.map_or(String::new(), |o| o.sub.to_string());
    let line = |level: Level, message: String| Line {
        state: Some(state.to_string()),
        ..Line::new(level, message).unit(name)
    };
    let event = |kind: EventKind, detail: String| {
        let mut ev = Event::new(kind, Some(name.clone()), s.wall, detail);
        ev.result = s.obs.and_then(|o| o.result.as_ref()).map(|r| r.to_string());
        ev.exec_status = s.obs.and_then(|o| o.exec_status());
        ev.n_restarts = s.obs.and_then(|o| o.n_restarts);
        ev.window = s.window.map(str::to_string);
        ev.min_interval = s.min_interval;
        ev
    };
    let only = |line: Line| vec![Told { line, event: None }];
    let with = |line: Line, ev: Event| {
        vec![Told {
            line,
            event: Some(ev),
        }]
    };
    match effect {
        Effect::Down if s.probe.is_some() => {
            let failures = "its health probe failed too many times in a row";
            let mut l =
                line(Level::WARN, format!("unit is down: {failures}")).result("probe_failed");
            l.sub = Some(sub.clone());
            l.window = Some(s.window.unwrap_or("-").to_string());
            let mut ev = event(
                EventKind::ProbeFailed,
                format!("{name} is {state} but {failures}"),
            );
            explain(s, &mut l, &mut ev);
            with(l, ev)
        }
        Effect::Down => {
            let mut l = line(Level::WARN, "unit is down".into());
            l.sub = Some(sub.clone());
            l.result = Some(
                s.obs
                    .and_then(|o| o.result.as_ref())
                    .map_or("-".into(), |r| r.to_string()),
            );
            l.window = Some(s.window.unwrap_or("-").to_string());
            let mut ev = event(EventKind::Down, format!("{name} is down ({state}/{sub})"));
            explain(s, &mut l, &mut ev);
            with(l, ev)
        }
        Effect::Scheduled { attempt, of, delay } => {
            let mut l = line(Level::INFO, "restart scheduled".into()).action("restart");
            l.attempt = Some((*attempt, *of));
            l.delay = Some(*delay);
            only(l)
        }
        Effect::Attempt { attempt, of } => {
            let mut lines = Vec::new();
            if s.obs.is_some_and(|o| o.active == ActiveState::Failed) {
                lines.push(
                    line(
                        Level::INFO,
                        "clearing the failed state before restarting".into(),
                    )
                    .action("reset_failed"),
                );
            }
            let mut l = line(Level::INFO, "restarting".into()).action("restart");
            l.attempt = Some((*attempt, *of));
            lines.push(l);
            lines
                .into_iter()
                .map(|line| Told { line, event: None })
                .collect()
        }
        Effect::Restarted { attempt, of } => {
            let mut l = line(
                Level::INFO,
                "unit restarted and still active after verify_after".into(),
            )
            .action("restart")
            .result("restarted");
            l.attempt = Some((*attempt, *of));
            let mut ev = event(
                EventKind::Restarted,
                format!("{name} was restarted and is active"),
            );
            ev.attempt = Some((*attempt, *of));
            ev.next = "keep watching; the attempt counter resets once it has been healthy for reset_after".into();
            with(l, ev)
        }
        Effect::AttemptFailed {
            attempt,
            of,
            reason,
        } => {
            let mut l = line(Level::WARN, format!("restart attempt failed: {reason}"))
                .action("restart")
                .result("failed");
            l.attempt = Some((*attempt, *of));
            let mut ev = event(
                EventKind::RestartFailed,
                format!("restart attempt {attempt}/{of} of {name} failed: {reason}"),
            );
            ev.attempt = Some((*attempt, *of));
            explain(s, &mut l, &mut ev);
            with(l, ev)
        }
        Effect::GaveUp { attempts } => {
            let max = s.policy.max_attempts;
            let (message, next) = match s.policy.give_up_cooldown {
                Some(c) => (
                    format!(
                        "giving up: no more restarts until give_up_cooldown ({}) passes or `unitwarden retry {name}`",
                        format_duration(c)
                    ),
                    format!(
                        "no more restarts; a new episode starts in {} if it is still down, or now with `unitwarden retry {name}`",
                        format_duration(c)
                    ),
                ),
                None => (
                    format!(
                        "giving up: no more restarts (give_up_cooldown = \"never\") until `unitwarden retry {name}`"
                    ),
                    format!(
                        "no more restarts until `unitwarden retry {name}` or someone starts it by hand (systemctl start {name})"
                    ),
                ),
            };
            let mut l = line(Level::ERROR, message).action("give_up");
            l.attempt = Some((*attempts, max));
            let mut ev = event(
                EventKind::GaveUp,
                format!("{name} gave up after {attempts}/{max} restarts"),
            );
            ev.attempt = Some((*attempts, max));
            ev.next = next;
            explain(s, &mut l, &mut ev);
            with(l, ev)
        }
        Effect::Recovered => {
            let l = line(Level::INFO, "unit is active again".into()).result("recovered");
            let mut ev = event(EventKind::Recovered, format!("{name} is active again"));
            ev.next = "keep watching".into();
            with(l, ev)
        }
        Effect::Recover => {
            let fix = s.recovery.map_or("-".to_string(), |r| r.to_string());
            let l = line(
                Level::WARN,
                format!("restarts alone have not helped; starting the recovery unit {fix}"),
            )
            .action("recovery");
            only(l)
        }
        Effect::RecoveryDone { ok, detail } => {
            let fix = s.recovery.map_or("-".to_string(), |r| r.to_string());
            let (level, result) = if *ok {
                (Level::INFO, "done")
            } else {
                (Level::WARN, "failed")
            };
            let l = line(level, format!("recovery unit {fix}: {detail}"))
                .action("recovery")
                .result(result);
            let mut ev = event(
                EventKind::Recovery,
                format!("the recovery unit {fix} ran for {name}: {detail}"),
            );
            ev.next = "restart attempts go on after their backoff".into();
            with(l, ev)
        }
        Effect::EpisodeEnded => only(line(
            Level::INFO,
            "healthy for reset_after; attempt counter reset".into(),
        )),
        Effect::Rearmed => only(
            line(
                Level::INFO,
                "give_up_cooldown passed; starting a new episode".into(),
            )
            .action("retry"),
        ),
        Effect::WaitSystemd => {
            let mut l = line(
                Level::INFO,
                "systemd is handling this unit; leaving it alone".into(),
            )
            .action("wait_systemd");
            l.sub = Some(sub);
            only(l)
        }
        Effect::WaitDependency(dep) => {
            let mut l = line(
                Level::INFO,
                "restart waits until the dependency is back and verified".into(),
            )
            .action("wait_dependency");
            l.dependency = Some(dep.clone());
            only(l)
        }
        Effect::Unloadable(load) => {
            let mut l = line(
                Level::ERROR,
                "unit cannot be loaded; reporting only, never restarting".into(),
            );
            l.state = Some(load.to_string());
            let mut ev = event(
                EventKind::NotFound,
                format!("{name} cannot be loaded ({load})"),
            );
            ev.next = "report only; unitwarden never restarts a unit systemd cannot load".into();
            with(l, ev)
        }
        Effect::Flapping { restarts } => {
            let mut l = line(
                Level::WARN,
                "flapping: systemd keeps restarting this unit".into(),
            );
            l.restarts = Some(*restarts);
            let mut ev = event(
                EventKind::Flapping,
                format!("systemd restarted {name} {restarts} times within flap_window"),
            );
            ev.next = "left to systemd's Restart=; unitwarden acts if systemd gives up".into();
            with(l, ev)
        }
        Effect::Crashed { restarts } => {
            let mut l = line(
                Level::WARN,
                "crashed; systemd's Restart= is bringing it back".into(),
            );
            l.sub = Some(sub);
            l.restarts = Some(*restarts);
            l.result = Some(
                s.obs
                    .and_then(|o| o.result.as_ref())
                    .map_or("-".into(), |r| r.to_string()),
            );
            let mut ev = event(
                EventKind::Crashed,
                format!("{name} crashed and systemd restarted it (restart {restarts} by systemd)"),
            );
            ev.next = "left to systemd's Restart=; unitwarden acts if systemd gives up".into();
            explain(s, &mut l, &mut ev);
            with(l, ev)
        }
        Effect::Persist => Vec::new(),
    }
}

/// `2026-11-30 08:30:00 +03`: a time in the host's zone, for lines and replies.
pub fn local(t: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    t.to_zoned_datetime(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// What an operator did to a unit, or what happened to it under an operator's hold.
#[derive(Clone, Debug, PartialEq)]
pub enum Override {
    /// `unitwarden pause`.
    Paused { until: Option<Timestamp> },
    /// `unitwarden resume`, or the pause ran out (`expired`).
    Resumed { expired: bool },
    /// A stop job unitwarden did not issue left the unit stopped.
    OperatorStop,
    /// Started again after an operator's stop: watched as usual.
    StartedAgain,
    /// `unitwarden retry`: a fresh episode.
    Retried,
    /// Went down while paused: reported, not restarted.
    DownWhilePaused { until: Option<Timestamp> },
}

/// The line and alert for an operator's override of `s.unit`.
pub fn overridden(s: &Scene<'_>, what: &Override, tz: &jiff::tz::TimeZone) -> Told {
    let name = s.unit;
    let until = |u: &Option<Timestamp>| match u {
        Some(t) => format!(
            "until {}",
            t.to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S %Z")
        ),
        None => "until `unitwarden resume`".to_string(),
    };
    let mut line = Line::info(String::new()).unit(name);
    line.state = s.obs.map(|o| o.active.to_string());
    let (kind, message, detail, next) = match what {
        Override::Paused { until: u } => {
            line.action = Some("pause");
            let u = until(u);
            (
                EventKind::Operator,
                format!("paused {u}: watched, not restarted"),
                format!("{name} was paused {u} by an operator"),
                format!("watched and reported, not restarted, {u}"),
            )
        }
        Override::Resumed { expired } => {
            line.action = Some("resume");
            let how = if *expired {
                "the pause ran out"
            } else {
                "resumed by an operator"
            };
            (
                EventKind::Operator,
                format!("{how}: restarted again when down"),
                format!("{name}: {how}"),
                "watched and restarted as configured".into(),
            )
        }
        Override::OperatorStop => {
            line.action = Some("operator_stop");
            line.level = Level::WARN;
            (
                EventKind::OperatorStop,
                "stopped by a stop job unitwarden did not issue; leaving it stopped".into(),
                format!("{name} was stopped by an operator (systemctl stop or a dependency)"),
                format!(
                    "left stopped; watched again when it is started (systemctl start {name}) or after `unitwarden resume {name}`"
                ),
            )
        }
        Override::StartedAgain => {
            line.action = Some("resume");
            (
                EventKind::Operator,
                "started again after an operator's stop; watching as usual".into(),
                format!("{name} was started again after an operator's stop"),
                "watched and restarted as configured".into(),
            )
        }
        Override::Retried => {
            line.action = Some("retry");
            (
                EventKind::Operator,
                "retry asked by an operator: a fresh episode starts now".into(),
                format!("{name}: retry asked by an operator, a fresh episode starts now"),
                format!("up to {} restart attempts from now", s.policy.max_attempts),
            )
        }
        Override::DownWhilePaused { until: u } => {
            line.level = Level::WARN;
            line.sub = s.obs.map(|o| o.sub.to_string());
            line.result = s.obs.and_then(|o| o.result.as_ref()).map(|r| r.to_string());
            let u = until(u);
            (
                EventKind::Down,
                format!("unit is down; paused {u}, not restarting"),
                format!("{name} is down while paused"),
                format!("not restarted while paused ({u})"),
            )
        }
    };
    line.message = message;
    let mut ev = Event::new(kind, Some(name.clone()), s.wall, detail);
    ev.result = s.obs.and_then(|o| o.result.as_ref()).map(|r| r.to_string());
    ev.exec_status = s.obs.and_then(|o| o.exec_status());
    ev.window = s.window.map(str::to_string);
    ev.min_interval = s.min_interval;
    ev.next = next;
    if matches!(what, Override::DownWhilePaused { .. }) {
        explain(s, &mut line, &mut ev);
    }
    Told {
        line,
        event: Some(ev),
    }
}

/// An event about unitwarden itself.
pub fn about_self(kind: EventKind, detail: String, window: Option<&str>, wall: Timestamp) -> Event {
    let mut ev = Event::new(kind, None, wall, detail);
    ev.window = window.map(str::to_string);
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::{LoadState, ServiceResult, SubState};

    fn failed() -> Observation {
        let mut o = Observation::new(
            LoadState::Loaded,
            ActiveState::Failed,
            SubState::new("failed"),
        );
        o.result = Some(ServiceResult::Signal);
        o.exec_main = Some((2, 9));
        o
    }

    struct Fixture {
        unit: UnitName,
        obs: Observation,
        policy: RestartPolicy,
    }

    impl Fixture {
        fn new(policy: RestartPolicy) -> Fixture {
            Fixture {
                unit: UnitName::parse("web").unwrap(),
                obs: failed(),
                policy,
            }
        }

        fn scene(&self, window: Option<&'static str>, min_interval: Option<Duration>) -> Scene<'_> {
            Scene {
                unit: &self.unit,
                obs: Some(&self.obs),
                policy: &self.policy,
                window,
                min_interval,
                probe: None,
                recovery: None,
                wall: Timestamp::from_second(1_800_000_000).unwrap(),
            }
        }
    }

    /// (effect, level, action, attempt, message, event kind)
    type Row = (
        Effect,
        Level,
        Option<&'static str>,
        Option<(u32, u32)>,
        &'static str,
        Option<EventKind>,
    );

    #[test]
    fn each_effect_reads_as_one_line_and_at_most_one_event() {
        let f = Fixture::new(RestartPolicy::default());
        let scene = f.scene(Some("rush"), None);
        let unit = f.unit.clone();
        let pg = UnitName::parse("postgresql").unwrap();
        let table: Vec<Row> = vec![
            (
                Effect::Down,
                Level::WARN,
                None,
                None,
                "unit is down",
                Some(EventKind::Down),
            ),
            (
                Effect::Scheduled {
                    attempt: 2,
                    of: 3,
                    delay: Duration::from_secs(10),
                },
                Level::INFO,
                Some("restart"),
                Some((2, 3)),
                "restart scheduled",
                None,
            ),
            (
                Effect::Restarted { attempt: 1, of: 3 },
                Level::INFO,
                Some("restart"),
                Some((1, 3)),
                "still active after verify_after",
                Some(EventKind::Restarted),
            ),
            (
                Effect::AttemptFailed {
                    attempt: 3,
                    of: 3,
                    reason: "job failed".into(),
                },
                Level::WARN,
                Some("restart"),
                Some((3, 3)),
                "restart attempt failed: job failed",
                Some(EventKind::RestartFailed),
            ),
            (
                Effect::GaveUp { attempts: 3 },
                Level::ERROR,
                Some("give_up"),
                Some((3, 3)),
                "giving up: no more restarts until give_up_cooldown (1h) passes",
                Some(EventKind::GaveUp),
            ),
            (
                Effect::Recovered,
                Level::INFO,
                None,
                None,
                "active again",
                Some(EventKind::Recovered),
            ),
            (
                Effect::EpisodeEnded,
                Level::INFO,
                None,
                None,
                "attempt counter reset",
                None,
            ),
            (
                Effect::Rearmed,
                Level::INFO,
                Some("retry"),
                None,
                "new episode",
                None,
            ),
            (
                Effect::WaitSystemd,
                Level::INFO,
                Some("wait_systemd"),
                None,
                "leaving it alone",
                None,
            ),
            (
                Effect::WaitDependency(pg),
                Level::INFO,
                Some("wait_dependency"),
                None,
                "dependency is back and verified",
                None,
            ),
            (
                Effect::Unloadable(LoadState::NotFound),
                Level::ERROR,
                None,
                None,
                "never restarting",
                Some(EventKind::NotFound),
            ),
            (
                Effect::Flapping { restarts: 5 },
                Level::WARN,
                None,
                None,
                "flapping",
                Some(EventKind::Flapping),
            ),
        ];
        for (effect, level, action, attempt, message, kind) in table {
            let told = narrate(&scene, std::slice::from_ref(&effect));
            assert_eq!(told.len(), 1, "{effect:?}");
            let t = &told[0];
            assert_eq!(t.line.level, level, "{effect:?}");
            assert_eq!(t.line.action, action, "{effect:?}");
            assert_eq!(t.line.attempt, attempt, "{effect:?}");
            assert_eq!(t.line.unit.as_ref(), Some(&unit), "{effect:?}");
            assert!(
                t.line.message.contains(message),
                "{effect:?}: {}",
                t.line.message
            );
            assert_eq!(t.event.as_ref().map(|e| e.kind), kind, "{effect:?}");
            if let Some(ev) = &t.event {
                assert_eq!(ev.result.as_deref(), Some("signal"));
                assert_eq!(
                    ev.exec_status.as_deref(),
                    Some("code=killed, status=9/KILL")
                );
                assert_eq!(ev.window.as_deref(), Some("rush"));
            }
        }
        assert!(narrate(&scene, &[Effect::Persist]).is_empty());
    }

    #[test]
    fn failures_say_what_the_result_means_and_what_to_check() {
        let mut f = Fixture::new(RestartPolicy::default());
        f.obs.result = Some(ServiceResult::ExitCode);
        f.obs.exec_main = Some((1, 203));
        let scene = f.scene(None, None);
        let failures = [
            Effect::Down,
            Effect::AttemptFailed {
                attempt: 1,
                of: 3,
                reason: "job failed".into(),
            },
            Effect::GaveUp { attempts: 3 },
        ];
        for effect in failures {
            let told = narrate(&scene, std::slice::from_ref(&effect));
            let (line, ev) = (&told[0].line, told[0].event.as_ref().unwrap());
            let d = ev
                .diagnosis
                .as_ref()
                .unwrap_or_else(|| panic!("{effect:?}"));
            assert_eq!(d.label, "exit-code 203/EXEC", "{effect:?}");
            assert!(
                line.message
                    .contains(". systemd could not start it (203/EXEC): ExecStart= is missing"),
                "{effect:?}: {}",
                line.message
            );
            assert!(
                line.message.contains(". Check the ExecStart= path"),
                "{}",
                line.message
            );
        }
        let others = [
            Effect::Restarted { attempt: 1, of: 3 },
            Effect::Recovered,
            Effect::Flapping { restarts: 5 },
            Effect::Unloadable(LoadState::NotFound),
        ];
        for effect in others {
            let told = narrate(&scene, std::slice::from_ref(&effect));
            assert_eq!(
                told[0].event.as_ref().unwrap().diagnosis,
                None,
                "{effect:?}"
            );
            assert!(!told[0].line.message.contains("Check"), "{effect:?}");
        }
    }

    #[test]
    fn without_an_observation_a_failure_is_told_without_a_diagnosis() {
        let f = Fixture::new(RestartPolicy::default());
        let scene = Scene {
            obs: None,
            ..f.scene(None, None)
        };
        let told = narrate(&scene, &[Effect::Down]);
        assert_eq!(told[0].line.message, "unit is down");
        assert_eq!(told[0].event.as_ref().unwrap().diagnosis, None);
        assert_eq!(diagnose(&scene), None);
    }

    #[test]
    fn an_attempt_on_a_failed_unit_says_it_clears_the_failed_state_first() {
        let f = Fixture::new(RestartPolicy::default());
        let scene = f.scene(None, None);
        let told = narrate(&scene, &[Effect::Attempt { attempt: 1, of: 3 }]);
        let actions: Vec<_> = told.iter().map(|t| t.line.action).collect();
        assert_eq!(actions, vec![Some("reset_failed"), Some("restart")]);
        assert_eq!(told[1].line.message, "restarting");
        assert!(told.iter().all(|t| t.event.is_none()));
    }

    #[test]
    fn the_plan_goes_into_the_email_about_what_happened_and_names_no_missing_command() {
        let f = Fixture::new(RestartPolicy {
            give_up_cooldown: None,
            ..RestartPolicy::default()
        });
        let scene = f.scene(None, Some(Duration::from_secs(60)));
        let told = narrate(
            &scene,
            &[
                Effect::Down,
                Effect::Scheduled {
                    attempt: 1,
                    of: 3,
                    delay: Duration::from_secs(5),
                },
            ],
        );
        let ev = told[0].event.as_ref().unwrap();
        assert_eq!(ev.next, "restart attempt 1/3 in 5s");
        assert_eq!(ev.min_interval, Some(Duration::from_secs(60)));
        let told = narrate(&scene, &[Effect::GaveUp { attempts: 3 }]);
        let ev = told[0].event.as_ref().unwrap();
        assert!(
            ev.next.contains("systemctl start web.service"),
            "{}",
            ev.next
        );
        // The way out is named, and it exists (`unitwarden retry`).
        assert!(
            told[0]
                .line
                .message
                .contains("`unitwarden retry web.service`")
        );
        assert!(
            ev.next.contains("`unitwarden retry web.service`"),
            "{}",
            ev.next
        );
    }
}
