//! The command-line interface as data (clap derive). Kept free of crate dependencies so the
//! build script can include it to generate the man page and shell completions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Where the config is read from unless `--config` or `UNITWARDEN_CONFIG` says otherwise.
pub const DEFAULT_CONFIG: &str = "/etc/unitwarden/unitwarden.toml";

/// The system account the package creates for least-privilege mode.
pub const DEFAULT_SERVICE_USER: &str = "unitwarden";

/// The most transitions `windows --next N` prints.
pub const MAX_WINDOWS_NEXT: i64 = 1000;

/// Exit code for an invalid config or invalid arguments.
pub const EXIT_CONFIG: u8 = 2;

/// Exit code of `status`, `pause`, `resume` and `retry` when no daemon answers.
pub const EXIT_NO_DAEMON: u8 = 3;

/// Exit code of `status`, `pause`, `resume` and `retry` when the daemon's socket or the
/// request is not permitted to this user.
pub const EXIT_DENIED: u8 = 4;

#[derive(Parser, Debug)]
#[command(
    name = "unitwarden",
    version,
    about = "Keeps a host's systemd services running: restarts units that die, with capped retries and backoff",
    long_about = None
)]
pub struct Cli {
    /// Configuration file
    #[arg(long, global = true, env = "UNITWARDEN_CONFIG", default_value = DEFAULT_CONFIG, value_name = "PATH")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the watchdog daemon (exit 0 on a clean stop)
    Run,
    /// Validate the configuration and print units, windows and the email target (exit 0 ok, 2 invalid)
    CheckConfig,
    /// One check-and-restart pass, then exit (exit 0 all healthy at the end, 1 some down)
    Once,
    /// Print the next critical window starts and ends
    Windows {
        /// How many transitions to print, 1 to 1000
        // Bounded: the calendar walks up to eight days per transition asked for, so a huge N
        // would run for hours.
        #[arg(long, default_value_t = 5, value_name = "N",
              value_parser = clap::value_parser!(u16).range(1..=MAX_WINDOWS_NEXT))]
        next: u16,
    },
    /// Send one test email now and print the SMTP result (exit 0 sent, 1 failed)
    TestEmail,
    /// The running daemon's view: per unit state, attempts, episode, last action, next check (exit 0, 3 no daemon)
    Status {
        /// One unit in detail, with its last events (`.service` may be omitted)
        #[arg(value_name = "UNIT")]
        unit: Option<String>,
        /// Print the versioned JSON document instead of the table
        #[arg(long)]
        json: bool,
    },
    /// Watch and report UNIT but never restart it, until `resume` or the pause expires (exit 0, 3 no daemon)
    Pause {
        /// Unit names or globs (`.service` may be omitted)
        #[arg(value_name = "UNIT", required = true)]
        units: Vec<String>,
        /// Resume by itself after this long, e.g. 30m (default: until `resume`)
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<humantime::Duration>,
    },
    /// End a pause or an operator stop: UNIT is restarted again when it is down (exit 0, 3 no daemon)
    Resume {
        /// Unit names or globs (`.service` may be omitted)
        #[arg(value_name = "UNIT", required = true)]
        units: Vec<String>,
    },
    /// Start a fresh episode now for a unit that was given up (exit 0, 3 no daemon)
    Retry {
        /// Unit names (`.service` may be omitted)
        #[arg(value_name = "UNIT", required = true)]
        units: Vec<String>,
    },
    /// Email, once, that UNIT (unitwarden itself) failed for good; run by unitwarden-failed.service (exit 0 sent or nothing to send, 1 not sent)
    AlertSelfFailure {
        /// The unit whose failure to report
        #[arg(long, default_value = "unitwarden.service", value_name = "UNIT")]
        unit: String,
    },
    /// Read every watched unit over D-Bus and flag pitfalls (exit 0 no findings, 1 findings or the manager cannot be reached)
    Doctor {
        /// Print the versioned JSON document instead of the table
        #[arg(long)]
        json: bool,
    },
    /// Print a polkit rule letting USER start, restart and reset exactly the configured units
    PolkitRule {
        /// The account unitwarden runs as in least-privilege mode (User= in its unit)
        #[arg(long, default_value = DEFAULT_SERVICE_USER, value_name = "USER")]
        user: String,
    },
}
