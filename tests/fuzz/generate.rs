//! Configs built from the key set of `src/config/raw.rs`: mostly plausible values (so that a
//! good share is accepted and reaches the engine), with values at and beyond the edges of
//! what each key takes mixed in. `every_key_of_raw_rs_is_generated` keeps the table in step
//! with raw.rs.

use unitwarden::alert::ALL_EVENTS;

use crate::rng::Rng;

/// What a key takes, as far as the generator cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dur,
    PosDur,
    Cooldown,
    Count,
    Positive,
    Multiplier,
    Bool,
    Text,
    WindowName,
    Path,
    AbsPath,
    Pattern,
    Deps,
    HhMm,
    Days,
    Tz,
    Address,
    Addresses,
    Level,
    Format,
    Rotation,
    Bus,
    Tls,
    DurList,
    Events,
    Port,
    Url,
    HostPort,
    Argv,
    /// `max_used_percent`, `memory_max_used_percent`.
    Percent,
    /// `load_max`.
    Load,
    /// `disk = [{ path, max_used_percent }, ...]`.
    Disks,
    Status,
    Host,
    /// Keys of sections whose feature is not built: anything goes.
    Any,
}

pub struct Section {
    /// `daemon`, `unit.probe`, ...
    pub name: &'static str,
    /// `[[name]]` rather than `[name]`.
    pub array: bool,
    pub keys: &'static [(&'static str, Kind)],
}

const RESTART_KEYS: &[(&str, Kind)] = &[
    ("max_attempts", Kind::Count),
    ("backoff_initial", Kind::Dur),
    ("backoff_multiplier", Kind::Multiplier),
    ("backoff_max", Kind::Dur),
    ("verify_after", Kind::Dur),
    ("reset_after", Kind::Dur),
    ("give_up_cooldown", Kind::Cooldown),
    ("restart_inactive", Kind::Bool),
    ("flap_restarts", Kind::Count),
    ("flap_window", Kind::PosDur),
];

pub const DAEMON: Section = Section {
    name: "daemon",
    array: false,
    keys: &[
        ("bus", Kind::Bus),
        ("interval", Kind::PosDur),
        ("log_dir", Kind::Path),
        ("log_rotation", Kind::Rotation),
        ("log_keep", Kind::Count),
        ("log_level", Kind::Level),
        ("log_format", Kind::Format),
        ("state_dir", Kind::Path),
        ("control_socket", Kind::AbsPath),
    ],
};
pub const RESTART: Section = Section {
    name: "restart",
    array: false,
    keys: RESTART_KEYS,
};
pub const WINDOW: Section = Section {
    name: "window",
    array: true,
    keys: &[
        ("name", Kind::WindowName),
        ("days", Kind::Days),
        ("start", Kind::HhMm),
        ("end", Kind::HhMm),
        ("timezone", Kind::Tz),
        ("interval", Kind::PosDur),
        ("failures", Kind::Positive),
        ("min_interval", Kind::Dur),
        ("preflight", Kind::PosDur),
    ],
};
/// `[[unit]]` takes `name`, `depends_on`, the recovery unit, `probe` and every key of
/// `[restart]`.
pub const UNIT: Section = Section {
    name: "unit",
    array: true,
    keys: &[
        ("name", Kind::Pattern),
        ("depends_on", Kind::Deps),
        ("recovery_unit", Kind::Pattern),
        ("recovery_after", Kind::Positive),
        ("recovery_timeout", Kind::PosDur),
    ],
};
pub const PROBE: Section = Section {
    name: "unit.probe",
    array: false,
    keys: &[
        ("http", Kind::Url),
        ("tcp", Kind::HostPort),
        ("exec", Kind::Argv),
        ("expect_status", Kind::Status),
        ("expect_body", Kind::Text),
        ("timeout", Kind::PosDur),
        ("failures", Kind::Positive),
        ("grace", Kind::Dur),
    ],
};
pub const EMAIL: Section = Section {
    name: "email",
    array: false,
    keys: &[
        ("smtp_host", Kind::Host),
        ("smtp_port", Kind::Port),
        ("tls", Kind::Tls),
        ("tls_verify", Kind::Bool),
        ("ca_file", Kind::AbsPath),
        ("timeout", Kind::PosDur),
        ("username", Kind::Text),
        ("password_file", Kind::AbsPath),
        ("password", Kind::Text),
        ("from", Kind::Address),
        ("to", Kind::Addresses),
        ("subject_prefix", Kind::Text),
        ("batch_window", Kind::Dur),
        ("min_interval", Kind::Dur),
        ("journal_lines", Kind::Count),
        ("remind_after", Kind::DurList),
        ("outbox_max_age", Kind::PosDur),
        ("notify_on", Kind::Events),
    ],
};
pub const RESOURCES: Section = Section {
    name: "resources",
    array: false,
    keys: &[
        ("resource_interval", Kind::PosDur),
        ("disk", Kind::Disks),
        ("memory_max_used_percent", Kind::Percent),
        ("load_max", Kind::Load),
    ],
};
/// Sections of features this release does not have (present = an error), and one that never
/// existed.
pub const METRICS: Section = Section {
    name: "metrics",
    array: false,
    keys: &[("listen", Kind::Any)],
};
pub const ALERTMANAGER: Section = Section {
    name: "alertmanager",
    array: false,
    keys: &[("url", Kind::Any)],
};

pub const SECTIONS: [&Section; 9] = [
    &DAEMON,
    &RESTART,
    &WINDOW,
    &UNIT,
    &PROBE,
    &EMAIL,
    &METRICS,
    &RESOURCES,
    &ALERTMANAGER,
];

/// Every key name, for key swaps.
pub fn all_keys() -> Vec<&'static str> {
    let mut keys: Vec<&str> = SECTIONS
        .iter()
        .flat_map(|s| s.keys.iter().map(|(k, _)| *k))
        .collect();
    keys.extend(RESTART_KEYS.iter().map(|(k, _)| *k));
    keys.extend(["probe", "window", "unit", "bogus_key", "Name", "name "]);
    keys.sort();
    keys.dedup();
    keys
}

/// The kind of `key` wherever it appears first, for value swaps that keep a line plausible.
pub fn kind_of(key: &str) -> Option<Kind> {
    SECTIONS
        .iter()
        .flat_map(|s| s.keys.iter())
        .chain(RESTART_KEYS)
        .find(|(k, _)| *k == key)
        .map(|(_, kind)| *kind)
}

/// A whole config.
pub fn config(rng: &mut Rng) -> String {
    let mut out = String::new();
    let mut units: Vec<String> = Vec::new();
    // Half the configs take only plausible values, so that a good share is accepted and
    // spends its day in the engine rather than at the first refused key; a fifth take the
    // extremes the validator accepts (zero, one nanosecond, `Duration::MAX`, `u32::MAX`),
    // which is where the engine's arithmetic is tested.
    let edges = match rng.below(10) {
        0..=4 => 0,
        5..=7 => 8,
        _ => EXTREMES,
    };
    // Keys and sections that are always refused (features not built, unknown keys).
    let edgy = edges == 8;
    if rng.percent(50) {
        section(rng, &mut out, &DAEMON, 40, &units, edges);
    }
    if rng.percent(60) {
        section(rng, &mut out, &RESTART, 35, &units, edges);
    }
    for i in 0..windows_count(rng) {
        out.push_str("[[window]]\n");
        out.push_str(&format!("name = \"w{i}\"\n"));
        if rng.percent(60) {
            out.push_str(&format!(
                "days = {}\n",
                value_at(rng, Kind::Days, &units, edges)
            ));
        }
        out.push_str(&format!(
            "start = {}\n",
            value_at(rng, Kind::HhMm, &units, edges)
        ));
        out.push_str(&format!(
            "end = {}\n",
            value_at(rng, Kind::HhMm, &units, edges)
        ));
        for (key, odds) in [
            ("timezone", 60),
            ("interval", 60),
            ("min_interval", 60),
            ("failures", 30),
            ("preflight", 30),
        ] {
            if rng.percent(odds) {
                let kind = kind_of(key).unwrap();
                out.push_str(&format!("{key} = {}\n", value_at(rng, kind, &units, edges)));
            }
        }
    }
    let count = units_count(rng);
    for i in 0..count {
        out.push_str("[[unit]]\n");
        let mut name = match count > 50 && rng.percent(95) {
            true => quoted(&format!("bulk-{i}")),
            false => value_at(rng, Kind::Pattern, &units, edges),
        };
        for _ in 0..3 {
            if !units.iter().any(|u| name == quoted(u)) {
                break;
            }
            name = value_at(rng, Kind::Pattern, &units, edges);
        }
        out.push_str(&format!("name = {name}\n"));
        if !units.is_empty() && rng.percent(25) {
            out.push_str(&format!(
                "depends_on = {}\n",
                value_at(rng, Kind::Deps, &units, edges)
            ));
        }
        for (key, kind) in RESTART_KEYS {
            if rng.percent(12) {
                out.push_str(&format!(
                    "{key} = {}\n",
                    value_at(rng, *kind, &units, edges)
                ));
            }
        }
        if rng.percent(12) {
            out.push_str(&format!(
                "recovery_unit = {}\n",
                value_at(rng, Kind::Pattern, &units, edges)
            ));
            for key in ["recovery_after", "recovery_timeout"] {
                if rng.percent(50) {
                    let kind = kind_of(key).unwrap();
                    out.push_str(&format!("{key} = {}\n", value_at(rng, kind, &units, edges)));
                }
            }
        }
        if edgy && rng.percent(6) {
            section(rng, &mut out, &PROBE, 50, &units, edges);
        } else if rng.percent(20) {
            // One kind of check, as the validator wants, and some of the other keys.
            out.push_str("[unit.probe]\n");
            let (kind_key, kind) = rng.pick(&PROBE.keys[..3]);
            out.push_str(&format!(
                "{kind_key} = {}\n",
                value_at(rng, kind, &units, edges)
            ));
            for (key, kind) in &PROBE.keys[3..] {
                let http_only = matches!(*key, "expect_status" | "expect_body");
                if (kind_key == "http" || !http_only) && rng.percent(30) {
                    out.push_str(&format!(
                        "{key} = {}\n",
                        value_at(rng, *kind, &units, edges)
                    ));
                }
            }
        }
        if !name.contains(['*', '?', '[']) {
            units.push(name.trim_matches('"').to_string());
        }
    }
    if rng.percent(30) {
        out.push_str("[email]\n");
        out.push_str(&format!(
            "to = {}\n",
            value_at(rng, Kind::Addresses, &units, edges)
        ));
        if !edgy {
            // The cross-key rules (a password needs a username, no ca_file without TLS)
            // followed, so that the section is accepted.
            let auth = rng.below(3);
            let tls = rng.pick(&["starttls", "tls", "none"]);
            for (key, kind) in EMAIL.keys {
                let wanted = match *key {
                    "to" => false,
                    "username" => auth > 0,
                    "password" => auth == 1,
                    "password_file" => auth == 2,
                    "tls" => true,
                    "ca_file" | "tls_verify" => false,
                    _ => rng.percent(30),
                };
                if *key == "tls" {
                    out.push_str(&format!("tls = {}\n", quoted(tls)));
                } else if wanted {
                    out.push_str(&format!(
                        "{key} = {}\n",
                        value_at(rng, *kind, &units, edges)
                    ));
                }
            }
        } else {
            for (key, kind) in EMAIL.keys.iter().filter(|(k, _)| *k != "to") {
                if rng.percent(30) {
                    out.push_str(&format!(
                        "{key} = {}\n",
                        value_at(rng, *kind, &units, edges)
                    ));
                }
            }
        }
    }
    if rng.percent(15) {
        section(rng, &mut out, &RESOURCES, 60, &units, edges);
        if rng.percent(70) {
            out.push_str(&format!(
                "load_max = {}\n",
                value_at(rng, Kind::Load, &units, edges)
            ));
        }
    }
    for s in [&METRICS, &ALERTMANAGER] {
        if edgy && rng.percent(4) {
            section(rng, &mut out, s, 80, &units, edges);
        }
    }
    if edgy && rng.percent(6) {
        out.push_str(&format!("bogus_key = {}\n", evil_value(rng)));
    }
    out
}

fn windows_count(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0..=5 => 0,
        6..=8 => 1 + rng.below(2),
        _ => 1 + rng.below(6),
    }
}

fn units_count(rng: &mut Rng) -> usize {
    match rng.below(200) {
        0..=9 => 0,
        10..=159 => 1 + rng.below(4),
        160..=184 => 5 + rng.below(12),
        // Enough to be read in slices (64 and more), and past a poll batch (256 names).
        185..=188 => 64 + rng.below(70),
        189 => 250 + rng.below(20),
        _ => 20 + rng.below(40),
    }
}

fn section(
    rng: &mut Rng,
    out: &mut String,
    s: &Section,
    percent: u64,
    units: &[String],
    edges: u64,
) {
    if s.array {
        out.push_str(&format!("[[{}]]\n", s.name));
    } else {
        out.push_str(&format!("[{}]\n", s.name));
    }
    for (key, kind) in s.keys {
        if rng.percent(percent) {
            out.push_str(&format!("{key} = {}\n", value_at(rng, *kind, units, edges)));
        }
    }
}

/// One `key = value` line for a random key of any section, for insertions.
pub fn line(rng: &mut Rng) -> String {
    let s = rng.pick(&SECTIONS);
    let keys = if s.name == "unit" && rng.percent(50) {
        RESTART_KEYS
    } else {
        s.keys
    };
    let (key, kind) = rng.pick(keys);
    format!(
        "{key} = {}\n",
        value(rng, kind, &["web".into(), "db".into()])
    )
}

/// A value for `kind` as TOML text: plausible most of the time, at or past an edge otherwise.
pub fn value(rng: &mut Rng, kind: Kind, units: &[String]) -> String {
    value_at(rng, kind, units, 8)
}

/// `edges` for values at the extremes the validator accepts, rather than past them.
const EXTREMES: u64 = 1000;

/// A value that is at or past an edge `edges` times in a hundred (or, for [`EXTREMES`], at
/// an accepted extreme most of the time).
fn value_at(rng: &mut Rng, kind: Kind, units: &[String], edges: u64) -> String {
    if edges == EXTREMES {
        if rng.percent(70)
            && let Some(v) = extreme(rng, kind)
        {
            return v;
        }
        return value_at(rng, kind, units, 0);
    }
    if edges > 0 && rng.percent(2) {
        return evil_value(rng);
    }
    let edge = rng.percent(edges);
    match kind {
        Kind::Dur => quoted(&duration(rng, edge, true)),
        Kind::PosDur => quoted(&duration(rng, edge, false)),
        Kind::Cooldown if rng.percent(20) => quoted("never"),
        Kind::Cooldown => quoted(&duration(rng, edge, true)),
        Kind::Count if edge => rng.pick(&EDGE_INTS).to_string(),
        Kind::Count if edges == 0 => rng.between(1, 12).to_string(),
        Kind::Count => rng.between(0, 12).to_string(),
        Kind::Positive if edge => rng.pick(&EDGE_INTS).to_string(),
        Kind::Positive => rng.between(1, 5).to_string(),
        Kind::Multiplier if edge => rng.pick(&EDGE_FLOATS).to_string(),
        Kind::Multiplier => rng.pick(&["1.0", "1.5", "2.0", "3", "10.0"]).to_string(),
        Kind::Bool => rng.pick(&["true", "false"]).to_string(),
        Kind::Text if edge => quoted(&evil_string(rng)),
        Kind::Text => quoted(rng.pick(&["ops", "[unitwarden]", "x", "hunter2", "ok"])),
        Kind::WindowName if edge => quoted(&evil_string(rng)),
        Kind::WindowName => quoted(rng.pick(&["monday-morning", "nightly", "w", "peak hours"])),
        Kind::Path | Kind::AbsPath if edge => quoted(rng.pick(&EVIL_PATHS)),
        Kind::Path | Kind::AbsPath => quoted(rng.pick(&[
            "/var/lib/unitwarden",
            "/var/log/unitwarden",
            "/run/unitwarden/control.sock",
            "/tmp/unitwarden-fuzz",
            "/etc/unitwarden/password",
        ])),
        Kind::Pattern => quoted(&unit_name(rng, edge, true)),
        Kind::Deps => {
            let n = 1 + rng.below(3);
            let names: Vec<String> = (0..n)
                .map(|_| match units.is_empty() || edge {
                    true => quoted(&unit_name(rng, edge, false)),
                    false => quoted(rng.pick_ref(units).as_str()),
                })
                .collect();
            format!("[{}]", names.join(", "))
        }
        Kind::HhMm if edge => quoted(rng.pick(&[
            "00:00", "23:59", "24:00", "7:30", "07:60", "-1:00", "12:00:00", "", "0x:00",
        ])),
        // Times that DST skips or repeats in the zones above, and the ends of the day.
        Kind::HhMm if rng.percent(40) => quoted(rng.pick(&[
            "00:00", "00:30", "01:00", "01:30", "01:59", "02:00", "02:30", "03:00", "03:30",
            "23:00", "23:30", "23:59", "12:00",
        ])),
        Kind::HhMm => quoted(&format!("{:02}:{:02}", rng.below(24), rng.below(60))),
        Kind::Days if edge => format!(
            "[{}]",
            (0..rng.below(9))
                .map(|_| quoted(rng.pick(&["mon", "sun", "Mon", "monday", "xyz", ""])))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Kind::Days => {
            let days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
            let chosen: Vec<String> = days
                .iter()
                .filter(|_| rng.percent(45))
                .map(|d| quoted(d))
                .collect();
            match chosen.is_empty() {
                true => "[\"mon\"]".into(),
                false => format!("[{}]", chosen.join(", ")),
            }
        }
        Kind::Tz if edge => quoted(rng.pick(&["local", "", "Europe/Nowhere", "../../etc/passwd"])),
        Kind::Tz => quoted(rng.pick(&ZONES)),
        Kind::Address => quoted(&address(rng, edge)),
        Kind::Addresses => {
            let n = if edge { rng.below(4) } else { 1 + rng.below(2) };
            let list: Vec<String> = (0..n).map(|_| quoted(&address(rng, edge))).collect();
            format!("[{}]", list.join(", "))
        }
        Kind::Level | Kind::Format | Kind::Rotation | Kind::Bus | Kind::Tls if edge => {
            quoted(rng.pick(&["loud", "xml", "weekly", "session", "ssl", "", "System"]))
        }
        Kind::Level => quoted(rng.pick(&["error", "warn", "info", "debug", "trace"])),
        Kind::Format => quoted(rng.pick(&["text", "json"])),
        Kind::Rotation => quoted(rng.pick(&["hourly", "daily", "never"])),
        Kind::Bus => quoted(rng.pick(&["system", "user"])),
        Kind::Tls => quoted(rng.pick(&["starttls", "tls", "none"])),
        Kind::DurList => {
            let n = if edge { rng.below(6) } else { 1 + rng.below(3) };
            let list: Vec<String> = (0..n)
                .map(|_| quoted(&duration(rng, edge, false)))
                .collect();
            format!("[{}]", list.join(", "))
        }
        Kind::Events => {
            let n = if edge {
                rng.below(20)
            } else {
                1 + rng.below(5)
            };
            let list: Vec<String> = (0..n)
                .map(|_| match edge {
                    true => quoted(rng.pick(&["probe_failed", "resource", "exploded", "", "Down"])),
                    false => quoted(rng.pick(&ALL_EVENTS).as_str()),
                })
                .collect();
            format!("[{}]", list.join(", "))
        }
        Kind::Port if edge => rng.pick(&["0", "65535", "65536", "-1", "25.0"]).to_string(),
        Kind::Port => rng.pick(&["25", "465", "587", "2525"]).to_string(),
        Kind::Url => quoted(rng.pick(&[
            "http://127.0.0.1:8000/health/",
            "https://example.com",
            "ftp://x",
            "",
        ])),
        Kind::HostPort => quoted(rng.pick(&["127.0.0.1:5432", "[::1]:80", "host", "h:99999"])),
        Kind::Argv => rng
            .pick(&[
                "[\"/bin/true\"]",
                "[]",
                "[\"\"]",
                "[\"/bin/sh\", \"-c\", \"exit 0\"]",
            ])
            .to_string(),
        Kind::Status => rng.pick(&["200", "0", "999", "65535"]).to_string(),
        Kind::Percent if edge => rng.pick(&EDGE_INTS).to_string(),
        Kind::Percent => rng.between(50, 99).to_string(),
        Kind::Load if edge => rng.pick(&EDGE_FLOATS).to_string(),
        Kind::Load => rng.pick(&["0.5", "1.0", "2.0", "4", "0.01"]).to_string(),
        Kind::Disks => {
            let n = if edge { rng.below(4) } else { 1 + rng.below(2) };
            let list: Vec<String> = (0..n)
                .map(|_| {
                    format!(
                        "{{ path = {}, max_used_percent = {} }}",
                        value_at(rng, Kind::AbsPath, units, if edge { 50 } else { 0 }),
                        value_at(rng, Kind::Percent, units, if edge { 50 } else { 0 })
                    )
                })
                .collect();
            format!("[{}]", list.join(", "))
        }
        Kind::Host if edge => quoted(&evil_string(rng)),
        Kind::Host => quoted(rng.pick(&["localhost", "smtp.example.com", "127.0.0.1"])),
        Kind::Any => evil_value(rng),
    }
}

pub const ZONES: [&str; 16] = [
    "UTC",
    "Europe/Istanbul",
    "Europe/Berlin",
    "Europe/Dublin",
    "America/New_York",
    "America/St_Johns",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "Pacific/Kiritimati",
    "Pacific/Chatham",
    "Asia/Kathmandu",
    "Asia/Tehran",
    "Africa/Casablanca",
    "Antarctica/Troll",
    "Etc/GMT+12",
];

const EDGE_INTS: [&str; 14] = [
    "0",
    "1",
    "-1",
    "255",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "1_000",
    "0x10",
];

const EDGE_FLOATS: [&str; 14] = [
    "1.0",
    "1",
    "0.999999",
    "1.0000001",
    "0.0",
    "-0.0",
    "-2.0",
    "1e308",
    "1.7976931348623157e308",
    "4.9e-324",
    "inf",
    "-inf",
    "nan",
    "100000.0",
];

const EVIL_PATHS: [&str; 8] = [
    "/",
    "relative/dir",
    "",
    ".",
    "/dev/null",
    "/proc/self/fd/0",
    "/tmp/a\u{0}b",
    "~/x",
];

/// An accepted value at the far end of what `kind` takes, if it has one.
fn extreme(rng: &mut Rng, kind: Kind) -> Option<String> {
    const LONG: [&str; 5] = [
        "18446744073709551615s 999999999ns",
        "18446744073709551615s",
        "584942417354y",
        "1000000000y",
        "100y",
    ];
    let v = match kind {
        Kind::Dur | Kind::Cooldown if rng.percent(30) => quoted(rng.pick(&["0s", "0ns"])),
        Kind::Dur | Kind::PosDur | Kind::Cooldown if rng.percent(30) => {
            quoted(rng.pick(&["1ns", "1us", "1ms"]))
        }
        Kind::Dur | Kind::PosDur | Kind::Cooldown => quoted(rng.pick(&LONG)),
        Kind::Count | Kind::Positive => rng.pick(&["1", "4294967295", "4294967294"]).to_string(),
        Kind::Multiplier => rng
            .pick(&["1.0", "1.7976931348623157e308", "1.0000000000000002"])
            .to_string(),
        Kind::DurList => format!("[{}]", quoted(rng.pick(&LONG))),
        Kind::Port => rng.pick(&["1", "65535"]).to_string(),
        Kind::Percent => rng.pick(&["1", "100"]).to_string(),
        Kind::Load => rng.pick(&["1000", "0.000001", "1e-300"]).to_string(),
        Kind::HhMm => quoted(rng.pick(&["00:00", "23:59", "02:00", "02:30", "01:00"])),
        _ => return None,
    };
    Some(v)
}

/// Durations as humantime reads them, from zero (if allowed) to beyond what `Duration` holds.
pub fn duration(rng: &mut Rng, edge: bool, zero: bool) -> String {
    if edge {
        let d = rng.pick(&EDGE_DURATIONS);
        return if !zero && d.starts_with('0') {
            "1ns".into()
        } else {
            d.into()
        };
    }
    let units = ["ms", "s", "m", "h", "d"];
    let n = rng.between(u64::from(!zero), 90);
    format!("{n}{}", rng.pick(&units))
}

pub const EDGE_DURATIONS: [&str; 24] = [
    "0s",
    "0ns",
    "1ns",
    "1us",
    "999ms",
    "1ms",
    "59s",
    "24h",
    "7d",
    "1w",
    "1M",
    "1y",
    "100y",
    "1000y",
    "1000000000y",
    "584942417355y",
    "584942417354y",
    "213503982334601d",
    "9223372036854775807s",
    "9223372036854775808s",
    "18446744073709551615s",
    "18446744073709551615s 999999999ns",
    "18446744073709551615s 999ms",
    "1y 1M 1w 1d 1h 1m 1s 1ms 1us 1ns",
];

/// Unit names and globs: common ones, systemd's odd corners, and text that is neither.
pub fn unit_name(rng: &mut Rng, edge: bool, globs: bool) -> String {
    if edge {
        return match rng.below(6) {
            0 => evil_string(rng),
            1 => "a".repeat(rng.pick(&[240usize, 247, 248, 255, 256, 300])),
            2 => format!("{}.service", "b".repeat(rng.pick(&[246usize, 247, 248]))),
            _ => rng
                .pick(&[
                    "*",
                    "?",
                    "[",
                    "]",
                    "[!a]*",
                    "a@",
                    "@b",
                    ".service",
                    "a.service.service",
                    "-",
                    "a b",
                    "a/b",
                    "../x",
                    "a\\x2db",
                    "x.mount",
                    "x.slice",
                    "x.scope",
                    "x.target",
                    "x.timer",
                    "x.socket",
                    "x.device",
                    "x.swap",
                    "x.path",
                    "x.automount",
                    "getty@",
                    "getty@.service",
                    "web\u{7f}",
                    "ünï",
                    "*@*",
                    "**",
                    "[a-",
                    "x\\",
                    ":",
                    "a:b@c.d",
                ])
                .to_string(),
        };
    }
    let base = rng.pick(&[
        "web",
        "db",
        "nginx",
        "postgresql@15-main",
        "gunicorn",
        "sshd",
        "redis-server",
        "worker-1",
        "worker-2",
        "getty@tty1",
        "systemd-journald",
        "cron",
        "a",
        "x_y.z",
    ]);
    if globs && rng.percent(20) {
        return rng
            .pick(&[
                "celery@*", "worker-?", "app[12]", "*.timer", "web*", "*", "w[!0]*",
            ])
            .to_string();
    }
    match rng.below(8) {
        0 => format!("{base}.service"),
        1 => format!("{base}{}", rng.below(100)),
        _ => base.to_string(),
    }
}

fn address(rng: &mut Rng, edge: bool) -> String {
    if edge {
        return rng
            .pick(&[
                "@",
                "a@",
                "@b",
                "a@b@c",
                "a@.b",
                "a@b.",
                "<>",
                "a b@c",
                "Ops <ops@example.com",
                "ops@example.com\r\nBcc: evil@x",
                "ünï@example.com",
                "a@b",
                "",
            ])
            .to_string();
    }
    rng.pick(&[
        "ops@example.com",
        "Ops <ops@example.com>",
        "root@localhost",
        "a@b",
    ])
    .to_string()
}

/// Strings that cross boundaries badly: control characters, bidi overrides, line separators,
/// long and non-ASCII text.
pub fn evil_string(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => String::new(),
        1 => " ".into(),
        2 => "\u{0}".into(),
        3 => "a\nb".into(),
        4 => "\r\n".into(),
        5 => "\u{1b}[31mred".into(),
        6 => "\u{202e}evil\u{2028}\u{2029}\u{85}".into(),
        7 => "日本語😀ünï".into(),
        8 => "x".repeat(rng.between(200, 5000) as usize),
        9 => "\t\u{7f}\u{feff}".into(),
        10 => "${HOME}%s%n{}\\".into(),
        _ => "\"'<>&;|`$(reboot)".into(),
    }
}

/// Any TOML value at all, of any type.
pub fn evil_value(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => rng.pick(&EDGE_INTS).to_string(),
        1 => rng.pick(&EDGE_FLOATS).to_string(),
        2 => quoted(&evil_string(rng)),
        3 => quoted(rng.pick(&EDGE_DURATIONS)),
        4 => rng
            .pick(&[
                "[]",
                "[\"\"]",
                "[\"a\", \"a\"]",
                "[1, 2]",
                "[[]]",
                "[\"5s\", 5]",
            ])
            .to_string(),
        5 => rng
            .pick(&["{}", "{ a = 1 }", "{ name = \"web\" }"])
            .to_string(),
        6 => rng
            .pick(&[
                "true",
                "false",
                "1979-05-27T07:32:00Z",
                "07:32:00",
                "1979-05-27",
            ])
            .to_string(),
        _ => quoted(&unit_name(rng, true, true)),
    }
}

/// `s` as a TOML basic string: quotes, backslashes and control characters escaped.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
