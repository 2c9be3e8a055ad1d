//! Health probes, recovery units, host resources and pre-flight checks against real services:
//! gunicorn (from PyPI) serving a health endpoint, nginx (Debian's) in front of it, a TCP
//! service that closes its port, exec probes, a repair oneshot, tiny tmpfs file systems in the
//! daemon's own mount namespace. What is asserted first is what happened (who restarted, which
//! requests reached the server, which process is gone); then the stable log fields (`unit=`,
//! `action=`), with as little of the wording as possible.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::web::{
    Gunicorn, Health, Nginx, TcpServer, accepts, main_pid, wait_new_main_pid,
};
use crate::support::{Daemon, Manager, UNITWARDEN, unitwarden_command, wait_until, write_config};

const T: Duration = Duration::from_secs(30);

/// Restart at once, and call a restart good once the unit has stayed up briefly.
const FAST: &str = "[restart]\nbackoff_initial = \"0s\"\nverify_after = \"300ms\"\n";

fn has(line: &str, parts: &[&str]) -> bool {
    parts.iter().all(|p| line.contains(p))
}

fn ready(d: &Daemon) {
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
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

/// The lines about `unit` so far.
fn lines_of(d: &Daemon, unit: &str) -> Vec<String> {
    let field = format!("unit={unit} ");
    d.stderr_lines()
        .into_iter()
        .filter(|l| l.contains(&field))
        .collect()
}

/// The line that starts restart attempt `attempt` of `unit` (`action=restart ... restarting`).
fn wait_restarting(d: &Daemon, unit: &str, attempt: &str) -> String {
    let unit_field = format!("unit={unit} ");
    let attempt_field = format!("attempt={attempt} ");
    d.wait_for_stderr(&format!("restart {attempt} of {unit}"), T, |l| {
        has(
            l,
            &[&unit_field, "action=restart", &attempt_field, "restarting"],
        )
    })
}

/// gunicorn installed, started and answering.
fn gunicorn(mgr: &Manager, name: &str, health: Health) -> Gunicorn {
    let g = Gunicorn::install(mgr, name, health);
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", &g.unit]);
    g.wait_listening(mgr);
    g
}

fn http_probe(url: &str, rest: &str) -> String {
    format!("[unit.probe]\nhttp = \"{url}\"\n{rest}")
}

#[test]
fn a_health_endpoint_answering_500_gets_its_unit_restarted_after_exactly_failures_probes() {
    let mgr = Manager::start();
    let web = gunicorn(&mgr, "web", Health::Ok);
    let cfg = write_config(
        &mgr,
        &format!(
            "interval = \"300ms\"\n{FAST}[[unit]]\nname = \"web\"\n{}",
            http_probe(
                &web.url(),
                "timeout = \"2s\"\nfailures = 3\ngrace = \"0s\"\n"
            )
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    let old = main_pid(&mgr, &web.unit);
    wait_until("two healthy probes", T, || {
        (web.count(old, "200") >= 2).then_some(())
    });

    web.set_health(Health::Error500);
    let restarting = wait_restarting(&d, &web.unit, "1/3");
    // The restarted instance answers 200 again, so the episode can end.
    web.set_health(Health::Ok);
    let new = wait_new_main_pid(&mgr, &web.unit, old, T);
    assert_eq!(
        web.count(old, "500"),
        3,
        "exactly `failures` probes failed before the restart: {:#?}",
        web.requests()
    );
    d.wait_for_stderr("the restart verified", T, |l| {
        has(l, &["unit=web.service", "result=restarted", "attempt=1/3"])
    });
    wait_until("a healthy probe of the new instance", T, || {
        (web.count(new, "200") >= 1).then_some(())
    });
    let lines = stop(d);
    // The probe's last error travels with the unit's lines up to the restart.
    let upto = lines.iter().position(|l| l == &restarting).unwrap();
    assert!(
        lines[..=upto]
            .iter()
            .any(|l| has(l, &["unit=web.service", "500"])),
        "no line about web.service up to the restart names the status 500: {lines:#?}"
    );
    assert_eq!(mgr.active_state(&web.unit), "active");
}

#[test]
fn a_hung_health_endpoint_is_cut_at_the_timeout_and_counts_as_a_failure() {
    let mgr = Manager::start();
    let web = gunicorn(&mgr, "web", Health::Ok);
    // Another unit, to show that a hung probe holds nothing else up.
    mgr.write_unit(
        "other.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", "other"]);
    let cfg = write_config(
        &mgr,
        &format!(
            "interval = \"300ms\"\n{FAST}[[unit]]\nname = \"other\"\n[[unit]]\nname = \"web\"\n{}",
            http_probe(
                &web.url(),
                "timeout = \"2s\"\nfailures = 2\ngrace = \"0s\"\n"
            )
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    let old = main_pid(&mgr, &web.unit);
    wait_until("a healthy probe", T, || {
        (web.count(old, "200") >= 1).then_some(())
    });

    web.set_health(Health::Hang);
    wait_until("a probe hanging in the server", T, || {
        (web.count(old, "hang") >= 1).then_some(())
    });
    // While that probe hangs, another unit dies: it is restarted without waiting for the
    // probe (two timeouts of 2 s must pass before web's restart).
    mgr.kill_main("other");
    d.wait_for_stderr("other restarted", T, |l| {
        has(l, &["unit=other.service", "result=restarted"])
    });
    assert!(
        !lines_of(&d, &web.unit)
            .iter()
            .any(|l| l.contains("action=restart")),
        "web was restarted before the other unit: the hung probe held the loop"
    );

    wait_restarting(&d, &web.unit, "1/3");
    web.set_health(Health::Ok);
    wait_new_main_pid(&mgr, &web.unit, old, T);
    assert_eq!(
        web.count(old, "hang"),
        2,
        "each hung probe counted once, `failures` of them before the restart: {:#?}",
        web.requests()
    );
    let lines = stop(d);
    assert!(
        lines.iter().any(|l| {
            let l = l.to_lowercase();
            l.contains("unit=web.service")
                && ["timed out", "timeout", "no answer within"]
                    .iter()
                    .any(|w| l.contains(w))
        }),
        "the probe's error says it timed out: {lines:#?}"
    );
}

#[test]
fn probe_failures_within_grace_after_a_start_do_not_count() {
    let mgr = Manager::start();
    // Failing from its first request on, as an app that is still warming up.
    let web = gunicorn(&mgr, "web", Health::Error500);
    let cfg = write_config(
        &mgr,
        &format!(
            "interval = \"200ms\"\n{FAST}[[unit]]\nname = \"web\"\n{}",
            http_probe(
                &web.url(),
                "timeout = \"2s\"\nfailures = 1\ngrace = \"1h\"\n"
            )
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    let pid = main_pid(&mgr, &web.unit);
    wait_until("five failed probes", T, || {
        (web.count(pid, "500") >= 5).then_some(())
    });
    let lines = stop(d);
    assert_eq!(main_pid(&mgr, &web.unit), pid, "restarted within grace");
    assert!(
        !lines
            .iter()
            .any(|l| has(l, &["unit=web.service", "action=restart"])),
        "{lines:#?}"
    );
    assert!(
        web.requests().iter().all(|r| r.arbiter == pid),
        "{:#?}",
        web.requests()
    );
}

#[test]
fn nginx_answering_502_for_a_stopped_gunicorn_fails_its_probe_and_is_restarted() {
    let mgr = Manager::start();
    let app = Gunicorn::install(&mgr, "gunicorn", Health::Ok);
    let nginx = Nginx::install(&mgr, "nginx", app.port);
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", &app.unit, &nginx.unit]);
    app.wait_listening(&mgr);
    nginx.wait_listening(&mgr);
    // The probe goes through the proxy, as a user's request would.
    let cfg = write_config(
        &mgr,
        &format!(
            "interval = \"300ms\"\n{FAST}[[unit]]\nname = \"nginx\"\n{}",
            http_probe(
                &nginx.url(),
                "timeout = \"2s\"\nfailures = 2\ngrace = \"0s\"\n"
            )
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    let old = main_pid(&mgr, &nginx.unit);
    wait_until("a healthy probe through nginx", T, || {
        (app.count(main_pid(&mgr, &app.unit), "200") >= 1).then_some(())
    });

    mgr.systemctl_ok(&["stop", &app.unit]);
    let restarting = wait_restarting(&d, &nginx.unit, "1/3");
    wait_new_main_pid(&mgr, &nginx.unit, old, T);
    assert!(
        nginx
            .health_statuses()
            .iter()
            .filter(|s| **s == 502)
            .count()
            >= 2,
        "nginx answered the probes 502: {:?}",
        nginx.health_statuses()
    );
    // Back with its upstream, nginx passes its probes again.
    mgr.systemctl_ok(&["start", &app.unit]);
    d.wait_for_stderr("nginx restarted", T, |l| {
        has(l, &["unit=nginx.service", "result=restarted"])
    });
    let lines = stop(d);
    let upto = lines.iter().position(|l| l == &restarting).unwrap();
    assert!(
        lines[..=upto]
            .iter()
            .any(|l| has(l, &["unit=nginx.service", "502"])),
        "no line about nginx.service up to the restart names the status 502: {lines:#?}"
    );
}

#[test]
fn a_tcp_port_closed_while_its_unit_stays_active_gets_the_unit_restarted() {
    let mgr = Manager::start();
    let db = TcpServer::install(&mgr, "db");
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", &db.unit]);
    wait_until("the TCP service listening", T, || {
        accepts(db.port).then_some(())
    });
    let old = main_pid(&mgr, &db.unit);
    let cfg = write_config(
        &mgr,
        &format!(
            "interval = \"300ms\"\n{FAST}[[unit]]\nname = \"db\"\n[unit.probe]\ntcp = \"{}\"\ntimeout = \"2s\"\nfailures = 2\ngrace = \"0s\"\n",
            db.address()
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    let before = db.connections(old);
    wait_until("the probe connecting", T, || {
        (db.connections(old) >= before + 2).then_some(())
    });

    db.close_port(&mgr);
    assert_eq!(mgr.active_state(&db.unit), "active");
    wait_restarting(&d, &db.unit, "1/3");
    let new = wait_new_main_pid(&mgr, &db.unit, old, T);
    d.wait_for_stderr("db restarted", T, |l| {
        has(l, &["unit=db.service", "result=restarted"])
    });
    wait_until("the probe connecting to the new process", T, || {
        (db.connections(new) >= 1).then_some(())
    });
    let lines = stop(d);
    assert!(
        lines.iter().any(|l| {
            let l = l.to_lowercase();
            l.contains("unit=db.service") && (l.contains("refused") || l.contains("connect"))
        }),
        "the probe's error says the connection failed: {lines:#?}"
    );
}

/// Whether `pid` is a process that still runs (a zombie has finished).
fn running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[test]
fn an_exec_probe_that_outlives_its_timeout_is_killed_and_counts_as_a_failure() {
    let mgr = Manager::start();
    mgr.write_unit(
        "worker.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", "worker"]);
    // The check records its PID and, unless `healthy` exists, starts `sleep 60` as a child of
    // its own (recorded too) and waits for it: killing the check alone would leave the sleep.
    let dir = mgr.work_dir();
    let pids = dir.join("check.pids");
    let healthy = dir.join("healthy");
    let check = dir.join("check");
    fs::write(
        &check,
        format!(
            "#!/bin/sh\necho $$ >> {pids}\ntest -e {healthy} && exit 0\n/bin/sleep 60 &\necho $! >> {pids}\nwait\n",
            pids = pids.display(),
            healthy = healthy.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&check, fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = write_config(
        &mgr,
        &format!(
            "interval = \"300ms\"\n{FAST}[[unit]]\nname = \"worker\"\n[unit.probe]\nexec = [\"{}\"]\ntimeout = \"1s\"\nfailures = 2\ngrace = \"0s\"\n",
            check.display()
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    let old = main_pid(&mgr, "worker.service");
    wait_restarting(&d, "worker.service", "1/3");
    fs::write(&healthy, b"").unwrap();
    wait_new_main_pid(&mgr, "worker.service", old, T);
    d.wait_for_stderr("worker restarted", T, |l| {
        has(l, &["unit=worker.service", "result=restarted"])
    });
    let started = || -> Vec<u32> {
        fs::read_to_string(&pids)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    assert!(
        started().len() >= 4,
        "two checks and their sleeps: {:?}",
        started()
    );
    // Each timed-out check is killed at its timeout with its process group: no check and no
    // sleep is left.
    let left = wait_until("every timed-out check and its sleep gone", T, || {
        let left: Vec<u32> = started().into_iter().filter(|p| running(*p)).collect();
        left.is_empty().then_some(left)
    });
    assert!(left.is_empty());
    let lines = stop(d);
    assert!(
        lines.iter().any(|l| {
            let l = l.to_lowercase();
            l.contains("unit=worker.service") && (l.contains("timed out") || l.contains("timeout"))
        }),
        "the probe's error says it timed out: {lines:#?}"
    );
}

/// `HH:MM` in UTC, `minutes` from now.
fn utc_hhmm(minutes: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let minute_of_day = (now / 60 + minutes).rem_euclid(24 * 60);
    format!("{:02}:{:02}", minute_of_day / 60, minute_of_day % 60)
}

#[test]
fn an_active_window_with_failures_1_restarts_after_one_failed_probe() {
    let mgr = Manager::start();
    let web = gunicorn(&mgr, "web", Health::Ok);
    let cfg = write_config(
        &mgr,
        &format!(
            "interval = \"300ms\"\n{FAST}\
             [[window]]\nname = \"rush\"\nstart = \"{}\"\nend = \"{}\"\ntimezone = \"UTC\"\nfailures = 1\n\
             [[unit]]\nname = \"web\"\n{}",
            utc_hhmm(-1),
            utc_hhmm(30),
            http_probe(
                &web.url(),
                "timeout = \"2s\"\nfailures = 3\ngrace = \"0s\"\n"
            )
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    d.wait_for_stderr("the window active", T, |l| {
        has(l, &["window=rush", "critical window started"])
    });
    let old = main_pid(&mgr, &web.unit);
    wait_until("a healthy probe", T, || {
        (web.count(old, "200") >= 1).then_some(())
    });

    web.set_health(Health::Error500);
    wait_restarting(&d, &web.unit, "1/3");
    web.set_health(Health::Ok);
    wait_new_main_pid(&mgr, &web.unit, old, T);
    assert_eq!(
        web.count(old, "500"),
        1,
        "the window's failures = 1, not the unit's 3: {:#?}",
        web.requests()
    );
    stop(d);
}

#[test]
fn a_recovery_unit_repairs_what_restarts_alone_cannot_and_runs_once() {
    let mgr = Manager::start();
    let dir = mgr.work_dir();
    let marker = dir.join("repaired");
    let runs = dir.join("repair.runs");
    // The app cannot start without what the repair makes (a migrated schema, a rebuilt cache).
    mgr.write_unit(
        "app.service",
        &format!(
            "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStartPre=/bin/test -e {}\nExecStart=/bin/sleep infinity\n",
            marker.display()
        ),
    );
    // The repair takes a moment: the next attempt only succeeds if it is awaited.
    mgr.write_unit(
        "app-repair.service",
        &format!(
            "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo run >> {runs}; sleep 1; touch {marker}'\n",
            runs = runs.display(),
            marker = marker.display()
        ),
    );
    fs::write(&marker, b"").unwrap();
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", "app"]);
    let cfg = write_config(
        &mgr,
        &format!(
            "{FAST}[[unit]]\nname = \"app\"\nrecovery_unit = \"app-repair.service\"\nrecovery_after = 1\nrecovery_timeout = \"30s\"\n"
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    let old = main_pid(&mgr, "app.service");
    fs::remove_file(&marker).unwrap();
    mgr.kill_main("app");

    d.wait_for_stderr("app restarted", T, |l| {
        has(l, &["unit=app.service", "result=restarted"])
    });
    mgr.wait_for_state("app", "active", T);
    assert_ne!(main_pid(&mgr, "app.service"), old);
    let lines = stop(d);
    let run_count = fs::read_to_string(&runs)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(run_count, 1, "the repair ran once per episode");
    let recovery = lines
        .iter()
        .position(|l| l.contains("action=recovery") && l.contains("app"))
        .unwrap_or_else(|| panic!("no action=recovery line: {lines:#?}"));
    let first_failed = lines
        .iter()
        .position(|l| has(l, &["unit=app.service", "attempt=1/3", "result=failed"]))
        .unwrap_or_else(|| panic!("attempt 1 should fail: {lines:#?}"));
    let second = lines
        .iter()
        .position(|l| has(l, &["unit=app.service", "attempt=2/3", "restarting"]))
        .unwrap_or_else(|| panic!("no attempt 2: {lines:#?}"));
    assert!(
        first_failed < recovery && recovery < second,
        "failed attempt, then the repair, then the next attempt: {lines:#?}"
    );
    assert!(
        lines[recovery..second]
            .iter()
            .any(|l| has(l, &["action=recovery", "result=done", "app-repair.service"])),
        "the repair finished before the next attempt: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| has(l, &["unit=app.service", "attempt=2/3", "result=restarted"])),
        "{lines:#?}"
    );
}

/// Writes `bytes` bytes into `path` (a file on a tmpfs).
fn fill(path: &Path, bytes: usize) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(&vec![b'x'; bytes])
        .unwrap_or_else(|e| panic!("filling {}: {e}", path.display()));
    f.sync_all().unwrap();
}

#[test]
fn a_disk_over_its_threshold_is_one_resource_line_and_back_under_it_one_recovered_line() {
    let mgr = Manager::start();
    let dir = mgr.work_dir();
    // Two 1 MiB file systems: `data` is the one under test; `tick` is filled and emptied to
    // see checks go by (each check reads both), so "no second line" is not a matter of time.
    let data = dir.join("data");
    let tick = dir.join("tick");
    fs::create_dir(&data).unwrap();
    fs::create_dir(&tick).unwrap();
    let cfg = write_config(
        &mgr,
        &format!(
            "[resources]\nresource_interval = \"1s\"\ndisk = [{{ path = \"{}\", max_used_percent = 50 }}, {{ path = \"{}\", max_used_percent = 50 }}]\n",
            data.display(),
            tick.display()
        ),
    );
    // The daemon in a mount namespace of its own, where the two tmpfs are; sh execs, so the
    // daemon keeps the PID.
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        "mount -t tmpfs -o size=1m tmpfs \"$0\" && mount -t tmpfs -o size=1m tmpfs \"$1\" && shift && exec \"$@\"",
    ])
    .arg(&data)
    .arg(&tick)
    .arg(UNITWARDEN)
    .arg("--config")
    .arg(&cfg)
    .arg("run");
    let base = unitwarden_command(Some(&mgr));
    for (key, value) in base.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let d = Daemon::from_command(cmd);
    ready(&d);
    // The file systems as the daemon sees them, held open.
    let open = |p: &Path| File::open(format!("/proc/{}/root{}", d.pid(), p.display())).unwrap();
    let (data_fs, tick_fs) = (open(&data), open(&tick));
    let on =
        |f: &File, name: &str| PathBuf::from(format!("/proc/self/fd/{}/{name}", f.as_raw_fd()));
    let data_s = data.display().to_string();
    let tick_s = tick.display().to_string();
    // `action=resource result=over|recovered PATH ...`
    let told = |path: &str, result: &str| {
        let parts = [
            "action=resource".to_string(),
            format!("result={result} "),
            format!(" {path} "),
        ];
        move |l: &str| parts.iter().all(|p| l.contains(p.as_str()))
    };
    let count = |pred: &dyn Fn(&str) -> bool| d.stderr_lines().iter().filter(|l| pred(l)).count();
    // Two checks go by: `tick` crosses its threshold and comes back.
    let tick_cycle = || {
        let (over, back) = (
            count(&told(&tick_s, "over")),
            count(&told(&tick_s, "recovered")),
        );
        fill(&on(&tick_fs, "big"), 600 * 1024);
        wait_until("tick over", T, || {
            (count(&told(&tick_s, "over")) > over).then_some(())
        });
        fs::remove_file(on(&tick_fs, "big")).unwrap();
        wait_until("tick back", T, || {
            (count(&told(&tick_s, "recovered")) > back).then_some(())
        });
    };

    // 600 KiB of 1 MiB: 58.6% used, over 50.
    let big = on(&data_fs, "big");
    fill(&big, 600 * 1024);
    d.wait_for_stderr("the disk over its threshold", T, told(&data_s, "over"));
    tick_cycle();
    // 480 KiB: 46.9%, under the threshold but not 5 points under: not back yet.
    File::options()
        .write(true)
        .open(&big)
        .and_then(|f| f.set_len(480 * 1024))
        .unwrap();
    tick_cycle();
    assert_eq!(
        count(&told(&data_s, "over")),
        1,
        "one line while it stays over"
    );
    assert_eq!(
        count(&told(&data_s, "recovered")),
        0,
        "46.9% is not back below 45%"
    );

    fs::remove_file(&big).unwrap();
    d.wait_for_stderr("the disk back under", T, told(&data_s, "recovered"));
    let lines = stop(d);
    let about_data: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("action=resource") && l.contains(&format!(" {data_s} ")))
        .collect();
    assert_eq!(
        about_data.len(),
        2,
        "one resource line, one recovered line: {about_data:#?}"
    );
}

/// A window starting at the next minute boundary at least two minutes away, in UTC, and the
/// `preflight` that puts its pre-flight check `lead` from now.
fn window_with_preflight_in(lead: Duration) -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let start_min = now.as_secs() / 60 + 2;
    let start = start_min * 60;
    let before = start - now.as_secs() - lead.as_secs();
    let minute_of_day = start_min % (24 * 60);
    let start_hhmm = format!("{:02}:{:02}", minute_of_day / 60, minute_of_day % 60);
    let end_hhmm = {
        let m = (start_min + 30) % (24 * 60);
        format!("{:02}:{:02}", m / 60, m % 60)
    };
    (
        format!(
            "[[window]]\nname = \"opening\"\nstart = \"{start_hhmm}\"\nend = \"{end_hhmm}\"\ntimezone = \"UTC\"\npreflight = \"{before}s\"\n"
        ),
        start_hhmm,
    )
}

/// The pre-flight's verdict (`action=preflight result=ok|problems`); the line before it only
/// says the check begins.
fn is_verdict(line: &str) -> bool {
    line.contains("action=preflight") && line.contains(" result=")
}

fn verdicts(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| is_verdict(l)).collect()
}

#[test]
fn a_preflight_before_a_window_says_all_is_well_when_it_is() {
    let mgr = Manager::start();
    let web = gunicorn(&mgr, "web", Health::Ok);
    mgr.write_unit("db.service", "[Service]\nExecStart=/bin/sleep infinity\n");
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", "db"]);
    let (window, _) = window_with_preflight_in(Duration::from_secs(5));
    // The regular probes are an hour apart: the request the pre-flight makes is its own.
    let cfg = write_config(
        &mgr,
        &format!(
            "interval = \"1h\"\n{window}[[unit]]\nname = \"db\"\n[[unit]]\nname = \"web\"\n{}\
             [resources]\ndisk = [{{ path = \"/\", max_used_percent = 100 }}]\n",
            http_probe(&web.url(), "timeout = \"2s\"\ngrace = \"0s\"\n")
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    let line = d.wait_for_stderr("the pre-flight verdict", T, is_verdict);
    let pid = main_pid(&mgr, &web.unit);
    assert!(web.count(pid, "200") >= 1, "{:#?}", web.requests());
    let lines = stop(d);
    assert_eq!(verdicts(&lines).len(), 1, "{lines:#?}");
    assert!(line.contains("result=ok"), "{line}");
    assert!(
        !line.contains("web.service") && !line.contains("db.service"),
        "all is well, so no unit is named: {line}"
    );
}

#[test]
fn a_preflight_before_a_window_names_the_unit_whose_probe_fails() {
    let mgr = Manager::start();
    let web = gunicorn(&mgr, "web", Health::Error500);
    mgr.write_unit("db.service", "[Service]\nExecStart=/bin/sleep infinity\n");
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", "db"]);
    let (window, _) = window_with_preflight_in(Duration::from_secs(5));
    let cfg = write_config(
        &mgr,
        &format!(
            "interval = \"1h\"\n{window}[[unit]]\nname = \"db\"\n[[unit]]\nname = \"web\"\n{}",
            http_probe(
                &web.url(),
                "timeout = \"2s\"\nfailures = 3\ngrace = \"0s\"\n"
            )
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    let line = d.wait_for_stderr("the pre-flight verdict", T, is_verdict);
    let lines = stop(d);
    assert!(line.contains("result=problems"), "{line}");
    assert!(
        line.contains("web.service"),
        "the failing unit is named: {line}"
    );
    assert!(
        !line.contains("db.service"),
        "the healthy one is not: {line}"
    );
    assert_eq!(verdicts(&lines).len(), 1, "{lines:#?}");
}
