//! Operators' overrides and what systemd does on its own, on the paused clock: pauses and
//! their expiry, deliberate stops, `retry`, crashes systemd heals, host shutdown, `status`.

use super::*;
use crate::control::protocol::{EpisodeState, Reply, Request};
use crate::policy::Hold;
use crate::systemd::JobPath;

impl Sim {
    fn control(&mut self, request: Request) -> Reply {
        let (reply, actions) = self.engine.control(request, &self.now());
        self.carry(actions);
        self.feed_inbox();
        reply
    }

    fn signal(&mut self, sig: Signal) {
        self.feed(Input::Signal(sig));
    }

    fn episode_of(&mut self, unit: &str) -> EpisodeState {
        let reply = self.control(Request::Status {
            unit: Some(unit.into()),
        });
        reply.status.expect("a status").units[0].episode
    }
}

fn pause(units: &[&str], for_ms: Option<u64>) -> Request {
    Request::Pause {
        units: units.iter().map(|u| u.to_string()).collect(),
        for_ms,
    }
}

fn job(n: u32) -> JobPath {
    JobPath::from_bus(&format!("/org/freedesktop/systemd1/job/{n}"))
}

#[tokio::test(start_paused = true)]
async fn a_paused_unit_is_reported_not_restarted_until_resumed() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n[[unit]]\nname = \"db\"\n");
    let mut sim = Sim::new(
        &cfg,
        &[("web", ActiveState::Active), ("db", ActiveState::Active)],
    );
    let reply = sim.control(pause(&["web"], None));
    assert!(reply.ok, "{reply:?}");
    assert_eq!(
        reply.done,
        vec!["paused web.service until `unitwarden resume`"]
    );
    assert!(matches!(
        sim.saved.holds.get(&name("web")),
        Some(Hold::Paused { until: None, .. })
    ));
    sim.set("web", ActiveState::Failed);
    sim.run_for(secs(300.0)).await;
    assert!(sim.restarts_of("web").is_empty());
    let down = sim.alerts_of(EventKind::Down);
    assert_eq!(down.len(), 1, "reported once: {down:?}");
    assert!(
        down[0].next.contains("not restarted while paused"),
        "{down:?}"
    );
    assert_eq!(sim.episode_of("web"), EpisodeState::Paused);
    assert!(
        sim.engine
            .status_line(&sim.now())
            .contains("1 paused (web)")
    );

    let reply = sim.control(Request::Resume {
        units: vec!["web".into()],
    });
    assert!(reply.ok, "{reply:?}");
    sim.run_for(secs(30.0)).await;
    assert_eq!(sim.restarts_of("web").len(), 1, "restarted once resumed");
    assert!(sim.saved.holds.is_empty());
    assert_eq!(sim.lines_with("web", Some("resume"), "resumed").len(), 1);
    assert_eq!(
        sim.alerts_of(EventKind::Operator).len(),
        2,
        "pause and resume"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pause_for_a_while_expires_by_itself() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    sim.control(pause(&["web"], Some(120_000)));
    sim.set("web", ActiveState::Failed);
    sim.run_for(secs(119.0)).await;
    assert!(sim.restarts_of("web").is_empty());
    sim.run_for(secs(30.0)).await;
    let at = sim.restarts_of("web");
    assert_eq!(at.len(), 1, "{at:?}");
    // The pause ends at 120 s; attempt 1 follows its own backoff of ~5 s.
    assert!(about(at[0] - secs(120.0), 5.0), "{at:?}");
    assert_eq!(
        sim.lines_with("web", Some("resume"), "the pause ran out")
            .len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn globs_pause_many_and_unknown_names_are_refused() {
    let cfg = format!("{BASE}[[unit]]\nname = \"celery@*\"\n[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(
        &cfg,
        &[
            ("celery@a", ActiveState::Active),
            ("celery@b", ActiveState::Active),
            ("web", ActiveState::Active),
        ],
    );
    let reply = sim.control(pause(&["celery@*", "nginx"], None));
    assert!(!reply.ok);
    assert_eq!(reply.done.len(), 2, "{reply:?}");
    assert_eq!(reply.refused, vec!["no watched unit matches nginx.service"]);
    let reply = sim.control(Request::Retry {
        units: vec!["celery@*".into()],
    });
    assert_eq!(reply.refused, vec!["celery@*: name one unit, not a glob"]);
    let reply = sim.control(Request::Retry {
        units: vec!["web".into()],
    });
    assert!(!reply.ok);
    assert!(
        reply.refused[0].contains("has not given up (healthy)"),
        "{reply:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pause_survives_a_restart_of_the_watchdog() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n");
    let mut first = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    first.control(pause(&["web"], None));
    let saved = first.saved.clone();
    let mut sim = Sim::with_saved(&cfg, &[("web", ActiveState::Failed)], saved, Mode::Daemon);
    sim.run_for(secs(300.0)).await;
    assert!(sim.restarts.is_empty(), "{:?}", sim.restarts);
    assert_eq!(sim.episode_of("web"), EpisodeState::Paused);
}

#[tokio::test(start_paused = true)]
async fn a_stop_unitwarden_did_not_issue_is_respected_until_started_again() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    // `systemctl stop web`: the job is announced, the unit stops, the job ends.
    sim.signal(Signal::JobNew {
        name: name("web"),
        job: job(7),
    });
    sim.set("web", ActiveState::Inactive);
    sim.signal(Signal::JobRemoved {
        name: name("web"),
        job: job(7),
        result: JobResult::Done,
    });
    sim.run_for(secs(300.0)).await;
    assert!(sim.restarts.is_empty(), "{:?}", sim.restarts);
    assert_eq!(sim.alerts_of(EventKind::OperatorStop).len(), 1);
    assert!(sim.alerts_of(EventKind::Down).is_empty());
    assert_eq!(sim.episode_of("web"), EpisodeState::StoppedByOperator);
    assert!(matches!(
        sim.saved.holds.get(&name("web")),
        Some(Hold::OperatorStop { .. })
    ));
    // `systemctl start web`: watched as usual again, so a crash is restarted.
    sim.set("web", ActiveState::Active);
    assert!(sim.saved.holds.is_empty());
    sim.set("web", ActiveState::Failed);
    sim.run_for(secs(30.0)).await;
    assert_eq!(sim.restarts_of("web").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_operators_restart_is_not_a_stop() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    sim.signal(Signal::JobNew {
        name: name("web"),
        job: job(9),
    });
    // Between stop and start the unit is briefly inactive, its job still queued.
    for (active, pending) in [
        (ActiveState::Deactivating, true),
        (ActiveState::Inactive, true),
        (ActiveState::Activating, true),
        (ActiveState::Active, false),
    ] {
        sim.signal(Signal::Unit {
            name: name("web"),
            update: UnitUpdate {
                active: Some(active),
                sub: Some(SubState::new(sub_of(active))),
                job_pending: Some(pending),
                ..UnitUpdate::default()
            },
        });
    }
    sim.signal(Signal::JobRemoved {
        name: name("web"),
        job: job(9),
        result: JobResult::Done,
    });
    sim.run_for(secs(120.0)).await;
    assert!(sim.alerts.iter().all(|a| a.kind != EventKind::OperatorStop));
    assert!(sim.restarts.is_empty());
    assert_eq!(sim.episode_of("web"), EpisodeState::Healthy);
}

#[tokio::test(start_paused = true)]
async fn a_unit_that_exits_by_itself_is_still_restarted() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    sim.set("web", ActiveState::Inactive);
    sim.run_for(secs(30.0)).await;
    assert_eq!(sim.restarts_of("web").len(), 1);
    assert!(sim.alerts_of(EventKind::OperatorStop).is_empty());
}

#[tokio::test(start_paused = true)]
async fn every_crash_systemd_heals_is_an_event() {
    let cfg = format!("{BASE}flap_restarts = 3\n[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    for n in 0..=3 {
        sim.signal(Signal::Unit {
            name: name("web"),
            update: UnitUpdate {
                n_restarts: Some(n),
                ..UnitUpdate::default()
            },
        });
    }
    let crashed = sim.alerts_of(EventKind::Crashed);
    assert_eq!(crashed.len(), 3, "{crashed:?}");
    assert_eq!(sim.alerts_of(EventKind::Flapping).len(), 1);
    assert!(sim.restarts.is_empty());
}

#[tokio::test(start_paused = true)]
async fn nothing_is_restarted_while_the_host_shuts_down() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    sim.signal(Signal::ShuttingDown);
    sim.set("web", ActiveState::Failed);
    sim.run_for(secs(300.0)).await;
    assert!(sim.restarts.is_empty());
    assert_eq!(
        sim.lines
            .iter()
            .filter(|l| l.action == Some("shutdown"))
            .count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn retry_starts_a_fresh_episode_for_a_given_up_unit() {
    let cfg =
        format!("{BASE}max_attempts = 1\ngive_up_cooldown = \"never\"\n[[unit]]\nname = \"web\"\n");
    let mut sim = Sim::new(&cfg, &[("web", ActiveState::Active)]);
    sim.on_restart.insert(name("web"), OnRestart::Fails);
    sim.set("web", ActiveState::Failed);
    sim.run_for(secs(600.0)).await;
    assert_eq!(sim.restarts_of("web").len(), 1);
    assert_eq!(sim.episode_of("web"), EpisodeState::GaveUp);
    sim.on_restart.insert(name("web"), OnRestart::Starts);
    let reply = sim.control(Request::Retry {
        units: vec!["web.service".into()],
    });
    assert!(reply.ok, "{reply:?}");
    assert_eq!(
        sim.restarts_of("web").len(),
        2,
        "the attempt goes out at once"
    );
    sim.run_for(secs(30.0)).await;
    assert_eq!(sim.alerts_of(EventKind::Restarted).len(), 1);
    assert_eq!(sim.episode_of("web"), EpisodeState::Healthy);
}

#[tokio::test(start_paused = true)]
async fn status_tells_the_backoff_and_the_recent_history() {
    let cfg = format!("{BASE}[[unit]]\nname = \"web\"\n[[unit]]\nname = \"db\"\n");
    let mut sim = Sim::new(
        &cfg,
        &[("web", ActiveState::Active), ("db", ActiveState::Active)],
    );
    sim.set("web", ActiveState::Failed);
    let reply = sim.control(Request::Status { unit: None });
    let status = reply.status.expect("status");
    assert_eq!(status.units.len(), 2);
    let web = status
        .units
        .iter()
        .find(|u| u.unit == "web.service")
        .unwrap();
    assert_eq!(web.episode, EpisodeState::BackingOff);
    assert_eq!(web.state, "failed");
    let until = web.until.expect("backing off until");
    let wait = until.duration_since(status.now).as_secs_f64();
    assert!((4.5..=5.5).contains(&wait), "{wait}");
    assert!(web.recent.is_empty(), "history only for one unit");
    let one = sim
        .control(Request::Status {
            unit: Some("web".into()),
        })
        .status
        .unwrap();
    let texts: Vec<&str> = one.units[0]
        .recent
        .iter()
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(texts[0], "unit is down", "{texts:?}");
    assert!(texts[1].starts_with("restart scheduled"), "{texts:?}");
    assert_eq!(
        one.units[0].last_action.as_ref().unwrap().action.as_deref(),
        Some("restart")
    );
    let none = sim.control(Request::Status {
        unit: Some("nginx".into()),
    });
    assert_eq!(
        none.error.as_deref(),
        Some("no watched unit matches nginx.service")
    );
}
