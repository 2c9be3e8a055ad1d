//! What `check-config` prints: the validated settings, one line per unit and window. Every
//! name, path and address goes through [`shown`]: validation keeps control characters out of
//! most of them, but the config's own path comes from the command line, and a report that a
//! terminal would interpret is no report.

use std::fmt::Display;
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
        let _ = writeln!(s, "config: {} (valid)", shown(self.path.display()));
        let _ = writeln!(
            s,
            "bus: {}  interval: {}  state_dir: {}  log_dir: {}",
            d.bus,
            humantime::format_duration(d.interval),
            shown(d.state_dir.display()),
            shown(d.log.dir.as_deref().unwrap_or(Path::new("-")).display())
        );
        let _ = writeln!(s, "units ({}):", self.units.len());
        for u in &self.units {
            let p = &u.policy;
            let mut line = format!(
                "  {}  max_attempts={} backoff={}×{}..{} verify_after={} reset_after={} give_up_cooldown={} restart_inactive={}",
                shown(&u.pattern),
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
                let deps: Vec<_> = u.depends_on.iter().map(shown).collect();
                let _ = write!(line, " depends_on={}", deps.join(","));
            }
            if let Some(r) = &u.recovery {
                let _ = write!(
                    line,
                    " recovery_unit={} after {} failed (timeout {})",
                    shown(&r.unit),
                    r.after,
                    humantime::format_duration(r.timeout)
                );
            }
            let _ = writeln!(s, "{line}");
            if let Some(p) = &u.probe {
                let _ = writeln!(
                    s,
                    "    probe {}  timeout={} failures={} grace={}",
                    shown(p.check.describe()),
                    humantime::format_duration(p.timeout),
                    p.failures,
                    humantime::format_duration(p.grace)
                );
            }
        }
        let _ = writeln!(s, "windows ({}):", self.calendar.windows.len());
        for w in &self.calendar.windows {
            let _ = writeln!(
                s,
                "  {}  {} {}-{} {}{}",
                shown(&w.name),
                format_days(w.days),
                w.start.strftime("%H:%M"),
                w.end.strftime("%H:%M"),
                shown(w.tz_name.as_deref().unwrap_or("host-local")),
                [
                    w.interval
                        .map(|i| format!(" interval={}", humantime::format_duration(i))),
                    w.failures.map(|f| format!(" failures={f}")),
                    w.preflight
                        .map(|p| format!(" preflight={}", humantime::format_duration(p))),
                ]
                .into_iter()
                .flatten()
                .collect::<String>()
            );
        }
        match &self.email {
            Some(e) => {
                let _ = writeln!(
                    s,
                    "email: {} via {}:{} ({:?})",
                    e.to.iter().map(shown).collect::<Vec<_>>().join(", "),
                    shown(&e.smtp_host),
                    e.smtp_port,
                    e.tls
                );
                let _ = writeln!(s, "  {}", e.describe_auth());
            }
            None => {
                let _ = writeln!(s, "email: off");
            }
        }
        match &self.metrics {
            Some(m) => {
                let _ = writeln!(s, "metrics: http://{}/metrics", m.listen);
            }
            None => {
                let _ = writeln!(s, "metrics: off");
            }
        }
        if let Some(a) = &self.alertmanager {
            let _ = writeln!(s, "alertmanager: {}", shown(&a.url));
        }
        if let Some(r) = &self.resources {
            let mut checks: Vec<String> = r
                .disks
                .iter()
                .map(|d| format!("disk {} > {}%", shown(d.path.display()), d.max_used_percent))
                .collect();
            if let Some(m) = r.memory_max_used_percent {
                checks.push(format!("memory > {m}%"));
            }
            if let Some(l) = r.load_max {
                checks.push(format!("load per CPU > {l}"));
            }
            let _ = writeln!(
                s,
                "resources every {}: {}",
                humantime::format_duration(r.interval),
                checks.join(", ")
            );
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
                    format!("password_file {}", shown(f.display()))
                } else if self.password.is_some() {
                    "inline password".to_string()
                } else {
                    "no password".to_string()
                };
                format!("AUTH as {} ({source})", shown(u))
            }
        };
        let cert = match (self.tls, self.tls_verify, &self.ca_file) {
            (Tls::None, _, _) => "no TLS".to_string(),
            (_, false, _) => "certificate not verified".to_string(),
            (_, true, Some(ca)) => format!(
                "certificate verified against the system store and {}",
                shown(ca.display())
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

/// `s` on one line, its control characters escaped.
fn shown(s: impl Display) -> String {
    crate::text::one_line(&s.to_string()).into_owned()
}

fn format_days(days: DaySet) -> String {
    if days == DaySet::all() {
        "every day".into()
    } else {
        days.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_printed_without_control_characters() {
        let text = "[daemon]\nstate_dir = \"/var/lib/ünit\"\n\
                    [[window]]\nname = \"sabah ü\"\nstart = \"07:00\"\nend = \"08:00\"\n\
                    [[unit]]\nname = \"web\"\n";
        // The config's path comes from the command line, where anything goes.
        let path = Path::new("/tmp/u\n\u{1b}[2J\u{2028}.toml");
        let s = crate::config::parse(path, text).unwrap();
        let out = s.summary();
        assert!(
            out.starts_with("config: /tmp/u\\n\\u{1b}[2J\\u{2028}.toml (valid)\n"),
            "{out}"
        );
        assert!(out.contains("state_dir: /var/lib/ünit"), "{out}");
        assert!(out.contains("  sabah ü  every day 07:00-08:00"), "{out}");
        assert!(
            !out.chars().any(|c| c != '\n' && crate::text::is_control(c)),
            "{out:?}"
        );
        let e = crate::config::parse(path, "[daemon]\nbus = 1\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/tmp/u\\n\\u{1b}[2J\\u{2028}.toml:2:7: "),
            "{e}"
        );
    }
}
