//! The config file as written: serde structs that reject unknown keys. Value-level checks live
//! in the small `Deserialize` newtypes, so toml reports them at the offending value;
//! cross-field checks are left to `validate`, which reads the `Spanned` positions kept here.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::{BusKind, Tls, parse_duration};
use crate::alert::EventKind;
use crate::logging::{LogFormat, LogLevel, Rotation};
use crate::text::is_control;
use crate::unit::UnitPattern;
use crate::window;

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    #[serde(default)]
    pub(super) restart: RawRestart,
    #[serde(default, rename = "window")]
    pub(super) windows: Vec<Spanned<RawWindow>>,
    // Boxed: a host with a thousand units would otherwise grow (and copy) one large array of
    // them while the whole parsed document is still in memory.
    #[serde(default, rename = "unit")]
    pub(super) units: Vec<Spanned<Box<RawUnit>>>,
    pub(super) email: Option<Spanned<RawEmail>>,
    pub(super) metrics: Option<Spanned<RawMetrics>>,
    pub(super) alertmanager: Option<Spanned<RawAlertmanager>>,
    pub(super) resources: Option<Spanned<RawResources>>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) bus: Option<BusKind>,
    pub(super) interval: Option<Dur<Interval>>,
    pub(super) log_dir: Option<AbsPath>,
    pub(super) log_rotation: Option<Rotation>,
    pub(super) log_keep: Option<Spanned<usize>>,
    pub(super) log_level: Option<LogLevel>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) state_dir: Option<AbsPath>,
    pub(super) control_socket: Option<Spanned<AbsPath>>,
}

#[derive(Deserialize, Default, Clone)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawRestart {
    pub(super) max_attempts: Option<Num<MaxAttempts>>,
    pub(super) backoff_initial: Option<Dur<BackoffInitial>>,
    pub(super) backoff_multiplier: Option<Spanned<f64>>,
    pub(super) backoff_max: Option<Dur<BackoffMax>>,
    pub(super) verify_after: Option<Dur<VerifyAfter>>,
    pub(super) reset_after: Option<Dur<ResetAfter>>,
    pub(super) give_up_cooldown: Option<Cooldown>,
    pub(super) restart_inactive: Option<bool>,
    pub(super) flap_restarts: Option<Num<FlapRestarts>>,
    pub(super) flap_window: Option<Dur<FlapWindow>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub(super) name: Spanned<Text>,
    pub(super) days: Option<Vec<Day>>,
    pub(super) start: HhMm,
    pub(super) end: Spanned<HhMm>,
    pub(super) timezone: Option<Tz>,
    pub(super) interval: Option<Dur<Interval>>,
    pub(super) failures: Option<Num<Failures>>,
    pub(super) min_interval: Option<Dur<MinInterval>>,
    pub(super) preflight: Option<Dur<Preflight>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawUnit {
    pub(super) name: Spanned<Pattern>,
    // Parsed in validate.rs, at each entry's position.
    #[serde(default)]
    pub(super) depends_on: Vec<Spanned<String>>,
    pub(super) probe: Option<Spanned<Box<RawProbe>>>,
    // Checked against the unit's max_attempts in validate.rs.
    pub(super) recovery_unit: Option<Spanned<String>>,
    pub(super) recovery_after: Option<Spanned<Num<RecoveryAfter>>>,
    pub(super) recovery_timeout: Option<Dur<RecoveryTimeout>>,
    // Per-unit overrides of [restart].
    pub(super) max_attempts: Option<Num<MaxAttempts>>,
    pub(super) backoff_initial: Option<Dur<BackoffInitial>>,
    pub(super) backoff_multiplier: Option<Spanned<f64>>,
    pub(super) backoff_max: Option<Dur<BackoffMax>>,
    pub(super) verify_after: Option<Dur<VerifyAfter>>,
    pub(super) reset_after: Option<Dur<ResetAfter>>,
    pub(super) give_up_cooldown: Option<Cooldown>,
    pub(super) restart_inactive: Option<bool>,
    pub(super) flap_restarts: Option<Num<FlapRestarts>>,
    pub(super) flap_window: Option<Dur<FlapWindow>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    pub(super) http: Option<String>,
    pub(super) tcp: Option<String>,
    pub(super) exec: Option<Vec<String>>,
    pub(super) expect_status: Option<u16>,
    pub(super) expect_body: Option<String>,
    pub(super) timeout: Option<Dur<Timeout>>,
    pub(super) failures: Option<Num<Failures>>,
    pub(super) grace: Option<Dur<Grace>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawResources {
    pub(super) resource_interval: Option<Dur<ResourceInterval>>,
    #[serde(default)]
    pub(super) disk: Vec<Spanned<RawDisk>>,
    pub(super) memory_max_used_percent: Option<Num<MemoryPercent>>,
    pub(super) load_max: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawDisk {
    pub(super) path: AbsPath,
    pub(super) max_used_percent: Num<DiskPercent>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Listen>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlertmanager {
    pub(super) url: AmUrl,
    pub(super) timeout: Option<Dur<Timeout>>,
    pub(super) journal_lines: Option<Num<JournalLines>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmail {
    pub(super) smtp_host: Option<Host>,
    pub(super) smtp_port: Option<Num<SmtpPort>>,
    pub(super) tls: Option<Spanned<Tls>>,
    pub(super) tls_verify: Option<Spanned<bool>>,
    pub(super) ca_file: Option<AbsPath>,
    pub(super) timeout: Option<Dur<Timeout>>,
    pub(super) username: Option<Spanned<Text>>,
    pub(super) password_file: Option<AbsPath>,
    pub(super) password: Option<String>,
    // Parsed in validate.rs by the mailer's own parser, at each entry's position.
    pub(super) from: Option<Spanned<String>>,
    pub(super) to: Spanned<Vec<Spanned<String>>>,
    pub(super) subject_prefix: Option<Text>,
    pub(super) batch_window: Option<Dur<BatchWindow>>,
    pub(super) min_interval: Option<Dur<MinInterval>>,
    pub(super) journal_lines: Option<Num<JournalLines>>,
    // Strings, checked in validate.rs: toml places an error inside an array at the array.
    pub(super) remind_after: Option<Vec<Spanned<String>>>,
    pub(super) outbox_max_age: Option<Dur<OutboxMaxAge>>,
    pub(super) notify_on: Option<Spanned<Vec<EventKind>>>,
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty), $parse:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub(super) struct $name(pub(super) $inner);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                let f: fn(&str) -> Result<$inner, String> = $parse;
                f(&s).map($name).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// What a key may hold: its name, for messages, and its bounds. Every duration has an upper
/// bound, so that no deadline computed from it (an `Instant` or a `Timestamp` plus the
/// duration) can overflow, and none is accepted that only a typo would give (a `verify_after`
/// of a month); counts are bounded where a large one costs memory or time.
pub(super) trait Bounds<T> {
    const KEY: &'static str;
    /// For durations, zero where zero means "at once"; more where zero would make a loop spin.
    const MIN: T;
    const MAX: T;
}

macro_rules! bounds {
    ($t:ty; $($(#[$doc:meta])* $name:ident = $key:literal, $min:expr, $max:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub(super) enum $name {}
        impl Bounds<$t> for $name {
            const KEY: &'static str = $key;
            const MIN: $t = $min;
            const MAX: $t = $max;
        }
    )*};
}

const NONZERO: Duration = Duration::from_nanos(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

bounds! { Duration;
    /// Polling: more often than ten times a second is a busy loop, not a safety net.
    Interval = "interval", Duration::from_millis(100), DAY;
    BackoffInitial = "backoff_initial", Duration::ZERO, DAY;
    BackoffMax = "backoff_max", Duration::ZERO, DAY;
    VerifyAfter = "verify_after", Duration::ZERO, HOUR;
    ResetAfter = "reset_after", Duration::ZERO, days(30);
    GiveUpCooldown = "give_up_cooldown", Duration::ZERO, days(365);
    FlapWindow = "flap_window", NONZERO, DAY;
    MinInterval = "min_interval", Duration::ZERO, days(7);
    BatchWindow = "batch_window", Duration::ZERO, HOUR;
    RemindAfter = "remind_after", NONZERO, days(365);
    OutboxMaxAge = "outbox_max_age", NONZERO, days(365);
    /// SMTP delivery and probes: zero would fail every time, longer than an hour is a hang.
    Timeout = "timeout", NONZERO, HOUR;
    /// After a (re)start, probe failures within this do not count.
    Grace = "grace", Duration::ZERO, DAY;
    RecoveryTimeout = "recovery_timeout", NONZERO, DAY;
    /// How long before a window opens its pre-flight check runs.
    Preflight = "preflight", NONZERO, DAY;
    /// statvfs and /proc are cheap, but more often than each second is not a host check.
    ResourceInterval = "resource_interval", Duration::from_secs(1), DAY;
}

bounds! { i64;
    MaxAttempts = "max_attempts", 1, 1000;
    /// 0 turns flapping reports off.
    FlapRestarts = "flap_restarts", 0, 1000;
    /// Lines of `journalctl` in each email.
    JournalLines = "journal_lines", 0, 1000;
    SmtpPort = "smtp_port", 1, 65535;
    /// Probe failures in a row before a unit counts as down.
    Failures = "failures", 1, 1000;
    RecoveryAfter = "recovery_after", 1, 1000;
    DiskPercent = "max_used_percent", 1, 100;
    MemoryPercent = "memory_max_used_percent", 1, 100;
}

/// A humantime duration within the bounds of the key `L`.
#[derive(Clone, Debug)]
pub(super) struct Dur<L>(pub(super) Duration, PhantomData<L>);

impl<'de, L: Bounds<Duration>> Deserialize<'de> for Dur<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        bounded::<L>(&s)
            .map(|v| Dur(v, PhantomData))
            .map_err(serde::de::Error::custom)
    }
}

pub(super) fn bounded<L: Bounds<Duration>>(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let key = L::KEY;
    if d < L::MIN {
        return Err(if L::MIN == NONZERO {
            format!("{key} {s:?} must be longer than zero")
        } else {
            format!("{key} {s:?} must be at least {}", words(L::MIN))
        });
    }
    if d > L::MAX {
        return Err(format!("{key} {s:?} must be at most {}", words(L::MAX)));
    }
    Ok(d)
}

/// A bound as one would write it in the config: `100ms`, `1h`, `365d`.
fn words(d: Duration) -> String {
    let s = d.as_secs();
    match (s, d.subsec_nanos()) {
        (0, _) => format!("{}ms", d.as_millis()),
        (s, 0) if s % 86_400 == 0 => format!("{}d", s / 86_400),
        (s, 0) if s % 3600 == 0 => format!("{}h", s / 3600),
        (s, 0) if s % 60 == 0 => format!("{}m", s / 60),
        (s, _) => format!("{s}s"),
    }
}

/// `give_up_cooldown`: a duration or "never".
#[derive(Clone, Debug)]
pub(super) struct Cooldown(pub(super) Option<Duration>);
impl<'de> Deserialize<'de> for Cooldown {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "never" {
            return Ok(Cooldown(None));
        }
        bounded::<GiveUpCooldown>(&s)
            .map(|d| Cooldown(Some(d)))
            .map_err(serde::de::Error::custom)
    }
}

/// An integer within the bounds of the key `R`.
#[derive(Clone, Debug)]
pub(super) struct Num<R>(pub(super) u32, PhantomData<R>);

impl<'de, R: Bounds<i64>> Deserialize<'de> for Num<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // TOML integers are i64: read them whole, so a negative or huge value gets the same
        // message as one just out of range.
        let n = i64::deserialize(d)?;
        let key = R::KEY;
        if n < R::MIN {
            return Err(serde::de::Error::custom(format!(
                "{key} must be at least {}",
                R::MIN
            )));
        }
        if n > R::MAX {
            return Err(serde::de::Error::custom(format!(
                "{key} must be at most {}",
                R::MAX
            )));
        }
        u32::try_from(n)
            .map(|n| Num(n, PhantomData))
            .map_err(serde::de::Error::custom)
    }
}

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
string_newtype!(
    /// Text that ends up in log lines, `STATUS=`, email headers and `check-config`'s output:
    /// a name, a user, a prefix. A control character there could end a line early.
    Text(String),
    |s| match control_char(s) {
        Some(c) => Err(format!("{s:?} contains the control character {c:?}")),
        None => Ok(s.to_string()),
    }
);
string_newtype!(
    /// An absolute path: the service's working directory is `/`, so a relative path would not
    /// name what it named where `check-config` ran.
    AbsPath(PathBuf),
    |s| match control_char(s) {
        Some(c) => Err(format!("path {s:?} contains the control character {c:?}")),
        None if !s.starts_with('/') => Err(format!("path {s:?} must be absolute")),
        None => Ok(PathBuf::from(s)),
    }
);
string_newtype!(
    /// The SMTP server: a host name or an IP address, given to the resolver and, with TLS, the
    /// certificate check as it is.
    Host(String),
    |s| match (s.is_empty(), s.chars().find(|c| c.is_whitespace() || is_control(*c))) {
        (true, _) => Err("smtp_host is empty".to_string()),
        (_, Some(c)) => Err(format!("smtp_host {s:?} contains {c:?}")),
        _ if s.len() > 253 => Err(format!("smtp_host is {} characters long; a host name has at most 253", s.len())),
        _ => Ok(s.to_string()),
    }
);

string_newtype!(
    /// Where `/metrics` is served: an IP address and a port, so that what `check-config`
    /// accepts is exactly what the daemon binds (no resolver involved).
    Listen(std::net::SocketAddr),
    |s| match s.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() == 0 => Err(format!(
            "listen {s:?} needs a port from 1 to 65535: Prometheus must know where to scrape"
        )),
        Ok(a) => Ok(a),
        Err(_) => Err(format!(
            "listen {s:?} is not an IP address and port, e.g. \"127.0.0.1:9717\" or \"[::1]:9717\""
        )),
    }
);
string_newtype!(
    /// The Alertmanager's base URL, `http://HOST[:PORT][/PREFIX]`.
    AmUrl(crate::alertmanager::Url),
    crate::alertmanager::Url::parse
);

/// The first character of `s` that must not be in a name.
fn control_char(s: &str) -> Option<char> {
    s.chars().find(|c| is_control(*c))
}
