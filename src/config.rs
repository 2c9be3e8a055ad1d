//! Configuration: the TOML file as written (raw serde structs that reject unknown keys) turned
//! into validated [`Settings`] of domain types. Every error names `PATH:LINE:COL`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::logging::{LogFormat, LogLevel, LogSettings, Rotation};
use crate::policy::RestartPolicy;
pub use crate::systemd::BusKind;
use crate::unit::{UnitName, UnitPattern};
use crate::window::{self, Calendar, DaySet, Window};

pub use crate::args::DEFAULT_CONFIG as DEFAULT_PATH;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}:{line}:{col}: {message}")]
    Invalid {
        path: String,
        line: usize,
        col: usize,
        message: String,
    },
}

#[derive(Debug)]
pub struct Settings {
    pub path: PathBuf,
    pub daemon: DaemonSettings,
    pub calendar: Calendar,
    pub units: Vec<UnitSettings>,
    pub email: Option<EmailSettings>,
    pub metrics: Option<MetricsSettings>,
    pub resources: Option<ResourceSettings>,
}

#[derive(Debug)]
pub struct DaemonSettings {
    pub bus: BusKind,
    pub interval: Duration,
    pub log: LogSettings,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
}

#[derive(Debug)]
pub struct UnitSettings {
    pub pattern: UnitPattern,
    pub depends_on: Vec<UnitName>,
    pub policy: RestartPolicy,
    pub probe: Option<ProbeSettings>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProbeCheck {
    Http {
        url: String,
        expect_status: Option<u16>,
        expect_body: Option<String>,
    },
    Tcp(String),
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSettings {
    pub check: ProbeCheck,
    pub timeout: Duration,
    pub failures: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    Starttls,
    Tls,
    None,
}

/// Alert events an operator can select with `notify_on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Down,
    Restarted,
    RestartFailed,
    GaveUp,
    Recovered,
    NotFound,
    ProbeFailed,
    Flapping,
    ConfigReloadFailed,
    Resource,
    Started,
    Stopping,
}

impl EventKind {
    /// The name used in `notify_on` and in the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Down => "down",
            EventKind::Restarted => "restarted",
            EventKind::RestartFailed => "restart_failed",
            EventKind::GaveUp => "gave_up",
            EventKind::Recovered => "recovered",
            EventKind::NotFound => "not_found",
            EventKind::ProbeFailed => "probe_failed",
            EventKind::Flapping => "flapping",
            EventKind::ConfigReloadFailed => "config_reload_failed",
            EventKind::Resource => "resource",
            EventKind::Started => "started",
            EventKind::Stopping => "stopping",
        }
    }
}

pub const ALL_EVENTS: [EventKind; 12] = [
    EventKind::Down,
    EventKind::Restarted,
    EventKind::RestartFailed,
    EventKind::GaveUp,
    EventKind::Recovered,
    EventKind::NotFound,
    EventKind::ProbeFailed,
    EventKind::Flapping,
    EventKind::ConfigReloadFailed,
    EventKind::Resource,
    EventKind::Started,
    EventKind::Stopping,
];

/// The `[email]` section. `Debug` is written by hand so that the inline password never reaches
/// a log line or a panic message.
#[derive(Clone)]
pub struct EmailSettings {
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: Tls,
    /// Check the server's certificate and host name (default true). `false` is for a relay with
    /// a self-signed certificate on a trusted network; `ca_file` is the safer way.
    pub tls_verify: bool,
    /// PEM file with extra CA certificates to trust, on top of the system store.
    pub ca_file: Option<PathBuf>,
    /// Bound on connecting and on each SMTP command; a hung server is cut off after it.
    pub timeout: Duration,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    pub subject_prefix: String,
    pub batch_window: Duration,
    pub min_interval: Duration,
    pub journal_lines: u32,
    pub remind_after: Vec<Duration>,
    pub outbox_max_age: Duration,
    pub notify_on: BTreeSet<EventKind>,
}

impl fmt::Debug for EmailSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailSettings")
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("tls", &self.tls)
            .field("tls_verify", &self.tls_verify)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("to", &self.to)
            .field("subject_prefix", &self.subject_prefix)
            .field("batch_window", &self.batch_window)
            .field("min_interval", &self.min_interval)
            .field("journal_lines", &self.journal_lines)
            .field("remind_after", &self.remind_after)
            .field("outbox_max_age", &self.outbox_max_age)
            .field("notify_on", &self.notify_on)
            .finish()
    }
}

/// Environment variable that supplies the SMTP password (it wins over `password_file`).
pub const PASSWORD_ENV: &str = "UNITWARDEN_SMTP_PASSWORD";

impl EmailSettings {
    /// Things that work but deserve an operator's attention, one sentence each. Never contains
    /// the password.
    pub fn warnings(&self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut w = Vec::new();
        if self.password.is_some() {
            w.push(format!(
                "email.password is written in the config file; prefer password_file (mode 0600) or ${PASSWORD_ENV}"
            ));
        }
        if let Some(file) = &self.password_file {
            match std::fs::metadata(file) {
                Ok(m) if m.permissions().mode() & 0o004 != 0 => w.push(format!(
                    "email.password_file {} is readable by other users (mode {:04o}); chmod o-r it",
                    file.display(),
                    m.permissions().mode() & 0o7777
                )),
                Ok(_) => {}
                Err(e) => w.push(format!(
                    "email.password_file {}: {}; emails wait in the outbox until it can be read",
                    file.display(),
                    io_reason(&e)
                )),
            }
        }
        if let Some(file) = &self.ca_file
            && let Err(e) = std::fs::metadata(file)
        {
            w.push(format!(
                "email.ca_file {}: {}; TLS connections will fail until it can be read",
                file.display(),
                io_reason(&e)
            ));
        }
        if self.username.is_some()
            && self.password.is_none()
            && self.password_file.is_none()
            && std::env::var_os(PASSWORD_ENV).is_none()
        {
            w.push(format!(
                "email.username is set but there is no password (password_file or ${PASSWORD_ENV})"
            ));
        }
        if self.tls == Tls::None && self.username.is_some() {
            w.push("email.tls = \"none\" with a username: the password would cross the network in clear text".into());
        }
        if !self.tls_verify {
            w.push(
                "email.tls_verify = false: the server's certificate is not checked; prefer ca_file"
                    .into(),
            );
        }
        w
    }

    /// How unitwarden will authenticate and check the server, for `check-config` (the source of
    /// the password, never the password).
    pub fn describe_auth(&self) -> String {
        let auth = match &self.username {
            None => "no AUTH".to_string(),
            Some(u) => {
                let source = if std::env::var_os(PASSWORD_ENV).is_some() {
                    format!("${PASSWORD_ENV}")
                } else if let Some(f) = &self.password_file {
                    format!("password_file {}", f.display())
                } else if self.password.is_some() {
                    "inline password".to_string()
                } else {
                    "no password".to_string()
                };
                format!("AUTH as {u} ({source})")
            }
        };
        let cert = match (self.tls, self.tls_verify, &self.ca_file) {
            (Tls::None, _, _) => "no TLS".to_string(),
            (_, false, _) => "certificate not verified".to_string(),
            (_, true, Some(ca)) => format!(
                "certificate verified against the system store and {}",
                ca.display()
            ),
            (_, true, None) => "certificate verified against the system store".to_string(),
        };
        format!(
            "{auth}; {cert}; timeout {}; notify_on: {}",
            humantime::format_duration(self.timeout),
            if self.notify_on.len() == ALL_EVENTS.len() {
                "all".to_string()
            } else {
                self.notify_on
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            }
        )
    }
}

#[derive(Debug)]
pub struct MetricsSettings {
    pub listen: SocketAddr,
}

#[derive(Debug)]
pub struct ResourceSettings {
    pub resource_interval: Duration,
    pub disk: Vec<(PathBuf, f64)>,
    pub memory_max_used_percent: Option<f64>,
    pub load_max: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// Raw file shape. Value-level checks live in the small `Deserialize` newtypes below, so toml
// reports them at the offending value; cross-field checks use `Spanned`.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    restart: RawRestart,
    #[serde(default, rename = "window")]
    windows: Vec<Spanned<RawWindow>>,
    #[serde(default, rename = "unit")]
    units: Vec<Spanned<RawUnit>>,
    email: Option<Spanned<RawEmail>>,
    metrics: Option<RawMetrics>,
    resources: Option<RawResources>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    bus: Option<BusKind>,
    interval: Option<PositiveDur>,
    log_dir: Option<PathBuf>,
    log_rotation: Option<Rotation>,
    log_keep: Option<Spanned<usize>>,
    log_level: Option<LogLevel>,
    log_format: Option<LogFormat>,
    state_dir: Option<PathBuf>,
    control_socket: Option<PathBuf>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    max_attempts: Option<Spanned<u32>>,
    backoff_initial: Option<Dur>,
    backoff_multiplier: Option<Spanned<f64>>,
    backoff_max: Option<Dur>,
    verify_after: Option<Dur>,
    reset_after: Option<Dur>,
    give_up_cooldown: Option<Cooldown>,
    restart_inactive: Option<bool>,
    flap_restarts: Option<u32>,
    flap_window: Option<PositiveDur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    name: Spanned<String>,
    days: Option<Vec<Day>>,
    start: HhMm,
    end: Spanned<HhMm>,
    timezone: Option<Tz>,
    interval: Option<PositiveDur>,
    failures: Option<Positive>,
    min_interval: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    name: Spanned<Pattern>,
    #[serde(default)]
    depends_on: Vec<Spanned<Name>>,
    probe: Option<Spanned<RawProbe>>,
    // Per-unit overrides of [restart].
    max_attempts: Option<Spanned<u32>>,
    backoff_initial: Option<Dur>,
    backoff_multiplier: Option<Spanned<f64>>,
    backoff_max: Option<Dur>,
    verify_after: Option<Dur>,
    reset_after: Option<Dur>,
    give_up_cooldown: Option<Cooldown>,
    restart_inactive: Option<bool>,
    flap_restarts: Option<u32>,
    flap_window: Option<PositiveDur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    http: Option<String>,
    tcp: Option<String>,
    exec: Option<Vec<String>>,
    expect_status: Option<u16>,
    expect_body: Option<String>,
    timeout: Option<PositiveDur>,
    failures: Option<Positive>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmail {
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    tls: Option<Spanned<Tls>>,
    tls_verify: Option<Spanned<bool>>,
    ca_file: Option<PathBuf>,
    timeout: Option<PositiveDur>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    password: Option<String>,
    from: Option<Address>,
    to: Spanned<Vec<Address>>,
    subject_prefix: Option<String>,
    batch_window: Option<Dur>,
    min_interval: Option<Dur>,
    journal_lines: Option<u32>,
    remind_after: Option<Vec<PositiveDur>>,
    outbox_max_age: Option<PositiveDur>,
    notify_on: Option<Vec<EventKind>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Listen,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    resource_interval: Option<PositiveDur>,
    #[serde(default)]
    disk: Vec<RawDisk>,
    memory_max_used_percent: Option<Percent>,
    load_max: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    path: PathBuf,
    max_used_percent: Percent,
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty), $parse:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        struct $name($inner);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                let f: fn(&str) -> Result<$inner, String> = $parse;
                f(&s).map($name).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_newtype!(
    /// Any humantime duration, zero included.
    Dur(Duration),
    parse_duration
);
string_newtype!(
    /// A humantime duration that must be longer than zero (intervals, timeouts).
    PositiveDur(Duration),
    |s| match parse_duration(s)? {
        d if d.is_zero() => Err(format!("duration {s:?} must be longer than zero")),
        d => Ok(d),
    }
);
string_newtype!(
    /// A duration or "never".
    Cooldown(Option<Duration>),
    |s| if s == "never" { Ok(None) } else { parse_duration(s).map(Some) }
);
string_newtype!(HhMm(jiff::civil::Time), window::parse_hhmm);
string_newtype!(Day(jiff::civil::Weekday), window::parse_day);
string_newtype!(Tz((String, jiff::tz::TimeZone)), |s| {
    jiff::tz::TimeZone::get(s)
        .map(|tz| (s.to_string(), tz))
        .map_err(|_| {
            format!("unknown time zone {s:?} (expected an IANA name such as \"Europe/Istanbul\")")
        })
});
string_newtype!(Pattern(UnitPattern), UnitPattern::parse);
string_newtype!(Name(UnitName), UnitName::parse);
string_newtype!(Address(String), parse_address);
string_newtype!(Listen(SocketAddr), |s| s.parse().map_err(|_| format!(
    "{s:?} is not an address:port such as \"127.0.0.1:9717\""
)));

/// A count that must be at least 1.
#[derive(Clone, Copy, Debug)]
struct Positive(u32);
impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            0 => Err(serde::de::Error::custom("must be at least 1")),
            n => Ok(Positive(n)),
        }
    }
}

/// A percentage in (0, 100].
#[derive(Clone, Copy, Debug)]
struct Percent(f64);
impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v > 0.0 && v <= 100.0 {
            Ok(Percent(v))
        } else {
            Err(serde::de::Error::custom(format!(
                "{v} is not a percentage in (0, 100]"
            )))
        }
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?}: {e} (examples: \"500ms\", \"15s\", \"1h30m\", \"7d\")")
    })
}

/// A deliberately small check: a mistyped address must fail at load, not at 08:00 on a Monday.
fn parse_address(s: &str) -> Result<String, String> {
    let addr = s.trim();
    let bare = match (addr.rfind('<'), addr.ends_with('>')) {
        (Some(i), true) => &addr[i + 1..addr.len() - 1],
        _ => addr,
    };
    let ok = match bare.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !bare.contains(char::is_whitespace)
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }
        None => false,
    };
    if ok {
        Ok(addr.to_string())
    } else {
        Err(format!("{s:?} is not an email address"))
    }
}

// ---------------------------------------------------------------------------------------------

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        reason: io_reason(&e),
    })?;
    parse(path, &text)
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::InvalidData => "not valid UTF-8".into(),
        _ => e.to_string(),
    }
}

/// Validates `text` as if read from `path` (the path only appears in messages).
pub fn parse(path: &Path, text: &str) -> Result<Settings, ConfigError> {
    let err = |span: Option<Range<usize>>, message: String| {
        let (line, col) = line_col(text, span.map(|s| s.start).unwrap_or(0));
        ConfigError::Invalid {
            path: path.display().to_string(),
            line,
            col,
            message,
        }
    };
    let raw: RawConfig =
        toml::from_str(text).map_err(|e| err(e.span(), clean_message(e.message())))?;

    let d = raw.daemon;
    let log_keep = match d.log_keep {
        Some(k) if *k.get_ref() == 0 => {
            return Err(err(Some(k.span()), "log_keep must be at least 1".into()));
        }
        Some(k) => k.into_inner(),
        None => 14,
    };
    let daemon = DaemonSettings {
        bus: d.bus.unwrap_or(BusKind::System),
        interval: d.interval.map_or(Duration::from_secs(60), |d| d.0),
        log: LogSettings {
            dir: Some(d.log_dir.unwrap_or_else(|| "/var/log/unitwarden".into())),
            rotation: d.log_rotation.unwrap_or(Rotation::Daily),
            keep: log_keep,
            level: d.log_level.unwrap_or(LogLevel::Info),
            format: d.log_format.unwrap_or(LogFormat::Text),
        },
        state_dir: d.state_dir.unwrap_or_else(|| "/var/lib/unitwarden".into()),
        control_socket: d
            .control_socket
            .unwrap_or_else(|| "/run/unitwarden/control.sock".into()),
    };

    let defaults =
        merge_restart(&RestartPolicy::default(), &raw.restart).map_err(|(s, m)| err(s, m))?;

    let mut windows = Vec::new();
    let mut window_names = BTreeSet::new();
    for w in raw.windows {
        let span = w.span();
        let w = w.into_inner();
        if !window_names.insert(w.name.get_ref().clone()) {
            return Err(err(
                Some(w.name.span()),
                format!("window {:?} is defined twice", w.name.get_ref()),
            ));
        }
        if w.name.get_ref().trim().is_empty() {
            return Err(err(Some(w.name.span()), "window name is empty".into()));
        }
        if w.start.0 == w.end.get_ref().0 {
            return Err(err(
                Some(w.end.span()),
                "window end equals its start".into(),
            ));
        }
        let mut days = DaySet::default();
        match &w.days {
            Some(list) if list.is_empty() => {
                return Err(err(
                    Some(span),
                    "window days is empty (omit it for every day)".into(),
                ));
            }
            Some(list) => list.iter().for_each(|d| days.insert(d.0)),
            None => days = DaySet::all(),
        }
        let (tz_name, tz) = match w.timezone {
            Some(Tz((name, tz))) => (Some(name), tz),
            None => (None, jiff::tz::TimeZone::system()),
        };
        windows.push(Window {
            name: w.name.into_inner(),
            days,
            start: w.start.0,
            end: w.end.into_inner().0,
            tz,
            tz_name,
            interval: w.interval.map(|d| d.0),
            failures: w.failures.map(|f| f.0),
            min_interval: w.min_interval.map(|d| d.0),
        });
    }

    let mut units = Vec::new();
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    let mut deps_spans = Vec::new();
    for u in raw.units {
        let u = u.into_inner();
        let name_span = u.name.span();
        let pattern = u.name.into_inner().0;
        if seen.insert(pattern.as_str().to_string(), ()).is_some() {
            return Err(err(
                Some(name_span),
                format!("unit {pattern} is listed twice"),
            ));
        }
        let overrides = RawRestart {
            max_attempts: u.max_attempts,
            backoff_initial: u.backoff_initial,
            backoff_multiplier: u.backoff_multiplier,
            backoff_max: u.backoff_max,
            verify_after: u.verify_after,
            reset_after: u.reset_after,
            give_up_cooldown: u.give_up_cooldown,
            restart_inactive: u.restart_inactive,
            flap_restarts: u.flap_restarts,
            flap_window: u.flap_window,
        };
        let policy = merge_restart(&defaults, &overrides).map_err(|(s, m)| err(s, m))?;
        let probe = match u.probe {
            Some(p) => Some(build_probe(p).map_err(|(s, m)| err(Some(s), m))?),
            None => None,
        };
        let mut depends_on = Vec::new();
        for dep in u.depends_on {
            deps_spans.push((pattern.clone(), dep.get_ref().0.clone(), dep.span()));
            depends_on.push(dep.into_inner().0);
        }
        units.push(UnitSettings {
            pattern,
            depends_on,
            policy,
            probe,
        });
    }
    for (unit, dep, span) in &deps_spans {
        let known = units
            .iter()
            .any(|u| matches!(&u.pattern, UnitPattern::Exact(n) if n == dep));
        if !known {
            return Err(err(
                Some(span.clone()),
                format!("{unit} depends on {dep}, which is not a configured [[unit]]"),
            ));
        }
        if matches!(unit, UnitPattern::Exact(n) if n == dep) {
            return Err(err(Some(span.clone()), format!("{unit} depends on itself")));
        }
    }
    if let Some((unit, span)) = dependency_cycle(&units, &deps_spans) {
        return Err(err(Some(span), format!("dependency cycle through {unit}")));
    }

    let email = match raw.email {
        Some(e) => Some(build_email(e).map_err(|(s, m)| err(Some(s), m))?),
        None => None,
    };
    let metrics = raw.metrics.map(|m| MetricsSettings { listen: m.listen.0 });
    let resources = match raw.resources {
        Some(r) => {
            if let Some(l) = &r.load_max
                && (l.get_ref().is_nan() || *l.get_ref() <= 0.0)
            {
                return Err(err(
                    Some(l.span()),
                    "load_max must be greater than zero".into(),
                ));
            }
            Some(ResourceSettings {
                resource_interval: r
                    .resource_interval
                    .map_or(Duration::from_secs(3600), |d| d.0),
                disk: r
                    .disk
                    .into_iter()
                    .map(|d| (d.path, d.max_used_percent.0))
                    .collect(),
                memory_max_used_percent: r.memory_max_used_percent.map(|p| p.0),
                load_max: r.load_max.map(|l| l.into_inner()),
            })
        }
        None => None,
    };

    Ok(Settings {
        path: path.to_path_buf(),
        daemon,
        calendar: Calendar { windows },
        units,
        email,
        metrics,
        resources,
    })
}

type SpanErr = (Option<Range<usize>>, String);

fn merge_restart(base: &RestartPolicy, r: &RawRestart) -> Result<RestartPolicy, SpanErr> {
    let mut p = base.clone();
    if let Some(m) = &r.max_attempts {
        if *m.get_ref() == 0 {
            return Err((Some(m.span()), "max_attempts must be at least 1".into()));
        }
        p.max_attempts = *m.get_ref();
    }
    if let Some(m) = &r.backoff_multiplier {
        let v = *m.get_ref();
        if !(v.is_finite() && v >= 1.0) {
            return Err((
                Some(m.span()),
                "backoff_multiplier must be a number >= 1".into(),
            ));
        }
        p.backoff_multiplier = v;
    }
    if let Some(d) = &r.backoff_initial {
        p.backoff_initial = d.0;
    }
    if let Some(d) = &r.backoff_max {
        p.backoff_max = d.0;
    }
    if let Some(d) = &r.verify_after {
        p.verify_after = d.0;
    }
    if let Some(d) = &r.reset_after {
        p.reset_after = d.0;
    }
    if let Some(c) = &r.give_up_cooldown {
        p.give_up_cooldown = c.0;
    }
    if let Some(b) = r.restart_inactive {
        p.restart_inactive = b;
    }
    if let Some(n) = r.flap_restarts {
        p.flap_restarts = n;
    }
    if let Some(d) = &r.flap_window {
        p.flap_window = d.0;
    }
    if p.backoff_max < p.backoff_initial {
        // Not an error: the cap simply applies from the first attempt.
        p.backoff_initial = p.backoff_max;
    }
    Ok(p)
}

fn build_probe(p: Spanned<RawProbe>) -> Result<ProbeSettings, (Range<usize>, String)> {
    let span = p.span();
    let p = p.into_inner();
    let kinds = [p.http.is_some(), p.tcp.is_some(), p.exec.is_some()];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err((
            span,
            "a probe needs exactly one of http, tcp or exec".into(),
        ));
    }
    if p.http.is_none() && (p.expect_status.is_some() || p.expect_body.is_some()) {
        return Err((
            span,
            "expect_status and expect_body apply to http probes only".into(),
        ));
    }
    let check = if let Some(url) = p.http {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err((
                span,
                format!("probe http {url:?} must start with http:// or https://"),
            ));
        }
        ProbeCheck::Http {
            url,
            expect_status: p.expect_status,
            expect_body: p.expect_body,
        }
    } else if let Some(addr) = p.tcp {
        if addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .is_none()
        {
            return Err((span, format!("probe tcp {addr:?} must be host:port")));
        }
        ProbeCheck::Tcp(addr)
    } else {
        let argv = p.exec.unwrap_or_default();
        if argv.is_empty() || argv[0].is_empty() {
            return Err((
                span,
                "probe exec needs a program: exec = [\"/path\", \"arg\"]".into(),
            ));
        }
        ProbeCheck::Exec(argv)
    };
    Ok(ProbeSettings {
        check,
        timeout: p.timeout.map_or(Duration::from_secs(5), |d| d.0),
        failures: p.failures.map_or(3, |f| f.0),
    })
}

fn build_email(e: Spanned<RawEmail>) -> Result<EmailSettings, (Range<usize>, String)> {
    let span = e.span();
    let e = e.into_inner();
    if e.to.get_ref().is_empty() {
        return Err((e.to.span(), "email.to needs at least one address".into()));
    }
    if e.password.is_some() && e.password_file.is_some() {
        return Err((span, "set password_file or password, not both".into()));
    }
    if e.username.is_none() && (e.password.is_some() || e.password_file.is_some()) {
        return Err((span, "a password needs a username".into()));
    }
    let tls = e.tls.as_ref().map_or(Tls::Starttls, |t| *t.get_ref());
    let tls_verify = e.tls_verify.as_ref().is_none_or(|v| *v.get_ref());
    // Certificate settings without TLS would silently do nothing.
    if let Some(t) = &e.tls
        && *t.get_ref() == Tls::None
        && (e.ca_file.is_some() || e.tls_verify.is_some())
    {
        return Err((
            t.span(),
            "ca_file and tls_verify need tls = \"starttls\" or \"tls\"".into(),
        ));
    }
    if let Some(v) = &e.tls_verify
        && !*v.get_ref()
        && e.ca_file.is_some()
    {
        return Err((
            v.span(),
            "tls_verify = false ignores ca_file; set one or the other".into(),
        ));
    }
    let host = hostname();
    Ok(EmailSettings {
        smtp_host: e.smtp_host.unwrap_or_else(|| "localhost".into()),
        smtp_port: e.smtp_port.unwrap_or(25),
        tls,
        tls_verify,
        ca_file: e.ca_file,
        timeout: e.timeout.map_or(Duration::from_secs(30), |d| d.0),
        username: e.username,
        password_file: e.password_file,
        password: e.password,
        from: e.from.map_or_else(|| format!("unitwarden@{host}"), |a| a.0),
        to: e.to.into_inner().into_iter().map(|a| a.0).collect(),
        subject_prefix: e.subject_prefix.unwrap_or_else(|| "[unitwarden]".into()),
        batch_window: e.batch_window.map_or(Duration::from_secs(30), |d| d.0),
        min_interval: e.min_interval.map_or(Duration::from_secs(900), |d| d.0),
        journal_lines: e.journal_lines.unwrap_or(20),
        remind_after: e.remind_after.map_or_else(
            || [1, 4, 24].map(|h| Duration::from_secs(h * 3600)).to_vec(),
            |v| v.into_iter().map(|d| d.0).collect(),
        ),
        outbox_max_age: e
            .outbox_max_age
            .map_or(Duration::from_secs(7 * 86400), |d| d.0),
        notify_on: e.notify_on.map_or_else(
            || ALL_EVENTS.into_iter().collect(),
            |v| v.into_iter().collect(),
        ),
    })
}

fn dependency_cycle(
    units: &[UnitSettings],
    deps: &[(UnitPattern, UnitName, Range<usize>)],
) -> Option<(UnitName, Range<usize>)> {
    let edges = |n: &UnitName| -> Vec<UnitName> {
        units
            .iter()
            .filter(|u| matches!(&u.pattern, UnitPattern::Exact(x) if x == n))
            .flat_map(|u| u.depends_on.iter().cloned())
            .collect()
    };
    for (from, dep, span) in deps {
        let UnitPattern::Exact(start) = from else {
            continue;
        };
        let mut stack = vec![dep.clone()];
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if &n == start {
                return Some((start.clone(), span.clone()));
            }
            if seen.insert(n.clone()) {
                stack.extend(edges(&n));
            }
        }
    }
    None
}

fn format_days(days: DaySet) -> String {
    if days == DaySet::all() {
        "every day".into()
    } else {
        days.to_string()
    }
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// toml's messages sometimes span lines (with a source excerpt); the contract is one line.
fn clean_message(m: &str) -> String {
    m.lines()
        .next()
        .unwrap_or(m)
        .trim()
        .trim_end_matches('.')
        .to_string()
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl Settings {
    /// Index of the `[[unit]]` entry that governs `name`: its exact entry if listed by name,
    /// else the first glob that matches it.
    pub fn entry_for(&self, name: &UnitName) -> Option<usize> {
        self.units
            .iter()
            .position(|u| matches!(&u.pattern, UnitPattern::Exact(n) if n == name))
            .or_else(|| self.units.iter().position(|u| u.pattern.matches(name)))
    }

    /// Names configured exactly (not globs).
    pub fn exact_names(&self) -> Vec<UnitName> {
        self.units
            .iter()
            .filter_map(|u| match &u.pattern {
                UnitPattern::Exact(n) => Some(n.clone()),
                UnitPattern::Glob(_) => None,
            })
            .collect()
    }

    /// What `check-config` prints.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let d = &self.daemon;
        let _ = writeln!(s, "config: {} (valid)", self.path.display());
        let _ = writeln!(
            s,
            "bus: {}  interval: {}  state_dir: {}  log_dir: {}",
            d.bus,
            humantime::format_duration(d.interval),
            d.state_dir.display(),
            d.log.dir.as_deref().unwrap_or(Path::new("-")).display()
        );
        let _ = writeln!(s, "units ({}):", self.units.len());
        for u in &self.units {
            let p = &u.policy;
            let mut line = format!(
                "  {}  max_attempts={} backoff={}×{}..{} verify_after={} reset_after={} give_up_cooldown={} restart_inactive={}",
                u.pattern,
                p.max_attempts,
                humantime::format_duration(p.backoff_initial),
                p.backoff_multiplier,
                humantime::format_duration(p.backoff_max),
                humantime::format_duration(p.verify_after),
                humantime::format_duration(p.reset_after),
                p.give_up_cooldown.map_or_else(
                    || "never".to_string(),
                    |c| humantime::format_duration(c).to_string()
                ),
                p.restart_inactive,
            );
            if !u.depends_on.is_empty() {
                let deps: Vec<_> = u.depends_on.iter().map(|d| d.as_str()).collect();
                let _ = write!(line, " depends_on={}", deps.join(","));
            }
            if let Some(probe) = &u.probe {
                let what = match &probe.check {
                    ProbeCheck::Http { url, .. } => format!("http {url}"),
                    ProbeCheck::Tcp(a) => format!("tcp {a}"),
                    ProbeCheck::Exec(argv) => format!("exec {}", argv.join(" ")),
                };
                let _ = write!(line, " probe=\"{what}\"");
            }
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(s, "windows ({}):", self.calendar.windows.len());
        for w in &self.calendar.windows {
            let _ = writeln!(
                s,
                "  {}  {} {}-{} {}{}",
                w.name,
                format_days(w.days),
                w.start.strftime("%H:%M"),
                w.end.strftime("%H:%M"),
                w.tz_name.as_deref().unwrap_or("host-local"),
                w.interval
                    .map(|i| format!(" interval={}", humantime::format_duration(i)))
                    .unwrap_or_default()
            );
        }
        match &self.email {
            Some(e) => {
                let _ = writeln!(
                    s,
                    "email: {} via {}:{} ({:?})",
                    e.to.join(", "),
                    e.smtp_host,
                    e.smtp_port,
                    e.tls
                );
                let _ = writeln!(s, "  {}", e.describe_auth());
            }
            None => {
                let _ = writeln!(s, "email: off");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Settings, String> {
        parse(Path::new("/etc/unitwarden/test.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let s = parse_str("").unwrap();
        assert_eq!(s.daemon.bus, BusKind::System);
        assert_eq!(s.daemon.interval, Duration::from_secs(60));
        assert_eq!(s.daemon.log.keep, 14);
        assert_eq!(s.daemon.state_dir, PathBuf::from("/var/lib/unitwarden"));
        assert_eq!(
            s.daemon.control_socket,
            PathBuf::from("/run/unitwarden/control.sock")
        );
        assert!(s.units.is_empty() && s.email.is_none() && s.metrics.is_none());
    }

    #[test]
    fn unit_overrides_merge_over_restart_defaults() {
        let s = parse_str(
            r#"
[restart]
max_attempts = 5
backoff_initial = "1s"
give_up_cooldown = "never"

[[unit]]
name = "postgresql"

[[unit]]
name = "gunicorn"
depends_on = ["postgresql"]
max_attempts = 2
verify_after = "0s"
"#,
        )
        .unwrap();
        let pg = &s.units[0];
        assert_eq!(pg.pattern.as_str(), "postgresql.service");
        assert_eq!(pg.policy.max_attempts, 5);
        assert_eq!(pg.policy.give_up_cooldown, None);
        let g = &s.units[1];
        assert_eq!(g.policy.max_attempts, 2);
        assert_eq!(g.policy.backoff_initial, Duration::from_secs(1));
        assert_eq!(g.policy.verify_after, Duration::ZERO);
        assert_eq!(g.depends_on[0].as_str(), "postgresql.service");
    }

    #[test]
    fn errors_name_path_line_and_column() {
        let table: &[(&str, &str)] = &[
            (
                "[daemon]\ninterval = \"soon\"\n",
                "/etc/unitwarden/test.toml:2:12: invalid duration \"soon\"",
            ),
            (
                "[daemon]\nintervall = \"5s\"\n",
                "/etc/unitwarden/test.toml:2:1: unknown field `intervall`",
            ),
            (
                "[restart]\nmax_attempts = 0\n",
                "/etc/unitwarden/test.toml:2:16: max_attempts must be at least 1",
            ),
            (
                "[[window]]\nname = \"m\"\nstart = \"25:00\"\nend = \"08:00\"\n",
                "/etc/unitwarden/test.toml:3:9: ",
            ),
            (
                "[[window]]\nname = \"m\"\nstart = \"07:00\"\nend = \"08:00\"\ntimezone = \"Mars/Olympus\"\n",
                "/etc/unitwarden/test.toml:5:12: unknown time zone \"Mars/Olympus\"",
            ),
            (
                "[[unit]]\nname = \"a\"\ndepends_on = [\"b\"]\n",
                "/etc/unitwarden/test.toml:3:15: a.service depends on b.service, which is not a configured [[unit]]",
            ),
            (
                "[[unit]]\nname = \"a\"\n[[unit]]\nname = \"a.service\"\n",
                "/etc/unitwarden/test.toml:4:8: unit a.service is listed twice",
            ),
            (
                "[email]\nto = [\"not-an-address\"]\n",
                "/etc/unitwarden/test.toml:2:6: \"not-an-address\" is not an email address",
            ),
            (
                "[[unit]]\nname = \"a\"\n[unit.probe]\nhttp = \"http://x/\"\ntcp = \"x:1\"\n",
                "/etc/unitwarden/test.toml:3:1: a probe needs exactly one",
            ),
            (
                "[daemon]\nbus = \"session\"\n",
                "/etc/unitwarden/test.toml:2:7: unknown variant `session`",
            ),
            (
                "[[window]]\nname = \"m\"\nstart = \"07:00\"\nend = \"07:00\"\n",
                "/etc/unitwarden/test.toml:4:7: window end equals its start",
            ),
            ("this is not toml", "/etc/unitwarden/test.toml:1:"),
        ];
        for (text, want) in table {
            let got = parse_str(text).expect_err(text);
            assert!(
                got.starts_with(want),
                "for {text:?}\n got: {got}\nwant: {want}"
            );
            assert!(!got.contains('\n'), "one line: {got:?}");
        }
    }

    #[test]
    fn dependency_cycles_are_rejected() {
        let e = parse_str(
            "[[unit]]\nname = \"a\"\ndepends_on = [\"b\"]\n[[unit]]\nname = \"b\"\ndepends_on = [\"a\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("dependency cycle"), "{e}");
    }

    #[test]
    fn email_settings_errors_and_defaults() {
        let table: &[(&str, &str)] = &[
            (
                "[email]\nto = [\"a@b\"]\npassword_file = \"/p\"\n",
                "/etc/unitwarden/test.toml:1:1: a password needs a username",
            ),
            (
                "[email]\nto = [\"a@b\"]\ntls = \"none\"\nca_file = \"/ca.pem\"\n",
                "/etc/unitwarden/test.toml:3:7: ca_file and tls_verify need tls = \"starttls\" or \"tls\"",
            ),
            (
                "[email]\nto = [\"a@b\"]\ntls_verify = false\nca_file = \"/ca.pem\"\n",
                "/etc/unitwarden/test.toml:3:14: tls_verify = false ignores ca_file",
            ),
            (
                "[email]\nto = [\"a@b\"]\ntimeout = \"0s\"\n",
                "/etc/unitwarden/test.toml:3:11: duration \"0s\" must be longer than zero",
            ),
            (
                "[email]\nto = [\"a@b\"]\nnotify_on = [\"gave-up\"]\n",
                "/etc/unitwarden/test.toml:3:14: unknown variant `gave-up`",
            ),
        ];
        for (text, want) in table {
            let got = parse_str(text).expect_err(text);
            assert!(
                got.starts_with(want),
                "for {text:?}\n got: {got}\nwant: {want}"
            );
        }
        let e = parse_str("[email]\nto = [\"a@b\"]\n")
            .unwrap()
            .email
            .unwrap();
        assert_eq!(
            (e.tls, e.tls_verify, e.ca_file.clone()),
            (Tls::Starttls, true, None)
        );
        assert_eq!(e.timeout, Duration::from_secs(30));
        assert_eq!(e.notify_on.len(), ALL_EVENTS.len());
        assert!(e.warnings().is_empty(), "{:?}", e.warnings());
    }

    #[test]
    fn the_smtp_password_never_shows_and_risky_setups_warn() {
        let s = parse_str(
            "[email]\nto = [\"a@b\"]\nusername = \"u\"\npassword = \"hunter2-secret\"\ntls_verify = false\n",
        )
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(!s.summary().contains("hunter2-secret"));
        let e = s.email.unwrap();
        let warnings = e.warnings().join("\n");
        assert!(!warnings.contains("hunter2-secret"));
        assert!(
            warnings.contains("email.password is written in the config file"),
            "{warnings}"
        );
        assert!(warnings.contains("tls_verify = false"), "{warnings}");

        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("smtp-password");
        std::fs::write(&pw, "hunter2-secret\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "[email]\nto = [\"a@b\"]\nusername = \"u\"\npassword_file = \"{}\"\n",
            pw.display()
        );
        let e = parse_str(&text).unwrap().email.unwrap();
        let w = e.warnings().join("\n");
        assert!(w.contains("is readable by other users (mode 0644)"), "{w}");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(e.warnings().is_empty(), "{:?}", e.warnings());
    }

    #[test]
    fn unreadable_file_is_path_colon_reason() {
        let e = load(Path::new("/nonexistent/unitwarden.toml")).unwrap_err();
        assert_eq!(e.to_string(), "/nonexistent/unitwarden.toml: no such file");
    }

    #[test]
    fn every_shipped_example_config_is_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join("config"))
            .expect("config/ exists")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        assert!(!paths.is_empty(), "no example configs under config/");
        // The conffile the package installs on a fresh host.
        paths.push(root.join("packaging/unitwarden.toml"));
        for path in paths {
            let s = load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!s.units.is_empty(), "{} watches nothing", path.display());
        }
    }

    proptest::proptest! {
        #[test]
        fn durations_round_trip_through_humantime(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            let text = humantime::format_duration(d).to_string();
            proptest::prop_assert_eq!(parse_duration(&text).unwrap(), d);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_str(&text);
        }
    }
}
