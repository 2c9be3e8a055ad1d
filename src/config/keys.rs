//! Every section and key of the config file, with its default and what it does: the one table
//! the man page's CONFIGURATION section is rendered from. `build.rs` includes this file as it
//! does `src/args.rs`, so it stays free of crate dependencies; its tests hold the table against
//! what the reader (`raw`, `validate`) accepts, refuses and defaults to, so the two cannot drift.

/// Whether this release does what a section or key asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Read and acted on.
    This,
    /// Described by SPEC.md for a later release. The reader knows it so it can refuse it by
    /// name: a config that sets it is an error (exit 2), never a silent no-op.
    Later,
}

/// A table of the file: `[daemon]`, or `[[unit]]` when `repeated`.
pub struct Section {
    /// As in the header: `daemon`, `unit`, `unit.probe` (a table inside each `[[unit]]`).
    pub name: &'static str,
    pub repeated: bool,
    pub doc: &'static str,
    pub release: Release,
}

/// What applies when a key is not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unset {
    /// The key must be set.
    Required,
    /// This value, written as in the file (TOML).
    Value(&'static str),
    /// No single value stands for it: what happens instead, in words.
    Means(&'static str),
}

pub struct Key {
    /// [`Section::name`] of the table it belongs to.
    pub section: &'static str,
    pub name: &'static str,
    pub unset: Unset,
    /// A value the reader accepts, written as in the file (TOML).
    pub example: &'static str,
    pub doc: &'static str,
    pub release: Release,
}

impl Key {
    /// Whether this release acts on the key: its own release and its section's.
    pub fn in_this_release(&self) -> bool {
        self.release == Release::This
            && SECTIONS
                .iter()
                .any(|s| s.name == self.section && s.release == Release::This)
    }
}

const fn section(
    name: &'static str,
    repeated: bool,
    release: Release,
    doc: &'static str,
) -> Section {
    Section {
        name,
        repeated,
        doc,
        release,
    }
}

const fn key(
    section: &'static str,
    name: &'static str,
    unset: Unset,
    example: &'static str,
    doc: &'static str,
) -> Key {
    Key {
        section,
        name,
        unset,
        example,
        doc,
        release: Release::This,
    }
}

use Release::This;
use Unset::{Means, Required, Value};

/// In the order the man page lists them.
pub const SECTIONS: &[Section] = &[
    section("daemon", false, This, "The daemon itself."),
    section(
        "restart",
        false,
        This,
        "How units are restarted. These are the defaults of every [[unit]], which may set any of these keys for itself.",
    ),
    section(
        "window",
        true,
        This,
        "A critical window: a weekly stretch of wall-clock time during which units are checked more often. Where windows overlap, the shortest interval applies.",
    ),
    section(
        "unit",
        true,
        This,
        "A unit to keep running. Besides the keys below, any key of [restart] overrides the default for this unit.",
    ),
    section(
        "unit.probe",
        false,
        This,
        "A health probe for the unit: exactly one of http, tcp or exec.",
    ),
    section(
        "email",
        false,
        This,
        "Email alerts. Without this section, events are only logged.",
    ),
    section(
        "metrics",
        false,
        This,
        "Prometheus metrics at http://LISTEN/metrics. Without this section, nothing listens.",
    ),
    section(
        "alertmanager",
        false,
        This,
        "Every event is also posted to this Prometheus Alertmanager (v2 API): a unit's alerts stay active while it is down or given up and resolve when it is back. Without this section, nothing is posted.",
    ),
    section(
        "resources",
        false,
        This,
        "Host checks: disk use per path, memory use and load. Crossing a threshold is one resource event, going back below it (with a margin, see the README) one recovered event.",
    ),
];

/// In the order the man page lists them, section by section.
pub const KEYS: &[Key] = &[
    key(
        "daemon",
        "bus",
        Value(r#""system""#),
        r#""user""#,
        r#"The manager to watch: "system", or "user" for the calling user's own systemd --user."#,
    ),
    key(
        "daemon",
        "interval",
        Value(r#""60s""#),
        r#""30s""#,
        "How often every watched unit is listed anew, as a safety net: failures are seen at once through D-Bus signals.",
    ),
    key(
        "daemon",
        "log_dir",
        Value(r#""/var/log/unitwarden""#),
        r#""/var/log/unitwarden""#,
        "Directory of the rotating log files and of the unitwarden.log symlink to the current one.",
    ),
    key(
        "daemon",
        "log_rotation",
        Value(r#""daily""#),
        r#""hourly""#,
        r#""hourly", "daily" or "never", at local-time boundaries."#,
    ),
    key(
        "daemon",
        "log_keep",
        Value("14"),
        "30",
        "How many log files are kept, the current one included.",
    ),
    key(
        "daemon",
        "log_level",
        Value(r#""info""#),
        r#""debug""#,
        r#""error", "warn", "info", "debug" or "trace"."#,
    ),
    key(
        "daemon",
        "log_format",
        Value(r#""text""#),
        r#""json""#,
        r#""text" (key=value fields) or "json" (one object per line)."#,
    ),
    key(
        "daemon",
        "state_dir",
        Value(r#""/var/lib/unitwarden""#),
        r#""/var/lib/unitwarden""#,
        "Attempt counters, give-ups, alert threads and the outbox of unsent email; they survive a restart of unitwarden.",
    ),
    key(
        "daemon",
        "control_socket",
        Value(r#""/run/unitwarden/control.sock""#),
        r#""/run/unitwarden/control.sock""#,
        "The Unix socket that status, pause, resume and retry talk to (0660: its group may read status, root may change things).",
    ),
    key(
        "restart",
        "max_attempts",
        Value("3"),
        "5",
        "Restart attempts in one episode before unitwarden gives up on the unit.",
    ),
    key(
        "restart",
        "backoff_initial",
        Value(r#""5s""#),
        r#""1s""#,
        "Wait before the first attempt. Attempt k waits min(backoff_max, backoff_initial * backoff_multiplier^(k-1)), plus or minus 10%.",
    ),
    key(
        "restart",
        "backoff_multiplier",
        Value("2.0"),
        "1.5",
        "Growth of the wait from one attempt to the next (at least 1).",
    ),
    key(
        "restart",
        "backoff_max",
        Value(r#""5m""#),
        r#""10m""#,
        "The longest wait between attempts.",
    ),
    key(
        "restart",
        "verify_after",
        Value(r#""10s""#),
        r#""30s""#,
        "A restart counts as successful only if the unit is still active this long after it.",
    ),
    key(
        "restart",
        "reset_after",
        Value(r#""10m""#),
        r#""1h""#,
        "An episode ends, and its attempt count with it, once the unit has been healthy this long.",
    ),
    key(
        "restart",
        "give_up_cooldown",
        Value(r#""1h""#),
        r#""never""#,
        r#"After giving up, a new episode may start this much later; "never" leaves the unit alone until an operator acts."#,
    ),
    key(
        "restart",
        "restart_inactive",
        Value("true"),
        "false",
        "Start a unit found inactive (stopped), not only a failed one. Applies to units named exactly, not to globs.",
    ),
    key(
        "restart",
        "flap_restarts",
        Value("5"),
        "3",
        "A unit that systemd's own Restart= brings back this many times within flap_window is reported as flapping.",
    ),
    key(
        "restart",
        "flap_window",
        Value(r#""10m""#),
        r#""1h""#,
        "See flap_restarts.",
    ),
    key(
        "window",
        "name",
        Required,
        r#""monday-morning""#,
        "Names the window in logs, Status: and email; unique.",
    ),
    key(
        "window",
        "days",
        Means("every day"),
        r#"["mon", "tue"]"#,
        r#"Days it starts on: "mon" to "sun"."#,
    ),
    key(
        "window",
        "start",
        Required,
        r#""07:30""#,
        "Wall-clock start, HH:MM.",
    ),
    key(
        "window",
        "end",
        Required,
        r#""08:30""#,
        "Wall-clock end, HH:MM; an end before the start crosses midnight.",
    ),
    key(
        "window",
        "timezone",
        Means("the host's local time"),
        r#""Europe/Istanbul""#,
        "IANA time zone of start and end.",
    ),
    key(
        "window",
        "interval",
        Means("the daemon's interval"),
        r#""10s""#,
        "Check interval while the window is active; it only ever shortens [daemon] interval.",
    ),
    key(
        "window",
        "failures",
        Means("the probe's failures"),
        "1",
        "Probe failures in a row before a unit counts as down while the window is active.",
    ),
    key(
        "window",
        "min_interval",
        Means("[email] min_interval"),
        r#""5m""#,
        "The same alert for the same unit is not emailed again within this, while the window is active.",
    ),
    key(
        "window",
        "preflight",
        Means("no pre-flight check"),
        r#""10m""#,
        "This long before each start of the window, every unit is checked, every probe run once and the resources read, and one preflight event says all is well or what is wrong.",
    ),
    key(
        "unit",
        "name",
        Required,
        r#""nginx""#,
        r#"A unit name (".service" may be omitted), an alias, or a glob such as "celery@*.service"; unique."#,
    ),
    key(
        "unit",
        "depends_on",
        Value("[]"),
        r#"["postgresql"]"#,
        "Units, each another [[unit]] named exactly, that must be back and verified before this one is restarted; cycles are refused.",
    ),
    key(
        "unit",
        "recovery_unit",
        Means("no recovery unit"),
        r#""backend-restart.service""#,
        "A unit (often a oneshot running a repair script) started once per episode after recovery_after failed attempts; its job, and for a oneshot the run, is awaited before the next attempt.",
    ),
    key(
        "unit",
        "recovery_after",
        Value("1"),
        "2",
        "Failed attempts before the recovery unit runs; must be below max_attempts.",
    ),
    key(
        "unit",
        "recovery_timeout",
        Value(r#""5m""#),
        r#""2m""#,
        "Bound on the recovery unit's start (for a oneshot, on its run); the restarts go on after it either way.",
    ),
    key(
        "unit.probe",
        "http",
        Means("no HTTP probe"),
        r#""http://127.0.0.1:8000/health/""#,
        "http:// or https:// URL to GET (HTTP/1.1, redirects not followed; https verified against the system's CA certificates); no user:password@ or #fragment, an IPv6 address in brackets.",
    ),
    key(
        "unit.probe",
        "tcp",
        Means("no TCP probe"),
        r#""127.0.0.1:5432""#,
        "host:port to connect to; an IPv6 address in brackets: \"[::1]:5432\".",
    ),
    key(
        "unit.probe",
        "exec",
        Means("no command"),
        r#"["/usr/local/bin/check", "--quick"]"#,
        "Command and arguments, without a shell; exit 0 is healthy.",
    ),
    key(
        "unit.probe",
        "expect_status",
        Means("any 2xx"),
        "204",
        "HTTP status the http probe expects.",
    ),
    key(
        "unit.probe",
        "expect_body",
        Means("any body"),
        r#""ok""#,
        "Text the http probe's response body must contain, within its first 64 KiB.",
    ),
    key(
        "unit.probe",
        "timeout",
        Value(r#""5s""#),
        r#""3s""#,
        "Bound on one probe.",
    ),
    key(
        "unit.probe",
        "failures",
        Value("3"),
        "2",
        "Failures in a row before the unit counts as down.",
    ),
    key(
        "unit.probe",
        "grace",
        Value(r#""30s""#),
        r#""1m""#,
        "After the unit (re)starts, probe failures within this do not count.",
    ),
    key(
        "email",
        "smtp_host",
        Value(r#""localhost""#),
        r#""smtp.example.com""#,
        "SMTP server.",
    ),
    key("email", "smtp_port", Value("25"), "587", "SMTP port."),
    key(
        "email",
        "tls",
        Value(r#""starttls""#),
        r#""tls""#,
        r#""starttls", "tls" (implicit TLS, usually port 465) or "none"."#,
    ),
    key(
        "email",
        "tls_verify",
        Value("true"),
        "false",
        "Check the server's certificate and host name; false accepts any certificate (prefer ca_file).",
    ),
    key(
        "email",
        "ca_file",
        Means("the system's certificate store only"),
        r#""/etc/unitwarden/relay-ca.pem""#,
        "PEM file of extra CA certificates to trust.",
    ),
    key(
        "email",
        "timeout",
        Value(r#""30s""#),
        r#""10s""#,
        "Bound on one whole delivery: connect, TLS, AUTH, DATA.",
    ),
    key(
        "email",
        "username",
        Means("no AUTH"),
        r#""alerts@example.com""#,
        "SMTP AUTH user.",
    ),
    key(
        "email",
        "password_file",
        Means("no file"),
        r#""/etc/unitwarden/smtp-password""#,
        "File holding the SMTP password on one line (mode 0600); $UNITWARDEN_SMTP_PASSWORD wins over it.",
    ),
    key(
        "email",
        "password",
        Means("no password"),
        r#""hunter2""#,
        "The SMTP password written in the file itself; works, with a warning (prefer password_file).",
    ),
    key(
        "email",
        "from",
        Means("unitwarden@HOSTNAME"),
        r#""unitwarden <unitwarden@web-1.example.com>""#,
        "Sender address.",
    ),
    key(
        "email",
        "to",
        Required,
        r#"["ops@example.com"]"#,
        "Recipients, at least one.",
    ),
    key(
        "email",
        "subject_prefix",
        Value(r#""[unitwarden]""#),
        r#""[web-1]""#,
        "Start of every subject.",
    ),
    key(
        "email",
        "batch_window",
        Value(r#""30s""#),
        r#""1m""#,
        "Events within this of the first one go out as one email.",
    ),
    key(
        "email",
        "min_interval",
        Value(r#""15m""#),
        r#""1h""#,
        "The same event for the same unit is not emailed again within this; the next email counts the ones left out.",
    ),
    key(
        "email",
        "journal_lines",
        Value("20"),
        "50",
        "Lines of the unit's journal in each email.",
    ),
    key(
        "email",
        "remind_after",
        Value(r#"["1h", "4h", "24h"]"#),
        "[]",
        "Reminders while a unit stays given up, counted from the give-up.",
    ),
    key(
        "email",
        "outbox_max_age",
        Value(r#""7d""#),
        r#""1d""#,
        "An email the server has not taken by then is dropped, with an error in the log.",
    ),
    key(
        "email",
        "notify_on",
        Means("every event"),
        r#"["down", "gave_up", "recovered"]"#,
        "The events that are emailed: down, restarted, restart_failed, gave_up, recovered, not_found, probe_failed, flapping, crashed, operator_stop, operator, recovery, preflight, config_reload_failed, resource, started, stopping.",
    ),
    key(
        "metrics",
        "listen",
        Value(r#""127.0.0.1:9717""#),
        r#""[::1]:9717""#,
        "IP address and port of the metrics listener. An address beyond loopback is reachable from the network, without authentication (check-config warns).",
    ),
    key(
        "alertmanager",
        "url",
        Required,
        r#""http://127.0.0.1:9093""#,
        "The Alertmanager, http://HOST[:PORT][/PREFIX]; plain HTTP only (on this host or the LAN, or a local proxy that adds TLS).",
    ),
    key(
        "alertmanager",
        "timeout",
        Value(r#""10s""#),
        r#""3s""#,
        "Bound on one post to the Alertmanager; an unreachable one is retried with backoff, and alerts wait in state_dir meanwhile.",
    ),
    key(
        "alertmanager",
        "journal_lines",
        Value("10"),
        "0",
        "Lines of the unit's journal in an alert's journal annotation.",
    ),
    key(
        "resources",
        "resource_interval",
        Value(r#""1h""#),
        r#""5m""#,
        "How often the host is checked.",
    ),
    key(
        "resources",
        "disk",
        Value("[]"),
        r#"[{ path = "/", max_used_percent = 90 }]"#,
        "File systems to check: the one holding path, used above max_used_percent (1-100) of what users may fill.",
    ),
    key(
        "resources",
        "memory_max_used_percent",
        Means("memory is not checked"),
        "90",
        "Memory in use (MemTotal minus MemAvailable) above this percentage (1-100).",
    ),
    key(
        "resources",
        "load_max",
        Means("load is not checked"),
        "2.0",
        "The 1-minute load average per CPU above this.",
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<String, String> {
        crate::config::parse(Path::new("/t.toml"), text)
            .map(|s| format!("{s:?}"))
            .map_err(|e| e.to_string())
    }

    fn section_of(name: &str) -> &'static Section {
        SECTIONS
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no section {name:?} in SECTIONS"))
    }

    /// Keys that only make sense next to another one, with that one.
    fn companion(k: &Key) -> &'static str {
        match (k.section, k.name) {
            ("email", "password" | "password_file") => "username = \"alerts\"\n",
            ("unit.probe", "http" | "tcp" | "exec") => "",
            ("unit.probe", _) => "http = \"http://127.0.0.1/\"\n",
            ("unit", "recovery_after" | "recovery_timeout") => "recovery_unit = \"fix\"\n",
            ("resources", "load_max") => "memory_max_used_percent = 90\n",
            ("resources", _) => "load_max = 2.0\n",
            _ => "",
        }
    }

    /// A document with `section` and its required keys, the required key `leave_out` left out,
    /// then `extra` lines in the section. A second unit follows: [restart] shows in Settings
    /// through it, and the example of `depends_on` names it.
    fn document(section: &str, leave_out: Option<&str>, extra: &str) -> String {
        let required = |s: &str| {
            KEYS.iter()
                .filter(|k| k.section == s && k.unset == Unset::Required)
                .filter(|k| Some(k.name) != leave_out || k.section != section)
                .map(|k| format!("{} = {}\n", k.name, k.example))
                .collect::<String>()
        };
        let header = |s: &Section| {
            if s.repeated {
                format!("[[{}]]\n", s.name)
            } else {
                format!("[{}]\n", s.name)
            }
        };
        let mut text = String::new();
        if let Some((parent, _)) = section.split_once('.') {
            text += &header(section_of(parent));
            text += &required(parent);
        }
        text += &header(section_of(section));
        text += &required(section);
        text += extra;
        text + "[[unit]]\nname = \"postgresql\"\n"
    }

    /// The fields the reader accepts in `section`, from serde's answer to an unknown one.
    fn accepted(section: Option<&str>) -> BTreeSet<String> {
        let text = match section {
            None => "zz_not_a_key = 1\n".to_string(),
            Some(s) => document(s, None, "zz_not_a_key = 1\n"),
        };
        let err = parse(&text).expect_err(&text);
        let (_, expected) = err
            .split_once("expected")
            .unwrap_or_else(|| panic!("no list of accepted fields in {err:?}"));
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect()
    }

    fn names<'a>(keys: impl Iterator<Item = &'a Key>) -> BTreeSet<String> {
        keys.map(|k| k.name.to_string()).collect()
    }

    #[test]
    fn every_section_the_reader_accepts_is_in_the_table_and_no_other() {
        let top: BTreeSet<String> = SECTIONS
            .iter()
            .filter(|s| !s.name.contains('.'))
            .map(|s| s.name.to_string())
            .collect();
        assert_eq!(accepted(None), top);
        for s in SECTIONS {
            // A later section's own mistakes are reported first: give it a key it takes.
            let extra = match s.release {
                Release::This => match s.name {
                    "unit.probe" => "http = \"http://127.0.0.1/\"\n".to_string(),
                    "resources" => "load_max = 2.0\n".to_string(),
                    _ => String::new(),
                },
                Release::Later => KEYS
                    .iter()
                    .find(|k| k.section == s.name)
                    .map(|k| format!("{} = {}\n", k.name, k.example))
                    .unwrap_or_default(),
            };
            let text = document(s.name, None, &extra);
            match s.release {
                Release::This => {
                    parse(&text).unwrap_or_else(|e| panic!("[{}]: {e}\n{text}", s.name));
                }
                Release::Later => {
                    let e = parse(&text).expect_err(&text);
                    assert!(e.contains("is not available in this release"), "{e}");
                }
            }
        }
    }

    #[test]
    fn every_key_the_reader_accepts_is_in_the_table_and_no_other() {
        for s in SECTIONS {
            let keys = KEYS.iter().filter(|k| k.section == s.name);
            let mut want = names(keys);
            // Any [restart] key may be set in a [[unit]] (see the section's doc), and a
            // sub-table is a key of its parent.
            if s.name == "unit" {
                want.extend(names(KEYS.iter().filter(|k| k.section == "restart")));
            }
            for sub in SECTIONS {
                if let Some((parent, name)) = sub.name.split_once('.')
                    && parent == s.name
                {
                    want.insert(name.to_string());
                }
            }
            assert_eq!(accepted(Some(s.name)), want, "keys of [{}]", s.name);
        }
        for k in KEYS {
            section_of(k.section);
        }
    }

    #[test]
    fn every_example_is_accepted_and_every_later_key_refused_by_name() {
        for k in KEYS {
            let line = format!("{}{} = {}\n", companion(k), k.name, k.example);
            let text = document(k.section, Some(k.name), &line);
            let got = parse(&text);
            if k.in_this_release() {
                got.unwrap_or_else(|e| panic!("{} = {}: {e}\n{text}", k.name, k.example));
            } else {
                let e = got.expect_err(&text);
                assert!(
                    e.contains("is not available in this release"),
                    "{} should be refused as a later release's: {e}",
                    k.name
                );
            }
        }
    }

    #[test]
    fn every_default_is_what_the_reader_assumes_and_required_keys_are() {
        for k in KEYS.iter().filter(|k| k.in_this_release()) {
            let without = document(k.section, None, companion(k));
            match k.unset {
                Unset::Value(v) => {
                    let line = format!("{}{} = {v}\n", companion(k), k.name);
                    let with = document(k.section, None, &line);
                    assert_eq!(
                        parse(&with),
                        parse(&without),
                        "[{}] {} = {v} should change nothing",
                        k.section,
                        k.name
                    );
                }
                Unset::Required => {
                    let text = document(k.section, Some(k.name), "");
                    let e = parse(&text).expect_err(&text);
                    assert!(e.contains("missing field"), "{e}");
                }
                Unset::Means(_) => {}
            }
        }
    }

    #[test]
    fn notify_on_names_exactly_the_events_it_accepts() {
        let doc = KEYS
            .iter()
            .find(|k| k.section == "email" && k.name == "notify_on")
            .unwrap()
            .doc;
        let (_, listed) = doc.split_once(": ").unwrap();
        let listed: BTreeSet<&str> = listed.trim_end_matches('.').split(", ").collect();
        let accepted: BTreeSet<&str> = crate::alert::ALL_EVENTS
            .iter()
            .map(|e| e.as_str())
            .filter(|name| {
                let line = format!("notify_on = [\"{name}\"]\n");
                parse(&document("email", None, &line)).is_ok()
            })
            .collect();
        assert_eq!(listed, accepted);
    }

    #[test]
    fn the_man_page_lists_every_key_of_this_release_and_names_the_later_ones() {
        let page = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/unitwarden.8")).unwrap();
        let (_, config) = page.split_once(".SH CONFIGURATION").unwrap();
        let (config, later) = config
            .split_once("Not in this release")
            .unwrap_or((config, ""));
        for k in KEYS {
            let name = k.name.replace('-', "\\-");
            if k.in_this_release() {
                assert!(config.contains(&format!("\\fB{name}\\fR (")), "{name}");
            } else if section_of(k.section).release == Release::This {
                assert!(later.contains(&name), "{name} among the later keys");
            }
        }
        for s in SECTIONS.iter().filter(|s| s.release == Release::Later) {
            assert!(later.contains(&format!("[{}]", s.name)), "[{}]", s.name);
        }
    }
}
