//! Talking to the running daemon over its control socket, against a real `systemd --user`
//! manager: `status` (JSON and the human table, in a terminal and through a pipe), `pause`,
//! `resume`, `retry`, deliberate stops, crashes systemd heals, and clients that misbehave.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::smtp::{Options, Smtp};
use crate::support::{
    Daemon, Manager, run_cli, run_to_completion, unitwarden_command, wait_until, write_config,
};

const T: Duration = Duration::from_secs(30);

/// Where [`write_config`] puts the socket.
fn socket(mgr: &Manager) -> PathBuf {
    mgr.work_dir().join("control.sock")
}

fn sleeper(mgr: &Manager, name: &str, extra: &str) {
    mgr.write_unit(
        &format!("{name}.service"),
        &format!("[Service]\nExecStart=/bin/sleep infinity\n{extra}"),
    );
}

const FAST: &str = "[restart]\nbackoff_initial = \"0s\"\nverify_after = \"300ms\"\n";

/// A manager running `names` as sleepers, and a daemon watching them with `policy`.
fn watching(names: &[&str], policy: &str) -> (Manager, PathBuf, Daemon) {
    let mgr = Manager::start();
    let mut units = String::new();
    for n in names {
        sleeper(&mgr, n, "");
        units.push_str(&format!("[[unit]]\nname = \"{n}\"\n"));
    }
    mgr.daemon_reload();
    for n in names {
        mgr.systemctl_ok(&["start", n]);
    }
    let cfg = write_config(&mgr, &format!("{policy}{units}"));
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
    (mgr, cfg, d)
}

fn cli(mgr: &Manager, cfg: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    run_cli(Some(mgr), &all)
}

#[track_caller]
fn cli_ok(mgr: &Manager, cfg: &Path, args: &[&str]) -> String {
    let out = cli(mgr, cfg, args);
    assert!(
        out.status.success(),
        "unitwarden {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn status_json(mgr: &Manager, cfg: &Path) -> serde_json::Value {
    let text = cli_ok(mgr, cfg, &["status", "--json"]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The status of `unit` in a fresh `status --json`.
fn unit_status(mgr: &Manager, cfg: &Path, unit: &str) -> serde_json::Value {
    let all = status_json(mgr, cfg);
    all["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == unit)
        .cloned()
        .unwrap_or_else(|| panic!("{unit} not in {all}"))
}

fn wait_episode(mgr: &Manager, cfg: &Path, unit: &str, episode: &str) -> serde_json::Value {
    wait_until(&format!("{unit} {episode}"), T, || {
        let u = unit_status(mgr, cfg, unit);
        (u["episode"] == episode).then_some(u)
    })
}

fn count(d: &Daemon, parts: &[&str]) -> usize {
    d.stderr_lines()
        .iter()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

#[test]
fn status_reflects_a_killed_and_restarted_unit_and_a_given_up_one() {
    let mgr = Manager::start();
    sleeper(&mgr, "web", "");
    mgr.write_unit(
        "bad.service",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'exit 3'\n",
    );
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", "web"]);
    let cfg = write_config(
        &mgr,
        &format!(
            "{FAST}max_attempts = 2\ngive_up_cooldown = \"never\"\n[[unit]]\nname = \"web\"\n[[unit]]\nname = \"bad\"\n"
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
    let bad = wait_episode(&mgr, &cfg, "bad.service", "gave_up");
    assert_eq!(bad["attempts"], 2);
    assert_eq!(bad["max_attempts"], 2);
    assert_eq!(bad["state"], "failed");

    mgr.kill_main("web");
    wait_until("web restarted", T, || {
        (count(&d, &["unit=web.service", "result=restarted"]) == 1).then_some(())
    });
    let all = status_json(&mgr, &cfg);
    assert_eq!(all["schema"], 1);
    assert_eq!(all["mode"], "normal");
    assert_eq!(all["interval_ms"], 60_000);
    assert_eq!(all["outbox"], serde_json::Value::Null, "no [email]");
    let web = all["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "web.service")
        .unwrap();
    assert_eq!(web["state"], "active");
    assert_eq!(web["episode"], "healthy");
    assert_eq!(web["attempts"], 1, "the episode lasts reset_after: {web}");
    assert_eq!(web["last_action"]["action"], "restart");
    // One unit in detail: its recent lines, down to the verified restart.
    let detail = cli_ok(&mgr, &cfg, &["status", "web"]);
    assert!(detail.starts_with("web.service\n"), "{detail}");
    assert!(detail.contains("unit is down"), "{detail}");
    assert!(
        detail.contains("unit restarted and still active after verify_after"),
        "{detail}"
    );
}

#[test]
fn pause_holds_restarts_off_until_resume_and_survives_kill_9() {
    let (mgr, cfg, d) = watching(&["web", "db"], FAST);
    let out = cli_ok(&mgr, &cfg, &["pause", "web"]);
    assert_eq!(out, "paused web.service until `unitwarden resume`\n");
    assert_eq!(count(&d, &["unit=web.service", "action=pause"]), 1);
    // Killed, the daemon comes back still holding the pause.
    d.kill9();
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
    assert!(
        d.notify_messages()
            .iter()
            .any(|m| m.contains("1 paused (web)")),
        "{:?}",
        d.notify_messages()
    );
    mgr.kill_main("web");
    mgr.wait_for_state("web", "failed", T);
    d.wait_for_stderr("down while paused", T, |l| {
        l.contains("unit=web.service") && l.contains("paused") && l.contains("not restarting")
    });
    // The daemon is working (db is restarted meanwhile), and web stays down.
    mgr.kill_main("db");
    d.wait_for_stderr("db restarted", T, |l| {
        l.contains("unit=db.service") && l.contains("result=restarted")
    });
    assert_eq!(mgr.active_state("web"), "failed");
    assert_eq!(unit_status(&mgr, &cfg, "web.service")["episode"], "paused");

    cli_ok(&mgr, &cfg, &["resume", "web.service"]);
    mgr.wait_for_state("web", "active", T);
    d.wait_for_stderr("web restarted", T, |l| {
        l.contains("unit=web.service") && l.contains("result=restarted")
    });
}

#[test]
fn a_pause_for_two_seconds_ends_by_itself() {
    let (mgr, cfg, d) = watching(&["web"], FAST);
    cli_ok(&mgr, &cfg, &["pause", "web", "--for", "2s"]);
    let paused = unit_status(&mgr, &cfg, "web.service");
    assert_eq!(paused["episode"], "paused");
    assert!(paused["until"].is_string(), "{paused}");
    mgr.kill_main("web");
    mgr.wait_for_state("web", "failed", T);
    d.wait_for_stderr("the pause ran out", T, |l| l.contains("the pause ran out"));
    mgr.wait_for_state("web", "active", T);
    wait_episode(&mgr, &cfg, "web.service", "healthy");
}

#[test]
fn retry_brings_back_a_given_up_unit() {
    let mgr = Manager::start();
    let ok = mgr.work_dir().join("ok");
    mgr.write_unit(
        "app.service",
        &format!(
            "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'test -e {} && exec sleep infinity; exit 3'\n",
            ok.display()
        ),
    );
    mgr.daemon_reload();
    let _ = mgr.systemctl(&["start", "app"]);
    let cfg = write_config(
        &mgr,
        &format!(
            "{FAST}max_attempts = 1\ngive_up_cooldown = \"never\"\n[[unit]]\nname = \"app\"\n"
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
    wait_episode(&mgr, &cfg, "app.service", "gave_up");
    // Not given up: said so, exit 1.
    let out = cli(&mgr, &cfg, &["retry", "nothere"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no watched unit matches nothere.service")
    );
    fs::write(&ok, "").unwrap();
    let out = cli_ok(&mgr, &cfg, &["retry", "app"]);
    assert!(out.contains("retrying app.service"), "{out}");
    mgr.wait_for_state("app", "active", T);
    d.wait_for_stderr("restarted", T, |l| {
        l.contains("unit=app.service") && l.contains("result=restarted")
    });
    assert_eq!(count(&d, &["unit=app.service", "action=retry"]), 1);
}

#[test]
fn an_operators_stop_is_respected_and_a_start_ends_it() {
    let (mgr, cfg, d) = watching(&["web"], FAST);
    mgr.systemctl_ok(&["stop", "web"]);
    d.wait_for_stderr("operator stop", T, |l| {
        l.contains("unit=web.service") && l.contains("action=operator_stop")
    });
    let web = unit_status(&mgr, &cfg, "web.service");
    assert_eq!(web["episode"], "stopped_by_operator", "{web}");
    assert_eq!(mgr.active_state("web"), "inactive");
    // An operator's restart, by contrast, is no stop.
    mgr.systemctl_ok(&["start", "web"]);
    wait_episode(&mgr, &cfg, "web.service", "healthy");
    mgr.systemctl_ok(&["restart", "web"]);
    mgr.wait_for_state("web", "active", T);
    // Watched as usual again: a kill is restarted.
    mgr.kill_main("web");
    d.wait_for_stderr("restarted", T, |l| {
        l.contains("unit=web.service") && l.contains("result=restarted")
    });
    assert_eq!(
        count(&d, &["action=operator_stop"]),
        1,
        "{:?}",
        d.stderr_lines()
    );
    assert!(
        d.stderr_lines()
            .iter()
            .all(|l| !(l.contains("unit is down") && l.contains("state=inactive"))),
        "a deliberate stop is not reported as down"
    );
}

#[test]
fn a_crash_systemd_heals_is_one_email() {
    let mgr = Manager::start();
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(dir.path(), &Options::default());
    sleeper(&mgr, "web", "Restart=always\nRestartSec=200ms\n");
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", "web"]);
    let cfg = write_config(
        &mgr,
        &format!(
            "[[unit]]\nname = \"web\"\n[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\nto = [\"ops@example.com\"]\nfrom = \"unitwarden@example.com\"\nbatch_window = \"1s\"\nnotify_on = [\"crashed\"]\n",
            smtp.port
        ),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
    let pid = mgr.show("web", "MainPID");
    mgr.kill_main("web");
    wait_until("systemd restarted it", T, || {
        let now = mgr.show("web", "MainPID");
        (mgr.active_state("web") == "active" && now != pid && now != "0").then_some(())
    });
    let mails = smtp.wait_for("the crashed email", T, |m| !m.is_empty());
    assert_eq!(mails.len(), 1);
    let body = &mails[0].body;
    assert!(
        mails[0].subject().contains("web.service crashed"),
        "{}",
        mails[0].raw
    );
    assert!(body.contains("Result:    signal"), "{body}");
    assert!(body.contains("status=9/KILL"), "{body}");
    assert_eq!(count(&d, &["unit=web.service", "crashed"]), 1);
    assert_eq!(count(&d, &["action=restart"]), 0, "left to systemd");
    // No second email for the same crash (nothing more arrives before the daemon stops).
    let status = status_json(&mgr, &cfg);
    assert_eq!(status["outbox"]["messages"], 0, "{status}");
    assert_eq!(smtp.messages().len(), 1);
}

/// Sends raw bytes as a client would, returning the reply line (if any).
fn raw(sock: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    // A reply may come before all is written (an oversized line); that is fine.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
}

#[test]
fn bad_clients_get_errors_and_others_are_still_answered() {
    let (mgr, cfg, d) = watching(&["web"], FAST);
    let sock = socket(&mgr);
    // Connected, never writing: held by its own task, not by the loop.
    let silent: Vec<UnixStream> = (0..10)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let reply = raw(&sock, b"garbage\n");
    assert!(
        reply.contains("\"ok\":false") && reply.contains("malformed request"),
        "{reply}"
    );
    let reply = raw(&sock, br#"{"v":99,"cmd":"status"}"#);
    assert!(reply.contains("protocol version 99"), "{reply}");
    let mut big = vec![b'x'; (1 << 20) + 10];
    big.push(b'\n');
    let reply = raw(&sock, &big);
    assert!(reply.contains("request longer than 1 MiB"), "{reply}");
    // Meanwhile the watchdog works and other clients are answered.
    mgr.kill_main("web");
    d.wait_for_stderr("restarted", T, |l| {
        l.contains("unit=web.service") && l.contains("result=restarted")
    });
    let status = status_json(&mgr, &cfg);
    assert_eq!(status["units"][0]["state"], "active");
    drop(silent);
    let mut stream = UnixStream::connect(&sock).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    let mut reply = String::new();
    // A client that connects and never writes is answered with an error after its deadline.
    stream.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("no request within"), "{reply}");
}

#[test]
fn every_client_command_exits_3_without_a_daemon() {
    let mgr = Manager::start();
    let cfg = write_config(&mgr, "[[unit]]\nname = \"web\"\n");
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["pause", "web"],
        vec!["resume", "web"],
        vec!["retry", "web"],
    ] {
        let out = cli(&mgr, &cfg, &args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("no unitwarden daemon answers"), "{err}");
    }
    // Something that is not unitwarden on the socket path: also "no daemon".
    fs::create_dir_all(socket(&mgr).parent().unwrap()).unwrap();
    let other = std::os::unix::net::UnixListener::bind(socket(&mgr)).unwrap();
    let t = std::thread::spawn(move || {
        if let Ok((mut s, _)) = other.accept() {
            let mut request = [0u8; 256];
            let _ = s.read(&mut request);
            let _ = s.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n");
        }
    });
    let out = cli(&mgr, &cfg, &["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not unitwarden's protocol"), "{err}");
    t.join().unwrap();
}

#[test]
fn the_table_has_colour_in_a_terminal_and_none_through_a_pipe() {
    let (mgr, cfg, _d) = watching(&["web"], FAST);
    let piped = cli_ok(&mgr, &cfg, &["status"]);
    assert!(!piped.contains('\x1b'), "{piped}");
    let title = piped.lines().find(|l| l.starts_with("UNIT")).unwrap();
    for col in [
        "STATE",
        "SUB",
        "SINCE",
        "ATTEMPTS",
        "EPISODE",
        "LAST ACTION",
        "NEXT CHECK",
    ] {
        assert!(title.contains(col), "{title}");
    }
    let row = piped
        .lines()
        .find(|l| l.starts_with("web.service"))
        .unwrap();
    assert_eq!(row.find("active"), title.find("STATE"), "aligned:\n{piped}");
    // script(1) gives the command a pseudo-terminal.
    let bin = unitwarden_command(Some(&mgr));
    let line = format!(
        "{} --config {} status",
        bin.get_program().to_str().unwrap(),
        cfg.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"]);
    for (k, v) in bin.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env_remove("NO_COLOR");
    let out = run_to_completion(cmd, T);
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(tty.contains("\x1b[32mactive\x1b[0m"), "{tty:?}");
}

#[test]
fn the_group_may_read_status_and_only_root_may_change_anything() {
    let (mgr, _, _d) = watching(&["web"], FAST);
    // A directory every user can reach, with the binary and a readable config: the unprivileged
    // client must get as far as the socket.
    let dir = tempfile::Builder::new()
        .prefix("unitwarden-perm-")
        .tempdir_in("/run")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("unitwarden");
    fs::copy(unitwarden_command(None).get_program(), &bin).unwrap();
    let cfg = dir.path().join("unitwarden.toml");
    let sock = dir.path().join("control.sock");
    fs::write(
        &cfg,
        format!(
            "[daemon]\nbus = \"user\"\nlog_dir = \"{d}/log\"\nstate_dir = \"{d}/state\"\ncontrol_socket = \"{s}\"\n{FAST}[[unit]]\nname = \"web\"\n",
            d = mgr.work_dir().display(),
            s = sock.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).unwrap();
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
    let mode = fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // `nobody` outside the socket's group cannot open it.
    let as_nobody = |group: &str, args: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=nobody",
            &format!("--regid={group}"),
            "--clear-groups",
            "--",
        ])
        .arg(&bin)
        .args(["--config", cfg.to_str().unwrap()])
        .args(args);
        run_to_completion(cmd, T)
    };
    let out = as_nobody("nogroup", &["status"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    // In the socket's group (as `adm` under the shipped unit): status yes, changes no.
    let group = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    std::os::unix::fs::chown(&sock, None, Some(group.gid.as_raw())).unwrap();
    let out = as_nobody("nogroup", &["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("web.service"));
    let out = as_nobody("nogroup", &["pause", "web"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("pause, resume and retry need root or the user unitwarden runs as")
    );
    assert_eq!(count(&d, &["action=pause"]), 0);
}
