//! The daemon's files against real file systems: private modes under `umask 000`, and a
//! `log_dir` and `state_dir` on a tiny tmpfs filled to the last byte and then emptied, in a
//! private mount namespace of the daemon's own.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::smtp::closed_port;
use crate::support::{
    Daemon, Manager, UNITWARDEN, run_to_completion, unitwarden_command, wait_until,
};

const T: Duration = Duration::from_secs(30);
/// The bound the README promises for logging to resume once the disk has room.
const RESUME_BOUND: Duration = Duration::from_secs(60);

/// `program ARGS` with the environment [`unitwarden_command`] gives the binary (the manager's
/// bus, no inherited systemd variables).
fn wrapped(mgr: &Manager, program: &str, args: &[&str]) -> Command {
    let base = unitwarden_command(Some(mgr));
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (key, value) in base.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

fn sleeper(mgr: &Manager, name: &str) {
    mgr.write_unit(
        &format!("{name}.service"),
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", name]);
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

/// The only file in `dir` whose name ends with `suffix`.
fn only_file(dir: &Path, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

#[test]
fn under_umask_000_state_alerts_outbox_and_logs_are_created_private() {
    let mgr = Manager::start();
    sleeper(&mgr, "web");
    mgr.kill_main("web");
    mgr.wait_for_state("web", "failed", T);
    let dir = mgr.work_dir();
    let cfg = dir.join("unitwarden.toml");
    // The server is down, so the alert stays in the outbox.
    fs::write(
        &cfg,
        format!(
            "[daemon]\nbus = \"user\"\nlog_dir = \"{log}\"\nstate_dir = \"{state}\"\n\
             [restart]\nbackoff_initial = \"0s\"\nverify_after = \"300ms\"\n\
             [[unit]]\nname = \"web\"\n\
             [email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\ntls = \"none\"\n\
             to = [\"ops@example.com\"]\nfrom = \"unitwarden@example.com\"\n",
            log = dir.join("log").display(),
            state = dir.join("state").display(),
            port = closed_port(),
        ),
    )
    .unwrap();
    // As from a careless crontab: everything the process creates would be world-writable if
    // it left the modes to the umask.
    let cmd = wrapped(
        &mgr,
        "sh",
        &[
            "-c",
            "umask 000 && exec \"$0\" \"$@\"",
            UNITWARDEN,
            "--config",
            cfg.to_str().unwrap(),
            "once",
        ],
    );
    let out = run_to_completion(cmd, T * 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    assert!(stderr.contains("result=restarted"), "{stderr}");

    let state = dir.join("state");
    let outbox = state.join("outbox");
    let log = dir.join("log");
    let message = only_file(&outbox, ".json");
    let log_file = log.join(fs::read_link(log.join("unitwarden.log")).unwrap());
    let modes = [
        (state.clone(), 0o700),
        (state.join("state.json"), 0o600),
        (state.join("alerts.json"), 0o600),
        (outbox, 0o700),
        (message, 0o600),
        (log, 0o750),
        (log_file, 0o640),
    ];
    for (path, expected) in modes {
        assert_eq!(
            mode(&path),
            expected,
            "{} is {:o}, not {expected:o}",
            path.display(),
            mode(&path)
        );
    }
    let leftovers: Vec<_> = fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Writes to `path` until the file system has no byte left.
fn fill(path: &Path) {
    let mut filler = File::create(path).unwrap();
    let chunk = [b'f'; 512];
    loop {
        match filler.write(&chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => return,
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
}

/// A text log line: an RFC 3339 time, a level, the rest.
fn parses(line: &str) -> bool {
    let mut parts = line.splitn(3, ' ');
    let time = parts.next().unwrap_or_default();
    let level = parts.next().unwrap_or_default();
    jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%.f%:z", time).is_ok()
        && ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level)
}

#[test]
fn a_full_disk_under_log_dir_and_state_dir_loses_no_line_and_logging_resumes_once_there_is_room() {
    let mgr = Manager::start();
    sleeper(&mgr, "web");
    let disk = mgr.work_dir().join("disk");
    fs::create_dir(&disk).unwrap();
    let cfg = mgr.work_dir().join("unitwarden.toml");
    fs::write(
        &cfg,
        format!(
            "[daemon]\nbus = \"user\"\nlog_dir = \"{log}\"\nstate_dir = \"{state}\"\n\
             [restart]\nbackoff_initial = \"0s\"\nverify_after = \"300ms\"\n\
             [[unit]]\nname = \"web\"\n",
            log = disk.join("log").display(),
            state = disk.join("state").display(),
        ),
    )
    .unwrap();
    // The daemon in a mount namespace of its own, where a 64 KiB tmpfs covers `disk`; unshare
    // and sh exec, so the daemon keeps the PID.
    let cmd = wrapped(
        &mgr,
        "unshare",
        &[
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k tmpfs \"$0\" && exec \"$@\"",
            disk.to_str().unwrap(),
            UNITWARDEN,
            "--config",
            cfg.to_str().unwrap(),
            "run",
        ],
    );
    let mut d = Daemon::from_command(cmd);
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
    // The tmpfs as the daemon sees it, held open: it stays reachable after the daemon (and
    // with it the namespace) is gone.
    let root = File::open(format!("/proc/{}/root{}", d.pid(), disk.display())).unwrap();
    let tmpfs = PathBuf::from(format!("/proc/self/fd/{}", root.as_raw_fd()));
    let link = tmpfs.join("log/unitwarden.log");
    wait_until("the log file on the tmpfs", T, || {
        link.exists().then_some(())
    });

    let filler = tmpfs.join("filler");
    fill(&filler);
    // The log file's last page still has room: reloads log lines until it is used up, and a
    // line runs into the end of the disk.
    let mut reloads = 0;
    while !d
        .stderr_lines()
        .iter()
        .any(|l| l.contains("logging to stderr only"))
    {
        assert!(reloads < 200, "the log file never filled");
        reloads += 1;
        d.signal(1);
        wait_until("a reload", T, || {
            let done = d
                .stderr_lines()
                .iter()
                .filter(|l| l.contains("configuration reloaded"))
                .count();
            (done >= reloads).then_some(())
        });
    }
    // Monitoring goes on with both directories full.
    mgr.kill_main("web");
    d.wait_for_stderr("the restart", T, |l| {
        l.contains("unit=web.service") && l.contains("result=restarted")
    });
    d.wait_for_stderr("the state write failing", T, |l| {
        l.contains("cannot write state")
    });

    fs::remove_file(&filler).unwrap();
    let room = Instant::now();
    // Nothing is logged meanwhile: the retry thread alone brings the file back.
    wait_until("the note in the log file", RESUME_BOUND, || {
        fs::read_to_string(&link)
            .ok()
            .filter(|t| t.contains("could not be written to the log file"))
    });
    let resumed = room.elapsed();
    eprintln!(
        "logging resumed {} ms after the disk had room",
        resumed.as_millis()
    );

    d.signal(15);
    let status = d.wait_exit(T);
    assert!(status.success(), "{status}");

    let text = fs::read_to_string(&link).unwrap();
    assert!(text.ends_with('\n'), "a torn last line");
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines {
        assert!(parses(line), "a line that does not parse: {line:?}");
    }
    let notes: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("could not be written to the log file between"))
        .collect();
    assert_eq!(notes.len(), 1, "{text}");
    assert!(
        notes[0].contains("No space left on device") && notes[0].ends_with("; they follow"),
        "{}",
        notes[0]
    );
    // Every event on stderr is in the file, in order, the note aside: nothing was lost.
    let events: Vec<String> = d
        .stderr_lines()
        .into_iter()
        .filter(|l| !l.starts_with("unitwarden: "))
        .collect();
    let in_file: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.contains("could not be written to the log file between"))
        .collect();
    assert_eq!(in_file, events);
    let after_note = text.split_once(notes[0]).unwrap().1;
    assert!(after_note.contains("result=restarted"), "{text}");

    // The state was written at shutdown, and no failed write left its temporary file.
    let state = tmpfs.join("state");
    let names: Vec<String> = fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["state.json"]);
    let saved: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(state.join("state.json")).unwrap()).unwrap();
    assert!(saved["units"]["web.service"].is_object(), "{saved}");
}

#[test]
fn a_deleted_log_dir_is_recreated_at_the_next_line_with_a_note() {
    let mgr = Manager::start();
    sleeper(&mgr, "web");
    let log = mgr.work_dir().join("log");
    let cfg = mgr.work_dir().join("unitwarden.toml");
    fs::write(
        &cfg,
        format!(
            "[daemon]\nbus = \"user\"\nlog_dir = \"{log}\"\nstate_dir = \"{state}\"\n[[unit]]\nname = \"web\"\n",
            log = log.display(),
            state = mgr.work_dir().join("state").display(),
        ),
    )
    .unwrap();
    let mut d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
    let link = log.join("unitwarden.log");
    wait_until("the first lines in the file", T, || {
        fs::read_to_string(&link)
            .ok()
            .filter(|t| t.contains("watching"))
    });
    fs::remove_dir_all(&log).unwrap();
    d.signal(1);
    let text = wait_until("the reload in a new file", T, || {
        fs::read_to_string(&link)
            .ok()
            .filter(|t| t.contains("configuration reloaded"))
    });
    assert_eq!(mode(&log), 0o750);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.iter().all(|l| parses(l)), "{text}");
    assert!(
        lines[0].contains("WARN the log file") && lines[0].contains("was deleted or moved away"),
        "{text}"
    );
    // The first line logged after the deletion is the first after the note: none went into
    // the deleted file.
    assert!(
        lines[1].ends_with("SIGHUP: reloading configuration"),
        "{text}"
    );
    d.signal(15);
    assert!(d.wait_exit(T).success());
}
