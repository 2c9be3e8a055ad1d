//! Configuration: the TOML file as written (raw serde structs that reject unknown keys) turned
//! into validated [`Settings`] of domain types. Every error names `PATH:LINE:COL`.
//!
//! `raw` is the file's shape, `validate` turns it into `Settings`, `summary` is what
//! `check-config` prints, `keys` lists every key for the man page.

mod document;
mod file;
pub mod keys;
mod raw;
mod summary;
mod validate;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::alert::EventKind;
use crate::logging::LogSettings;
use crate::policy::RestartPolicy;
pub use crate::systemd::BusKind;
use crate::unit::{UnitName, UnitPattern};
use crate::window::Calendar;

pub use crate::args::DEFAULT_CONFIG as DEFAULT_PATH;
pub use file::{MAX_FILE, ReadError, read_text};

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
    /// Shared with the watch loop's registry: each watched unit holds its own entry.
    pub units: Vec<Arc<UnitSettings>>,
    pub email: Option<EmailSettings>,
    pub resources: Option<ResourceSettings>,
    pub metrics: Option<MetricsSettings>,
    pub alertmanager: Option<AlertmanagerSettings>,
}

/// `[metrics]`: Prometheus's text format at `http://LISTEN/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    pub listen: std::net::SocketAddr,
}

/// Where `/metrics` is served when `[metrics]` does not say: loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9717";

/// `[alertmanager]`: every event is also posted to this Alertmanager's v2 API.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerSettings {
    pub url: crate::alertmanager::Url,
    /// Bound on one POST: connect, send, answer.
    pub timeout: Duration,
    /// Lines of the unit's journal in an alert's `journal` annotation.
    pub journal_lines: u32,
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
    /// Shared by the units that take `[restart]` unchanged.
    pub policy: Arc<RestartPolicy>,
    // Boxed: most units have neither, and a host may watch a thousand.
    pub probe: Option<Box<ProbeSettings>>,
    pub recovery: Option<Box<RecoverySettings>>,
}

/// `recovery_unit`: the site's repair (a oneshot, as a rule), started once per episode after
/// `after` failed attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoverySettings {
    pub unit: UnitName,
    pub after: u32,
    /// Bound on its start job (for a oneshot: on the repair itself).
    pub timeout: Duration,
}

/// `[resources]`: host checks every `interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceSettings {
    pub interval: Duration,
    pub disks: Vec<DiskLimit>,
    pub memory_max_used_percent: Option<u32>,
    /// The 1-minute load average divided by the number of CPUs.
    pub load_max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiskLimit {
    pub path: PathBuf,
    pub max_used_percent: u32,
}

impl UnitSettings {
    /// Configured by name rather than a glob: listed by name (so not-found is seen), and
    /// `restart_inactive` applies.
    pub fn is_exact(&self) -> bool {
        matches!(self.pattern, UnitPattern::Exact(_))
    }

    /// `restart_inactive` applies to configured names only: glob instances come and go, and
    /// one an operator stopped (or only looked at) must not be started again.
    pub fn restarts_inactive(&self) -> bool {
        self.is_exact() && self.policy.restart_inactive
    }
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

impl ProbeCheck {
    /// The probe in a few words: `http GET URL`, `tcp HOST:PORT`, `exec PROGRAM ARGS`.
    pub fn describe(&self) -> String {
        match self {
            ProbeCheck::Http { url, .. } => format!("http GET {url}"),
            ProbeCheck::Tcp(addr) => format!("tcp {addr}"),
            ProbeCheck::Exec(argv) => format!("exec {}", argv.join(" ")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSettings {
    pub check: ProbeCheck,
    pub timeout: Duration,
    pub failures: u32,
    /// After the unit (re)starts, failures within this do not count.
    pub grace: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    Starttls,
    Tls,
    None,
}

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

/// Where the daemon listens for `status`, `pause`, `resume` and `retry` unless `control_socket`
/// says otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/unitwarden/control.sock";

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
                Ok(m) if !m.is_file() => w.push(format!(
                    "email.password_file {}: {}; emails wait in the outbox until it is one",
                    file.display(),
                    ReadError::NotRegular
                )),
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
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?}: {e} (examples: \"500ms\", \"15s\", \"1h30m\", \"7d\")")
    })
}

/// Reads and validates the file at `path`: a regular file of at most 1 MiB ([`read_text`]).
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let text = read_text(path).map_err(|e| ConfigError::Read {
        path: crate::text::path(path),
        reason: e.to_string(),
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
    validate::settings(path, text)
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

impl Settings {
    /// What works but deserves an operator's attention, one sentence each: `check-config`
    /// prints them, `run` and a reload log them.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.units.is_empty() {
            w.push("no [[unit]] entries: nothing is watched".to_string());
        }
        w.extend(self.email.iter().flat_map(|e| e.warnings()));
        if let Some(m) = &self.metrics
            && !m.listen.ip().is_loopback()
        {
            w.push(format!(
                "metrics listen on {}, beyond this host: anyone who reaches it reads the unit names and their state (there is no authentication)",
                m.listen
            ));
        }
        w
    }

    /// Index of the `[[unit]]` entry that governs `name`: its exact entry if listed by name,
    /// else the first glob that matches it.
    pub fn entry_for(&self, name: &UnitName) -> Option<usize> {
        self.units
            .iter()
            .position(|u| matches!(&u.pattern, UnitPattern::Exact(n) if n == name))
            .or_else(|| self.units.iter().position(|u| u.pattern.matches(name)))
    }

    /// The `[[unit]]` entry that governs `name`, shared.
    pub fn unit_settings(&self, name: &UnitName) -> Option<Arc<UnitSettings>> {
        self.entry_for(name).map(|i| Arc::clone(&self.units[i]))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse_str(text: &str) -> Result<Settings, String> {
        parse(Path::new("/etc/unitwarden/test.toml"), text).map_err(|e| e.to_string())
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
    fn what_is_at_the_config_path_must_be_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, "#".repeat(MAX_FILE as usize + 1)).unwrap();
        for (path, why) in [
            (fifo.as_path(), "not a regular file"),
            (Path::new("/dev/zero"), "not a regular file"),
            (dir.path(), "not a regular file"),
            (big.as_path(), "larger than 1 MiB"),
        ] {
            let e = load(path).unwrap_err();
            assert_eq!(e.to_string(), format!("{}: {why}", path.display()));
        }
    }

    #[test]
    fn a_config_without_units_is_valid_with_a_warning() {
        let s = parse_str("[daemon]\ninterval = \"5s\"\n").unwrap();
        assert_eq!(s.warnings(), ["no [[unit]] entries: nothing is watched"]);
        let s = parse_str("[[unit]]\nname = \"nginx\"\n").unwrap();
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
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
    }
}
