//! The daemon against a real `systemd --user` manager: detection, restarts, give-up, systemd's
//! own Restart=, start limits, persistence across kill -9, globs, windows, reload, `once`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::support::{Daemon, Manager, run_cli, wait_until, write_config};

const T: Duration = Duration::from_secs(30);

/// A long-running stand-in service that records each start in `WORK/NAME.starts`.
fn sleeper(mgr: &Manager, name: &str, extra: &str) {
    let starts = mgr.work_dir().join(format!("{name}.starts"));
    mgr.write_unit(
        &format!("{name}.service"),
        &format!(
            "[Service]\nExecStartPre=/bin/sh -c 'echo x >> {}'\nExecStart=/bin/sleep infinity\n{extra}",
            starts.display()
        ),
    );
}

/// A service that always fails right after starting, counting its starts.
fn always_failing(mgr: &Manager, name: &str, extra: &str) {
    let starts = mgr.work_dir().join(format!("{name}.starts"));
    mgr.write_unit(
        &format!("{name}.service"),
        &format!(
            "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'echo x >> {}; exit 3'\n{extra}",
            starts.display()
        ),
    );
}

/// A manager with one started [`sleeper`] unit.
fn running(name: &str) -> Manager {
    let mgr = Manager::start();
    sleeper(&mgr, name, "");
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", name]);
    mgr
}

fn starts(mgr: &Manager, name: &str) -> usize {
    fs::read_to_string(mgr.work_dir().join(format!("{name}.starts")))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn ready(d: &Daemon) {
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
}

fn has(line: &str, parts: &[&str]) -> bool {
    parts.iter().all(|p| line.contains(p))
}

fn count_lines(d: &Daemon, parts: &[&str]) -> usize {
    d.stderr_lines().iter().filter(|l| has(l, parts)).count()
}

fn stop(mut d: Daemon) -> Vec<String> {
    d.signal(15);
    let status = d.wait_exit(T);
    assert!(
        status.success(),
        "SIGTERM should stop cleanly, got {status}"
    );
    d.stderr_lines()
}

const FAST: &str = "[restart]\nbackoff_initial = \"0s\"\nverify_after = \"300ms\"\n";

#[test]
fn sigkilled_unit_is_restarted_and_logged_to_the_rotating_file() {
    let mgr = running("web");
    let cfg = write_config(&mgr, &format!("{FAST}[[unit]]\nname = \"web\"\n"));
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    let pid_before = mgr.show("web", "MainPID");
    mgr.kill_main("web");
    d.wait_for_stderr("down line", T, |l| {
        has(l, &["unit=web.service", "state=failed", "unit is down"])
    });
    d.wait_for_stderr("restarted", T, |l| {
        has(l, &["unit=web.service", "result=restarted", "attempt=1/3"])
    });
    mgr.wait_for_state("web", "active", T);
    assert_ne!(mgr.show("web", "MainPID"), pid_before);
    assert_eq!(starts(&mgr, "web"), 2);
    // The same lines reach the file behind the stable symlink.
    let link = mgr.work_dir().join("log/unitwarden.log");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // The file's own thread may write the line a moment after stderr got it.
    let text = wait_until("the restart in unitwarden.log", T, || {
        let text = fs::read_to_string(&link).unwrap();
        text.lines()
            .any(|l| has(l, &["unit=web.service", "result=restarted"]))
            .then_some(text)
    });
    assert!(!text.contains('\x1b'), "no colour codes in log files");
    let lines = stop(d);
    assert!(lines.iter().any(|l| l.contains("stopping")));
}

#[test]
fn always_failing_unit_gets_exactly_max_attempts_then_gives_up() {
    let mgr = Manager::start();
    always_failing(&mgr, "broken", "");
    mgr.daemon_reload();
    let cfg = write_config(
        &mgr,
        &format!(
            "{FAST}max_attempts = 3\ngive_up_cooldown = \"never\"\n[[unit]]\nname = \"broken\"\n"
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_stderr("give up", T, |l| {
        has(l, &["unit=broken.service", "action=give_up"])
    });
    assert_eq!(starts(&mgr, "broken"), 3, "exactly max_attempts starts");
    d.wait_for_notify("status shows give-up", T, |m| {
        m.contains("gave up (broken)")
    });
    let lines = stop(d);
    assert_eq!(starts(&mgr, "broken"), 3, "no start after giving up");
    let attempts: Vec<_> = lines
        .iter()
        .filter(|l| has(l, &["unit=broken.service", "action=restart", "restarting"]))
        .collect();
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    assert!(lines.iter().any(|l| has(
        l,
        &[
            "unit=broken.service",
            "action=restart",
            "attempt=3/3",
            "result=failed"
        ]
    )));
}

#[test]
fn unit_with_its_own_restart_is_left_to_systemd() {
    let mgr = Manager::start();
    sleeper(&mgr, "selfheal", "Restart=on-failure\nRestartSec=300ms\n");
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", "selfheal"]);
    let cfg = write_config(&mgr, &format!("{FAST}[[unit]]\nname = \"selfheal\"\n"));
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    mgr.kill_main("selfheal");
    d.wait_for_stderr("wait_systemd", T, |l| {
        has(l, &["unit=selfheal.service", "action=wait_systemd"])
    });
    wait_until("systemd's own restart", T, || {
        (mgr.show("selfheal", "NRestarts") == "1").then_some(())
    });
    mgr.wait_for_state("selfheal", "active", T);
    let lines = stop(d);
    assert!(
        !lines
            .iter()
            .any(|l| has(l, &["unit=selfheal.service", "action=restart"])),
        "unitwarden must not fight Restart=: {lines:#?}"
    );
    assert_eq!(
        starts(&mgr, "selfheal"),
        2,
        "one start by us (test), one by systemd"
    );
}

#[test]
fn start_limited_unit_is_recovered_with_reset_failed() {
    let mgr = Manager::start();
    let ok = mgr.work_dir().join("ok");
    // Crash-loops until its start limit stops it; once `ok` exists it would run fine.
    mgr.write_unit(
        "limited.service",
        &format!(
            "[Unit]\nStartLimitIntervalSec=60\nStartLimitBurst=3\n[Service]\nRestart=always\nRestartSec=0\n\
             ExecStart=/bin/sh -c 'test -e {} || exit 1; exec sleep infinity'\n",
            ok.display()
        ),
    );
    mgr.daemon_reload();
    let _ = mgr.systemctl(&["start", "limited"]);
    mgr.wait_for_state("limited", "failed", T);
    let refused = mgr.systemctl(&["start", "limited"]);
    assert!(
        !refused.status.success(),
        "the start limit should refuse a plain start"
    );
    fs::write(&ok, b"").unwrap();
    let cfg = write_config(&mgr, &format!("{FAST}[[unit]]\nname = \"limited\"\n"));
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_stderr("reset_failed", T, |l| {
        has(l, &["unit=limited.service", "action=reset_failed"])
    });
    d.wait_for_stderr("restarted", T, |l| {
        has(l, &["unit=limited.service", "result=restarted"])
    });
    assert_eq!(mgr.active_state("limited"), "active");
    stop(d);
}

#[test]
fn restart_inactive_false_leaves_a_stopped_unit_alone() {
    let mgr = Manager::start();
    sleeper(&mgr, "idle", "");
    mgr.daemon_reload();
    let cfg = write_config(
        &mgr,
        &format!("{FAST}restart_inactive = false\n[[unit]]\nname = \"idle\"\n"),
    );
    let out = run_cli(Some(&mgr), &["--config", cfg.to_str().unwrap(), "once"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mgr.active_state("idle"), "inactive");
    assert_eq!(starts(&mgr, "idle"), 0);
    // The default (true) starts it, as the original shell monitor did.
    let cfg = write_config(&mgr, &format!("{FAST}[[unit]]\nname = \"idle\"\n"));
    let out = run_cli(Some(&mgr), &["--config", cfg.to_str().unwrap(), "once"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mgr.active_state("idle"), "active");
}

#[test]
fn killing_unitwarden_mid_episode_causes_no_extra_attempts() {
    let mgr = Manager::start();
    always_failing(&mgr, "crashy", "");
    mgr.daemon_reload();
    let cfg = write_config(
        &mgr,
        "[restart]\nbackoff_initial = \"400ms\"\nbackoff_multiplier = 1.0\nverify_after = \"200ms\"\n\
         max_attempts = 3\ngive_up_cooldown = \"never\"\n[[unit]]\nname = \"crashy\"\n",
    );
    let first = Daemon::spawn(&mgr, &cfg, &["run"]);
    wait_until("two attempts made", T, || {
        (starts(&mgr, "crashy") >= 2).then_some(())
    });
    first.kill9();
    assert_eq!(starts(&mgr, "crashy"), 2);
    let second = Daemon::spawn(&mgr, &cfg, &["run"]);
    second.wait_for_stderr("give up", T, |l| {
        has(l, &["unit=crashy.service", "action=give_up"])
    });
    let lines = stop(second);
    assert_eq!(
        starts(&mgr, "crashy"),
        3,
        "the restored episode continues at attempt 3"
    );
    assert!(
        lines
            .iter()
            .any(|l| has(l, &["unit=crashy.service", "attempt=3/3", "restarting"]))
    );
    assert!(
        !lines
            .iter()
            .any(|l| has(l, &["unit=crashy.service", "attempt=1/3", "restarting"]))
    );
    // And a third start of the watchdog keeps the give-up: no new attempt at all.
    let out = run_cli(Some(&mgr), &["--config", cfg.to_str().unwrap(), "once"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(starts(&mgr, "crashy"), 3);
}

#[test]
fn glob_unit_appearing_later_is_watched_and_restarted() {
    let mgr = Manager::start();
    mgr.write_unit(
        "worker@.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    mgr.daemon_reload();
    let cfg = write_config(&mgr, &format!("{FAST}[[unit]]\nname = \"worker@*\"\n"));
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    mgr.systemctl_ok(&["start", "worker@blue"]);
    d.wait_for_stderr("picked up", T, |l| {
        has(l, &["unit=worker@blue.service", "watching new unit"])
    });
    mgr.kill_main("worker@blue");
    d.wait_for_stderr("restarted", T, |l| {
        has(l, &["unit=worker@blue.service", "result=restarted"])
    });
    mgr.wait_for_state("worker@blue", "active", T);
    stop(d);
}

/// `HH:MM` of now + `minutes` in UTC.
fn utc_hhmm(minutes: i64) -> (String, i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let minute_of_day = (now / 60 + minutes).rem_euclid(24 * 60);
    (
        format!("{:02}:{:02}", minute_of_day / 60, minute_of_day % 60),
        now,
    )
}

#[test]
fn active_window_shortens_the_interval_and_shows_in_status() {
    let mgr = running("app");
    let (start, _) = utc_hhmm(-1);
    let (end, _) = utc_hhmm(30);
    let cfg = write_config(
        &mgr,
        &format!(
            "interval = \"1h\"\n[[window]]\nname = \"rush\"\nstart = \"{start}\"\nend = \"{end}\"\ntimezone = \"UTC\"\ninterval = \"2s\"\n[[unit]]\nname = \"app\"\n"
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_stderr("window start", T, |l| {
        has(
            l,
            &["window=rush", "interval=2s", "critical window started"],
        )
    });
    d.wait_for_notify("status names the window", T, |m| {
        m.contains("window rush") && m.contains("interval 2s")
    });
    stop(d);
}

#[test]
fn window_boundary_takes_effect_without_waiting_for_the_old_tick() {
    let mgr = running("app");
    // Starts at the next minute boundary; with interval = 1h only a boundary timer can see it.
    let (start, _) = utc_hhmm(1);
    let (end, _) = utc_hhmm(3);
    let cfg = write_config(
        &mgr,
        &format!(
            "interval = \"1h\"\n[[window]]\nname = \"edge\"\nstart = \"{start}\"\nend = \"{end}\"\ntimezone = \"UTC\"\ninterval = \"1s\"\n[[unit]]\nname = \"app\"\n"
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    d.wait_for_stderr("boundary", Duration::from_secs(75), |l| {
        has(l, &["window=edge", "critical window started"])
    });
    stop(d);
}

#[test]
fn sighup_with_broken_config_keeps_the_old_one_running() {
    let mgr = running("keep");
    let cfg = write_config(&mgr, &format!("{FAST}[[unit]]\nname = \"keep\"\n"));
    let good = fs::read_to_string(&cfg).unwrap();
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    fs::write(&cfg, "[daemon]\nintervall = \"5s\"\n").unwrap();
    d.signal(1);
    let line = d.wait_for_stderr("reload failure", T, |l| l.contains("config reload failed"));
    assert!(
        line.contains("ERROR") && line.contains(":2:1: unknown field `intervall`"),
        "{line}"
    );
    d.wait_for_notify("status notes it", T, |m| m.contains("config reload failed"));
    // The old config still works.
    mgr.kill_main("keep");
    d.wait_for_stderr("restarted", T, |l| {
        has(l, &["unit=keep.service", "result=restarted"])
    });
    // A good config is taken, with RELOADING=1 then READY=1.
    fs::write(
        &cfg,
        good.replace("verify_after = \"300ms\"", "verify_after = \"200ms\""),
    )
    .unwrap();
    d.signal(1);
    d.wait_for_stderr("reloaded", T, |l| l.contains("configuration reloaded"));
    d.wait_for_notify("reloading", T, |m| m.contains("RELOADING=1"));
    let msgs = d.notify_messages();
    let reloading = msgs.iter().position(|m| m.contains("RELOADING=1")).unwrap();
    wait_until("READY after RELOADING", T, || {
        d.notify_messages()[reloading..]
            .iter()
            .any(|m| m.contains("READY=1"))
            .then_some(())
    });
    stop(d);
}

#[test]
fn sighup_with_a_fifo_or_dev_zero_at_the_config_path_keeps_the_old_one_running() {
    let mgr = running("hold");
    let cfg = write_config(&mgr, &format!("{FAST}[[unit]]\nname = \"hold\"\n"));
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    fs::remove_file(&cfg).unwrap();
    let refused = format!("{}: not a regular file", cfg.display());
    let count = || {
        d.stderr_lines()
            .iter()
            .filter(|l| l.contains("config reload failed") && l.contains(&refused))
            .count()
    };
    // A FIFO nobody writes to would block a plain open(2); /dev/zero would be read forever.
    let fifo = |p: &Path| {
        let ok = std::process::Command::new("mkfifo")
            .arg(p)
            .status()
            .unwrap();
        assert!(ok.success(), "mkfifo {}", p.display());
    };
    let zero = |p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap();
    for make in [&fifo as &dyn Fn(&Path), &zero] {
        make(&cfg);
        let before = count();
        d.signal(1);
        wait_until("the reload refused", T, || (count() > before).then_some(()));
        fs::remove_file(&cfg).unwrap();
    }
    // The loop was never held: the old config still restarts its unit.
    mgr.kill_main("hold");
    d.wait_for_stderr("restarted", T, |l| {
        has(l, &["unit=hold.service", "result=restarted"])
    });
    stop(d);
}

#[test]
fn once_restarts_what_is_down_and_reports_by_exit_code() {
    let mgr = Manager::start();
    sleeper(&mgr, "one", "");
    always_failing(&mgr, "two", "");
    mgr.daemon_reload();
    let cfg_ok = write_config(&mgr, &format!("{FAST}[[unit]]\nname = \"one\"\n"));
    let out = run_cli(Some(&mgr), &["--config", cfg_ok.to_str().unwrap(), "once"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("one.service active/running"));
    assert_eq!(mgr.active_state("one"), "active");

    let cfg_bad = write_config(
        &mgr,
        &format!("{FAST}max_attempts = 2\n[[unit]]\nname = \"one\"\n[[unit]]\nname = \"two\"\n"),
    );
    let out = run_cli(Some(&mgr), &["--config", cfg_bad.to_str().unwrap(), "once"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("two.service failed/failed DOWN (gave up)"),
        "{stdout}"
    );
    assert_eq!(starts(&mgr, "two"), 2, "once honours max_attempts");
}

#[test]
fn missing_unit_is_reported_never_restarted() {
    let mgr = Manager::start();
    let cfg = write_config(&mgr, &format!("{FAST}[[unit]]\nname = \"ghost\"\n"));
    let out = run_cli(Some(&mgr), &["--config", cfg.to_str().unwrap(), "once"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unit=ghost.service state=not-found"),
        "{stderr}"
    );
    assert!(!stderr.contains("action=restart"), "{stderr}");
}

#[test]
fn bad_config_is_one_line_with_position_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    fs::write(
        &path,
        "[daemon]\ninterval = \"60s\"\n\n[[unit]]\nname = \"x\"\nmax_atempts = 3\n",
    )
    .unwrap();
    for cmd in ["check-config", "run", "once", "windows"] {
        let out = run_cli(None, &[cmd, "--config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("{}:6:1: unknown field `max_atempts`", path.display());
        assert!(err.starts_with(&want), "{cmd}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{cmd}: one line: {err}");
    }
    let out = run_cli(None, &["check-config", "--config", "/nonexistent/u.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "/nonexistent/u.toml: no such file"
    );
    let out = run_cli(None, &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_config_prints_units_windows_and_email_target() {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/unitwarden.toml");
    let out = run_cli(None, &["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for unit in [
        "nginx",
        "gunicorn",
        "daphne",
        "celery",
        "celerybeat",
        // Debian's postgresql.service is a wrapper that stays active: the cluster is watched.
        "postgresql@15-main",
    ] {
        assert!(text.contains(&format!("{unit}.service")), "{text}");
    }
    assert!(!text.contains(" postgresql.service"), "{text}");
    assert!(text.contains("monday-morning  mon 07:30-08:30"), "{text}");
    assert!(
        text.contains("recovery_unit=backend-restart.service"),
        "{text}"
    );
    assert!(text.contains("email: off"), "{text}");
}

#[test]
fn windows_command_prints_upcoming_transitions_with_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.toml");
    fs::write(
        &path,
        "[[window]]\nname = \"ist\"\ndays = [\"mon\"]\nstart = \"07:30\"\nend = \"08:30\"\ntimezone = \"Europe/Istanbul\"\n",
    )
    .unwrap();
    let out = run_cli(
        None,
        &["windows", "--next", "4", "--config", path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].contains("07:30+03:00") || lines[0].contains("08:30+03:00"),
        "{text}"
    );
    assert!(lines.iter().all(|l| l.contains("ist")), "{text}");
}

#[test]
fn unwritable_log_dir_is_reported_and_the_daemon_keeps_running() {
    let mgr = running("svc");
    let blocker = mgr.work_dir().join("not-a-dir");
    fs::write(&blocker, b"").unwrap();
    let cfg = mgr.work_dir().join("u.toml");
    fs::write(
        &cfg,
        format!(
            "[daemon]\nbus = \"user\"\nlog_dir = \"{}/logs\"\nstate_dir = \"{}/state\"\ncontrol_socket = \"{}/control.sock\"\n{FAST}[[unit]]\nname = \"svc\"\n",
            blocker.display(),
            mgr.work_dir().display(),
            mgr.work_dir().display()
        ),
    )
    .unwrap();
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_stderr("log_dir complaint", T, |l| {
        l.contains("log_dir") && l.contains("stderr only")
    });
    ready(&d);
    mgr.kill_main("svc");
    d.wait_for_stderr("restarted", T, |l| {
        has(l, &["unit=svc.service", "result=restarted"])
    });
    stop(d);
}

#[test]
fn ready_status_and_stopping_follow_the_notify_protocol() {
    let mgr = Manager::start();
    sleeper(&mgr, "a", "");
    sleeper(&mgr, "b", "");
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", "a", "b"]);
    let cfg = write_config(
        &mgr,
        &format!("{FAST}[[unit]]\nname = \"a\"\n[[unit]]\nname = \"b\"\n"),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    let ready = d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
    assert!(
        ready.contains("STATUS=2 units: 2 active · normal"),
        "{ready}"
    );
    stop_and_expect_stopping(d);
}

fn stop_and_expect_stopping(mut d: Daemon) {
    d.signal(15);
    assert!(d.wait_exit(T).success());
    assert!(d.notify_messages().iter().any(|m| m.contains("STOPPING=1")));
}

#[test]
fn bus_restart_is_survived_by_reconnecting() {
    let mgr = running("survivor");
    let cfg = write_config(&mgr, &format!("{FAST}[[unit]]\nname = \"survivor\"\n"));
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    mgr.systemctl_ok(&["restart", "dbus.service"]);
    d.wait_for_stderr("reconnect notice", T, |l| l.contains("reconnecting"));
    // After the reconnect the subscription is live again: a kill is still seen and handled.
    wait_until("resubscribed", T, || {
        (count_lines(&d, &["watching"]) >= 1
            && d.stderr_lines()
                .iter()
                .any(|l| l.contains("connected again")))
        .then_some(())
    });
    mgr.kill_main("survivor");
    d.wait_for_stderr("restarted", T, |l| {
        has(l, &["unit=survivor.service", "result=restarted"])
    });
    stop(d);
}

#[test]
fn watchdog_pings_come_from_the_main_loop_when_asked_for() {
    let mgr = running("pinged");
    let cfg = write_config(&mgr, &format!("{FAST}[[unit]]\nname = \"pinged\"\n"));
    let mut cmd = crate::support::unitwarden_command(Some(&mgr));
    cmd.arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("WATCHDOG_USEC", "200000");
    let d = Daemon::from_command(cmd);
    ready(&d);
    wait_until("three WATCHDOG=1 pings", T, || {
        (d.notify_messages()
            .iter()
            .filter(|m| m.contains("WATCHDOG=1"))
            .count()
            >= 3)
            .then_some(())
    });
    stop(d);
}

#[test]
fn dependency_is_restarted_first_and_the_wait_does_not_count() {
    let mgr = Manager::start();
    sleeper(&mgr, "postgresql", "");
    sleeper(&mgr, "gunicorn", "");
    mgr.daemon_reload();
    let cfg = write_config(
        &mgr,
        &format!(
            "{FAST}[[unit]]\nname = \"postgresql\"\n[[unit]]\nname = \"gunicorn\"\ndepends_on = [\"postgresql\"]\n"
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_stderr("gunicorn restarted", T, |l| {
        has(l, &["unit=gunicorn.service", "result=restarted"])
    });
    let lines = stop(d);
    let pos = |parts: &[&str]| lines.iter().position(|l| has(l, parts));
    let pg = pos(&["unit=postgresql.service", "restarting"]).expect("postgresql restarted");
    let gu = pos(&["unit=gunicorn.service", "restarting"]).expect("gunicorn restarted");
    assert!(pg < gu, "the dependency goes first: {lines:#?}");
    assert!(
        pos(&["unit=gunicorn.service", "action=wait_dependency"]).is_some(),
        "{lines:#?}"
    );
    assert!(
        lines[gu].contains("attempt=1/3"),
        "waiting did not count: {}",
        lines[gu]
    );
    assert_eq!(starts(&mgr, "gunicorn"), 1);
}

#[test]
fn unit_systemd_keeps_restarting_is_reported_as_flapping_once() {
    let mgr = Manager::start();
    // Runs briefly, then fails; systemd restarts it every 100 ms by itself.
    mgr.write_unit(
        "flappy.service",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nRestart=always\nRestartSec=100ms\nExecStart=/bin/sh -c 'read -t 0.2 x < /dev/zero; exit 1'\n",
    );
    mgr.daemon_reload();
    let cfg = write_config(
        &mgr,
        "[restart]\nflap_restarts = 3\nflap_window = \"1m\"\n[[unit]]\nname = \"flappy\"\n",
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    mgr.systemctl_ok(&["start", "flappy"]);
    d.wait_for_stderr("flapping", T, |l| {
        has(l, &["unit=flappy.service", "flapping"])
    });
    wait_until("more restarts by systemd", T, || {
        (mgr.show("flappy", "NRestarts").parse::<u32>().unwrap_or(0) >= 6).then_some(())
    });
    mgr.systemctl_ok(&["stop", "flappy"]);
    let lines = stop(d);
    assert_eq!(
        lines
            .iter()
            .filter(|l| has(l, &["unit=flappy.service", "flapping"]))
            .count(),
        1
    );
    assert!(
        !lines
            .iter()
            .any(|l| has(l, &["unit=flappy.service", "action=restart", "restarting"])),
        "{lines:#?}"
    );
    let recovered = lines
        .iter()
        .filter(|l| has(l, &["unit=flappy.service", "result=recovered"]))
        .count();
    assert!(
        recovered <= 1,
        "recovered is reported once, not per systemd restart: {lines:#?}"
    );
}

#[test]
fn an_alias_is_followed_to_the_real_unit() {
    let mgr = running("mariadb");
    // As Debian links mysql.service to mariadb.service.
    std::os::unix::fs::symlink(
        mgr.unit_dir().join("mariadb.service"),
        mgr.unit_dir().join("mysql.service"),
    )
    .unwrap();
    mgr.daemon_reload();
    let cfg = write_config(&mgr, &format!("{FAST}[[unit]]\nname = \"mysql\"\n"));
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_notify("healthy at start", T, |m| m.contains("1 unit: 1 active"));
    mgr.kill_main("mariadb");
    d.wait_for_stderr("restarted", T, |l| {
        has(l, &["unit=mysql.service", "result=restarted"])
    });
    mgr.wait_for_state("mariadb", "active", T);
    stop(d);
}

#[test]
fn a_glob_instance_merely_looked_at_is_not_started() {
    let mgr = Manager::start();
    mgr.write_unit(
        "worker@.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    mgr.daemon_reload();
    let cfg = write_config(&mgr, &format!("{FAST}[[unit]]\nname = \"worker@*\"\n"));
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    // Loads the instance (UnitNew) without starting it.
    let _ = mgr.systemctl(&["status", "worker@typo"]);
    // A started instance afterwards is picked up: by then the first has been considered.
    mgr.systemctl_ok(&["start", "worker@real"]);
    d.wait_for_stderr("picked up", T, |l| {
        has(l, &["unit=worker@real.service", "watching new unit"])
    });
    let lines = stop(d);
    assert_eq!(mgr.active_state("worker@typo"), "inactive");
    assert!(
        !lines.iter().any(|l| l.contains("worker@typo")),
        "{lines:#?}"
    );
}

#[test]
fn a_template_name_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    fs::write(&path, "[[unit]]\nname = \"getty@\"\n").unwrap();
    let out = run_cli(None, &["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":2:8: \"getty@\" is a template"), "{err}");
}

#[test]
fn a_dependency_that_gave_up_does_not_block_its_dependent_forever() {
    let mgr = Manager::start();
    always_failing(&mgr, "postgresql", "");
    sleeper(&mgr, "gunicorn", "");
    mgr.daemon_reload();
    let cfg = write_config(
        &mgr,
        &format!(
            "{FAST}max_attempts = 1\ngive_up_cooldown = \"never\"\n[[unit]]\nname = \"postgresql\"\n[[unit]]\nname = \"gunicorn\"\ndepends_on = [\"postgresql\"]\n"
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_stderr("postgresql gave up", T, |l| {
        has(l, &["unit=postgresql.service", "action=give_up"])
    });
    d.wait_for_stderr("gunicorn restarted anyway", T, |l| {
        has(l, &["unit=gunicorn.service", "result=restarted"])
    });
    stop(d);
}
