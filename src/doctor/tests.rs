//! The judge by tables: facts as systemd would report them in, findings out.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::render::{json, table};
use super::*;
use crate::config::RecoverySettings;
use crate::control::render::Colour;
use crate::policy::RestartPolicy;
use crate::systemd::ServiceProps;
use crate::unit::SubState;

const MS: u64 = 1000;
const S: u64 = 1_000_000;

fn name(n: &str) -> UnitName {
    UnitName::parse(n).unwrap()
}

fn entry(pattern: &str) -> Arc<UnitSettings> {
    Arc::new(UnitSettings {
        pattern: UnitPattern::parse(pattern).unwrap(),
        depends_on: Vec::new(),
        policy: Arc::new(RestartPolicy::default()),
        probe: None,
        recovery: None,
    })
}

fn with_recovery(pattern: &str, recovery: &str) -> Arc<UnitSettings> {
    let mut e = Arc::try_unwrap(entry(pattern)).unwrap();
    e.recovery = Some(Box::new(RecoverySettings {
        unit: name(recovery),
        after: 1,
        timeout: std::time::Duration::from_secs(300),
    }));
    Arc::new(e)
}

/// A running service that gives nothing to flag: `Restart=on-failure` with systemd's
/// defaults (100ms apart, at most 5 starts in 10s).
fn healthy() -> UnitProps {
    UnitProps {
        id: None,
        load: LoadState::Loaded,
        load_error: None,
        active: ActiveState::Active,
        sub: SubState::new("running"),
        files: Vec::new(),
        consists_of: Vec::new(),
        wants: Vec::new(),
        requires: Vec::new(),
        start_limit_burst: Some(5),
        start_limit_interval_us: Some(10 * S),
        service: Some(ServiceProps {
            oneshot: false,
            remain_after_exit: Some(false),
            main_pid: Some(4242),
            restart: Some(AutoRestart::When("on-failure".into())),
            restart_us: Some(100 * MS),
            restart_max_delay_us: None,
            restart_steps: None,
            user: Some(String::new()),
        }),
    }
}

fn service(p: &mut UnitProps) -> &mut ServiceProps {
    p.service.as_mut().unwrap()
}

fn unit(n: &str, props: UnitProps) -> UnitFacts {
    UnitFacts {
        name: name(n),
        read: Ok(props),
        files: Vec::new(),
    }
}

/// The report on one configured unit `n` read as `props`, under systemd `version`.
fn one(n: &str, props: UnitProps, version: &str) -> Report {
    let facts = Facts {
        version: Some(version.into()),
        entries: vec![EntryFacts {
            probe: None,
            units: vec![unit(n, props)],
        }],
        ..Facts::default()
    };
    judge(&[entry(n)], &facts)
}

fn codes(r: &Report) -> Vec<(Code, Severity)> {
    r.findings.iter().map(|f| (f.code, f.severity)).collect()
}

#[test]
fn a_healthy_unit_has_no_findings() {
    for version in ["252.39-1~deb12u2", "257.9-1"] {
        let r = one("web", healthy(), version);
        assert!(r.findings.is_empty(), "{version}: {:?}", r.findings);
        assert_eq!(r.checked, 1);
        assert!(!r.has_warnings());
    }
}

#[test]
fn units_systemd_cannot_load_are_warnings() {
    let cases = [
        (
            LoadState::NotFound,
            None,
            "no such unit (LoadState=not-found)",
        ),
        (
            LoadState::Masked,
            None,
            "masked: systemd refuses to start it",
        ),
        (
            LoadState::BadSetting,
            Some("Unit configuration has fatal error, unit will not be started."),
            "cannot be loaded (LoadState=bad-setting: Unit configuration has fatal error, unit will not be started)",
        ),
        (LoadState::Error, None, "cannot be loaded (LoadState=error)"),
    ];
    for (load, error, what) in cases {
        let mut p = healthy();
        p.load = load;
        p.load_error = error.map(str::to_string);
        // Whatever else it says does not count for a unit that is not there.
        service(&mut p).restart = Some(AutoRestart::Never);
        let r = one("ghost", p, "252");
        assert_eq!(codes(&r), [(Code::NotLoaded, Severity::Warning)], "{load}");
        assert_eq!(r.findings[0].what, what);
        assert_eq!(r.findings[0].unit.as_deref(), Some("ghost.service"));
        assert!(r.has_warnings());
    }
    let mut p = healthy();
    p.load = LoadState::Masked;
    let r = one("ghost", p, "252");
    assert_eq!(
        r.findings[0].fix,
        "systemctl unmask ghost.service, or stop watching it"
    );
}

#[test]
fn a_unit_the_manager_refuses_to_show_is_a_warning() {
    let facts = Facts {
        entries: vec![EntryFacts {
            probe: None,
            units: vec![UnitFacts {
                name: name("web"),
                read: Err("org.freedesktop.DBus.Error.AccessDenied: no".into()),
                files: Vec::new(),
            }],
        }],
        ..Facts::default()
    };
    let r = judge(&[entry("web")], &facts);
    assert_eq!(codes(&r), [(Code::Unreadable, Severity::Warning)]);
    assert!(r.findings[0].what.contains("AccessDenied"), "{r:?}");
}

/// Debian's `postgresql.service`: `ExecStart=/bin/true`, `RemainAfterExit=yes`, active with
/// no process, and the clusters' units `PartOf=` it.
fn wrapper() -> UnitProps {
    let mut p = healthy();
    p.sub = SubState::new("exited");
    let s = service(&mut p);
    s.oneshot = true;
    s.remain_after_exit = Some(true);
    s.main_pid = Some(0);
    s.restart = Some(AutoRestart::Never);
    p
}

#[test]
fn a_wrapper_names_the_units_that_are_part_of_it() {
    let mut p = wrapper();
    p.consists_of = vec![name("postgresql@15-main")];
    p.wants = vec![name("postgresql@13-old")];
    let r = one("postgresql", p, "252");
    // Restart=no is not told too: the wrapper is the finding.
    assert_eq!(codes(&r), [(Code::Wrapper, Severity::Warning)]);
    assert_eq!(
        r.findings[0].fix,
        "watch postgresql@15-main.service instead"
    );
}

#[test]
fn a_wrapper_without_parts_names_what_it_pulls_in_under_its_own_prefix() {
    let mut p = wrapper();
    p.wants = vec![
        name("postgresql@15-main"),
        name("network-online.target"),
        name("postgresqlish.service"),
        name("postgresql.service"),
    ];
    p.requires = vec![name("postgresql@16-new"), name("postgresql@15-main")];
    let r = one("postgresql", p, "252");
    assert_eq!(
        r.findings[0].fix,
        "watch postgresql@15-main.service, postgresql@16-new.service instead"
    );

    let r = one("postgresql", wrapper(), "252");
    assert_eq!(codes(&r), [(Code::Wrapper, Severity::Warning)]);
    assert_eq!(
        r.findings[0].fix,
        "watch the unit that runs the real process instead"
    );
}

#[test]
fn remain_after_exit_alone_is_a_wrapper_only_without_a_process() {
    // Type=simple, RemainAfterExit=yes, whose process exited: active and empty.
    let mut p = healthy();
    let s = service(&mut p);
    s.remain_after_exit = Some(true);
    s.main_pid = Some(0);
    assert_eq!(
        codes(&one("a", p.clone(), "252")),
        [(Code::Wrapper, Severity::Warning)]
    );
    // The same with its process still running is a service like any other.
    service(&mut p).main_pid = Some(77);
    assert!(one("a", p.clone(), "252").findings.is_empty());
    // A oneshot without RemainAfterExit= runs, exits and is inactive: not a wrapper.
    let mut p = healthy();
    service(&mut p).oneshot = true;
    service(&mut p).main_pid = Some(0);
    p.active = ActiveState::Inactive;
    assert!(one("a", p, "252").findings.is_empty());
}

#[test]
fn restart_no_is_a_note_that_fails_nothing() {
    let mut p = healthy();
    service(&mut p).restart = Some(AutoRestart::Never);
    let r = one("web", p, "252");
    assert_eq!(codes(&r), [(Code::RestartNo, Severity::Info)]);
    assert!(!r.has_warnings());
    // Whatever systemd restarts by itself is its own business: nothing to say.
    for setting in [
        "always",
        "on-failure",
        "on-abnormal",
        "on-abort",
        "on-watchdog",
        "on-success",
    ] {
        let mut p = healthy();
        service(&mut p).restart = Some(AutoRestart::When(setting.into()));
        assert!(one("web", p, "252").findings.is_empty(), "{setting}");
    }
}

#[test]
fn restart_max_delay_without_steps_is_a_warning_on_systemd_254_and_later() {
    let cases = [
        (Some(30 * S), Some(0), true),
        (Some(30 * S), Some(5), false),
        (Some(u64::MAX), Some(0), false),
        (Some(0), Some(0), false),
        // An older manager has neither property.
        (None, None, false),
    ];
    for (max, steps, flagged) in cases {
        let mut p = healthy();
        service(&mut p).restart_max_delay_us = max;
        service(&mut p).restart_steps = steps;
        let r = one("web", p, "257.9-1");
        if flagged {
            assert_eq!(codes(&r), [(Code::MaxDelayWithoutSteps, Severity::Warning)]);
            assert_eq!(
                r.findings[0].what,
                "RestartMaxDelaySec=30s has no effect without RestartSteps="
            );
        } else {
            assert!(r.findings.is_empty(), "{max:?} {steps:?}: {r:?}");
        }
    }
}

#[test]
fn the_start_limit_arithmetic() {
    // (StartLimitBurst, StartLimitIntervalSec, RestartSec, never fires)
    let cases = [
        // systemd's defaults: 5 restarts 100ms apart take 0.5s, well within 10s.
        (5, 10 * S, 100 * MS, false),
        // 5 × 2s = 10s: the sixth start would have to come in no time at all.
        (5, 10 * S, 2 * S, true),
        // 5 × 1.999999s just fits.
        (5, 10 * S, 2 * S - 1, false),
        (3, 10 * S, 5 * S, true),
        (1, S, S, true),
        (1, S + 1, S, false),
        // RestartSec=0: a crash loop always hits the limit.
        (5, 10 * S, 0, false),
        // No overflow at the extremes.
        (u32::MAX, u64::MAX - 1, u64::MAX - 1, true),
        (u32::MAX, u64::MAX, 1, false),
    ];
    for (burst, interval, restart, never) in cases {
        let r = start_limit(Some(burst), Some(interval), Some(restart));
        assert_eq!(r.is_some(), never, "{burst} {interval} {restart}");
    }
    let (what, fix) = start_limit(Some(3), Some(10 * S), Some(5 * S)).unwrap();
    assert_eq!(
        what,
        "start limit never fires: StartLimitBurst=3 x RestartSec=5s = 15s, not under StartLimitIntervalSec=10s"
    );
    assert_eq!(
        fix,
        "raise StartLimitIntervalSec= above 15s, else systemd restarts a crash loop forever and unitwarden never steps in"
    );
    // A limit that is off never fires either.
    for (burst, interval, off) in [
        (0, 10 * S, "StartLimitBurst=0"),
        (5, 0, "StartLimitIntervalSec=0"),
    ] {
        let (what, fix) = start_limit(Some(burst), Some(interval), Some(100 * MS)).unwrap();
        assert_eq!(what, format!("no start limit ({off})"));
        assert_eq!(
            fix,
            "set StartLimitIntervalSec= and StartLimitBurst=, else systemd restarts a crash loop forever and unitwarden never steps in"
        );
    }
    // What systemd did not say is not guessed.
    assert_eq!(start_limit(None, Some(10 * S), Some(S)), None);
    assert_eq!(start_limit(Some(5), None, Some(S)), None);
    assert_eq!(start_limit(Some(5), Some(10 * S), None), None);
}

#[test]
fn a_start_limit_that_never_fires_is_a_note_when_systemd_restarts() {
    let mut p = healthy();
    p.start_limit_burst = Some(3);
    service(&mut p).restart = Some(AutoRestart::When("always".into()));
    service(&mut p).restart_us = Some(5 * S);
    let r = one("web", p.clone(), "252");
    assert_eq!(codes(&r), [(Code::StartLimitNeverFires, Severity::Info)]);
    // Without Restart=, systemd starts it only when asked: its limit stops no loop.
    service(&mut p).restart = Some(AutoRestart::Never);
    assert_eq!(
        codes(&one("web", p.clone(), "252")),
        [(Code::RestartNo, Severity::Info)]
    );
    p.start_limit_interval_us = Some(0);
    assert_eq!(
        codes(&one("web", p, "252")),
        [(Code::RestartNo, Severity::Info)]
    );
}

#[test]
fn systemd_versions_are_read_from_the_front() {
    let cases = [
        ("252.39-1~deb12u2", Some(252)),
        ("257.9-1", Some(257)),
        ("234", Some(234)),
        ("v255-123-gabcdef", Some(255)),
        ("258~rc1", Some(258)),
        (" 249.11 ", Some(249)),
        ("", None),
        ("systemd", None),
        ("99999999999999999999", None),
    ];
    for (text, want) in cases {
        assert_eq!(major_version(text), want, "{text:?}");
    }
}

#[test]
fn systemd_older_than_235_cannot_tell_crashes() {
    let r = one("web", healthy(), "234");
    assert_eq!(codes(&r), [(Code::SystemdTooOld, Severity::Warning)]);
    assert_eq!(r.findings[0].unit, None);
    assert!(r.findings[0].what.contains("NRestarts"), "{r:?}");
    // A version that cannot be read is not held against the manager.
    let mut facts = Facts {
        version: Some("unknown".into()),
        entries: vec![EntryFacts {
            probe: None,
            units: vec![unit("web", healthy())],
        }],
        ..Facts::default()
    };
    assert!(judge(&[entry("web")], &facts).findings.is_empty());
    facts.version = None;
    assert!(judge(&[entry("web")], &facts).findings.is_empty());
}

fn file(text: &str) -> UnitFile {
    UnitFile {
        path: "/etc/systemd/system/web.service".into(),
        text: text.into(),
    }
}

#[test]
fn restart_delay_keys_are_read_from_the_service_section_last_one_wins() {
    let cases: [(&[&str], &[&str]); 8] = [
        (
            &["[Service]\nRestartMaxDelaySec=30s\n"],
            &["RestartMaxDelaySec"],
        ),
        (
            &["[Service]\nRestartSteps = 5\nRestartMaxDelaySec=1min\n"],
            &["RestartMaxDelaySec", "RestartSteps"],
        ),
        // A drop-in's empty assignment resets the unit file's.
        (
            &[
                "[Service]\nRestartMaxDelaySec=30s\n",
                "[Service]\nRestartMaxDelaySec=\n",
            ],
            &[],
        ),
        (
            &[
                "[Service]\nRestartMaxDelaySec=\n",
                "[Service]\nRestartSteps=3\n",
            ],
            &["RestartSteps"],
        ),
        (
            &["[Unit]\nRestartMaxDelaySec=30s\n[Service]\nExecStart=/bin/true\n"],
            &[],
        ),
        (
            &["[Service]\n# RestartMaxDelaySec=30s\n; RestartSteps=3\n"],
            &[],
        ),
        // A continued line is a value, not a key.
        (
            &["[Service]\nExecStart=/bin/echo \\\nRestartSteps=3\n"],
            &[],
        ),
        (&["[Service]\nRestartSec=5s\n"], &[]),
    ];
    for (texts, want) in cases {
        let files: Vec<UnitFile> = texts.iter().map(|t| file(t)).collect();
        assert_eq!(restart_delay_keys(&files), want, "{texts:?}");
    }
}

#[test]
fn restart_delay_settings_on_a_systemd_that_ignores_them_are_a_warning() {
    let facts = |version: &str, text: &str| Facts {
        version: Some(version.into()),
        entries: vec![EntryFacts {
            probe: None,
            units: vec![UnitFacts {
                files: vec![file(text)],
                ..unit("web", healthy())
            }],
        }],
        ..Facts::default()
    };
    let r = judge(
        &[entry("web")],
        &facts("252.39-1~deb12u2", "[Service]\nRestartMaxDelaySec=30s\n"),
    );
    assert_eq!(codes(&r), [(Code::SystemdTooOld, Severity::Warning)]);
    assert_eq!(
        r.findings[0].what,
        "systemd 252 ignores RestartMaxDelaySec= in its unit file (needs 254)"
    );
    let r = judge(
        &[entry("web")],
        &facts("253", "[Service]\nRestartMaxDelaySec=30s\nRestartSteps=4\n"),
    );
    assert_eq!(
        r.findings[0].what,
        "systemd 253 ignores RestartMaxDelaySec= and RestartSteps= in its unit file (needs 254)"
    );
    // 254 and later show them over D-Bus, and are judged by what they say there.
    let r = judge(
        &[entry("web")],
        &facts("254", "[Service]\nRestartMaxDelaySec=30s\n"),
    );
    assert!(r.findings.is_empty(), "{r:?}");
}

#[test]
fn a_glob_with_no_loaded_instance_is_a_note() {
    let facts = Facts {
        entries: vec![EntryFacts::default()],
        ..Facts::default()
    };
    let r = judge(&[entry("celery@*")], &facts);
    assert_eq!(codes(&r), [(Code::NoInstances, Severity::Info)]);
    assert_eq!(r.findings[0].unit.as_deref(), Some("celery@*.service"));
    assert_eq!(r.checked, 0);
    // Its instances are judged one by one.
    let mut bad = healthy();
    bad.load = LoadState::Masked;
    let facts = Facts {
        entries: vec![EntryFacts {
            probe: None,
            units: vec![unit("celery@a", healthy()), unit("celery@b", bad)],
        }],
        ..Facts::default()
    };
    let r = judge(&[entry("celery@*")], &facts);
    assert_eq!(codes(&r), [(Code::NotLoaded, Severity::Warning)]);
    assert_eq!(r.findings[0].unit.as_deref(), Some("celery@b.service"));
    assert_eq!(r.checked, 2);
}

#[test]
fn a_unit_configured_twice_is_told_and_counted_once() {
    let mut p = healthy();
    service(&mut p).restart = Some(AutoRestart::Never);
    let facts = Facts {
        entries: vec![
            EntryFacts {
                probe: None,
                units: vec![unit("celery@a", p.clone())],
            },
            EntryFacts {
                probe: None,
                units: vec![unit("celery@a", p)],
            },
        ],
        ..Facts::default()
    };
    let r = judge(&[entry("celery@a"), entry("celery@*")], &facts);
    assert_eq!(codes(&r), [(Code::RestartNo, Severity::Info)]);
    assert_eq!(r.checked, 1);
}

#[test]
fn a_recovery_unit_that_does_not_exist_is_a_warning_once() {
    let mut missing = healthy();
    missing.load = LoadState::NotFound;
    let recovery = BTreeMap::from([
        (name("fix-db"), Ok(missing)),
        (name("fix-web"), Ok(healthy())),
    ]);
    let units = [
        with_recovery("api", "fix-db"),
        with_recovery("worker", "fix-db"),
        with_recovery("web", "fix-web"),
    ];
    let facts = Facts {
        entries: ["api", "worker", "web"]
            .iter()
            .map(|n| EntryFacts {
                probe: None,
                units: vec![unit(n, healthy())],
            })
            .collect(),
        recovery,
        ..Facts::default()
    };
    let r = judge(&units, &facts);
    assert_eq!(codes(&r), [(Code::RecoveryUnitMissing, Severity::Warning)]);
    let f = &r.findings[0];
    assert_eq!(f.unit.as_deref(), Some("fix-db.service"));
    assert_eq!(
        f.what,
        "recovery_unit of api.service, worker.service: no such unit (LoadState=not-found)"
    );
    assert_eq!(f.fix, "create it, or correct recovery_unit in the config");
    assert_eq!(r.checked, 3, "recovery units are not watched units");
}

fn polkit(rules: Result<Vec<(PathBuf, String)>, String>, user: &str) -> Facts {
    Facts {
        polkit: Some(PolkitFacts {
            user: user.into(),
            whose: "User= of unitwarden.service".into(),
            expected: "// unitwarden least-privilege mode, generated by `unitwarden polkit-rule` from\n// RULE FOR web\n".into(),
            config: PathBuf::from(crate::args::DEFAULT_CONFIG),
            dir: PathBuf::from(POLKIT_RULES_DIR),
            rules,
        }),
        ..Facts::default()
    }
}

#[test]
fn the_polkit_rule_must_be_the_one_polkit_rule_prints_now() {
    let expected = polkit(Ok(Vec::new()), "unitwarden")
        .polkit
        .unwrap()
        .expected;
    let other = (
        "/etc/polkit-1/rules.d/10-admin.rules".into(),
        "polkit.addRule(...)".to_string(),
    );

    let ok = polkit(
        Ok(vec![
            other.clone(),
            (
                "/etc/polkit-1/rules.d/60-unitwarden.rules".into(),
                expected.clone(),
            ),
        ]),
        "unitwarden",
    );
    assert!(judge(&[], &ok).findings.is_empty());

    let missing = judge(&[], &polkit(Ok(vec![other.clone()]), "unitwarden"));
    assert_eq!(codes(&missing), [(Code::PolkitRule, Severity::Warning)]);
    assert_eq!(
        missing.findings[0].what,
        "no polkit rule in /etc/polkit-1/rules.d lets unitwarden (User= of unitwarden.service) manage the watched units: its restarts are refused"
    );
    assert_eq!(
        missing.findings[0].fix,
        "regenerate it: unitwarden polkit-rule > /etc/polkit-1/rules.d/60-unitwarden.rules"
    );

    let old = expected.replace("web", "web and db");
    let outdated = judge(
        &[],
        &polkit(
            Ok(vec![("/etc/polkit-1/rules.d/50-uw.rules".into(), old)]),
            "svc",
        ),
    );
    assert_eq!(codes(&outdated), [(Code::PolkitRule, Severity::Warning)]);
    assert!(
        outdated.findings[0]
            .what
            .starts_with("the polkit rule in /etc/polkit-1/rules.d/50-uw.rules is not the one"),
        "{outdated:?}"
    );
    assert_eq!(
        outdated.findings[0].fix,
        "regenerate it: unitwarden polkit-rule --user svc > /etc/polkit-1/rules.d/50-uw.rules"
    );

    let unreadable = judge(&[], &polkit(Err("permission denied".into()), "unitwarden"));
    assert_eq!(codes(&unreadable), [(Code::PolkitRule, Severity::Info)]);
    assert_eq!(unreadable.findings[0].fix, "run doctor as root");
}

#[test]
fn the_regenerating_command_names_a_config_other_than_the_default() {
    let mut facts = polkit(Ok(Vec::new()), "unitwarden");
    facts.polkit.as_mut().unwrap().config = PathBuf::from("/srv/uw.toml");
    let r = judge(&[], &facts);
    assert_eq!(
        r.findings[0].fix,
        "regenerate it: unitwarden --config /srv/uw.toml polkit-rule > /etc/polkit-1/rules.d/60-unitwarden.rules"
    );
}

fn sample() -> Report {
    let mut p = healthy();
    service(&mut p).restart = Some(AutoRestart::Never);
    let mut ghost = healthy();
    ghost.load = LoadState::BadSetting;
    ghost.load_error = Some("evil\u{1b}[2J text".into());
    let facts = Facts {
        version: Some("252".into()),
        entries: vec![
            EntryFacts {
                probe: None,
                units: vec![unit("web", p)],
            },
            EntryFacts {
                probe: None,
                units: vec![unit("ghost", ghost)],
            },
        ],
        ..Facts::default()
    };
    judge(&[entry("web"), entry("ghost")], &facts)
}

#[test]
fn the_table_is_aligned_escaped_and_plain_through_a_pipe() {
    let out = table(&sample(), Colour::No);
    assert!(!out.contains('\x1b'), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("UNIT "), "{out}");
    let col = lines[0].find("FINDING").unwrap();
    assert_eq!(&lines[1][col..col + 10], "Restart=no", "{out}");
    assert_eq!(&lines[2][col..col + 14], "cannot be load", "{out}");
    assert!(lines[2].starts_with("ghost.service "), "{out}");
    assert!(lines[2].contains("evil\\u{1b}[2J text"), "{out}");
    assert_eq!(lines[3], "");
    assert_eq!(lines[4], "2 units checked: 1 warning, 1 info.");

    let coloured = table(&sample(), Colour::Yes);
    assert!(coloured.contains("\x1b[33mwarning\x1b[0m"), "{coloured}");
    assert!(!coloured.contains("\x1b[2J"));
}

#[test]
fn a_clean_report_says_so_in_one_line() {
    let r = one("web", healthy(), "252");
    assert_eq!(table(&r, Colour::No), "1 unit checked: no findings.\n");
}

#[test]
fn the_json_document_has_schema_1() {
    let text = json(&sample()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["checked"], 2);
    let f = &v["findings"];
    assert_eq!(f[0]["unit"], "web.service");
    assert_eq!(f[0]["severity"], "info");
    assert_eq!(f[0]["code"], "restart_no");
    assert_eq!(f[1]["unit"], "ghost.service");
    assert!(f[1]["what"].as_str().unwrap().contains("evil\u{1b}[2J"));
    assert_eq!(f[1]["severity"], "warning");
    assert_eq!(f[1]["code"], "not_loaded");
    assert!(f[1]["what"].is_string() && f[1]["fix"].is_string());
    assert!(!text.contains('\x1b'), "escaped in JSON: {text}");

    let none = json(&judge(&[], &polkit(Ok(Vec::new()), "u"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&none).unwrap();
    assert_eq!(v["findings"][0]["unit"], serde_json::Value::Null);
}

#[test]
fn a_probe_that_fails_now_is_a_warning() {
    let mut settings = Arc::try_unwrap(entry("web")).unwrap();
    settings.probe = Some(Box::new(crate::config::ProbeSettings {
        check: crate::config::ProbeCheck::Tcp("127.0.0.1:1".into()),
        timeout: Duration::from_secs(1),
        failures: 3,
        grace: Duration::from_secs(30),
    }));
    let facts = Facts {
        version: Some("257.9-1".into()),
        entries: vec![EntryFacts {
            units: vec![unit("web", healthy())],
            probe: Some(crate::probe::ProbeOutcome {
                ok: false,
                detail: "connect to 127.0.0.1:1: connection refused".into(),
                took: Duration::from_millis(1),
            }),
        }],
        ..Facts::default()
    };
    let r = judge(&[Arc::new(settings)], &facts);
    assert_eq!(codes(&r), vec![(Code::ProbeFails, Severity::Warning)]);
    assert!(
        r.findings[0].what.contains("tcp 127.0.0.1:1"),
        "{}",
        r.findings[0].what
    );
    assert!(r.findings[0].what.contains("connection refused"));
}
