//! Command line: parses arguments, runs the chosen command, maps outcomes to exit codes.

use std::process::ExitCode;

use clap::Parser;

use crate::alert::Alerts;
pub use crate::args::{Cli, Cmd, EXIT_CONFIG};
use crate::config::{self, Settings};
use crate::logging;
use crate::monitor::{self, Command};

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_CONFIG } else { 0 });
        }
    };
    if let Cmd::AlertSelfFailure { unit } = &cli.command {
        // Before the config is loaded: a config the daemon refused may be what it must report.
        return with_runtime(crate::selfalert::run(&cli.config, unit));
    }
    let settings = match config::load(&cli.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Cmd::CheckConfig => {
            print!("{}", settings.summary());
            print_email_warnings(&settings);
            ExitCode::SUCCESS
        }
        Cmd::TestEmail => {
            print_email_warnings(&settings);
            with_runtime(test_email(settings))
        }
        Cmd::Windows { next } => {
            let host = jiff::tz::TimeZone::system();
            print!(
                "{}",
                crate::window::format_upcoming(
                    &settings.calendar,
                    jiff::Timestamp::now(),
                    next,
                    &host
                )
            );
            ExitCode::SUCCESS
        }
        Cmd::PolkitRule { user } => {
            let units: Vec<_> = settings.units.iter().map(|u| &u.pattern).collect();
            print!("{}", crate::polkit::rule(&user, &settings.path, &units));
            ExitCode::SUCCESS
        }
        Cmd::Status { .. } | Cmd::Pause { .. } | Cmd::Resume { .. } | Cmd::Retry { .. } => {
            eprintln!("unitwarden: no daemon answers");
            ExitCode::from(crate::args::EXIT_NO_DAEMON)
        }
        // Taken above already; a valid config changes nothing about it.
        Cmd::AlertSelfFailure { unit } => with_runtime(crate::selfalert::run(&cli.config, &unit)),
        Cmd::Run => with_runtime(run(settings)),
        Cmd::Once => with_runtime(once(settings)),
    }
}

/// Email settings that work but deserve attention (inline password, readable password file).
fn print_email_warnings(settings: &Settings) {
    for w in settings.email.iter().flat_map(|e| e.warnings()) {
        eprintln!("{}: warning: {w}", settings.path.display());
    }
}

async fn test_email(settings: Settings) -> ExitCode {
    let Some(email) = &settings.email else {
        eprintln!(
            "unitwarden test-email: {} has no [email] section",
            settings.path.display()
        );
        return ExitCode::FAILURE;
    };
    match crate::alert::test_email(email).await {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unitwarden test-email: {e}");
            ExitCode::FAILURE
        }
    }
}

fn with_runtime(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    // One thread: the work is a few D-Bus messages per event, and it keeps RSS small.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("unitwarden: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> ExitCode {
    let log = match logging::init(&settings.daemon.log) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("unitwarden: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let signals = (
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()),
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()),
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = signals else {
        eprintln!("unitwarden: cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading configuration");
            if tx.send(Command::Reload).await.is_err() {
                break;
            }
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %settings.path.display(), "unitwarden starting");
    let (alerts, delivery) = start_alerts(&settings);
    let outcome = monitor::run(settings, Some(log.clone()), alerts, shutdown, rx).await;
    delivery.finish().await;
    let code = match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    };
    // The last handle: dropping it writes the lines still queued for the log file.
    drop(log);
    code
}

/// The running alert task, if `[email]` is configured.
struct Delivery(
    Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
);

impl Delivery {
    /// Lets the alert task send what is queued (bounded by `alert::FLUSH_BOUND`) and waits.
    async fn finish(self) {
        if let Some((stop, task)) = self.0 {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}

fn start_alerts(settings: &Settings) -> (Alerts, Delivery) {
    let Some(email) = &settings.email else {
        return (Alerts::disabled(), Delivery(None));
    };
    let journal = crate::alert::Journal::from(settings.daemon.bus);
    match crate::alert::start(email, &settings.daemon.state_dir, journal) {
        Ok((alerts, task)) => {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let handle = tokio::spawn(task.run(async move {
                let _ = stopped.await;
            }));
            (alerts, Delivery(Some((stop, handle))))
        }
        Err(e) => {
            tracing::error!("email alerts are off: {e:#}");
            (Alerts::disabled(), Delivery(None))
        }
    }
}

async fn once(settings: Settings) -> ExitCode {
    // Held to the end: dropping it writes the lines still queued for the log file.
    let _log = match logging::init(&settings.daemon.log) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("unitwarden: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let (alerts, delivery) = start_alerts(&settings);
    let outcome = monitor::once(settings, alerts).await;
    delivery.finish().await;
    match outcome {
        Ok(report) => {
            for line in &report.lines {
                println!("{line}");
            }
            if report.all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("unitwarden: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::path::PathBuf;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_flag_works_before_and_after_the_subcommand() {
        let a = Cli::try_parse_from(["unitwarden", "--config", "/x.toml", "once"]).unwrap();
        let b = Cli::try_parse_from(["unitwarden", "once", "--config", "/x.toml"]).unwrap();
        assert_eq!(a.config, PathBuf::from("/x.toml"));
        assert_eq!(b.config, PathBuf::from("/x.toml"));
    }
}
