//! Email alerts against a real SMTP server (aiosmtpd, see `smtp`): `test-email` over STARTTLS
//! and implicit TLS with AUTH, its failures (wrong password, refused connection, untrusted
//! certificate, hung server), and the daemon's alerts from real unit failures: batching,
//! threads, dedup, reminders and the durable outbox across `kill -9`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::smtp::{Cert, Mail, Mode, Options, Silent, Smtp, closed_port};
use crate::support::{Daemon, Manager, run_cli};

const T: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct-horse-battery-staple-7f3a";

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("uw-email.")
        .tempdir()
        .unwrap()
}

/// A config with only an `[email]` section aimed at 127.0.0.1:`port`, plus `extra` keys.
fn email_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let path = dir.join("unitwarden.toml");
    fs::write(
        &path,
        format!(
            "[daemon]\nlog_dir = \"{log}\"\nstate_dir = \"{state}\"\n\n[email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nto = [\"ops@example.com\"]\nfrom = \"unitwarden@example.com\"\n{extra}",
            log = dir.join("log").display(),
            state = dir.join("state").display(),
        ),
    )
    .unwrap();
    path
}

fn password_file(dir: &Path, password: &str) -> PathBuf {
    let f = dir.join("smtp-password");
    fs::write(&f, format!("{password}\n")).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    f
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn test_email(cfg: &Path) -> Outcome {
    let out = run_cli(None, &["--config", cfg.to_str().unwrap(), "test-email"]);
    let o = Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "test-email exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        o.code, o.stdout, o.stderr
    );
    o
}

#[track_caller]
fn assert_no_secret(o: &Outcome, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !o.stdout.contains(s) && !o.stderr.contains(s),
            "a password appears in the output"
        );
    }
}

#[test]
fn test_email_over_starttls_trusting_the_ca_file() {
    let dir = tempdir();
    let cert = Cert::generate(dir.path());
    let smtp = Smtp::start(
        dir.path(),
        &Options {
            mode: Mode::Starttls,
            cert: Some(&cert),
            auth: None,
        },
    );
    let cfg = email_config(
        dir.path(),
        smtp.port,
        &format!("tls = \"starttls\"\nca_file = \"{}\"\n", cert.ca.display()),
    );
    let o = test_email(&cfg);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("server: 250 OK"), "{}", o.stdout);
    let mails = smtp.wait_for("the test email", T, |m| m.len() == 1);
    let m = &mails[0];
    assert!(m.subject().starts_with("[unitwarden] ") && m.subject().ends_with(": test email"));
    assert_eq!(m.must("To"), "ops@example.com");
    assert!(
        m.body.contains("This is a test email from unitwarden"),
        "{}",
        m.body
    );
    let id = m.must("Message-ID");
    assert!(o.stdout.contains(id), "stdout names the Message-ID {id}");
}

#[test]
fn test_email_over_implicit_tls_with_auth_and_a_password_file() {
    let dir = tempdir();
    let cert = Cert::generate(dir.path());
    let smtp = Smtp::start(
        dir.path(),
        &Options {
            mode: Mode::Tls,
            cert: Some(&cert),
            auth: Some(("alerts", PASSWORD)),
        },
    );
    let pw = password_file(dir.path(), PASSWORD);
    let cfg = email_config(
        dir.path(),
        smtp.port,
        &format!(
            "tls = \"tls\"\nca_file = \"{}\"\nusername = \"alerts\"\npassword_file = \"{}\"\n",
            cert.ca.display(),
            pw.display()
        ),
    );
    let o = test_email(&cfg);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("AUTH as alerts"), "{}", o.stdout);
    assert!(o.stdout.contains("server: 250 OK"), "{}", o.stdout);
    assert!(
        o.stderr.is_empty(),
        "no warnings for a 0600 password file: {}",
        o.stderr
    );
    assert_no_secret(&o, &[PASSWORD]);
    smtp.wait_for("the test email", T, |m| m.len() == 1);
}

#[test]
fn wrong_password_fails_clearly_and_shows_no_password() {
    let dir = tempdir();
    let cert = Cert::generate(dir.path());
    let smtp = Smtp::start(
        dir.path(),
        &Options {
            mode: Mode::Starttls,
            cert: Some(&cert),
            auth: Some(("alerts", PASSWORD)),
        },
    );
    let wrong = "wrong-password-91c2";
    let pw = password_file(dir.path(), wrong);
    let cfg = email_config(
        dir.path(),
        smtp.port,
        &format!(
            "ca_file = \"{}\"\nusername = \"alerts\"\npassword_file = \"{}\"\n",
            cert.ca.display(),
            pw.display()
        ),
    );
    let o = test_email(&cfg);
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("authentication failed") && o.stderr.contains("535"),
        "{}",
        o.stderr
    );
    assert_eq!(o.stderr.lines().count(), 1, "one clear line: {}", o.stderr);
    assert_no_secret(&o, &[wrong, PASSWORD]);
    assert!(smtp.messages().is_empty());
}

#[test]
fn connection_refused_fails_clearly() {
    let dir = tempdir();
    let cfg = email_config(dir.path(), closed_port(), "tls = \"none\"\n");
    let o = test_email(&cfg);
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("connection refused by 127.0.0.1:"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("panicked"));
}

#[test]
fn an_untrusted_certificate_fails_the_handshake_unless_tls_verify_is_off() {
    let dir = tempdir();
    let cert = Cert::generate(dir.path());
    let smtp = Smtp::start(
        dir.path(),
        &Options {
            mode: Mode::Tls,
            cert: Some(&cert),
            auth: None,
        },
    );
    let cfg = email_config(dir.path(), smtp.port, "tls = \"tls\"\n");
    let o = test_email(&cfg);
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr.contains("TLS handshake with 127.0.0.1:"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("certificate"), "{}", o.stderr);

    let cfg = email_config(dir.path(), smtp.port, "tls = \"tls\"\ntls_verify = false\n");
    let o = test_email(&cfg);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stderr.contains("warning: email.tls_verify = false"),
        "{}",
        o.stderr
    );
    smtp.wait_for("the test email", T, |m| m.len() == 1);
}

#[test]
fn a_hung_server_is_cut_off_by_the_timeout() {
    let dir = tempdir();
    let silent = Silent::start();
    let cfg = email_config(
        dir.path(),
        silent.port,
        "tls = \"none\"\ntimeout = \"1s\"\n",
    );
    let started = Instant::now();
    let o = test_email(&cfg);
    assert_eq!(o.code, Some(1));
    assert!(o.stderr.contains("timed out"), "{}", o.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn check_config_warns_about_a_readable_password_file_and_never_prints_the_password() {
    let dir = tempdir();
    let pw = password_file(dir.path(), PASSWORD);
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = email_config(
        dir.path(),
        25,
        &format!(
            "username = \"alerts\"\npassword_file = \"{}\"\n",
            pw.display()
        ),
    );
    let out = run_cli(None, &["--config", cfg.to_str().unwrap(), "check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("AUTH as alerts (password_file "),
        "{stdout}"
    );
    assert!(
        stderr.contains("is readable by other users (mode 0644)"),
        "{stderr}"
    );
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));

    // An inline password works, with a warning, and is never echoed.
    let cfg = email_config(
        dir.path(),
        25,
        &format!("username = \"alerts\"\npassword = \"{PASSWORD}\"\n"),
    );
    let out = run_cli(None, &["--config", cfg.to_str().unwrap(), "check-config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("email.password is written in the config file"),
        "{stderr}"
    );
    assert!(!stdout.contains(PASSWORD) && !stderr.contains(PASSWORD));
}

// ---------------------------------------------------------------------------------------------
// The daemon: real unit failures in a private systemd --user manager, emails through aiosmtpd.

fn subjects(mails: &[Mail]) -> Vec<&str> {
    mails.iter().map(Mail::subject).collect()
}

/// A daemon config for `mgr` with `[email]` aimed at `smtp_port` (plain SMTP) and `extra` TOML
/// before the email section (restart policy, units) and `email_extra` inside it.
fn daemon_config(mgr: &Manager, smtp_port: u16, extra: &str, email_extra: &str) -> PathBuf {
    let dir = mgr.work_dir();
    let path = dir.join("unitwarden.toml");
    fs::write(
        &path,
        format!(
            "[daemon]\nbus = \"user\"\nlog_dir = \"{log}\"\nstate_dir = \"{state}\"\n\
             control_socket = \"{sock}\"\n{extra}\n\
             [email]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {smtp_port}\ntls = \"none\"\n\
             to = [\"ops@example.com\"]\nfrom = \"unitwarden@example.com\"\njournal_lines = 5\n{email_extra}",
            log = dir.join("log").display(),
            state = dir.join("state").display(),
            sock = dir.join("control.sock").display(),
        ),
    )
    .unwrap();
    path
}

fn sleeper(mgr: &Manager, name: &str) {
    mgr.write_unit(
        &format!("{name}.service"),
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
}

fn ready(d: &Daemon) {
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
}

fn outbox_files(mgr: &Manager) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(mgr.work_dir().join("state/outbox"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                // Temporary files (`NAME.json.tmp.PID`) are messages being rewritten, not extra
                // messages.
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn stop(mut d: Daemon) {
    d.signal(15);
    let status = d.wait_exit(T);
    assert!(
        status.success(),
        "SIGTERM should stop cleanly, got {status}"
    );
}

/// Every `## UNIT: EVENT` block of every email, as (email index, heading).
fn blocks(mails: &[Mail]) -> Vec<(usize, String)> {
    mails
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            m.body
                .lines()
                .filter_map(|l| l.strip_prefix("## "))
                .map(move |l| (i, l.to_string()))
        })
        .collect()
}

const UNITS: [&str; 5] = ["nginx", "gunicorn", "daphne", "celery", "celerybeat"];

#[test]
fn five_units_killed_together_are_one_email_and_their_recovery_one_more_in_the_same_thread() {
    let mgr = Manager::start();
    let dir = tempdir();
    let smtp = Smtp::start(dir.path(), &Options::default());
    let mut units = String::new();
    for u in UNITS {
        sleeper(&mgr, u);
        units.push_str(&format!("[[unit]]\nname = \"{u}\"\n"));
    }
    mgr.daemon_reload();
    let names: Vec<String> = UNITS.iter().map(|u| format!("{u}.service")).collect();
    let mut start = vec!["start"];
    start.extend(names.iter().map(String::as_str));
    mgr.systemctl_ok(&start);
    // No restart by unitwarden within the test: the units come back by an operator's hand,
    // which is a `recovered` event.
    let cfg = daemon_config(
        &mgr,
        smtp.port,
        &format!("[restart]\nbackoff_initial = \"1h\"\nbackoff_max = \"1h\"\n{units}"),
        "batch_window = \"2s\"\n",
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    let mails = smtp.wait_for("the started email", T, |m| !m.is_empty());
    assert!(
        mails[0].subject().ends_with(": unitwarden started"),
        "{:?}",
        subjects(&mails)
    );

    let mut kill = vec!["kill", "-s", "KILL", "--kill-who=main"];
    kill.extend(names.iter().map(String::as_str));
    mgr.systemctl_ok(&kill);
    for n in &names {
        mgr.wait_for_state(n, "failed", T);
    }
    let mails = smtp.wait_for("the down email", T, |m| m.len() >= 2);
    let down = &mails[1];
    // Units are listed in the order their failures were seen.
    let prefix = format!("[unitwarden] {}: 5 units down: ", hostname());
    let listed: std::collections::BTreeSet<&str> = down
        .subject()
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{}", down.raw))
        .split(", ")
        .collect();
    assert_eq!(listed, UNITS.into_iter().collect(), "{}", down.raw);
    for n in &names {
        assert!(
            down.body.contains(&format!("## {n}: down\n")),
            "{}",
            down.body
        );
    }
    for want in [
        "Result:    signal",
        "Exit:      code=killed, status=9/KILL",
        "Window:    none",
        "Next:      restart attempt 1/3 in",
        "Journal (journalctl --user-unit nginx.service -n 5):",
        "journal unavailable:",
        "Meaning:   killed (SIGKILL): by an operator, a script, the OOM killer",
        "Check:     the kernel log for an OOM kill (journalctl -k)",
    ] {
        assert!(
            down.body.contains(want),
            "missing {want:?} in\n{}",
            down.body
        );
    }
    // The summary table comes first: one row per unit.
    let details = down.body.find("\n## ").expect("details");
    for u in UNITS {
        let rows: Vec<&str> = down.body[..details]
            .lines()
            .filter(|l| l.starts_with(&format!("{u} ")))
            .collect();
        assert_eq!(rows.len(), 1, "{u}: {}", down.body);
        for want in [" down ", " signal 9/KILL ", " restart attempt 1/3 in "] {
            assert!(rows[0].contains(want), "{want:?} in {:?}", rows[0]);
        }
    }
    assert_eq!(
        down.header("In-Reply-To"),
        None,
        "a new incident starts a thread"
    );
    let root = down.must("Message-ID").to_string();

    let mut start = vec!["start"];
    start.extend(names.iter().map(String::as_str));
    mgr.systemctl_ok(&start);
    let mails = smtp.wait_for("the recovered email", T, |m| m.len() >= 3);
    let rec = &mails[2];
    assert!(
        rec.subject().contains(": 5 units recovered: "),
        "{}",
        rec.raw
    );
    for u in UNITS {
        assert!(
            rec.body.contains(&format!("## {u}.service: recovered\n")),
            "{}",
            rec.body
        );
    }
    assert_eq!(
        rec.header("In-Reply-To"),
        Some(root.as_str()),
        "{}",
        rec.raw
    );
    assert_eq!(rec.header("References"), Some(root.as_str()), "{}", rec.raw);

    stop(d);
    // The stopping event is flushed at shutdown, within its bound, without waiting for
    // batch_window; nothing else was sent.
    let mails = smtp.wait_for("the stopping email", T, |m| m.len() >= 4);
    assert!(
        mails[3].subject().ends_with(": unitwarden stopping"),
        "{:?}",
        subjects(&mails)
    );
    assert_eq!(mails.len(), 4, "{:?}", subjects(&mails));
    assert_eq!(
        blocks(&mails)
            .iter()
            .filter(|(_, b)| b.ends_with(": down"))
            .count(),
        5,
        "each unit's down event in exactly one email"
    );
    assert!(outbox_files(&mgr).is_empty());
}

#[test]
fn an_always_failing_unit_sends_no_storm_and_reminders_follow_remind_after() {
    let mgr = Manager::start();
    let dir = tempdir();
    let smtp = Smtp::start(dir.path(), &Options::default());
    mgr.write_unit(
        "broken.service",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'exit 3'\n",
    );
    mgr.daemon_reload();
    let cfg = daemon_config(
        &mgr,
        smtp.port,
        "[restart]\nbackoff_initial = \"0s\"\nverify_after = \"300ms\"\nmax_attempts = 3\n\
         give_up_cooldown = \"never\"\n[[unit]]\nname = \"broken\"\n",
        "batch_window = \"1s\"\nmin_interval = \"1h\"\nremind_after = [\"3s\", \"6s\"]\n\
         notify_on = [\"down\", \"restart_failed\", \"gave_up\", \"restarted\", \"recovered\"]\n",
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_stderr("give up", T, |l| {
        l.contains("unit=broken.service") && l.contains("action=give_up")
    });
    let gave_up_seen = Instant::now();
    let told = d.stderr_lines();
    let give_up = told
        .iter()
        .find(|l| l.contains("unit=broken.service") && l.contains("action=give_up"))
        .unwrap();
    assert!(
        give_up.contains(". Exited with status 3; by convention NOTIMPLEMENTED")
            && give_up.contains(". Check the program's last log lines"),
        "the give-up line says what the exit means: {give_up}"
    );
    let failed_attempts = d
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("unit=broken.service") && l.contains("result=failed"))
        .count();
    assert_eq!(failed_attempts, 3);

    let mails = smtp.wait_for("the second reminder", T, |m| {
        m.iter().any(|m| m.subject().contains("(reminder 2/2)"))
    });
    let r1 = mails
        .iter()
        .position(|m| {
            m.subject()
                .contains("broken.service still given up (reminder 1/2)")
        })
        .expect("first reminder");
    let r2 = mails.len() - 1;
    let arrived = gave_up_seen.elapsed();
    assert!(
        arrived >= Duration::from_secs(6),
        "second reminder after {arrived:?}"
    );
    stop(d);
    let mails = smtp.messages();
    assert_eq!(
        mails.len(),
        r2 + 1,
        "nothing after the last reminder: {:?}",
        subjects(&mails)
    );

    let b = blocks(&mails);
    let count = |suffix: &str| b.iter().filter(|(_, h)| h.ends_with(suffix)).count();
    assert_eq!(count(": down"), 1, "{b:?}");
    assert_eq!(
        count(": restart failed"),
        1,
        "one within min_interval: {b:?}"
    );
    assert_eq!(count(": gave up"), 1, "{b:?}");
    let suppressed: u32 = mails
        .iter()
        .flat_map(|m| m.body.lines())
        .filter_map(|l| l.trim().strip_suffix(" x restart_failed broken.service"))
        .map(|n| n.parse::<u32>().unwrap())
        .sum();
    assert_eq!(suppressed, 2, "the other two failed attempts are counted");
    assert!(
        r1 < r2 && mails.len() <= 5,
        "no storm: {:?}",
        subjects(&mails)
    );
    assert!(
        mails[r2].body.contains("this is the last reminder"),
        "{}",
        mails[r2].body
    );

    // One incident, one thread.
    let root = mails[0].must("Message-ID").to_string();
    assert_eq!(mails[0].header("In-Reply-To"), None);
    for m in &mails[1..] {
        let refs = m.must("References");
        assert!(refs.starts_with(&root), "{refs} should start with {root}");
        assert!(m.header("In-Reply-To").is_some());
    }
}

#[test]
fn an_email_queued_while_the_server_is_down_survives_kill_9_and_arrives_exactly_once() {
    let mgr = Manager::start();
    let dir = tempdir();
    let mut smtp = Smtp::start(dir.path(), &Options::default());
    smtp.stop();
    sleeper(&mgr, "web");
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", "web"]);
    let cfg = daemon_config(
        &mgr,
        smtp.port,
        "[restart]\nbackoff_initial = \"1h\"\nbackoff_max = \"1h\"\n[[unit]]\nname = \"web\"\n",
        "batch_window = \"500ms\"\nnotify_on = [\"down\"]\n",
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    mgr.kill_main("web");
    d.wait_for_stderr("a failed delivery", T, |l| {
        l.contains("alert email not sent") && l.contains("connection refused")
    });
    let files = outbox_files(&mgr);
    assert_eq!(files.len(), 1, "{files:?}");
    let queued = fs::read_to_string(&files[0]).unwrap();
    d.kill9();

    smtp.restart();
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    let mails = smtp.wait_for("the queued email", T, |m| !m.is_empty());
    assert!(
        mails[0].subject().ends_with(": web.service is down"),
        "{}",
        mails[0].raw
    );
    let id = mails[0].must("Message-ID").to_string();
    assert!(
        queued.contains(&id),
        "the email from the outbox, not a new one"
    );
    crate::support::wait_until("the outbox to empty", T, || {
        outbox_files(&mgr).is_empty().then_some(())
    });
    stop(d);
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "exactly once: {:?}", subjects(&mails));
}

#[test]
fn a_hung_smtp_server_does_not_delay_restarts() {
    let mgr = Manager::start();
    let silent = Silent::start();
    sleeper(&mgr, "web");
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", "web"]);
    let cfg = daemon_config(
        &mgr,
        silent.port,
        "[restart]\nbackoff_initial = \"0s\"\nverify_after = \"300ms\"\n[[unit]]\nname = \"web\"\n",
        "batch_window = \"0s\"\ntimeout = \"1h\"\n",
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    ready(&d);
    for round in 1..=2 {
        let pid = mgr.show("web", "MainPID");
        mgr.kill_main("web");
        let restarted = d.wait_for_stderr("restarted", T, |l| {
            l.contains("unit=web.service")
                && l.contains("result=restarted")
                && l.contains(&format!("attempt={round}/3"))
        });
        assert!(!restarted.is_empty());
        assert_ne!(mgr.show("web", "MainPID"), pid);
    }
    assert!(
        !outbox_files(&mgr).is_empty(),
        "emails wait for the hung server"
    );
    // Shutdown gives delivery its bound (10 s), then leaves the emails in the outbox.
    let stopping = Instant::now();
    stop(d);
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "{:?}",
        stopping.elapsed()
    );
    assert!(!outbox_files(&mgr).is_empty());
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}
