//! Tests of the test support itself: the private manager, its teardown, and
//! the capture of a daemon's output.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::support::{Daemon, Manager, Ready, cgroup_dirs_of, run_to_completion, wait_until};

const STATE: Duration = Duration::from_secs(10);

fn sleeper_unit(work_dir: &Path) -> String {
    format!(
        "[Unit]\n\
         Description=harness self-test sleeper\n\
         [Service]\n\
         ExecStartPre=/bin/sh -c 'echo x >> {}/starts'\n\
         ExecStart=/bin/sleep infinity\n",
        work_dir.display()
    )
}

fn starts(work_dir: &Path) -> usize {
    fs::read_to_string(work_dir.join("starts")).map_or(0, |s| s.lines().count())
}

/// `busctl --address=BUS ARGS` from outside the namespace.
fn busctl(bus: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("busctl");
    cmd.arg(format!("--address={bus}")).args(args);
    run_to_completion(cmd, Duration::from_secs(30))
}

fn get_unit(bus: &str, unit: &str) -> std::process::Output {
    busctl(
        bus,
        &[
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "GetUnit",
            "s",
            unit,
        ],
    )
}

/// Live (non-zombie) processes whose cgroup path mentions `id`.
fn processes_in(id: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        if state == Some(Some('Z')) {
            continue;
        }
        let cgroup = fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if cgroup.contains(id) {
            found.push(format!("{name}: {}", stat.trim_end()));
        }
    }
    found
}

/// Starts a manager with a running unit (so that systemd has created cgroups
/// of its own below the private one) and returns what must vanish with it.
fn manager_with_a_running_unit() -> (Manager, String) {
    let mgr = Manager::start();
    mgr.write_unit("teardown.service", &sleeper_unit(mgr.work_dir()));
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", "teardown.service"]);
    assert_eq!(mgr.active_state("teardown.service"), "active");
    let id = mgr
        .harness_dir()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for dir in mgr.cgroup_dirs() {
        assert!(
            dir.is_dir(),
            "{} should exist while the manager runs",
            dir.display()
        );
    }
    assert!(
        !processes_in(&id).is_empty(),
        "the manager's processes are in the private cgroup"
    );
    (mgr, id)
}

#[track_caller]
fn assert_nothing_left(id: &str, work: &Path) {
    for dir in cgroup_dirs_of(work) {
        assert!(!dir.exists(), "leaked cgroup {}", dir.display());
    }
    assert!(!work.exists(), "leaked work dir {}", work.display());
    assert_eq!(processes_in(id), Vec::<String>::new(), "leaked processes");
}

#[test]
fn ready_line_parses() {
    let line = "HARNESS_READY nspid=4242 work=/tmp/user-systemd.AbC123 \
                unitdir=/tmp/user-systemd.AbC123/home/.config/systemd/user \
                log=/tmp/user-systemd.AbC123/manager.log bus=unix:path=/proc/4242/root/run/user/0/bus";
    let ready = Ready::parse(line).unwrap();
    assert_eq!(ready.nspid, 4242);
    assert_eq!(ready.work, Path::new("/tmp/user-systemd.AbC123"));
    assert_eq!(
        ready.unitdir,
        Path::new("/tmp/user-systemd.AbC123/home/.config/systemd/user")
    );
    assert_eq!(ready.log, Path::new("/tmp/user-systemd.AbC123/manager.log"));
    assert_eq!(ready.bus, "unix:path=/proc/4242/root/run/user/0/bus");
    assert!(Ready::parse("HARNESS_READY nspid=x work=/w unitdir=/u log=/l bus=b").is_err());
    assert!(Ready::parse("hello").is_err());
}

#[test]
fn wait_until_returns_the_first_value() {
    let mut calls = 0;
    let value = wait_until("the third call", Duration::from_secs(5), || {
        calls += 1;
        (calls == 3).then_some(calls * 10)
    });
    assert_eq!(value, 30);
}

#[test]
#[should_panic(expected = "waiting for the impossible")]
fn wait_until_panics_naming_what_it_waited_for() {
    wait_until("the impossible", Duration::from_millis(20), || None::<()>);
}

#[test]
fn manager_runs_a_unit_and_sees_its_main_process_killed() {
    let mgr = Manager::start();
    let unit = "sleeper.service";
    mgr.write_unit(unit, &sleeper_unit(mgr.work_dir()));
    mgr.daemon_reload();
    assert_eq!(mgr.show(unit, "LoadState"), "loaded");

    mgr.systemctl_ok(&["start", unit]);
    mgr.wait_for_state(unit, "active", STATE);
    assert_eq!(starts(mgr.work_dir()), 1);
    assert_ne!(mgr.show(unit, "MainPID"), "0");

    mgr.kill_main(unit);
    mgr.wait_for_state(unit, "failed", STATE);
    assert_eq!(mgr.show(unit, "Result"), "signal");

    // Over the bus from outside the namespaces, as unitwarden will do it.
    let restart = busctl(
        &mgr.bus_address(),
        &[
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "RestartUnit",
            "ss",
            unit,
            "replace",
        ],
    );
    assert!(
        restart.status.success(),
        "RestartUnit: {}",
        String::from_utf8_lossy(&restart.stderr)
    );
    mgr.wait_for_state(unit, "active", STATE);
    assert_eq!(starts(mgr.work_dir()), 2);
}

#[test]
fn two_managers_in_parallel_are_independent() {
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(Manager::start);
        let b = s.spawn(Manager::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.nspid(), b.nspid());
    assert_ne!(a.bus_address(), b.bus_address());
    assert_ne!(a.unit_dir(), b.unit_dir());
    assert_ne!(a.work_dir(), b.work_dir());

    let unit = "only-in-a.service";
    a.write_unit(unit, &sleeper_unit(a.work_dir()));
    a.daemon_reload();
    b.daemon_reload();
    a.systemctl_ok(&["start", unit]);
    assert_eq!(a.active_state(unit), "active");
    assert_eq!(b.show(unit, "LoadState"), "not-found");
    assert_eq!(starts(a.work_dir()), 1);
    assert_eq!(starts(b.work_dir()), 0);

    // Each bus is usable from outside the namespaces and reaches its own manager.
    let found = get_unit(&a.bus_address(), unit);
    assert!(
        found.status.success(),
        "GetUnit on A: {}",
        String::from_utf8_lossy(&found.stderr)
    );
    assert!(
        String::from_utf8_lossy(&found.stdout)
            .contains("/org/freedesktop/systemd1/unit/only_2din_2da_2eservice")
    );
    let missing = get_unit(&b.bus_address(), unit);
    assert!(!missing.status.success(), "B must not know A's unit");
    let version = busctl(
        &b.bus_address(),
        &[
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "Version",
        ],
    );
    assert!(
        version.status.success(),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );

    a.kill_main(unit);
    a.wait_for_state(unit, "failed", STATE);
    drop(a);
    // B is unaffected by A's teardown.
    assert_eq!(b.show("dbus.service", "ActiveState"), "active");
}

#[test]
fn teardown_leaves_no_cgroup_process_or_work_dir() {
    let (mgr, id) = manager_with_a_running_unit();
    let work = mgr.harness_dir().to_path_buf();
    drop(mgr);
    assert_nothing_left(&id, &work);
}

#[test]
fn sigkill_of_the_harness_still_leaves_nothing() {
    let (mgr, id) = manager_with_a_running_unit();
    let work = mgr.harness_dir().to_path_buf();
    mgr.kill_harness();
    assert_nothing_left(&id, &work);
}

#[test]
fn daemon_captures_stderr_stdout_and_notify_datagrams() {
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        "echo starting >&2; echo to-stdout; \
         systemd-notify --ready --status='first pass done'; \
         systemd-notify STATUS=second; \
         echo ready >&2; exec /bin/sleep infinity",
    ]);
    let mut daemon = Daemon::from_command(cmd);
    let ready = daemon.wait_for_notify("READY=1", Duration::from_secs(10), |m| {
        m.contains("READY=1")
    });
    assert!(
        ready.contains("STATUS=first pass done"),
        "one datagram: {ready:?}"
    );
    daemon.wait_for_notify("the second STATUS", Duration::from_secs(10), |m| {
        m == "STATUS=second"
    });
    assert_eq!(
        daemon.wait_for_stderr("ready", Duration::from_secs(10), |l| l == "ready"),
        "ready"
    );
    assert_eq!(daemon.stderr_lines(), ["starting", "ready"]);
    assert_eq!(daemon.stdout_lines(), ["to-stdout"]);
    // systemd-notify follows each message with a BARRIER=1 of its own
    let messages: Vec<String> = daemon
        .notify_messages()
        .into_iter()
        .filter(|m| m != "BARRIER=1")
        .collect();
    assert_eq!(
        messages,
        ["READY=1\nSTATUS=first pass done", "STATUS=second"]
    );

    daemon.signal(15);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(status.signal(), Some(15));
}

#[test]
#[should_panic(expected = "the process exited waiting for a line that never comes")]
fn daemon_wait_fails_fast_when_the_process_exits() {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "echo bye >&2"]);
    let daemon = Daemon::from_command(cmd);
    daemon.wait_for_stderr("a line that never comes", Duration::from_secs(60), |l| {
        l == "never"
    });
}

#[test]
fn run_to_completion_collects_status_and_output() {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
    let out = run_to_completion(cmd, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
}
