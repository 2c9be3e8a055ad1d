//! The config file as written: serde structs that reject unknown keys. Value-level checks live
//! in the small `Deserialize` newtypes, so toml reports them at the offending value;
//! cross-field checks are left to `validate`, which reads the `Spanned` positions kept here.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::{BusKind, Tls, parse_duration};
use crate::alert::EventKind;
use crate::logging::{LogFormat, LogLevel, Rotation};
use crate::unit::{UnitName, UnitPattern};
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
    // Features of later releases: present is an error (validate.rs), so their contents are
    // not read.
    pub(super) metrics: Option<Spanned<serde::de::IgnoredAny>>,
    pub(super) resources: Option<Spanned<serde::de::IgnoredAny>>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) bus: Option<BusKind>,
    pub(super) interval: Option<PositiveDur>,
    pub(super) log_dir: Option<PathBuf>,
    pub(super) log_rotation: Option<Rotation>,
    pub(super) log_keep: Option<Spanned<usize>>,
    pub(super) log_level: Option<LogLevel>,
    pub(super) log_format: Option<LogFormat>,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) control_socket: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize, Default, Clone)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawRestart {
    pub(super) max_attempts: Option<Spanned<u32>>,
    pub(super) backoff_initial: Option<Dur>,
    pub(super) backoff_multiplier: Option<Spanned<f64>>,
    pub(super) backoff_max: Option<Dur>,
    pub(super) verify_after: Option<Dur>,
    pub(super) reset_after: Option<Dur>,
    pub(super) give_up_cooldown: Option<Cooldown>,
    pub(super) restart_inactive: Option<bool>,
    pub(super) flap_restarts: Option<u32>,
    pub(super) flap_window: Option<PositiveDur>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub(super) name: Spanned<String>,
    pub(super) days: Option<Vec<Day>>,
    pub(super) start: HhMm,
    pub(super) end: Spanned<HhMm>,
    pub(super) timezone: Option<Tz>,
    pub(super) interval: Option<PositiveDur>,
    pub(super) failures: Option<Spanned<Positive>>,
    pub(super) min_interval: Option<Dur>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawUnit {
    pub(super) name: Spanned<Pattern>,
    #[serde(default)]
    pub(super) depends_on: Vec<Spanned<Name>>,
    pub(super) probe: Option<Spanned<Box<RawProbe>>>,
    // Per-unit overrides of [restart].
    pub(super) max_attempts: Option<Spanned<u32>>,
    pub(super) backoff_initial: Option<Dur>,
    pub(super) backoff_multiplier: Option<Spanned<f64>>,
    pub(super) backoff_max: Option<Dur>,
    pub(super) verify_after: Option<Dur>,
    pub(super) reset_after: Option<Dur>,
    pub(super) give_up_cooldown: Option<Cooldown>,
    pub(super) restart_inactive: Option<bool>,
    pub(super) flap_restarts: Option<u32>,
    pub(super) flap_window: Option<PositiveDur>,
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
    pub(super) timeout: Option<PositiveDur>,
    pub(super) failures: Option<Positive>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmail {
    pub(super) smtp_host: Option<String>,
    pub(super) smtp_port: Option<u16>,
    pub(super) tls: Option<Spanned<Tls>>,
    pub(super) tls_verify: Option<Spanned<bool>>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) timeout: Option<PositiveDur>,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) password: Option<String>,
    pub(super) from: Option<Address>,
    pub(super) to: Spanned<Vec<Address>>,
    pub(super) subject_prefix: Option<String>,
    pub(super) batch_window: Option<Dur>,
    pub(super) min_interval: Option<Dur>,
    pub(super) journal_lines: Option<u32>,
    pub(super) remind_after: Option<Vec<PositiveDur>>,
    pub(super) outbox_max_age: Option<PositiveDur>,
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

/// A count that must be at least 1.
#[derive(Clone, Copy, Debug)]
pub(super) struct Positive(pub(super) u32);
impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            0 => Err(serde::de::Error::custom("must be at least 1")),
            n => Ok(Positive(n)),
        }
    }
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
