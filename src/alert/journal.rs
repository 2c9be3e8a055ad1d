//! The last journal lines of a unit, for the alert email: `journalctl` run with a time limit.
//! A host without journald (containers, the test harness) gets a note instead of an error.

use std::process::Stdio;
use std::time::Duration;

use super::render::Excerpt;
use crate::systemd::BusKind;
use crate::unit::UnitName;

/// A journal that does not answer within this is reported as unavailable.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Which journal field selects a unit: system units (`journalctl -u`) or units of a user
/// manager (`journalctl --user-unit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Journal {
    System,
    User,
}

impl From<BusKind> for Journal {
    fn from(bus: BusKind) -> Journal {
        match bus {
            BusKind::System => Journal::System,
            BusKind::User => Journal::User,
        }
    }
}

impl Journal {
    fn args(self, unit: &UnitName, lines: u32) -> Vec<String> {
        let select = match self {
            Journal::System => "-u",
            Journal::User => "--user-unit",
        };
        [
            select,
            unit.as_str(),
            "-n",
            &lines.to_string(),
            "-o",
            "short-iso",
            "--no-pager",
        ]
        .map(String::from)
        .to_vec()
    }
}

/// Reads the last `lines` lines of `unit`'s journal.
pub async fn excerpt(journal: Journal, unit: &UnitName, lines: u32) -> Excerpt {
    let args = journal.args(unit, lines);
    // What an operator types to see more; the output options only matter to us.
    let command = format!("journalctl {}", args[..4].join(" "));
    let lines = run(&args).await;
    Excerpt { command, lines }
}

async fn run(args: &[String]) -> Result<Vec<String>, String> {
    let child = tokio::process::Command::new("journalctl")
        .args(args)
        .env("SYSTEMD_COLORS", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "journalctl is not installed".to_string(),
            _ => format!("cannot run journalctl: {e}"),
        })?;
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            format!(
                "journalctl did not answer within {}",
                humantime::format_duration(TIMEOUT)
            )
        })?
        .map_err(|e| format!("journalctl failed: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let why = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(String::from);
    let lines: Vec<String> = stdout
        .lines()
        .filter(|l| l.trim() != "-- No entries --")
        .map(String::from)
        .collect();
    if !out.status.success() {
        return Err(why.unwrap_or_else(|| format!("journalctl exited with {}", out.status)));
    }
    match why {
        // No lines and a complaint: the journal itself is the problem (no journald, no
        // permission), which the email should say rather than "no entries".
        Some(why) if lines.is_empty() => Err(why),
        _ => Ok(lines),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_selects_the_unit_by_bus() {
        let u = UnitName::parse("nginx").unwrap();
        assert_eq!(
            Journal::System.args(&u, 20).join(" "),
            "-u nginx.service -n 20 -o short-iso --no-pager"
        );
        assert_eq!(
            Journal::from(BusKind::User).args(&u, 5).join(" "),
            "--user-unit nginx.service -n 5 -o short-iso --no-pager"
        );
    }
}
