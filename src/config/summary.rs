//! What `check-config` prints: the validated settings, one line per unit and window.

use std::path::Path;

use super::{EmailSettings, PASSWORD_ENV, Settings, Tls};
use crate::alert::ALL_EVENTS;
use crate::window::DaySet;

impl Settings {
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

impl EmailSettings {
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

fn format_days(days: DaySet) -> String {
    if days == DaySet::all() {
        "every day".into()
    } else {
        days.to_string()
    }
}
