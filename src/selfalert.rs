//! `unitwarden alert-self-failure`: the one email saying that unitwarden itself has stopped for
//! good, so nothing watches the host's services any more. The shipped unit names
//! `unitwarden-failed.service` in `OnFailure=`, and that oneshot runs this.
//!
//! It works without the daemon and with the config that may be why the daemon failed: when the
//! whole file is refused, its `[email]` table is read on its own. It sends at once through the
//! mailer, one attempt with the configured `timeout`: no batching, and no outbox, since nobody
//! would deliver from it while the daemon is down. A failure to send is logged (stderr, which is
//! the journal under systemd) and ends in exit 1, and that is all: the failure unit has no
//! `OnFailure=` of its own and a start limit, so nothing loops.
//!
//! systemd 254 and later start `OnFailure=` units on every failure, also one that `Restart=`
//! heals; 252 only when the unit stays failed. So the unit's state decides, not the call: a
//! unit that systemd is still moving is watched until it settles, and only one that stays
//! `failed` is mailed about.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use jiff::Timestamp;

use crate::alert::email::{Compose, Mailer};
use crate::alert::journal::{self, Journal};
use crate::alert::render::{Excerpt, local_time};
use crate::config::{self, ConfigError, EmailSettings};
use crate::logging::{self, LogFormat, LogLevel, LogSettings, Rotation};
use crate::systemd::{BusKind, Jobs, Router, Signal, Systemd};
use crate::unit::{ActiveState, Observation, ServiceResult, UnitName};

/// How long a unit that systemd is still moving (restarting by `Restart=`, starting) is watched
/// before giving up on a verdict. Its next failure starts this again (systemd 254+), and on
/// 252 the call comes only once it stays failed, so giving up loses no email.
const SETTLE: Duration = Duration::from_secs(300);

/// Journal lines in the email: enough for a crash loop's last few starts.
const JOURNAL_LINES: u32 = 50;

pub async fn run(config_path: &Path, unit: &str) -> ExitCode {
    // stderr only: under systemd that is the journal, with each line's priority.
    let _log = logging::init(&LogSettings {
        dir: None,
        rotation: Rotation::Never,
        keep: 1,
        level: LogLevel::Info,
        format: LogFormat::Text,
    });
    let unit = match UnitName::parse(unit) {
        Ok(u) => u,
        Err(e) => {
            tracing::error!("--unit {unit:?}: {e}");
            return ExitCode::from(crate::args::EXIT_CONFIG);
        }
    };
    let (email, config_error) = match email_settings(config_path) {
        Ok((Some(email), config_error)) => (email, config_error),
        Ok((None, _)) => {
            tracing::info!(unit = %unit, "{} has no [email]: nobody to tell that {unit} failed", config_path.display());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            tracing::error!(unit = %unit, "cannot email that {unit} failed: the email settings are unusable: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(e) = &config_error {
        tracing::warn!("the config is refused ({e}); its [email] is used on its own");
    }

    let failure = match settle(&unit).await {
        Settled::FailedForGood(f) => f,
        Settled::Unknown(why) => {
            // A failure is why this runs at all: better one email too many than silence.
            tracing::warn!(unit = %unit, "cannot read the state of {unit} ({why}); reporting the failure");
            Failure::from_env()
        }
        Settled::Running => {
            tracing::info!(unit = %unit, "{unit} is running again: nothing to report");
            return ExitCode::SUCCESS;
        }
        Settled::Stopped => {
            tracing::info!(unit = %unit, "{unit} was stopped, not failed: nothing to report");
            return ExitCode::SUCCESS;
        }
        Settled::StillMoving(state) => {
            tracing::info!(unit = %unit, "{unit} is still {state} after {}; its next failure will be reported", humantime::format_duration(SETTLE));
            return ExitCode::SUCCESS;
        }
    };

    let excerpt = journal::excerpt(Journal::System, &unit, JOURNAL_LINES).await;
    let host = config::hostname();
    let now = Timestamp::now();
    let report = Report {
        host: &host,
        unit: &unit,
        time: local_time(now, &jiff::tz::TimeZone::system()),
        failure,
        config_error: config_error.as_deref(),
        journal: &excerpt,
    };
    match send(
        &email,
        &subject(&email.subject_prefix, &host),
        &body(&report),
        now,
    )
    .await
    {
        Ok(reply) => {
            tracing::info!(unit = %unit, "emailed {} that {unit} failed; server: {reply}", email.to.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(unit = %unit, "cannot email that {unit} failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn send(
    email: &EmailSettings,
    subject: &str,
    body: &str,
    now: Timestamp,
) -> Result<String, String> {
    let mailer = Mailer::new(email)?;
    let id = mailer.new_message_id(now);
    let message = mailer.compose(&Compose {
        message_id: &id,
        date: now,
        subject,
        body,
        in_reply_to: None,
        references: &[],
    })?;
    mailer.deliver(&message).await.map_err(|e| e.message)
}

/// The `[email]` of the config at `path`, and, when the whole file is refused, why. Only a
/// file that cannot be read at all, or an `[email]` that is itself invalid, is an error.
fn email_settings(path: &Path) -> Result<(Option<EmailSettings>, Option<String>), String> {
    let whole = match config::load(path) {
        Ok(settings) => return Ok((settings.email, None)),
        Err(e @ ConfigError::Read { .. }) => return Err(e.to_string()),
        Err(e) => e.to_string(),
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let email = config::parse(path, &email_table_only(&text))
        .map_err(|e| e.to_string())?
        .email;
    Ok((email, Some(whole)))
}

/// `text` with every line outside the `[email]` table blanked, so the rest of the file cannot
/// spoil it and every position (so every error's `LINE:COL`) is still the file's own. Tables
/// are told apart by their header lines; an `[email]` written as dotted keys or an inline
/// table is not found, and then there is no email to send.
fn email_table_only(text: &str) -> String {
    let mut inside = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if let Some(name) = table_header(line) {
            inside = name == "email";
        }
        if inside {
            out.push_str(line);
        } else if line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// The table a header line opens (`[email]` gives `email`, `[[unit]]` gives `[unit]` so that it
/// is never taken for a plain table), or `None` for any other line.
fn table_header(line: &str) -> Option<String> {
    let line = line.trim_start();
    let rest = line.strip_prefix('[')?;
    let (array, rest) = match rest.strip_prefix('[') {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let name: String = rest
        .split(']')
        .next()?
        .split('.')
        .map(|part| part.trim().trim_matches(['"', '\'']))
        .collect::<Vec<_>>()
        .join(".");
    Some(if array { format!("[{name}]") } else { name })
}

/// How the unit last ended, as far as it is known.
#[derive(Clone, Debug, Default, PartialEq)]
struct Failure {
    result: Option<ServiceResult>,
    /// `code=exited, status=2`, as `systemctl status` words it.
    exit: Option<String>,
}

impl Failure {
    /// What systemd (251 and later) hands an `OnFailure=` unit about the failure that started
    /// it: right when the unit is already failed for good at the first look.
    fn from_env() -> Failure {
        Failure::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Failure {
        let exit = match (var("MONITOR_EXIT_CODE"), var("MONITOR_EXIT_STATUS")) {
            // A signal comes by name ("KILL"); `systemctl status` says "9/KILL".
            (Some(code), Some(status)) => Some(match signal_number(&status) {
                Some(n) => format!("code={code}, status={n}/{status}"),
                None => format!("code={code}, status={status}"),
            }),
            _ => None,
        };
        Failure {
            result: var("MONITOR_SERVICE_RESULT").map(|r| ServiceResult::parse(&r)),
            exit,
        }
    }

    /// What the unit's own signals said while it was watched here: newer than the
    /// environment when the unit failed again meanwhile.
    fn or_heard(self, heard: &Observation) -> Failure {
        match &heard.result {
            Some(result) => Failure {
                result: Some(result.clone()),
                exit: heard.exec_status(),
            },
            None => self,
        }
    }
}

fn signal_number(name: &str) -> Option<i32> {
    let signal: nix::sys::signal::Signal = format!("SIG{name}").parse().ok()?;
    Some(signal as i32)
}

/// Where the unit ended up.
#[derive(Debug, PartialEq)]
enum Settled {
    FailedForGood(Failure),
    Running,
    Stopped,
    /// Still being started or restarted by systemd at the deadline: its active state.
    StillMoving(ActiveState),
    /// The manager could not be asked.
    Unknown(String),
}

/// What a listed state means here; `None` while systemd is still moving the unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    FailedForGood,
    Running,
    Stopped,
}

fn verdict(o: &Observation) -> Option<Verdict> {
    if o.job_pending {
        return None;
    }
    match o.active {
        // `failed-before-auto-restart` (systemd 254+) passes on its way to `auto-restart`.
        ActiveState::Failed if o.sub.as_str() == "failed" => Some(Verdict::FailedForGood),
        ActiveState::Active | ActiveState::Reloading | ActiveState::Refreshing => {
            Some(Verdict::Running)
        }
        ActiveState::Inactive if o.sub.as_str() == "dead" => Some(Verdict::Stopped),
        _ => None,
    }
}

/// Waits, up to [`SETTLE`], until systemd is done with `unit`. Every verdict comes from a fresh
/// listing; signals only say when to look again, since those queued before a listing's reply
/// are older than it.
async fn settle(unit: &UnitName) -> Settled {
    let systemd = match Systemd::connect(BusKind::System, Jobs::default()).await {
        Ok(s) => s,
        Err(e) => return Settled::Unknown(e.to_string()),
    };
    // Subscribed before the first listing, so no change after it goes unheard.
    let mut signals = match systemd.signals().await {
        Ok(s) => s,
        Err(e) => return Settled::Unknown(e.to_string()),
    };
    let deadline = tokio::time::Instant::now() + SETTLE;
    let router = Router::default();
    let mut first_look = true;
    let mut heard: Option<Observation> = None;
    loop {
        let listed = match systemd.list_by_names(std::slice::from_ref(unit)).await {
            Ok(rows) => match rows.into_iter().next() {
                Some(row) => row.observation,
                None => return Settled::Unknown(format!("the manager does not list {unit}")),
            },
            Err(e) => return Settled::Unknown(e.to_string()),
        };
        match verdict(&listed) {
            Some(Verdict::FailedForGood) => {
                let failure = if first_look {
                    Failure::from_env()
                } else {
                    Failure::default()
                };
                return Settled::FailedForGood(match &heard {
                    Some(h) => failure.or_heard(h),
                    None => failure,
                });
            }
            Some(Verdict::Running) => return Settled::Running,
            Some(Verdict::Stopped) => return Settled::Stopped,
            None => {}
        }
        first_look = false;
        // The listing's state, and what the signals said so far of how the unit last ended.
        let mut news = listed;
        if let Some(h) = heard.take() {
            news.result = h.result;
            news.exec_main = h.exec_main;
        }
        // Until the signals suggest a verdict, or the manager reloaded or came back.
        loop {
            let next = tokio::time::timeout_at(
                deadline,
                signals.next(&router, |name: &UnitName| name == unit),
            )
            .await;
            match next {
                Err(_) => return Settled::StillMoving(news.active),
                Ok(None) => return Settled::Unknown("the bus connection was lost".into()),
                Ok(Some(Signal::Unit { update, .. })) => {
                    update.apply(&mut news);
                    if verdict(&news).is_some() {
                        break;
                    }
                }
                Ok(Some(_)) => break,
            }
        }
        heard = Some(news);
    }
}

/// What the email says, all of it known before it is written.
struct Report<'a> {
    host: &'a str,
    unit: &'a UnitName,
    time: String,
    failure: Failure,
    /// Why the whole config is refused, when it is.
    config_error: Option<&'a str>,
    journal: &'a Excerpt,
}

fn subject(prefix: &str, host: &str) -> String {
    format!("{prefix} {host}: unitwarden itself failed")
}

fn body(r: &Report<'_>) -> String {
    let unit = r.unit.as_str();
    let mut b = format!(
        "unitwarden itself failed on {host} and systemd will not start it again:\n\
         no service on this host is being watched or restarted until it runs again.\n\n\
         Unit: {unit}\nHost: {host}\nTime: {time}\n",
        host = r.host,
        time = r.time,
    );
    if let Some(result) = &r.failure.result {
        b += &format!("Result: {result}\n");
    }
    if let Some(exit) = &r.failure.exit {
        b += &format!("Main process: {exit}\n");
    }
    if let Some(e) = r.config_error {
        b += &format!("Config: {e}\n");
    }
    b += &format!(
        "\nNext: find the cause in the journal below; `unitwarden check-config` checks the\n\
         config. Then: systemctl reset-failed {unit} && systemctl start {unit}\n\n\
         Journal ({}):\n",
        r.journal.command
    );
    match &r.journal.lines {
        Ok(lines) if lines.is_empty() => b += "(no entries)\n",
        Ok(lines) => lines.iter().for_each(|l| b += &format!("{l}\n")),
        Err(why) => b += &format!("journal unavailable: {why}\n"),
    }
    b += &format!("\n-- \nunitwarden {}\n", env!("CARGO_PKG_VERSION"));
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::{LoadState, SubState};

    fn observed(active: &str, sub: &str, job: bool) -> Observation {
        let mut o = Observation::new(
            LoadState::parse("loaded"),
            ActiveState::parse(active),
            SubState::new(sub),
        );
        o.job_pending = job;
        o
    }

    #[test]
    fn only_a_unit_that_stays_failed_is_failed_for_good() {
        let table = [
            ("failed", "failed", false, Some(Verdict::FailedForGood)),
            // systemd 254+ on its way to `auto-restart`; 252 goes there directly.
            ("failed", "failed-before-auto-restart", false, None),
            ("activating", "auto-restart", false, None),
            ("activating", "auto-restart-queued", false, None),
            ("activating", "start", false, None),
            ("failed", "failed", true, None),
            ("active", "running", false, Some(Verdict::Running)),
            ("reloading", "reload-notify", false, Some(Verdict::Running)),
            ("inactive", "dead", false, Some(Verdict::Stopped)),
            ("inactive", "dead", true, None),
            ("deactivating", "stop-sigterm", false, None),
        ];
        for (active, sub, job, want) in table {
            assert_eq!(
                verdict(&observed(active, sub, job)),
                want,
                "{active}/{sub} job={job}"
            );
        }
    }

    #[test]
    fn only_the_email_table_survives_with_its_lines_in_place() {
        let text = "[daemon]\nintervall = \"5s\"\n\n[email] # alerts\nto = [\n  \"ops@example.com\",\n]\n\n[[unit]]\nname = \"nginx\"\n[ \"email\" . x ]\n";
        let only = email_table_only(text);
        assert_eq!(only.lines().count(), text.lines().count());
        assert_eq!(
            only,
            "\n\n\n[email] # alerts\nto = [\n  \"ops@example.com\",\n]\n\n\n\n\n"
        );
        assert_eq!(table_header("[[unit]]").as_deref(), Some("[unit]"));
        assert_eq!(table_header("  [ email ]  ").as_deref(), Some("email"));
        assert_eq!(table_header("to = [\"a@b\"]"), None);
    }

    #[test]
    fn a_refused_config_still_gives_its_email_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unitwarden.toml");
        let write = |text: &str| std::fs::write(&path, text).unwrap();

        write("[daemon]\nintervall = \"5s\"\n[email]\nto = [\"ops@example.com\"]\n");
        let (email, why) = email_settings(&path).unwrap();
        assert_eq!(email.unwrap().to, ["ops@example.com"]);
        let why = why.unwrap();
        assert!(why.contains(":2:1: unknown field `intervall`"), "{why}");

        // A syntax error elsewhere, too.
        write("[daemon\n[email]\nto = [\"ops@example.com\"]\n");
        assert!(email_settings(&path).unwrap().0.is_some());

        // An [email] that is itself wrong is an error, at its place in the file.
        write("[daemon]\nintervall = \"5s\"\n[email]\nto = [\"not-an-address\"]\n");
        let e = email_settings(&path).unwrap_err();
        assert!(
            e.contains(":4:7: \"not-an-address\" is not an email address"),
            "{e}"
        );

        // No [email]: nothing to send, not an error.
        write("[daemon]\nintervall = \"5s\"\n");
        let (email, why) = email_settings(&path).unwrap();
        assert!(email.is_none() && why.is_some());
        write("[daemon]\ninterval = \"5s\"\n");
        assert_eq!(email_settings(&path).unwrap().1, None);

        std::fs::remove_file(&path).unwrap();
        assert!(
            email_settings(&path)
                .unwrap_err()
                .ends_with(": no such file")
        );
    }

    #[test]
    fn the_failure_comes_from_systemds_environment_or_from_what_was_heard_since() {
        let env = |name: &str| {
            match name {
                "MONITOR_SERVICE_RESULT" => Some("exit-code"),
                "MONITOR_EXIT_CODE" => Some("exited"),
                "MONITOR_EXIT_STATUS" => Some("2"),
                _ => None,
            }
            .map(String::from)
        };
        let f = Failure::from_vars(env);
        assert_eq!(f.result, Some(ServiceResult::ExitCode));
        assert_eq!(f.exit.as_deref(), Some("code=exited, status=2"));
        assert_eq!(Failure::from_vars(|_| None), Failure::default());
        let killed = Failure::from_vars(|name| {
            match name {
                "MONITOR_SERVICE_RESULT" => Some("signal"),
                "MONITOR_EXIT_CODE" => Some("killed"),
                "MONITOR_EXIT_STATUS" => Some("KILL"),
                _ => None,
            }
            .map(String::from)
        });
        assert_eq!(killed.exit.as_deref(), Some("code=killed, status=9/KILL"));

        let mut heard = observed("failed", "failed", false);
        assert_eq!(f.clone().or_heard(&heard), f);
        heard.result = Some(ServiceResult::StartLimitHit);
        heard.exec_main = Some((2, 9));
        let f = f.or_heard(&heard);
        assert_eq!(f.result, Some(ServiceResult::StartLimitHit));
        assert_eq!(f.exit.as_deref(), Some("code=killed, status=9/KILL"));
    }

    #[test]
    fn the_email_says_what_failed_why_and_what_to_do() {
        let unit = UnitName::parse("unitwarden").unwrap();
        let journal = Excerpt {
            command: "journalctl -u unitwarden.service -n 50".into(),
            lines: Ok(vec![
                "2026-11-23T08:00:01+0300 web-1 systemd[1]: unitwarden.service: Start request repeated too quickly.".into(),
            ]),
        };
        let report = Report {
            host: "web-1",
            unit: &unit,
            time: "2026-11-23 08:00:01 +03".into(),
            failure: Failure {
                result: Some(ServiceResult::StartLimitHit),
                exit: Some("code=exited, status=2".into()),
            },
            config_error: Some("/etc/unitwarden/unitwarden.toml:2:1: unknown field `intervall`"),
            journal: &journal,
        };
        assert_eq!(
            subject("[unitwarden]", "web-1"),
            "[unitwarden] web-1: unitwarden itself failed"
        );
        let b = body(&report);
        for want in [
            "unitwarden itself failed on web-1",
            "Unit: unitwarden.service\n",
            "Result: start-limit-hit\n",
            "Main process: code=exited, status=2\n",
            "Config: /etc/unitwarden/unitwarden.toml:2:1: unknown field `intervall`\n",
            "systemctl reset-failed unitwarden.service && systemctl start unitwarden.service",
            "Journal (journalctl -u unitwarden.service -n 50):\n",
            "Start request repeated too quickly.\n",
        ] {
            assert!(b.contains(want), "missing {want:?} in\n{b}");
        }
        let unavailable = Excerpt {
            command: journal.command.clone(),
            lines: Err("No journal files were found.".into()),
        };
        let b = body(&Report {
            journal: &unavailable,
            config_error: None,
            failure: Failure::default(),
            ..report
        });
        assert!(
            b.contains("journal unavailable: No journal files were found.\n"),
            "{b}"
        );
        assert!(!b.contains("Result:") && !b.contains("Config:"), "{b}");
    }
}
