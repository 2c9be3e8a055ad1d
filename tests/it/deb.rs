//! The Debian package on both Debian stables, 12 (bookworm, systemd 252) and 13 (trixie,
//! systemd 257), each booted by systemd-nspawn (TESTING.md, recipe B): the .deb is built once
//! with cargo-deb and checked with lintian, installed with apt into a container whose PID 1 is
//! systemd, and the installed service is driven as an operator would: restarts and their alert
//! emails with the unit's journal (a real SMTP server and real journald in the container,
//! reached from inside the sandbox), its runtime directory, reloads (good and broken), a killed
//! watchdog and its pings, unitwarden itself failing for good and the one email that says so,
//! least-privilege mode with the generated polkit rule, an upgrade over a locally edited
//! conffile, removal, purge, and an install over an invalid config.
//!
//! One test per release, one container each: the steps build on each other like an operator's
//! day, and a boot plus an apt install per step would cost more than the steps themselves. The
//! two share the .deb and take turns with the machine, so each one's deadlines hold as they do
//! alone.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::smtp::Mail;
use crate::support::{UNITWARDEN, run_to_completion, wait_until};

const ROOTFS_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/harness/debian-rootfs.sh"
);
const NSPAWN_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/harness/nspawn-debian.sh"
);
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the .debs appear inside the container (a read-only bind mount).
const DEBS_IN_CT: &str = "/srv/debs";
const CONFIG: &str = "/etc/unitwarden/unitwarden.toml";
const LOG: &str = "/var/log/unitwarden/unitwarden.log";

/// A release build from scratch on a 2-core machine, debootstrap over the network.
const BUILD_DEADLINE: Duration = Duration::from_secs(20 * 60);
const BOOT_DEADLINE: Duration = Duration::from_secs(90);
const APT_DEADLINE: Duration = Duration::from_secs(180);
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// State changes inside the container (restarts include RestartSec=5s of unitwarden's unit).
const T: Duration = Duration::from_secs(30);

/// The units the test config watches: nginx (installed in the image) and a glob, to see the
/// polkit rule's pattern matching at work in real polkit. Email goes to the SMTP server of
/// `SMTP_UNIT`.
const WATCHED: &str = r#"
[daemon]
interval = "5s"

[restart]
backoff_initial = "0s"
verify_after = "500ms"
reset_after = "2s"

[[unit]]
name = "nginx"

[[unit]]
name = "uw-worker@*.service"

[email]
smtp_host = "127.0.0.1"
smtp_port = 2525
tls = "none"
from = "unitwarden@unitwarden-e2e"
to = ["ops@example.com"]
batch_window = "1s"
min_interval = "1s"
"#;

/// aiosmtpd (Debian's python3-aiosmtpd) writing every message into a Maildir.
const SMTP_UNIT: &str = "[Service]\nStateDirectory=uw-smtp\nExecStart=/usr/bin/python3 -m aiosmtpd -n -l 127.0.0.1:2525 -c aiosmtpd.handlers.Mailbox /var/lib/uw-smtp/Maildir\n";
const MAILDIR: &str = "/var/lib/uw-smtp/Maildir";
/// The `OnFailure=` unit of unitwarden.service, and the subject of its one email.
const FAILED_UNIT: &str = "unitwarden-failed.service";
const FAILED_SUBJECT: &str = "unitwarden itself failed";

/// A stand-in worker (a template, for the glob) and a unit the config does not name.
const WORKER_UNIT: &str = "[Service]\nExecStart=/bin/sleep infinity\n";
const OUTSIDE_UNIT: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

/// Least-privilege mode, as the README tells the operator to set it up.
const LEAST_PRIVILEGE_DROPIN: &str =
    "[Service]\nUser=unitwarden\nGroup=unitwarden\nSupplementaryGroups=systemd-journal\n";

/// A Debian release the package must work on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suite {
    Bookworm,
    Trixie,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
        }
    }
}

#[test]
fn the_deb_installs_runs_hardened_upgrades_and_purges_on_debian_12_bookworm() {
    package_test(Suite::Bookworm);
}

#[test]
fn the_deb_installs_runs_hardened_upgrades_and_purges_on_debian_13_trixie() {
    package_test(Suite::Trixie);
}

/// The .debs and their lintian verdict, made once for both releases.
static DEBS: OnceLock<Debs> = OnceLock::new();
/// One container at a time.
static MACHINE: Mutex<()> = Mutex::new(());

fn package_test(suite: Suite) {
    let started = Instant::now();
    let tag = suite.name();
    preflight(suite);
    let target = target_dir();

    let mut clock = Stages::new(tag);
    let debs = DEBS.get_or_init(|| {
        let debs = build_debs(&target);
        let deb_size = fs::metadata(debs.dir.join(&debs.first)).unwrap().len();
        eprintln!("[deb] {} is {} bytes", debs.first, deb_size);
        lintian(&debs.dir.join(&debs.first));
        debs
    });
    clock.done("build the .debs (cargo deb) and lintian, or wait for them");

    let tarball = rootfs_tarball(&target, suite);
    clock.done("root file system (cached tarball)");
    // A test that failed while holding the machine leaves it free all the same.
    let _turn = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    clock.done("wait for the machine");
    let rootfs = unpack(&tarball, &target);
    clock.done("unpack the root file system");

    let ct = Container::boot(&rootfs.path().join("root"), &debs.dir);
    clock.done("boot");
    let systemd = ct.out(&["systemctl", "--version"]);
    eprintln!(
        "[deb {tag}] {}",
        systemd.lines().next().unwrap_or("systemd: unknown version")
    );

    install(&ct, debs);
    clock.done("install");
    runtime_directory(&ct);
    clock.done("runtime directory");
    watch_nginx(&ct);
    clock.done("kill -9 nginx, alert email");
    broken_reload(&ct);
    clock.done("broken reload");
    kill_the_watchdog(&ct);
    clock.done("kill -9 unitwarden");
    failed_for_good(&ct);
    clock.done("unitwarden failed for good, one email");
    watchdog_pings(&ct);
    clock.done("watchdog pings");
    least_privilege(&ct);
    clock.done("least privilege");
    upgrade(&ct, debs);
    clock.done("upgrade");
    remove_and_purge(&ct);
    clock.done("remove and purge");
    install_over_invalid_config(&ct, debs);
    clock.done("install over an invalid config");

    drop(ct);
    drop(rootfs);
    clock.done("halt and clean up");
    eprintln!("[deb {tag}] total {:.1}s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// the steps
// ---------------------------------------------------------------------------

fn install(ct: &Container, debs: &Debs) {
    let out = ct.apt(&["install", "-y", &format!("{DEBS_IN_CT}/{}", debs.first)]);
    assert_success("apt-get install ./unitwarden.deb", &out);

    ct.wait_active("unitwarden");
    assert_eq!(
        ct.out(&["systemctl", "is-enabled", "unitwarden"]),
        "enabled"
    );
    let status = ct.status_line("unitwarden");
    assert!(
        status.contains("active"),
        "the Status: line should count active units: {status:?}"
    );
    eprintln!("[deb] after install: {status}");

    // The package's own pieces.
    ct.ok(&["getent", "passwd", "unitwarden"]);
    ct.ok(&["getent", "group", "unitwarden"]);
    ct.ok(&["unitwarden", "check-config"]);
    for path in [
        "/usr/share/man/man8/unitwarden.8.gz",
        "/usr/share/bash-completion/completions/unitwarden",
        "/usr/share/zsh/vendor-completions/_unitwarden",
        "/usr/share/fish/vendor_completions.d/unitwarden.fish",
        "/usr/share/doc/unitwarden/examples/django.toml",
        "/usr/share/doc/unitwarden/README.md",
    ] {
        assert!(ct.path(path).is_file(), "the package should install {path}");
    }
    let conffiles = ct.out(&["dpkg-query", "-W", "-f", "${Conffiles}", "unitwarden"]);
    assert!(
        conffiles.contains(CONFIG),
        "{CONFIG} should be a conffile: {conffiles:?}"
    );

    let exposure = ct.exposure("unitwarden.service");
    eprintln!("[deb] systemd-analyze security unitwarden.service (root): {exposure}");
    assert!(
        exposure <= 2.0,
        "exposure {exposure} is above the 2.0 target\n{}",
        ct.out(&["systemd-analyze", "security", "unitwarden.service"])
    );
}

/// `/run/unitwarden`, where the control socket lives, comes from the unit (`RuntimeDirectory=`):
/// mode 0750 in group adm. The daemon binds `control.sock` there, 0660 in group adm, under the
/// whole sandbox: an operator in adm reads `unitwarden status` without sudo, and is refused
/// `pause` (root only). Made at each start and removed at each stop.
fn runtime_directory(ct: &Container) {
    const SOCK: &str = "/run/unitwarden/control.sock";
    let dir = fs::metadata(ct.path("/run/unitwarden"))
        .expect("/run/unitwarden should exist while unitwarden runs");
    assert!(dir.is_dir());
    assert_eq!(dir.mode() & 0o7777, 0o750, "mode of /run/unitwarden");
    let adm = ct.ok(&["getent", "group", "adm"]);
    let adm_gid = adm.split(':').nth(2).unwrap_or_default();
    assert_eq!(dir.gid().to_string(), adm_gid, "group of /run/unitwarden");
    let sock = fs::symlink_metadata(ct.path(SOCK))
        .expect("the sandboxed daemon should bind its control socket in /run/unitwarden");
    assert!(sock.file_type().is_socket(), "{SOCK} is not a socket");
    assert_eq!(sock.mode() & 0o777, 0o660, "mode of {SOCK}");
    assert_eq!(sock.gid().to_string(), adm_gid, "group of {SOCK}");

    let _ = ct.run(&["useradd", "--groups", "adm", "--no-create-home", "op"]);
    let status = ct.run(&["runuser", "-u", "op", "--", "unitwarden", "status"]);
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && out.contains("UNIT") && out.contains("systemd-journald.service"),
        "unitwarden status as a member of adm: {}\n{out}{}",
        status.status,
        String::from_utf8_lossy(&status.stderr)
    );
    let pause = ct.run(&[
        "runuser",
        "-u",
        "op",
        "--",
        "unitwarden",
        "pause",
        "systemd-journald",
    ]);
    assert_eq!(
        pause.status.code(),
        Some(4),
        "pause as a member of adm must be refused: {}",
        String::from_utf8_lossy(&pause.stderr)
    );

    ct.ok(&["systemctl", "stop", "unitwarden"]);
    assert!(
        fs::symlink_metadata(ct.path(SOCK)).is_err(),
        "the socket goes with the daemon"
    );
    ct.ok(&["systemctl", "start", "unitwarden"]);
    ct.wait_active("unitwarden");
    assert!(fs::symlink_metadata(ct.path(SOCK)).is_ok());
}

fn watch_nginx(ct: &Container) {
    ct.write(CONFIG, WATCHED);
    ct.write("/etc/systemd/system/uw-worker@.service", WORKER_UNIT);
    ct.write("/etc/systemd/system/uw-smtp.service", SMTP_UNIT);
    ct.ok(&["systemctl", "daemon-reload"]);
    ct.ok(&[
        "systemctl",
        "start",
        "uw-worker@a.service",
        "uw-smtp.service",
    ]);
    wait_until("the SMTP server listening on 127.0.0.1:2525", T, || {
        ct.run(&["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/2525"])
            .status
            .success()
            .then_some(())
    });
    ct.reload_unitwarden("action=reload result=ok");
    wait_until("the reloaded units in the Status: line", T, || {
        ct.status_line("unitwarden")
            .contains("2 units: 2 active")
            .then_some(())
    });
    // The alert task is set up when the daemon starts; a reload does not start it.
    ct.ok(&["systemctl", "restart", "unitwarden"]);
    ct.wait_active("unitwarden");

    kill_nginx_and_see_the_alert(ct, "root");
}

/// `kill -9` of nginx's main PID: nginx is back with a new PID, unitwarden.log (read through
/// its symlink) says unitwarden did it, and an alert email arrives with nginx's journal, which
/// unitwarden read and sent from inside its sandbox.
fn kill_nginx_and_see_the_alert(ct: &Container, mode: &str) {
    let seen: HashSet<PathBuf> = ct.mails().into_iter().map(|m| m.file).collect();
    let old = ct.main_pid("nginx");
    let restarted = ct.log_count(&["unit=nginx.service", "result=restarted"]);
    ct.ok(&["kill", "-9", &old.to_string()]);
    ct.wait_restarted("nginx", old);
    wait_until("the restart of nginx in unitwarden.log", T, || {
        (ct.log_count(&["unit=nginx.service", "result=restarted"]) > restarted).then_some(())
    });
    let link = fs::read_link(ct.path(LOG)).expect("unitwarden.log should be a symlink");
    assert!(
        link.to_string_lossy().starts_with("unitwarden-"),
        "{LOG} should point to the current rotating file, not {link:?}"
    );

    // The kill itself is in the journal excerpt: `status=9/KILL`.
    let mut mail = None;
    let arrived = poll_until(T, || {
        mail = ct.mails().into_iter().find(|m| {
            !seen.contains(&m.file)
                && m.body.contains("nginx.service")
                && m.body.contains("status=9/KILL")
        });
        mail.is_some()
    });
    let Some(mail) = mail.filter(|_| arrived) else {
        let received: Vec<String> = ct
            .mails()
            .iter()
            .filter(|m| !seen.contains(&m.file))
            .map(|m| format!("--- {} ---\n{}", m.subject(), m.body))
            .collect();
        panic!(
            "no alert about nginx with its journal within {T:?} ({mode}); received:\n{}\n{}",
            received.join("\n"),
            ct.diagnostics("unitwarden")
        );
    };
    assert!(
        !mail.body.contains("journal unavailable"),
        "the journal should be readable under the sandbox ({mode}):\n{}",
        mail.body
    );
    eprintln!("[deb] alert email ({mode}): {}", mail.subject());
}

fn broken_reload(ct: &Container) {
    let pid = ct.main_pid("unitwarden");
    ct.write(CONFIG, &format!("{WATCHED}\n[daemon2]\n"));
    ct.reload_unitwarden("action=reload result=failed");
    wait_until("'config reload failed' in the Status: line", T, || {
        ct.status_line("unitwarden")
            .contains("config reload failed")
            .then_some(())
    });
    assert_eq!(ct.active_state("unitwarden"), "active");
    assert_eq!(
        ct.main_pid("unitwarden"),
        pid,
        "a broken config must not stop the daemon"
    );

    ct.write(CONFIG, WATCHED);
    ct.reload_unitwarden("action=reload result=ok");
    wait_until("a Status: line without the reload failure", T, || {
        (!ct.status_line("unitwarden")
            .contains("config reload failed"))
        .then_some(())
    });
}

fn kill_the_watchdog(ct: &Container) {
    let nginx = ct.main_pid("nginx");
    let attempts = ct.log_count(&["unit=nginx.service", "action=restart"]);
    let old = ct.main_pid("unitwarden");
    let runs = ct.show(FAILED_UNIT, "ExecMainStartTimestampMonotonic");
    ct.ok(&["kill", "-9", &old.to_string()]);
    ct.wait_restarted("unitwarden", old);
    assert_eq!(ct.show("unitwarden", "NRestarts"), "1");
    // A crash that Restart= heals is no news. systemd 254+ starts the OnFailure= unit for it
    // all the same; seeing unitwarden running again, it sends nothing.
    ct.wait_settled(FAILED_UNIT);
    let ran = ct.show(FAILED_UNIT, "ExecMainStartTimestampMonotonic") != runs;
    if ran {
        assert_eq!(ct.show(FAILED_UNIT, "ExecMainStatus"), "0");
    }
    eprintln!("[deb] a healed crash of unitwarden: {FAILED_UNIT} ran: {ran}");
    assert_eq!(
        ct.self_failure_mails().len(),
        0,
        "no email for a healed crash"
    );
    // Active again means READY=1, sent after the first full pass: anything the new instance
    // would do to nginx on start it has decided by now.
    assert_eq!(
        ct.main_pid("nginx"),
        nginx,
        "a restarted unitwarden must leave a healthy nginx alone"
    );
    assert_eq!(
        ct.log_count(&["unit=nginx.service", "action=restart"]),
        attempts,
        "no restart attempt on nginx after unitwarden itself was restarted"
    );
}

/// unitwarden.service driven into its start limit by kills, then refused by a broken config:
/// each time it stays failed, `unitwarden-failed.service` (its `OnFailure=`) sends exactly one
/// email with the unit's journal, through the config's `[email]`, read on its own when the
/// rest of the file is refused. The crashes systemd healed on the way send nothing.
fn failed_for_good(ct: &Container) {
    const DROPIN: &str = "/etc/systemd/system/unitwarden.service.d/start-limit-test.conf";
    assert!(ct.self_failure_mails().is_empty());
    // Three starts in ten minutes, each restart a second after a crash: the third kill is the
    // last one systemd heals.
    ct.write(
        DROPIN,
        "[Unit]\nStartLimitBurst=3\n[Service]\nRestartSec=1s\n",
    );
    ct.ok(&["systemctl", "daemon-reload"]);
    // Clears the start counter of the earlier steps; this restart is start 1.
    ct.ok(&["systemctl", "reset-failed", "unitwarden"]);
    ct.ok(&["systemctl", "restart", "unitwarden"]);
    ct.wait_active("unitwarden");
    for _ in 2..=3 {
        let old = ct.main_pid("unitwarden");
        ct.ok(&["kill", "-9", &old.to_string()]);
        ct.wait_restarted("unitwarden", old);
    }
    let old = ct.main_pid("unitwarden");
    ct.ok(&["kill", "-9", &old.to_string()]);
    wait_until("unitwarden.service failed for good", T, || {
        (ct.active_state("unitwarden") == "failed").then_some(())
    });
    let mail = ct.one_self_failure_mail(1);
    eprintln!(
        "[deb] start limit: {}\n{}",
        mail.subject(),
        mail.body.trim_end()
    );
    for want in [
        "Unit: unitwarden.service\n",
        "Journal (journalctl -u unitwarden.service -n 50):\n",
        "systemctl reset-failed unitwarden.service && systemctl start unitwarden.service",
    ] {
        assert!(
            mail.body.contains(want),
            "missing {want:?} in\n{}",
            mail.body
        );
    }
    // The journal tail is unitwarden's own, up to the end: its start lines, systemd's word on
    // the kills and on the start limit.
    assert!(
        mail.body.contains("unitwarden starting")
            && mail.body.contains("status=9/KILL")
            && mail.body.contains("Start request repeated too quickly"),
        "the email should carry unitwarden.service's journal:\n{}",
        mail.body
    );

    // A config broken by an edit (or an upgrade): exit 2, not restarted, failed at once.
    fs::remove_file(ct.path(DROPIN)).unwrap();
    ct.ok(&["systemctl", "daemon-reload"]);
    ct.write(CONFIG, &format!("{WATCHED}\n[daemon2]\n"));
    ct.ok(&["systemctl", "reset-failed", "unitwarden"]);
    let start = ct.run(&["systemctl", "restart", "unitwarden"]);
    assert!(
        !start.status.success(),
        "unitwarden should not start with a broken config"
    );
    wait_until("unitwarden.service failed with the config", T, || {
        (ct.active_state("unitwarden") == "failed").then_some(())
    });
    assert_eq!(ct.show("unitwarden", "ExecMainStatus"), "2");
    let mail = ct.one_self_failure_mail(2);
    assert!(
        mail.body.contains(&format!("Config: {CONFIG}:"))
            && mail.body.contains("unknown field `daemon2`"),
        "the email should say what is wrong with the config:\n{}",
        mail.body
    );
    eprintln!("[deb] broken config: {}", mail.subject());

    ct.write(CONFIG, WATCHED);
    ct.ok(&["systemctl", "reset-failed", "unitwarden"]);
    ct.ok(&["systemctl", "start", "unitwarden"]);
    ct.wait_active("unitwarden");
}

/// With `WatchdogSec=2s`, the daemon keeps pinging (under the sandbox) for longer than one
/// period, and systemd does not kill it.
fn watchdog_pings(ct: &Container) {
    const DROPIN: &str = "/etc/systemd/system/unitwarden.service.d/watchdog-test.conf";
    ct.write(DROPIN, "[Service]\nWatchdogSec=2s\n");
    ct.ok(&["systemctl", "daemon-reload"]);
    ct.ok(&["systemctl", "restart", "unitwarden"]);
    ct.wait_active("unitwarden");
    let pid = ct.main_pid("unitwarden");
    let restarts = ct.show("unitwarden", "NRestarts");
    let started: u64 = ct
        .show("unitwarden", "ExecMainStartTimestampMonotonic")
        .parse()
        .unwrap();
    wait_until("a watchdog ping more than 3 s after the start", T, || {
        let last: u64 = ct
            .show("unitwarden", "WatchdogTimestampMonotonic")
            .parse()
            .unwrap_or(0);
        (last > started + 3_000_000).then_some(())
    });
    assert_eq!(
        ct.main_pid("unitwarden"),
        pid,
        "systemd killed a pinging daemon"
    );
    assert_eq!(ct.show("unitwarden", "NRestarts"), restarts);
    fs::remove_file(ct.path(DROPIN)).unwrap();
    ct.ok(&["systemctl", "daemon-reload"]);
    ct.ok(&["systemctl", "restart", "unitwarden"]);
    ct.wait_active("unitwarden");
}

fn least_privilege(ct: &Container) {
    // The operator's steps from the README.
    ct.ok(&[
        "sh",
        "-c",
        "unitwarden polkit-rule > /etc/polkit-1/rules.d/60-unitwarden.rules",
    ]);
    let rule = ct.read("/etc/polkit-1/rules.d/60-unitwarden.rules");
    assert!(rule.contains("\"nginx.service\""), "{rule}");
    ct.write(
        "/etc/systemd/system/unitwarden.service.d/least-privilege.conf",
        LEAST_PRIVILEGE_DROPIN,
    );
    ct.ok(&["systemctl", "daemon-reload"]);
    ct.ok(&["systemctl", "restart", "unitwarden"]);
    ct.wait_active("unitwarden");
    let uid = ct.out(&["id", "-u", "unitwarden"]);
    let pid = ct.main_pid("unitwarden");
    let owner = fs::metadata(ct.path(&format!("/proc/{pid}")))
        .unwrap()
        .uid();
    assert_eq!(
        owner.to_string(),
        uid,
        "unitwarden should run as the unitwarden user"
    );
    let exposure = ct.exposure("unitwarden.service");
    eprintln!("[deb] systemd-analyze security unitwarden.service (User=unitwarden): {exposure}");
    assert!(
        exposure <= 2.0,
        "exposure {exposure} in least-privilege mode"
    );

    // unitwarden itself restarts what it watches, through polkit, and still reads the
    // journal for its email: the account is in systemd-journal.
    kill_nginx_and_see_the_alert(ct, "User=unitwarden");
    let old = ct.main_pid("uw-worker@a.service");
    ct.ok(&["kill", "-9", &old.to_string()]);
    ct.wait_restarted("uw-worker@a.service", old);
    wait_until("unitwarden restarting the glob-matched worker", T, || {
        (ct.log_count(&["unit=uw-worker@a.service", "result=restarted"]) > 0).then_some(())
    });

    // The rule grants exactly start/restart/reset-failed on the configured units.
    let as_unitwarden = |args: &[&str]| {
        let mut cmd = vec![
            "runuser",
            "-u",
            "unitwarden",
            "--",
            "systemctl",
            "--no-ask-password",
        ];
        cmd.extend_from_slice(args);
        ct.run(&cmd)
    };
    assert_success(
        "restart of a configured unit",
        &as_unitwarden(&["restart", "nginx.service"]),
    );
    assert_success(
        "restart of a glob-matched unit",
        &as_unitwarden(&["restart", "uw-worker@a.service"]),
    );
    ct.write("/etc/systemd/system/uw-outside.service", OUTSIDE_UNIT);
    ct.ok(&["systemctl", "daemon-reload"]);
    ct.ok(&["systemctl", "start", "uw-outside.service"]);
    let outside = ct.main_pid("uw-outside.service");
    for (what, args) in [
        (
            "restart of a unit not in the config",
            &["restart", "uw-outside.service"][..],
        ),
        (
            "reset-failed of a unit not in the config",
            &["reset-failed", "uw-outside.service"][..],
        ),
        ("stop of a configured unit", &["stop", "nginx.service"][..]),
        (
            "reload-or-restart of a configured unit",
            &["reload-or-restart", "nginx.service"][..],
        ),
    ] {
        let out = as_unitwarden(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && (stderr.contains("Interactive authentication required")
                    || stderr.contains("Access denied")),
            "{what} should be refused by polkit, got {}: {stderr}",
            out.status
        );
    }
    assert_eq!(ct.main_pid("uw-outside.service"), outside);
    assert_eq!(ct.active_state("nginx"), "active");
}

fn upgrade(ct: &Container, debs: &Debs) {
    let edited = ct.read(CONFIG);
    assert_eq!(edited, WATCHED, "the conffile should carry the local edit");
    let old = ct.main_pid("unitwarden");
    let out = ct.apt(&["install", "-y", &format!("{DEBS_IN_CT}/{}", debs.upgrade)]);
    assert_success("apt-get install of the upgrade", &out);
    assert_eq!(
        ct.out(&["dpkg-query", "-W", "-f", "${Version}", "unitwarden"]),
        debs.upgrade_version
    );
    assert_eq!(
        ct.read(CONFIG),
        edited,
        "the upgrade must keep the locally edited conffile"
    );
    assert!(!ct.path(&format!("{CONFIG}.dpkg-dist")).exists());
    ct.wait_restarted("unitwarden", old);
    let uid = ct.out(&["id", "-u", "unitwarden"]);
    let pid = ct.main_pid("unitwarden");
    assert_eq!(
        fs::metadata(ct.path(&format!("/proc/{pid}")))
            .unwrap()
            .uid()
            .to_string(),
        uid,
        "the operator's drop-in survives the upgrade"
    );
}

fn remove_and_purge(ct: &Container) {
    assert_success("apt-get remove", &ct.apt(&["remove", "-y", "unitwarden"]));
    assert_eq!(ct.active_state("unitwarden"), "inactive");
    assert!(!ct.path("/usr/bin/unitwarden").exists());
    assert!(ct.path(CONFIG).is_file(), "remove keeps the config");
    assert_eq!(
        ct.out(&[
            "dpkg-query",
            "-W",
            "-f",
            "${db:Status-Abbrev}",
            "unitwarden"
        ]),
        "rc"
    );

    assert_success("apt-get purge", &ct.apt(&["purge", "-y", "unitwarden"]));
    for gone in [
        "/etc/unitwarden",
        "/var/lib/unitwarden",
        "/var/log/unitwarden",
        "/etc/systemd/system/multi-user.target.wants/unitwarden.service",
        "/usr/lib/systemd/system/unitwarden.service",
    ] {
        assert!(
            fs::symlink_metadata(ct.path(gone)).is_err(),
            "purge should remove {gone}"
        );
    }
    let status = ct.run(&[
        "dpkg-query",
        "-W",
        "-f",
        "${db:Status-Abbrev}",
        "unitwarden",
    ]);
    let abbrev = String::from_utf8_lossy(&status.stdout);
    assert!(
        !status.status.success() || abbrev.trim().starts_with("un"),
        "dpkg should forget unitwarden after purge, it says {abbrev:?}"
    );
}

fn install_over_invalid_config(ct: &Container, debs: &Debs) {
    // Configuration management writes the file before the package is installed, with a typo.
    ct.write(CONFIG, "[daemon]\nintervall = \"60s\"\n");
    let out = ct.apt(&[
        "install",
        "-y",
        "-o",
        "Dpkg::Options::=--force-confold",
        &format!("{DEBS_IN_CT}/{}", debs.first),
    ]);
    assert_success("apt-get install over an invalid config", &out);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("{CONFIG} is NOT valid")) && said.contains(&format!("{CONFIG}:2:1")),
        "postinst should name the problem and its place:\n{said}"
    );
    // Exit 2 is not restarted (RestartPreventExitStatus=2): failed, once.
    wait_until("unitwarden.service failed", T, || {
        (ct.active_state("unitwarden") == "failed").then_some(())
    });
    assert_eq!(ct.show("unitwarden", "ExecMainStatus"), "2");
    assert_eq!(ct.show("unitwarden", "NRestarts"), "0");
}

// ---------------------------------------------------------------------------
// building
// ---------------------------------------------------------------------------

struct Debs {
    dir: PathBuf,
    first: String,
    upgrade: String,
    upgrade_version: String,
}

/// The target dir of this build (the test binary's `CARGO_BIN_EXE` is `<target>/debug/...`),
/// so the nested cargo reuses it.
fn target_dir() -> PathBuf {
    Path::new(UNITWARDEN)
        .ancestors()
        .nth(2)
        .expect("the binary lives in <target>/<profile>/")
        .to_path_buf()
}

/// The package as README builds it (`cargo deb`), and the same build again with a bumped
/// version for the upgrade.
fn build_debs(target: &Path) -> Debs {
    let dir = target.join("e2e-debs");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let arch = String::from_utf8(
        run_to_completion(
            {
                let mut c = Command::new("dpkg");
                c.arg("--print-architecture");
                c
            },
            COMMAND_DEADLINE,
        )
        .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let first = format!("unitwarden_{VERSION}-1_{arch}.deb");
    let upgrade_version = format!("{VERSION}-2");
    let upgrade = format!("unitwarden_{upgrade_version}_{arch}.deb");
    cargo_deb(
        target,
        &["--locked", "--output", &path_str(&dir.join(&first))],
    );
    cargo_deb(
        target,
        &[
            "--no-build",
            "--deb-version",
            &upgrade_version,
            "--output",
            &path_str(&dir.join(&upgrade)),
        ],
    );
    Debs {
        dir,
        first,
        upgrade,
        upgrade_version,
    }
}

fn cargo_deb(target: &Path, args: &[&str]) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("deb")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target);
    let out = run_to_completion(cmd, BUILD_DEADLINE);
    assert_success(&format!("cargo deb {}", args.join(" ")), &out);
}

fn lintian(deb: &Path) {
    let mut cmd = Command::new("lintian");
    cmd.args(["--fail-on", "error", "--display-level", ">=info"])
        .arg(deb);
    let out = run_to_completion(cmd, COMMAND_DEADLINE);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        eprintln!("[lintian] {line}");
    }
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(
        out.status.success() && errors.is_empty(),
        "lintian found errors ({}):\n{}\n{}",
        out.status,
        errors.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rootfs_tarball(target: &Path, suite: Suite) -> PathBuf {
    let mut cmd = Command::new("bash");
    cmd.arg(ROOTFS_SCRIPT)
        .arg(target.join("e2e-rootfs"))
        .arg(suite.name());
    let out = run_to_completion(cmd, BUILD_DEADLINE);
    assert_success("tests/harness/debian-rootfs.sh", &out);
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A fresh copy of the root file system for this run, next to the tarball, in `DIR/root`.
fn unpack(tarball: &Path, target: &Path) -> tempfile::TempDir {
    let cache = target.join("e2e-rootfs");
    // Copies left by runs that were killed before they could remove theirs; a running test
    // is never an hour old.
    for entry in fs::read_dir(&cache).into_iter().flatten().flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
        if stale && entry.file_name().to_string_lossy().starts_with("rootfs.") {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("rootfs.")
        .tempdir_in(&cache)
        .unwrap();
    // Into a subdirectory: tar gives its top directory the archive's old mtime, and the
    // copy's own directory must keep the time it was made (see above).
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let mut cmd = Command::new("tar");
    cmd.args(["--zstd", "--numeric-owner", "--xattrs", "-xf"])
        .arg(tarball)
        .arg("-C")
        .arg(&root);
    assert_success(
        "unpacking the root file system",
        &run_to_completion(cmd, BUILD_DEADLINE),
    );
    dir
}

// ---------------------------------------------------------------------------
// the container
// ---------------------------------------------------------------------------

/// A booted Debian (tests/harness/nspawn-debian.sh); halted and gone when dropped.
struct Container {
    child: Child,
    stdin: Option<ChildStdin>,
    ctpid: u32,
    console: PathBuf,
}

impl Container {
    fn boot(rootfs: &Path, debs: &Path) -> Container {
        let mut child = Command::new("bash")
            // cgroup v2 only inside, as Debian 12 and 13 boot by default (the host may be
            // hybrid); systemd 257 is meant for nothing else.
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .arg(NSPAWN_SCRIPT)
            .arg(rootfs)
            .arg(format!("--bind-ro={}:{DEBS_IN_CT}", debs.display()))
            .args(["--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {NSPAWN_SCRIPT}: {e}"));
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("[nspawn out] {line}");
                let _ = tx.send(line);
            }
        });
        let (err_tx, err_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[nspawn err] {line}");
                let _ = err_tx.send(line);
            }
        });
        let ready = match rx.recv_timeout(BOOT_DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let why: Vec<String> = err_rx.try_iter().collect();
                panic!(
                    "the container did not boot within {BOOT_DEADLINE:?}:\n{}",
                    why.join("\n")
                );
            }
        };
        let field = |key: &str| {
            ready
                .split(' ')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("no {key}= in {ready:?}"))
                .to_string()
        };
        assert!(ready.starts_with("NSPAWN_READY "), "{ready:?}");
        Container {
            ctpid: field("ctpid").parse().unwrap(),
            console: PathBuf::from(field("log")),
            child,
            stdin,
        }
    }

    /// The container's file system, from the host.
    fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.ctpid))
    }

    fn read(&self, inside: &str) -> String {
        fs::read_to_string(self.path(inside))
            .unwrap_or_else(|e| panic!("cannot read {inside} in the container: {e}"))
    }

    fn write(&self, inside: &str, contents: &str) {
        let path = self.path(inside);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {inside} in the container: {e}"));
    }

    /// `ARGS` inside the container, with a clean environment.
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.ctpid.to_string(), "-a", "--", "env", "-i"])
            .args([
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
                "SYSTEMD_COLORS=0",
                "SYSTEMD_PAGER=",
                "DEBIAN_FRONTEND=noninteractive",
            ])
            .args(args);
        run_to_completion(cmd, APT_DEADLINE)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_success(&args.join(" "), &out);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stdout of `ARGS`, whatever the exit status (`systemctl is-*` reports through both).
    fn out(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(args).stdout)
            .trim()
            .to_string()
    }

    fn apt(&self, args: &[&str]) -> Output {
        let mut cmd = vec!["apt-get", "-q"];
        cmd.extend_from_slice(args);
        let out = self.run(&cmd);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            eprintln!("[apt] {line}");
        }
        out
    }

    fn show(&self, unit: &str, prop: &str) -> String {
        self.out(&["systemctl", "show", "-P", prop, unit])
    }

    fn active_state(&self, unit: &str) -> String {
        self.show(unit, "ActiveState")
    }

    fn main_pid(&self, unit: &str) -> u32 {
        self.show(unit, "MainPID").parse().unwrap_or(0)
    }

    fn wait_active(&self, unit: &str) {
        let mut last = String::new();
        let done = poll_until(T, || {
            last = self.active_state(unit);
            last == "active"
        });
        if !done {
            panic!(
                "{unit} is {last}, not active, after {T:?}\n{}",
                self.diagnostics(unit)
            );
        }
    }

    /// Waits until `unit` is active again with a main PID other than `old`.
    fn wait_restarted(&self, unit: &str, old: u32) {
        let done = poll_until(T, || {
            let pid = self.main_pid(unit);
            self.active_state(unit) == "active" && pid != 0 && pid != old
        });
        if !done {
            panic!(
                "{unit} was not restarted (main PID {old}) within {T:?}\n{}",
                self.diagnostics(unit)
            );
        }
    }

    /// The `Status:` line of `systemctl status` (unitwarden's STATUS=).
    fn status_line(&self, unit: &str) -> String {
        self.out(&["systemctl", "status", "--no-pager", "-n", "0", unit])
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("Status:"))
            .unwrap_or("")
            .to_string()
    }

    /// `systemctl reload unitwarden`, then waits for the daemon's log line `done`.
    fn reload_unitwarden(&self, done: &str) {
        let parts: Vec<&str> = done.split(' ').collect();
        let before = self.log_count(&parts);
        self.ok(&["systemctl", "reload", "unitwarden"]);
        wait_until(&format!("{done:?} in unitwarden.log"), T, || {
            (self.log_count(&parts) > before).then_some(())
        });
    }

    /// Lines of unitwarden.log (read through the symlink) containing all of `parts`.
    fn log_count(&self, parts: &[&str]) -> usize {
        fs::read_to_string(self.path(LOG))
            .unwrap_or_default()
            .lines()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    /// Every message the container's SMTP server has received, oldest first.
    fn mails(&self) -> Vec<Mail> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(dir) = fs::read_dir(self.path(&format!("{MAILDIR}/{sub}"))) {
                for entry in dir.flatten() {
                    let modified = entry.metadata().and_then(|m| m.modified()).ok();
                    files.push((modified, entry.path()));
                }
            }
        }
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| {
                let raw = fs::read_to_string(&path).ok()?;
                Some(Mail::parse(path, raw))
            })
            .collect()
    }

    /// The emails of `unitwarden-failed.service`, oldest first.
    fn self_failure_mails(&self) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|m| m.subject().contains(FAILED_SUBJECT))
            .collect()
    }

    /// Waits for the `n`th email of `unitwarden-failed.service` and for that unit to finish,
    /// then checks no other came with it; returns the newest.
    fn one_self_failure_mail(&self, n: usize) -> Mail {
        let arrived = poll_until(T, || self.self_failure_mails().len() >= n);
        if !arrived {
            panic!(
                "no email {n} from {FAILED_UNIT} within {T:?}\n{}",
                self.diagnostics(FAILED_UNIT)
            );
        }
        self.wait_settled(FAILED_UNIT);
        let mut mails = self.self_failure_mails();
        assert_eq!(
            mails.len(),
            n,
            "exactly one email per failure:\n{}",
            mails
                .iter()
                .map(|m| format!("--- {} ---\n{}", m.subject(), m.body))
                .collect::<Vec<_>>()
                .join("\n")
        );
        mails.pop().unwrap()
    }

    /// Waits until `unit` (a oneshot) is not running nor about to.
    fn wait_settled(&self, unit: &str) {
        let mut last = String::new();
        let done = poll_until(T, || {
            last = self.active_state(unit);
            let jobs = self.out(&["systemctl", "list-jobs", "--no-legend", unit]);
            matches!(last.as_str(), "inactive" | "failed") && jobs.is_empty()
        });
        if !done {
            panic!(
                "{unit} is still {last} after {T:?}\n{}",
                self.diagnostics(unit)
            );
        }
    }

    /// The overall exposure `systemd-analyze security UNIT` reports.
    fn exposure(&self, unit: &str) -> f64 {
        let text = self.out(&["systemd-analyze", "security", "--no-pager", unit]);
        text.lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")
            })
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"))
    }

    fn diagnostics(&self, unit: &str) -> String {
        let console = fs::read_to_string(&self.console).unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(20).collect();
        format!(
            "--- systemctl status {unit} ---\n{}\n--- journalctl -u {unit} ---\n{}\n--- unitwarden.log ---\n{}\n--- console ---\n{}",
            self.out(&["systemctl", "status", "--no-pager", "-l", unit]),
            self.out(&["journalctl", "--no-pager", "-n", "30", "-u", unit]),
            fs::read_to_string(self.path(LOG)).unwrap_or_default(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // EOF on the harness's `cat`: it halts the container and cleans up.
        drop(self.stdin.take());
        if !poll_until(Duration::from_secs(30), || {
            self.child.try_wait().ok().flatten().is_some()
        }) {
            eprintln!("[nspawn] did not halt within 30s: SIGKILL");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// True once `f` is, false when `deadline` passes first.
fn poll_until(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    // Polls on a schedule like support::wait_until, without its panic.
    let (_tx, rx) = mpsc::channel::<()>();
    let mut pause = Duration::from_millis(5);
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= deadline {
            return false;
        }
        let _ = rx.recv_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

#[track_caller]
fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    );
}

fn path_str(p: &Path) -> String {
    p.to_str()
        .expect("paths of this test are UTF-8")
        .to_string()
}

/// Everything this test drives, named, so a machine without it fails with the reason.
fn preflight(suite: Suite) {
    let mut missing = Vec::new();
    if fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .map(|l| l.split_whitespace().nth(2) == Some("0"))
    }) != Some(true)
    {
        missing.push("root (debootstrap, namespaces, cgroups, systemd-nspawn)".to_string());
    }
    for (program, package) in [
        ("debootstrap", "debootstrap"),
        ("systemd-nspawn", "systemd-container"),
        ("lintian", "lintian"),
        ("zstd", "zstd"),
        ("tar", "tar"),
        ("dpkg", "dpkg"),
        ("dpkg-shlibdeps", "dpkg-dev"),
        ("nsenter", "util-linux"),
        ("unshare", "util-linux"),
        ("setpriv", "util-linux"),
    ] {
        if !in_path(program) {
            missing.push(format!("{program} (Debian package {package})"));
        }
    }
    let script = Path::new("/usr/share/debootstrap/scripts").join(suite.name());
    if in_path("debootstrap") && !script.exists() {
        missing.push(format!(
            "a debootstrap that knows {} ({} is missing; .ci/run links it to sid)",
            suite.name(),
            script.display()
        ));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let has_cargo_deb = Command::new(cargo)
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_cargo_deb {
        missing.push("cargo-deb (cargo install cargo-deb --locked)".to_string());
    }
    if !missing.is_empty() {
        panic!(
            "cannot build and boot the Debian package test (TESTING.md, recipe B); missing:\n  - {}",
            missing.join("\n  - ")
        );
    }
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Elapsed time per step, for the test's output.
struct Stages {
    tag: &'static str,
    last: Instant,
}

impl Stages {
    fn new(tag: &'static str) -> Stages {
        Stages {
            tag,
            last: Instant::now(),
        }
    }

    fn done(&mut self, what: &str) {
        let now = Instant::now();
        eprintln!(
            "[deb {}] {what}: {:.1}s",
            self.tag,
            (now - self.last).as_secs_f64()
        );
        let _ = std::io::stderr().flush();
        self.last = now;
    }
}
