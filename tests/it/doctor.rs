//! `unitwarden doctor` against a real `systemd --user` manager: units built to show each
//! pitfall it flags, a config of well-set units that gives no findings, and a bus that is not
//! there.

use crate::smtp::closed_port;
use std::path::Path;
use std::process::Output;

use crate::support::{Manager, run_cli, write_config};

const SLEEP: &str = "ExecStart=/bin/sleep infinity\n";

fn doctor(mgr: Option<&Manager>, cfg: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--config", cfg.to_str().unwrap(), "doctor"];
    all.extend_from_slice(args);
    run_cli(mgr, &all)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn report(out: &Output) -> serde_json::Value {
    let stdout = text(&out.stdout);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {}", text(&out.stderr)))
}

/// The findings about `unit` as (code, severity) pairs.
fn about(report: &serde_json::Value, unit: &str) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .expect("findings is an array")
        .iter()
        .filter(|f| f["unit"] == unit)
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[track_caller]
fn finding<'a>(report: &'a serde_json::Value, unit: &str, code: &str) -> &'a serde_json::Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["unit"] == unit && f["code"] == code)
        .unwrap_or_else(|| panic!("no {code} finding about {unit} in {report:#}"))
}

/// The manager's major version, as `systemctl show` tells it (`252.39-1~deb12u2` → 252).
fn manager_version(mgr: &Manager) -> u32 {
    let version = mgr.systemctl_ok(&["show", "-p", "Version", "--value"]);
    let digits: String = version
        .trim()
        .trim_start_matches('v')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|e| panic!("the manager's Version {version:?}: {e}"))
}

#[test]
fn doctor_flags_each_pitfall_of_purpose_built_units() {
    let mgr = Manager::start();
    // Debian's postgresql.service in small: a oneshot that stays active, and the unit that
    // runs the real process, part of it.
    mgr.write_unit(
        "pgwrap.service",
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n",
    );
    mgr.write_unit(
        "pgwrap@.service",
        &format!("[Unit]\nPartOf=pgwrap.service\n[Service]\n{SLEEP}Restart=on-failure\n"),
    );
    mgr.write_unit("norestart.service", &format!("[Service]\n{SLEEP}"));
    mgr.write_unit(
        "maxdelay.service",
        &format!("[Service]\n{SLEEP}Restart=on-failure\nRestartMaxDelaySec=30s\n"),
    );
    // 3 restarts 5s apart take 15s: never within 10s.
    mgr.write_unit(
        "slowloop.service",
        &format!(
            "[Unit]\nStartLimitIntervalSec=10s\nStartLimitBurst=3\n[Service]\n{SLEEP}Restart=always\nRestartSec=5s\n"
        ),
    );
    mgr.write_unit(
        "nolimit.service",
        &format!("[Unit]\nStartLimitIntervalSec=0\n[Service]\n{SLEEP}Restart=on-failure\n"),
    );
    mgr.write_unit(
        "web.service",
        &format!("[Service]\n{SLEEP}Restart=on-failure\n"),
    );
    // No ExecStart=: systemd refuses to load it.
    mgr.write_unit("broken.service", "[Service]\nRestart=on-failure\n");
    mgr.systemctl_ok(&["mask", "hidden.service"]);
    mgr.daemon_reload();
    for unit in [
        "pgwrap",
        "pgwrap@main",
        "norestart",
        "maxdelay",
        "slowloop",
        "nolimit",
        "web",
    ] {
        mgr.systemctl_ok(&["start", unit]);
    }
    assert_eq!(mgr.show("pgwrap.service", "MainPID"), "0");
    assert_eq!(mgr.active_state("pgwrap.service"), "active");
    let cfg = write_config(
        &mgr,
        &r#"
[[unit]]
name = "pgwrap"
[[unit]]
name = "norestart"
[[unit]]
name = "maxdelay"
[[unit]]
name = "slowloop"
[[unit]]
name = "nolimit"
[[unit]]
name = "ghost"
[[unit]]
name = "hidden"
[[unit]]
name = "broken"
[[unit]]
name = "web"
recovery_unit = "nosuchfix"
[unit.probe]
tcp = "127.0.0.1:{closed}"
timeout = "2s"
[[unit]]
name = "nothere@*"
"#
        .replace("{closed}", &closed_port().to_string()),
    );

    let out = doctor(Some(&mgr), &cfg, &["--json"]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "warnings exit 1: {r:#}");
    assert_eq!(r["schema"], 1);
    assert_eq!(r["checked"], 9, "{r:#}");

    let warning = |code: &str| vec![(code.to_string(), "warning".to_string())];
    let info = |code: &str| vec![(code.to_string(), "info".to_string())];
    assert_eq!(about(&r, "pgwrap.service"), warning("wrapper"));
    assert_eq!(
        finding(&r, "pgwrap.service", "wrapper")["fix"],
        "watch pgwrap@main.service instead"
    );
    assert_eq!(about(&r, "norestart.service"), info("restart_no"));
    // systemd 252 ignores RestartMaxDelaySec= (it came in 254): only the unit file tells it
    // is there. From 254 on the manager shows it, and the missing RestartSteps= is the point.
    let version = manager_version(&mgr);
    if version < 254 {
        assert_eq!(about(&r, "maxdelay.service"), warning("systemd_too_old"));
        let what = finding(&r, "maxdelay.service", "systemd_too_old")["what"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            what,
            format!("systemd {version} ignores RestartMaxDelaySec= in its unit file (needs 254)")
        );
    } else {
        assert_eq!(
            about(&r, "maxdelay.service"),
            warning("max_delay_without_steps")
        );
    }
    assert_eq!(
        about(&r, "slowloop.service"),
        info("start_limit_never_fires")
    );
    let what = finding(&r, "slowloop.service", "start_limit_never_fires")["what"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        what.contains("StartLimitBurst=3 x RestartSec=5s = 15s"),
        "{what}"
    );
    assert_eq!(
        about(&r, "nolimit.service"),
        info("start_limit_never_fires")
    );
    assert_eq!(about(&r, "ghost.service"), warning("not_loaded"));
    assert_eq!(about(&r, "hidden.service"), warning("not_loaded"));
    assert_eq!(
        finding(&r, "hidden.service", "not_loaded")["what"],
        "masked: systemd refuses to start it"
    );
    assert_eq!(about(&r, "broken.service"), warning("not_loaded"));
    let what = finding(&r, "broken.service", "not_loaded")["what"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        what.starts_with("cannot be loaded (LoadState=bad-setting: "),
        "{what}"
    );
    assert_eq!(about(&r, "web.service"), warning("probe_fails"));
    let what = finding(&r, "web.service", "probe_fails")["what"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(what.contains("connection refused"), "{what}");
    assert_eq!(
        about(&r, "nosuchfix.service"),
        warning("recovery_unit_missing")
    );
    assert_eq!(
        finding(&r, "nosuchfix.service", "recovery_unit_missing")["what"],
        "recovery_unit of web.service: no such unit (LoadState=not-found)"
    );
    assert_eq!(about(&r, "nothere@*.service"), info("no_instances"));
    assert_eq!(r["findings"].as_array().unwrap().len(), 11, "{r:#}");

    // The table says the same to a person: through a pipe, without colour.
    let out = doctor(Some(&mgr), &cfg, &[]);
    let table = text(&out.stdout);
    eprintln!("{table}");
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(!table.contains('\x1b'), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("UNIT")
            && lines[0].contains("  SEVERITY  FINDING")
            && lines[0].ends_with("WHAT TO DO"),
        "{table}"
    );
    let col = lines[0].find("SEVERITY").unwrap();
    for row in &lines[1..12] {
        let severity: String = row.chars().skip(col).collect();
        assert!(
            severity.starts_with("warning ") || severity.starts_with("info "),
            "{row}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("pgwrap.service")
                && l.ends_with("watch pgwrap@main.service instead")),
        "{table}"
    );
    assert_eq!(lines[12], "");
    assert_eq!(lines[13], "9 units checked: 7 warnings, 4 info.");
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));

    // A note alone is a finding too: exit 1, as for any finding.
    let only_note = write_config(&mgr, "[[unit]]\nname = \"norestart\"\n");
    let out = doctor(Some(&mgr), &only_note, &["--json"]);
    let notes = report(&out);
    assert_eq!(about(&notes, "norestart.service"), info("restart_no"));
    assert_eq!(out.status.code(), Some(1), "a note exits 1: {notes:#}");
}

#[test]
fn doctor_finds_nothing_wrong_with_well_set_units() {
    let mgr = Manager::start();
    mgr.write_unit(
        "app.service",
        &format!("[Service]\n{SLEEP}Restart=on-failure\n"),
    );
    mgr.write_unit(
        "worker@.service",
        &format!("[Service]\n{SLEEP}Restart=on-failure\nRestartSec=1s\n"),
    );
    mgr.write_unit(
        "repair.service",
        "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    );
    mgr.daemon_reload();
    for unit in ["app", "worker@1", "worker@2"] {
        mgr.systemctl_ok(&["start", unit]);
    }
    // A port that answers: the listener's backlog accepts the probe's connection.
    let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listening.local_addr().unwrap().port();
    let cfg = write_config(
        &mgr,
        &format!(
            "[[unit]]\nname = \"app\"\nrecovery_unit = \"repair\"\n[unit.probe]\ntcp = \"127.0.0.1:{port}\"\n[[unit]]\nname = \"worker@*\"\n"
        ),
    );

    let out = doctor(Some(&mgr), &cfg, &[]);
    assert_eq!(
        text(&out.stdout),
        "3 units checked: no findings.\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));

    let out = doctor(Some(&mgr), &cfg, &["--json"]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(0), "{r:#}");
    assert_eq!(r["schema"], 1);
    assert_eq!(r["checked"], 3);
    assert_eq!(r["findings"], serde_json::json!([]));
}

#[test]
fn doctor_without_a_manager_says_so_in_one_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("unitwarden.toml");
    std::fs::write(&cfg, "[daemon]\nbus = \"user\"\n[[unit]]\nname = \"app\"\n").unwrap();
    // No manager: the bus address points nowhere.
    let out = doctor(None, &cfg, &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("unitwarden doctor: cannot connect to the user bus: "),
        "{stderr}"
    );

    // An invalid config is exit 2, as for every command.
    std::fs::write(&cfg, "[[unit]]\nname = 42\n").unwrap();
    let out = doctor(None, &cfg, &["--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}
