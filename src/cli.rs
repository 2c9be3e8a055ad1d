//! Command line: parses arguments, runs the chosen command, maps outcomes to exit codes.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::alert::Alerts;
pub use crate::args::{Cli, Cmd, EXIT_CONFIG, EXIT_DENIED, EXIT_NO_DAEMON};
use crate::config::{self, Settings};
use crate::control::protocol::Request;
use crate::control::{client, render, server};
use crate::logging;
use crate::metrics::Metrics;
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
    if let Some(request) = control_request(&cli.command) {
        return control(&cli, request);
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
            print_warnings(&settings, settings.warnings());
            ExitCode::SUCCESS
        }
        Cmd::TestEmail => {
            // Only the email's: a config without units is a fine one to test email with.
            let email = settings.email.iter().flat_map(|e| e.warnings());
            print_warnings(&settings, email);
            with_runtime(test_email(settings))
        }
        Cmd::Windows { next } => {
            let host = jiff::tz::TimeZone::system();
            print!(
                "{}",
                crate::window::format_upcoming(
                    &settings.calendar,
                    jiff::Timestamp::now(),
                    usize::from(next),
                    &host
                )
            );
            ExitCode::SUCCESS
        }
        Cmd::PolkitRule { user } => {
            print!("{}", crate::polkit::rule_for(&user, &settings));
            ExitCode::SUCCESS
        }
        Cmd::Doctor { json } => with_runtime(doctor(settings, json)),
        Cmd::Status { .. } | Cmd::Pause { .. } | Cmd::Resume { .. } | Cmd::Retry { .. } => {
            unreachable!("answered by the daemon")
        }
        // Taken above already; a valid config changes nothing about it.
        Cmd::AlertSelfFailure { unit } => with_runtime(crate::selfalert::run(&cli.config, &unit)),
        Cmd::Run => with_runtime(run(settings)),
        Cmd::Once => with_runtime(once(settings)),
    }
}

/// The request a command sends to the running daemon, if it is one of those.
fn control_request(cmd: &Cmd) -> Option<Request> {
    Some(match cmd {
        Cmd::Status { unit, .. } => Request::Status { unit: unit.clone() },
        Cmd::Pause { units, duration } => Request::Pause {
            units: units.clone(),
            for_ms: duration.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        },
        Cmd::Resume { units } => Request::Resume {
            units: units.clone(),
        },
        Cmd::Retry { units } => Request::Retry {
            units: units.clone(),
        },
        _ => None?,
    })
}

/// `status`, `pause`, `resume`, `retry`: one request to the daemon over its socket.
fn control(cli: &Cli, request: Request) -> ExitCode {
    // Only the socket's path is needed. An operator allowed to ask the daemon may still be
    // unable to read its config (it can hold an SMTP password): then the default path it is.
    let socket = match config::load(&cli.config) {
        Ok(s) => s.daemon.control_socket,
        Err(e) => {
            eprintln!(
                "unitwarden: {e}; trying the default socket {}",
                config::DEFAULT_CONTROL_SOCKET
            );
            std::path::PathBuf::from(config::DEFAULT_CONTROL_SOCKET)
        }
    };
    let json = matches!(cli.command, Cmd::Status { json: true, .. });
    let reply = match client::ask(&socket, request) {
        Ok(r) => r,
        Err(client::Failure::NoDaemon(why)) => {
            eprintln!("unitwarden: {why}");
            return ExitCode::from(EXIT_NO_DAEMON);
        }
        Err(client::Failure::Denied(why)) => {
            eprintln!("unitwarden: {why}");
            return ExitCode::from(EXIT_DENIED);
        }
    };
    if let Some(e) = &reply.error {
        eprintln!("unitwarden: {}", render::clean(e));
        return ExitCode::FAILURE;
    }
    if let Some(status) = &reply.status {
        if json {
            match serde_json::to_string_pretty(status) {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    eprintln!("unitwarden: {e}");
                    return ExitCode::FAILURE;
                }
            }
            return ExitCode::SUCCESS;
        }
        let tz = jiff::tz::TimeZone::system();
        let colour = render::Colour::of_stdout();
        match &cli.command {
            Cmd::Status { unit: Some(_), .. } => {
                for u in &status.units {
                    print!("{}", render::detail(status, u, &tz));
                }
            }
            _ => print!("{}", render::table(status, colour, &tz)),
        }
        return ExitCode::SUCCESS;
    }
    for line in &reply.done {
        println!("{}", render::clean(line));
    }
    for line in &reply.refused {
        eprintln!("unitwarden: {}", render::clean(line));
    }
    if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Settings that work but deserve attention (no units, inline password, readable password
/// file).
fn print_warnings(settings: &Settings, warnings: impl IntoIterator<Item = String>) {
    for w in warnings {
        eprintln!("{}: warning: {w}", crate::text::path(&settings.path));
    }
}

/// `doctor`: exit 0 with no findings, 1 with any (a note included) or without a manager to ask.
async fn doctor(settings: Settings, json: bool) -> ExitCode {
    let facts = match crate::doctor::gather(&settings).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "unitwarden doctor: {}",
                crate::text::one_line(&e.to_string())
            );
            return ExitCode::FAILURE;
        }
    };
    let report = crate::doctor::judge(&settings.units, &facts);
    if json {
        match crate::doctor::render::json(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("unitwarden doctor: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!(
            "{}",
            crate::doctor::render::table(&report, render::Colour::of_stdout())
        );
    }
    // The contract: 1 for any finding. Scripts that want warnings only read `severity` from
    // `--json`.
    if !report.findings.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
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
    for w in settings.warnings() {
        tracing::warn!("{}: {w}", crate::text::path(&settings.path));
    }
    let (alerts, delivery) = start_alerts(&settings);
    let socket = settings.daemon.control_socket.clone();
    let (ask_tx, ask_rx) = tokio::sync::mpsc::channel(16);
    // Always running: a reload may add [metrics]. It binds nothing without it.
    let metrics = Metrics::new(&settings);
    tokio::spawn(crate::metrics::server::serve(
        Arc::clone(&metrics),
        ask_tx.clone(),
        alerts.clone(),
    ));
    let bound = match server::bind(&socket) {
        Ok(listener) => {
            tokio::spawn(server::serve(
                listener,
                socket.clone(),
                server::Access::of_this_process(),
                ask_tx,
            ));
            true
        }
        Err(e) => {
            // The watchdog matters more than its remote control: it keeps running.
            tracing::error!(path = %socket.display(), "control socket unavailable: {e}; status, pause, resume and retry cannot reach this daemon");
            false
        }
    };
    let outcome = monitor::run(
        settings,
        Some(log.clone()),
        alerts,
        metrics,
        shutdown,
        rx,
        ask_rx,
    )
    .await;
    if bound {
        let _ = std::fs::remove_file(&socket);
    }
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

/// The running alert tasks: email's if `[email]` is configured, the Alertmanager sink's if
/// `[alertmanager]` is.
struct Delivery(
    Vec<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
);

impl Delivery {
    /// Lets the alert tasks send what is queued (each bounded, email's by
    /// `alert::FLUSH_BOUND`) and waits.
    async fn finish(self) {
        let mut running = Vec::new();
        for (stop, task) in self.0 {
            let _ = stop.send(());
            running.push(task);
        }
        for task in running {
            let _ = task.await;
        }
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(
        &mut self,
        run: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> F,
    ) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.0.push((stop, tokio::spawn(run(stopped))));
    }
}

fn start_alerts(settings: &Settings) -> (Alerts, Delivery) {
    let mut delivery = Delivery(Vec::new());
    let journal = crate::alert::Journal::from(settings.daemon.bus);
    let state_dir = &settings.daemon.state_dir;
    let mut alerts = match &settings.email {
        None => Alerts::disabled(),
        Some(email) => match crate::alert::start(email, state_dir, journal) {
            Ok((alerts, task)) => {
                delivery.spawn(|stopped| {
                    task.run(async move {
                        let _ = stopped.await;
                    })
                });
                alerts
            }
            Err(e) => {
                tracing::error!("email alerts are off: {e:#}");
                Alerts::disabled()
            }
        },
    };
    if let Some(am) = &settings.alertmanager {
        let (handle, sink) = crate::alertmanager::start(am, state_dir, journal);
        delivery.spawn(|stopped| {
            sink.run(async move {
                let _ = stopped.await;
            })
        });
        alerts = alerts.with_alertmanager(handle);
    }
    (alerts, delivery)
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
    fn windows_next_is_bounded_with_a_usage_error() {
        let n = |arg: &str| match Cli::try_parse_from(["unitwarden", "windows", "--next", arg]) {
            Ok(Cli {
                command: Cmd::Windows { next },
                ..
            }) => Ok(next),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(n("1").unwrap(), 1);
        assert_eq!(n("1000").unwrap(), 1000);
        for bad in ["0", "1001", "18446744073709551616", "-1", "x"] {
            let e = n(bad).unwrap_err();
            // main prints it to stderr and exits 2.
            assert!(e.use_stderr(), "{bad}");
            assert_eq!(e.exit_code(), i32::from(EXIT_CONFIG), "{bad}");
        }
        let e = n("1001").unwrap_err().to_string();
        assert!(
            e.contains("invalid value '1001' for '--next <N>': 1001 is not in 1..=1000"),
            "{e}"
        );
    }

    #[test]
    fn config_flag_works_before_and_after_the_subcommand() {
        let a = Cli::try_parse_from(["unitwarden", "--config", "/x.toml", "once"]).unwrap();
        let b = Cli::try_parse_from(["unitwarden", "once", "--config", "/x.toml"]).unwrap();
        assert_eq!(a.config, PathBuf::from("/x.toml"));
        assert_eq!(b.config, PathBuf::from("/x.toml"));
    }
}
