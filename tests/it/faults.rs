//! The fault-injection suite: the daemon against a real `systemd --user` manager while its
//! surroundings misbehave. Each test injects one fault and then proves that monitoring goes on
//! (a unit killed afterwards is still restarted) and that nothing was lost on the way. (The
//! full disk under `log_dir` and `state_dir` is in `files`, SMTP down across `kill -9` in
//! `email`, a FIFO or `/dev/zero` at the config path in `watchdog`, misbehaving control
//! clients in `control`, the package's own failure in `deb`.)

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::{Daemon, Manager, wait_until, write_config};

const T: Duration = Duration::from_secs(30);

/// A service whose start takes `pre` (its `ExecStartPre=` sleeps), counting its starts.
fn service(mgr: &Manager, name: &str, pre: &str) {
    let starts = mgr.work_dir().join(format!("{name}.starts"));
    mgr.write_unit(
        &format!("{name}.service"),
        &format!(
            "[Service]\nExecStartPre=/bin/sh -c 'echo x >> {}; sleep {pre}'\nExecStart=/bin/sleep infinity\n",
            starts.display()
        ),
    );
}

fn starts(mgr: &Manager, name: &str) -> usize {
    fs::read_to_string(mgr.work_dir().join(format!("{name}.starts")))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

const FAST: &str = "[restart]\nbackoff_initial = \"0s\"\nverify_after = \"300ms\"\n";

fn started(names: &[(&str, &str)], extra: &str) -> (Manager, PathBuf, Daemon) {
    let mgr = Manager::start();
    let mut units = String::new();
    for (n, pre) in names {
        service(&mgr, n, pre);
        units.push_str(&format!("[[unit]]\nname = \"{n}\"\n"));
    }
    mgr.daemon_reload();
    for (n, _) in names {
        mgr.systemctl_ok(&["start", n]);
    }
    let cfg = write_config(&mgr, &format!("{FAST}{extra}{units}"));
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
    (mgr, cfg, d)
}

fn has(line: &str, parts: &[&str]) -> bool {
    parts.iter().all(|p| line.contains(p))
}

fn count(d: &Daemon, parts: &[&str]) -> usize {
    d.stderr_lines().iter().filter(|l| has(l, parts)).count()
}

/// Kills `unit`'s main process and waits for unitwarden's n-th verified restart of it.
#[track_caller]
fn kill_and_see_restart(mgr: &Manager, d: &Daemon, unit: &str, nth: usize) -> Duration {
    let t0 = Instant::now();
    mgr.kill_main(unit);
    let full = format!("unit={unit}.service");
    wait_until(&format!("restart #{nth} of {unit}"), T, || {
        (count(d, &[&full, "result=restarted"]) >= nth).then_some(())
    });
    mgr.wait_for_state(unit, "active", T);
    t0.elapsed()
}

#[test]
fn the_bus_killed_in_the_middle_of_a_restart_job() {
    let (mgr, _cfg, d) = started(&[("slow", "1"), ("other", "0")], "");
    mgr.kill_main("slow");
    d.wait_for_stderr("the attempt", T, |l| {
        has(l, &["unit=slow.service", "action=restart", "restarting"])
    });
    // The job runs for a second; the bus dies under it and stays down (no socket activation)
    // until the job has ended, so its `JobRemoved` goes out to nobody.
    mgr.systemctl_ok(&["stop", "dbus.socket"]);
    mgr.systemctl_ok(&["kill", "-s", "KILL", "dbus.service"]);
    d.wait_for_stderr("the reconnect", T, |l| l.contains("reconnecting"));
    mgr.wait_for_state("slow", "active", T);
    mgr.systemctl_ok(&["start", "dbus.socket"]);
    d.wait_for_stderr("connected again", T, |l| l.contains("connected again"));
    // The attempt is not left waiting for a signal that will never come.
    d.wait_for_stderr("the missed job", T, |l| {
        l.contains("ended while the bus was down")
    });
    wait_until("the attempt concluded", T, || {
        (count(&d, &["unit=slow.service", "result=restarted"]) == 1).then_some(())
    });
    assert_eq!(
        starts(&mgr, "slow"),
        2,
        "one start by systemd, one by the attempt"
    );
    // Monitoring goes on for both units.
    kill_and_see_restart(&mgr, &d, "other", 1);
    kill_and_see_restart(&mgr, &d, "slow", 2);
}

#[test]
fn daemon_reexec_and_daemon_reload_with_a_unit_killed_right_after() {
    let (mgr, _cfg, d) = started(&[("web", "0")], "");
    mgr.systemctl_ok(&["daemon-reexec"]);
    kill_and_see_restart(&mgr, &d, "web", 1);
    mgr.systemctl_ok(&["daemon-reload"]);
    kill_and_see_restart(&mgr, &d, "web", 2);
    // And both at once, the kill racing the reexec.
    mgr.systemctl_ok(&["daemon-reexec"]);
    mgr.systemctl_ok(&["daemon-reload"]);
    kill_and_see_restart(&mgr, &d, "web", 3);
    assert_eq!(starts(&mgr, "web"), 4);
}

#[test]
fn sigterm_during_a_restart_attempt_stops_cleanly_and_keeps_the_count() {
    let (mgr, _cfg, mut d) = started(&[("slow", "2")], "");
    mgr.kill_main("slow");
    d.wait_for_stderr("the attempt", T, |l| {
        has(l, &["unit=slow.service", "action=restart", "restarting"])
    });
    d.signal(15);
    let status = d.wait_exit(T);
    assert!(status.success(), "SIGTERM mid-attempt: {status}");
    // The job was awaited (bounded), not abandoned mid-way.
    assert!(
        d.stderr_lines()
            .iter()
            .any(|l| l.contains("restart job finished during shutdown")),
        "{:?}",
        d.stderr_lines()
    );
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(mgr.work_dir().join("state/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["units"]["slow.service"]["attempts"], 1, "{state}");
    assert_eq!(mgr.active_state("slow"), "active");
}

#[test]
fn a_sighup_storm_of_bad_and_good_configs_leaves_the_last_good_one_running() {
    let (mgr, cfg, d) = started(&[("web", "0")], "");
    let good = fs::read_to_string(&cfg).unwrap();
    let bad = "[daemon]\nintervall = \"5s\"\n";
    for i in 0..40 {
        let text = if i % 2 == 0 {
            bad.to_string()
        } else {
            good.clone()
        };
        fs::write(&cfg, text).unwrap();
        d.signal(1);
    }
    // The last one written was good: once the signals are handled it is in force, and the
    // daemon says so in STATUS= without a failure note.
    fs::write(
        &cfg,
        good.replace("verify_after = \"300ms\"", "verify_after = \"200ms\""),
    )
    .unwrap();
    d.signal(1);
    wait_until("the last reload", T, || {
        d.notify_messages()
            .last()
            .is_some_and(|m| m.contains("STATUS=") && !m.contains("config reload failed"))
            .then_some(())
    });
    assert!(count(&d, &["config reload failed"]) >= 1);
    assert!(count(&d, &["configuration reloaded"]) >= 1);
    kill_and_see_restart(&mgr, &d, "web", 1);
}

#[test]
fn a_bus_that_accepts_and_never_answers_is_given_up_on_and_retried() {
    let mgr = Manager::start();
    let cfg = write_config(&mgr, "[[unit]]\nname = \"web\"\n");
    // A socket that accepts connections and never says a word: the handshake must not hang.
    let path = mgr.work_dir().join("silent-bus");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for s in listener.incoming().take(2) {
            open.push(s);
        }
        open
    });
    let mut cmd = crate::support::unitwarden_command(Some(&mgr));
    cmd.env(
        "DBUS_SESSION_BUS_ADDRESS",
        format!("unix:path={}", path.display()),
    )
    .arg("--config")
    .arg(&cfg)
    .arg("run");
    let d = Daemon::from_command(cmd);
    let first = Instant::now();
    d.wait_for_stderr("the handshake given up", Duration::from_secs(60), |l| {
        l.contains("no answer to the connection handshake") && l.contains("retrying")
    });
    // ... and tried again, not hung.
    wait_until("a second try", Duration::from_secs(60), || {
        (count(&d, &["no answer to the connection handshake"]) >= 2).then_some(())
    });
    assert!(
        first.elapsed() < Duration::from_secs(50),
        "{:?}",
        first.elapsed()
    );
    drop(d);
    drop(held);
}
