//! From one host to forty: `/metrics` scraped by a real Prometheus and checked by promtool,
//! the shipped dashboard and rules against a real scrape, alerts posted to a real
//! Alertmanager (also while it is down), and scrapers that misbehave, all against a real
//! `systemd --user` manager.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::prom::{Alertmanager, Prometheus, get, promtool, request};
use crate::support::web::free_port;
use crate::support::{Daemon, Manager, run_cli, wait_until, write_config};

const T: Duration = Duration::from_secs(30);
const FLEET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/fleet");

fn sleeper(mgr: &Manager, name: &str) {
    mgr.write_unit(
        &format!("{name}.service"),
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
}

/// A manager running `names` as sleepers and a daemon watching them, with `/metrics` on a free
/// port; `extra` is more config before the units, `after` after them.
fn watching(names: &[&str], extra: &str, after: &str) -> (Manager, PathBuf, Daemon, u16) {
    let mgr = Manager::start();
    let mut units = String::new();
    for n in names {
        sleeper(&mgr, n);
        units += &format!("[[unit]]\nname = \"{n}\"\n");
    }
    mgr.daemon_reload();
    for n in names {
        mgr.systemctl_ok(&["start", n]);
    }
    let port = free_port();
    let cfg = write_config(
        &mgr,
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n{extra}{units}{after}"),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
    d.wait_for_stderr("the metrics listener", T, |l| {
        l.contains(&format!(
            "metrics served at http://127.0.0.1:{port}/metrics"
        ))
    });
    (mgr, cfg, d, port)
}

fn cli_ok(mgr: &Manager, cfg: &Path, args: &[&str]) -> String {
    let mut all = vec!["--config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run_cli(Some(mgr), &all);
    assert!(
        out.status.success(),
        "unitwarden {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of the sample `series` (name and labels exactly as written) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The metric families a scrape declares (`# TYPE NAME KIND`), with the sample names each
/// allows: a histogram's `_bucket`, `_sum` and `_count`.
fn families(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        names.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// Every `unitwarden_*` name in `expr` (PromQL).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("unitwarden_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn a_real_prometheus_sees_a_killed_unit_go_down_and_its_restart_counted() {
    let (mgr, _cfg, d, port) = watching(
        &["web", "db"],
        // Down for 3 s before the restart: a 1 s scrape sees it.
        "[restart]\nbackoff_initial = \"3s\"\nverify_after = \"1s\"\n",
        "",
    );
    let prom = Prometheus::start(mgr.work_dir(), port);
    prom.wait_value("the target is up", "up{job=\"unitwarden\"}", 1.0, T);
    prom.wait_value(
        "web is up",
        "unitwarden_unit_up{unit=\"web.service\"}",
        1.0,
        T,
    );

    mgr.kill_main("web");
    d.wait_for_stderr("web restarted", T, |l| {
        l.contains("unit=web.service") && l.contains("result=restarted")
    });
    prom.wait_value(
        "the restart counted",
        "unitwarden_restarts_total{unit=\"web.service\",result=\"restarted\"}",
        1.0,
        T,
    );
    prom.wait_value(
        "web seen down",
        "min_over_time(unitwarden_unit_up{unit=\"web.service\"}[5m])",
        0.0,
        T,
    );
    prom.wait_value(
        "web up again",
        "unitwarden_unit_up{unit=\"web.service\"}",
        1.0,
        T,
    );
    // Down, then up: two changes; db never moved.
    prom.wait_value(
        "web went 1, 0, 1",
        "changes(unitwarden_unit_up{unit=\"web.service\"}[5m])",
        2.0,
        T,
    );
    assert_eq!(
        prom.value("changes(unitwarden_unit_up{unit=\"db.service\"}[5m])"),
        Some(0.0)
    );
    assert_eq!(
        prom.value("unitwarden_restarts_total{unit=\"db.service\",result=\"restarted\"}"),
        Some(0.0)
    );
    // The signal was decided on: at least one detection measured.
    let detections = prom
        .value("unitwarden_detection_latency_seconds_count")
        .unwrap();
    assert!(detections >= 1.0, "{detections}");
}

#[test]
fn a_real_scrape_passes_promtool_and_tells_paused_and_stopped_units_apart() {
    // A window from an hour ago to two hours ahead, in the host's time as the daemon reads it.
    let hour = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::system())
        .hour();
    let window = format!(
        "[[window]]\nname = \"now\"\nstart = \"{:02}:00\"\nend = \"{:02}:00\"\ninterval = \"30s\"\n",
        (hour + 23) % 24,
        (hour + 2) % 24
    );
    let (mgr, cfg, _d, port) = watching(
        &["web", "db", "cache"],
        &format!("{window}[resources]\nresource_interval = \"1s\"\nload_max = 1000.0\n"),
        // A probe that always fails, yet never often enough to count the unit down.
        "[unit.probe]\nexec = [\"/bin/false\"]\nfailures = 1000\n",
    );
    cli_ok(&mgr, &cfg, &["pause", "web"]);
    mgr.systemctl_ok(&["stop", "db"]);
    let text = wait_until(
        "db stopped, a probe run and the load in /metrics",
        T,
        || {
            let text = get(port, "/metrics");
            let seen = |series: &str| sample(&text, series).is_some();
            (seen("unitwarden_unit_state{unit=\"db.service\",state=\"stopped_by_operator\"}")
                && seen("unitwarden_probe_failures_total{unit=\"cache.service\"}")
                && seen("unitwarden_resource_used_ratio{resource=\"load\"}"))
            .then_some(text)
        },
    );
    eprintln!("--- /metrics ---\n{text}");
    let out = promtool(&["check", "metrics"], Some(&text));
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let one = |series: &str| {
        assert_eq!(sample(&text, series), Some(1.0), "{series} in\n{text}");
    };
    one("unitwarden_unit_state{unit=\"web.service\",state=\"paused\"}");
    one("unitwarden_unit_state{unit=\"cache.service\",state=\"healthy\"}");
    one("unitwarden_unit_up{unit=\"web.service\"}");
    one("unitwarden_critical_window_active{window=\"now\"}");
    one(&format!(
        "unitwarden_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    ));
    assert_eq!(
        sample(&text, "unitwarden_unit_up{unit=\"db.service\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "unitwarden_check_interval_seconds"),
        Some(30.0)
    );
    assert_eq!(sample(&text, "unitwarden_units_watched"), Some(3.0));
    let runs = sample(
        &text,
        "unitwarden_probe_duration_seconds_count{unit=\"cache.service\"}",
    );
    assert!(runs >= Some(1.0), "{runs:?}");
    assert_eq!(
        sample(
            &text,
            "unitwarden_probe_failures_total{unit=\"cache.service\"}"
        ),
        runs,
        "every run of /bin/false fails"
    );
    assert!(
        sample(
            &text,
            "unitwarden_probe_failures_total{unit=\"web.service\"}"
        )
        .is_none()
    );
    // Only the current state of each unit is a series.
    let states = text
        .lines()
        .filter(|l| l.starts_with("unitwarden_unit_state{"))
        .count();
    assert_eq!(states, 3, "{text}");
    // HEAD answers the same head without the body; anything else is refused with a status.
    let head = request(port, "HEAD", "/metrics", None).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(
        head.head.contains("text/plain; version=0.0.4"),
        "{}",
        head.head
    );
    assert_eq!(request(port, "GET", "/nope", None).unwrap().status, 404);
    assert_eq!(
        request(port, "POST", "/metrics", Some("{}"))
            .unwrap()
            .status,
        405
    );
}

#[test]
fn the_shipped_dashboard_and_rules_name_only_metrics_a_real_scrape_has() {
    let (_mgr, _cfg, _d, port) = watching(&["web"], "", "");
    let have = families(&get(port, "/metrics"));
    // Prometheus's own series the rules use.
    let prometheus_own = ["up"];
    let dashboard = std::fs::read_to_string(Path::new(FLEET).join("grafana-dashboard.json"))
        .expect("dist/fleet/grafana-dashboard.json");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&json, &mut exprs);
    assert!(exprs.len() >= 6, "{exprs:?}");
    let rules = std::fs::read_to_string(Path::new(FLEET).join("unitwarden-rules.yml")).unwrap();
    exprs.extend(
        rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr:"))
            .map(str::to_string),
    );
    let mut named = BTreeSet::new();
    for e in &exprs {
        named.extend(metric_names(e));
    }
    let missing: Vec<&String> = named
        .iter()
        .filter(|n| !have.contains(*n) && !prometheus_own.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "not in a scrape: {missing:?}\nhave: {have:?}"
    );
    for family in [
        "unitwarden_unit_up",
        "unitwarden_restarts_total",
        "unitwarden_crashes_total",
        "unitwarden_probe_duration_seconds_bucket",
        "unitwarden_critical_window_active",
        "unitwarden_outbox_messages",
        "unitwarden_alerts_failed_total",
    ] {
        assert!(
            named.contains(family),
            "the dashboard or rules use {family}"
        );
    }
}

/// Every `"expr"` string in a Grafana dashboard, at any depth.
fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_shipped_rules_pass_promtool_check_and_their_own_tests() {
    let rules = Path::new(FLEET).join("unitwarden-rules.yml");
    let tests = Path::new(FLEET).join("unitwarden-rules.test.yml");
    for args in [
        vec!["check", "rules", rules.to_str().unwrap()],
        vec!["test", "rules", tests.to_str().unwrap()],
    ] {
        let out = promtool(&args, None);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("promtool {args:?}:\n{text}");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}\n{text}",
            out.status
        );
    }
    let route = Path::new(FLEET).join("alertmanager-route.yml");
    let out = std::process::Command::new(crate::prom::tool("amtool", "prometheus-alertmanager"))
        .args(["check-config", route.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "amtool check-config: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn scrapers_that_stall_flood_or_send_a_megabyte_do_not_delay_restarts() {
    let (mgr, cfg, d, port) = watching(
        &["web"],
        "[restart]\nbackoff_initial = \"0s\"\nverify_after = \"300ms\"\n",
        "",
    );
    // Silent clients that keep every one of the 64 places busy until their 5 s are up.
    let silent: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // A request that never finishes.
    let mut partial = TcpStream::connect(("127.0.0.1", port)).unwrap();
    partial
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A thousand connections at once, each asking properly, from threads.
    let flood: Vec<_> = (0..1000)
        .map(|_| {
            std::thread::spawn(move || request(port, "GET", "/metrics", None).map(|a| a.status))
        })
        .collect();
    // A 1 MiB request line.
    let big = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(1 << 20));
        // The daemon answers and closes after 8 KiB: the rest of the write may be refused.
        let _ = s.write_all(line.as_bytes());
        let mut answer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    });

    // Meanwhile a unit is killed: restarted on time, and `status` answers.
    mgr.kill_main("web");
    d.wait_for_stderr("web restarted during the abuse", T, |l| {
        l.contains("unit=web.service") && l.contains("result=restarted")
    });
    let status = cli_ok(&mgr, &cfg, &["status"]);
    assert!(status.contains("web.service"), "{status}");

    let answer = big.join().unwrap();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer:?}"
    );
    let mut served = 0;
    for t in flood {
        // Some of the thousand may be cut by the kernel's backlog; none may hang or get a 5xx.
        if let Ok(status) = t.join().unwrap() {
            assert_eq!(status, 200);
            served += 1;
        }
    }
    eprintln!("{served} of 1000 concurrent scrapes served");
    assert!(served > 0);
    drop(silent);
    drop(partial);
    // Afterwards a scrape is answered at once, and the daemon is still the same process.
    let text = get(port, "/metrics");
    assert_eq!(
        sample(
            &text,
            "unitwarden_restarts_total{unit=\"web.service\",result=\"restarted\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn a_port_in_use_is_a_clear_error_at_start_and_on_reload_and_the_watchdog_goes_on() {
    let mgr = Manager::start();
    sleeper(&mgr, "web");
    mgr.daemon_reload();
    mgr.systemctl_ok(&["start", "web"]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let policy =
        "[restart]\nbackoff_initial = \"0s\"\nverify_after = \"300ms\"\n[[unit]]\nname = \"web\"\n";
    let cfg = write_config(
        &mgr,
        &format!("[metrics]\nlisten = \"127.0.0.1:{busy}\"\n{policy}"),
    );
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_stderr("the bind failure", T, |l| {
        l.contains(&format!("metrics: cannot listen on 127.0.0.1:{busy}"))
            && l.contains("not served; the watchdog goes on")
    });
    d.wait_for_notify("READY=1", T, |m| m.contains("READY=1"));
    mgr.kill_main("web");
    d.wait_for_stderr("web restarted", T, |l| {
        l.contains("unit=web.service") && l.contains("result=restarted")
    });

    // A reload to a free port serves there.
    let port = free_port();
    write_config(
        &mgr,
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n{policy}"),
    );
    d.signal(1);
    d.wait_for_stderr("served after the reload", T, |l| {
        l.contains(&format!(
            "metrics served at http://127.0.0.1:{port}/metrics"
        ))
    });
    assert!(get(port, "/metrics").contains("unitwarden_unit_up{unit=\"web.service\"} 1"));

    // A reload back to the busy port fails, says so, and keeps the working listener.
    write_config(
        &mgr,
        &format!("[metrics]\nlisten = \"127.0.0.1:{busy}\"\n{policy}"),
    );
    d.signal(1);
    d.wait_for_stderr("the failure on reload", T, |l| {
        l.contains(&format!("metrics: cannot listen on 127.0.0.1:{busy}"))
            && l.contains(&format!("still served at http://127.0.0.1:{port}/metrics"))
    });
    assert!(get(port, "/metrics").contains("unitwarden_build_info"));
    drop(taken);
}

const GIVES_UP: &str = "[restart]\nbackoff_initial = \"0s\"\nverify_after = \"300ms\"\nmax_attempts = 2\ngive_up_cooldown = \"never\"\n";

/// A manager with `bad.service`, which fails at every start.
fn with_a_failing_unit() -> Manager {
    let mgr = Manager::start();
    mgr.write_unit(
        "bad.service",
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'exit 3'\n",
    );
    mgr.daemon_reload();
    mgr
}

fn alertmanager_config(mgr: &Manager, am_port: u16) -> PathBuf {
    write_config(
        mgr,
        &format!(
            "{GIVES_UP}[alertmanager]\nurl = \"http://127.0.0.1:{am_port}\"\n[[unit]]\nname = \"bad\"\n"
        ),
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

const GAVE_UP: &[(&str, &str)] = &[
    ("alertname", "UnitwardenGaveUp"),
    ("unit", "bad.service"),
    ("event", "gave_up"),
    ("severity", "critical"),
];

#[test]
fn a_given_up_unit_is_an_alert_in_a_real_alertmanager_until_retry_resolves_it() {
    let mgr = with_a_failing_unit();
    let am = Alertmanager::start(mgr.work_dir());
    let cfg = alertmanager_config(&mgr, am.port);
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    let alert = am.wait_for(GAVE_UP, T);
    eprintln!("alert: {alert:#}");
    assert_eq!(alert["labels"]["host"], hostname().as_str());
    assert_eq!(alert["status"]["state"], "active");
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(summary.contains("bad.service"), "{summary}");
    assert!(alert["annotations"]["journal"].is_string(), "{alert}");
    // The unit is down too, as a warning, and the failed attempts are one alert.
    let down = am.wait_for(
        &[
            ("unit", "bad.service"),
            ("event", "down"),
            ("severity", "warning"),
        ],
        T,
    );
    assert_eq!(down["labels"]["alertname"], "UnitwardenDown");
    let failed: Vec<_> = am
        .alerts()
        .into_iter()
        .filter(|a| a["labels"]["event"] == "restart_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");

    // Fixed and retried: restarted, and every alert of the unit resolves.
    mgr.write_unit("bad.service", "[Service]\nExecStart=/bin/sleep infinity\n");
    mgr.daemon_reload();
    cli_ok(&mgr, &cfg, &["retry", "bad"]);
    d.wait_for_stderr("bad restarted", T, |l| {
        l.contains("unit=bad.service") && l.contains("result=restarted")
    });
    wait_until("the alerts of bad.service to resolve", T, || {
        let left: Vec<_> = am
            .alerts()
            .into_iter()
            .filter(|a| {
                a["labels"]["unit"] == "bad.service"
                    && ["gave_up", "down", "restart_failed"]
                        .contains(&a["labels"]["event"].as_str().unwrap_or(""))
            })
            .collect();
        left.is_empty().then_some(())
    });
}

#[test]
fn an_alert_raised_while_alertmanager_is_down_arrives_when_it_is_back_across_a_kill_9() {
    let mgr = with_a_failing_unit();
    let mut am = Alertmanager::start(mgr.work_dir());
    am.stop();
    let cfg = alertmanager_config(&mgr, am.port);
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_stderr("the give-up", T, |l| {
        l.contains("unit=bad.service") && l.contains("action=give_up")
    });
    d.wait_for_stderr("a failed post", T, |l| {
        l.contains("alerts not posted") && l.contains("cannot connect")
    });
    let state = mgr.work_dir().join("state/alertmanager.json");
    wait_until("the give-up kept in state_dir", T, || {
        let kept = std::fs::read_to_string(&state).ok()?;
        kept.contains("UnitwardenGaveUp").then_some(())
    });

    // Killed while the alert waits; the next run has it from state_dir.
    d.kill9();
    let d = Daemon::spawn(&mgr, &cfg, &["run"]);
    d.wait_for_stderr("the alerts of the last run", T, |l| {
        l.contains("from an earlier run go to the Alertmanager")
    });
    am.restart();
    // Retried at most 30 s apart.
    let alert = am.wait_for(GAVE_UP, Duration::from_secs(60));
    assert_eq!(alert["status"]["state"], "active");
    d.wait_for_stderr("the recovery of the Alertmanager", T, |l| {
        l.contains("takes alerts again")
    });
}
