//! Generates the man page unitwarden(8) and the bash, zsh and fish completions from the clap
//! definitions in `src/args.rs`, and the page's CONFIGURATION section from the table of keys in
//! `src/config/keys.rs`, so they can never drift from the real command line and config reader.
//!
//! Everything is written to `OUT_DIR`, then copied to `<target>/<profile>/assets/`: the
//! `.deb` (cargo-deb) needs a path that does not change with the build script's hash.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

// `#[path]` rather than `include!`: the module keeps its own `//!` docs and `use` lines.
#[path = "src/args.rs"]
#[allow(dead_code)]
mod args;

#[path = "src/config/keys.rs"]
#[allow(dead_code)]
mod keys;

const MAN_DESCRIPTION: &str = r#".SH DESCRIPTION
\fBunitwarden\fR watches the systemd units named in its configuration over D\-Bus and
restarts the ones that die, with a capped number of attempts and an exponential backoff.
It checks more often during configured critical windows, writes rotating log files and
emails the people on call.
.PP
Installed from the Debian package it runs as \fBunitwarden.service\fR (\fIType=notify\fR):
read it with \fBsystemctl status unitwarden\fR, whose Status: line is kept current, and
\fBtail \-F /var/log/unitwarden/unitwarden.log\fR.
\fBsystemctl reload unitwarden\fR rereads the configuration; an invalid one is rejected and
the running one stays.
.PP
If \fBunitwarden.service\fR itself fails for good (its start limit is hit, or the configuration
it starts with is invalid), \fBunitwarden\-failed.service\fR, its \fIOnFailure=\fR unit, runs
\fBunitwarden alert\-self\-failure\fR: one email to the \fB[email]\fR recipients, with the unit's
journal.
"#;

/// Sections clap cannot derive: where the files are and what the exit codes mean.
const MAN_EXTRA: &str = r#".SH "EXIT STATUS"
.TP
.B 0
success
.TP
.B 1
the command's check failed; for \fBonce\fR: a unit is still down at the end; for \fBdoctor\fR:
any finding (a warning or a note), or the manager cannot be reached on the bus
.TP
.B 2
invalid configuration or arguments (one line on stderr: \fIPATH\fR:\fILINE\fR:\fICOL\fR: what is wrong)
.TP
.B 3
\fBstatus\fR, \fBpause\fR, \fBresume\fR, \fBretry\fR: no daemon answers on the control socket
.TP
.B 4
\fBstatus\fR, \fBpause\fR, \fBresume\fR, \fBretry\fR: not permitted (the socket's group may read \fBstatus\fR; changes need root)
.SH FILES
.TP
.I /etc/unitwarden/unitwarden.toml
the configuration (\fB\-\-config\fR or \fBUNITWARDEN_CONFIG\fR to use another)
.TP
.I /var/log/unitwarden/unitwarden.log
symlink to the current rotating log file; follow it with \fBtail \-F\fR
.TP
.I /var/lib/unitwarden/
attempt counters and give\-up state (they survive a restart of unitwarden)
.TP
.I /run/unitwarden/control.sock
the running daemon's control socket (mode 0660), which \fBstatus\fR, \fBpause\fR, \fBresume\fR
and \fBretry\fR talk to; its directory comes from the unit's \fIRuntimeDirectory=\fR
.TP
.I /usr/share/doc/unitwarden/examples/
example configurations
.SH "SEE ALSO"
.BR systemctl (1),
.BR systemd.service (5),
.BR polkit (8)
"#;

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed=src/args.rs");
    println!("cargo:rerun-if-changed=src/config/keys.rs");
    println!("cargo:rerun-if-changed=build.rs");

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut cmd = args::Cli::command();

    let mut man = Vec::new();
    let page = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration");
    page.render_title(&mut man)?;
    page.render_name_section(&mut man)?;
    page.render_synopsis_section(&mut man)?;
    man.extend_from_slice(MAN_DESCRIPTION.as_bytes());
    page.render_options_section(&mut man)?;
    man.extend_from_slice(commands_section(&cmd).as_bytes());
    man.extend_from_slice(configuration_section().as_bytes());
    man.extend_from_slice(MAN_EXTRA.as_bytes());
    page.render_version_section(&mut man)?;
    fs::write(out.join("unitwarden.8"), &man)?;
    // Debian policy 12.1: man pages ship as `gzip -9n` (best level, no name, no time).
    let mut gz = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    gz.write_all(&man)?;
    fs::write(out.join("unitwarden.8.gz"), gz.finish()?)?;

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "unitwarden", &out)?;
    }

    // OUT_DIR is <target>/<profile>/build/unitwarden-<hash>/out.
    if let Some(profile_dir) = out.ancestors().nth(3) {
        let assets = profile_dir.join("assets");
        fs::create_dir_all(&assets)?;
        for name in [
            "unitwarden.8",
            "unitwarden.8.gz",
            "unitwarden.bash",
            "_unitwarden",
            "unitwarden.fish",
        ] {
            copy_if_changed(&out.join(name), &assets.join(name))?;
        }
    }
    Ok(())
}

/// One entry per subcommand with its own arguments, on this page: there are no separate
/// unitwarden-COMMAND(8) pages to refer to. Options come first in the synopsis, then operands
/// (`UNIT...` when repeated, `[UNIT]` when optional); a flag shows no value.
fn commands_section(cmd: &clap::Command) -> String {
    let mut cmd = cmd.clone();
    // Fills in what derive leaves to the parser (how many values each argument takes).
    cmd.build();
    let mut roff = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let mut synopsis = format!("\\fBunitwarden {}\\fR", roff_escape(sub.get_name()));
        let mut operands = String::new();
        let mut options = String::new();
        // `build` added --help everywhere; the page says that once, in OPTIONS.
        let own = |a: &&clap::Arg| {
            !a.is_global_set()
                && !matches!(
                    a.get_action(),
                    clap::ArgAction::Help
                        | clap::ArgAction::HelpShort
                        | clap::ArgAction::HelpLong
                        | clap::ArgAction::Version
                )
        };
        for arg in sub.get_arguments().filter(own) {
            let value = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map(|v| v.to_string())
                .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
            let value = format!("\\fI{}\\fR", roff_escape(&value));
            let term = match arg.get_long() {
                None => {
                    let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
                    let operand = if many {
                        format!("{value}...")
                    } else {
                        value.clone()
                    };
                    operands.push_str(&if arg.is_required_set() {
                        format!(" {operand}")
                    } else {
                        format!(" [{operand}]")
                    });
                    value
                }
                Some(long) => {
                    let mut term = format!("\\fB\\-\\-{}\\fR", roff_escape(long));
                    if arg.get_action().takes_values() {
                        term.push_str(&format!(" {value}"));
                    }
                    synopsis.push_str(&format!(" [{term}]"));
                    term
                }
            };
            // A flag's default is always "false": not worth saying.
            let default = arg
                .get_default_values()
                .first()
                .filter(|_| arg.get_action().takes_values())
                .map(|d| format!(" (default: {})", d.to_string_lossy()))
                .unwrap_or_default();
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            options.push_str(&format!(
                ".RS\n.TP\n{term}\n{}{}\n.RE\n",
                roff_escape(&help),
                roff_escape(&default)
            ));
        }
        synopsis.push_str(&operands);
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        roff.push_str(&format!(
            ".TP\n{synopsis}\n{}\n{options}",
            roff_escape(&about)
        ));
    }
    roff
}

/// The sections and keys of this release with their defaults, then what is refused as a later
/// release's, from `keys::SECTIONS` and `keys::KEYS`.
fn configuration_section() -> String {
    use keys::{KEYS, Release, SECTIONS, Unset};
    let mut roff = String::from(
        r#".SH CONFIGURATION
The configuration is a TOML file. Unknown sections and keys are errors, so that a typo never
silently disables a feature: check a file with \fBunitwarden check\-config\fR. Durations are
strings such as "500ms", "15s", "5m", "1h30m" or "7d".
"#,
    );
    let header = |name: &str| match SECTIONS.iter().find(|s| s.name == name) {
        Some(s) if s.repeated => format!("[[{name}]]"),
        _ => format!("[{name}]"),
    };
    for section in SECTIONS.iter().filter(|s| s.release == Release::This) {
        roff.push_str(&format!(
            ".SS \"{}\"\n{}\n",
            roff_escape(&header(section.name)),
            roff_escape(section.doc)
        ));
        for key in KEYS
            .iter()
            .filter(|k| k.section == section.name && k.in_this_release())
        {
            let unset = match key.unset {
                Unset::Required => format!("required; e.g. {}", key.example),
                Unset::Value(v) => format!("default: {v}"),
                Unset::Means(m) => format!("default: {m}; e.g. {}", key.example),
            };
            roff.push_str(&format!(
                ".TP\n\\fB{}\\fR ({})\n{}\n",
                roff_escape(key.name),
                roff_escape(&unset),
                roff_escape(key.doc)
            ));
        }
    }
    // Whole sections of a later release, then the later keys of this release's sections.
    let mut later: Vec<String> = SECTIONS
        .iter()
        .filter(|s| s.release == Release::Later)
        .map(|s| header(s.name))
        .collect();
    later.extend(
        KEYS.iter()
            .filter(|k| k.release == Release::Later)
            .filter(|k| {
                SECTIONS
                    .iter()
                    .any(|s| s.name == k.section && s.release == Release::This)
            })
            .map(|k| format!("{} in {}", k.name, header(k.section))),
    );
    if !later.is_empty() {
        roff.push_str(&format!(
            ".SS \"Not in this release\"\nA configuration that sets any of these is refused (exit status 2) rather than accepted and\nignored: {}.\n",
            roff_escape(&later.join(", "))
        ));
    }
    roff
}

/// Text as roff reads it literally: backslashes and hyphens escaped, no line starting a request.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// Leaves an identical file alone, so its mtime only moves when its content does.
fn copy_if_changed(from: &Path, to: &Path) -> io::Result<()> {
    let new = fs::read(from)?;
    if fs::read(to).ok().as_deref() != Some(new.as_slice()) {
        fs::write(to, new)?;
    }
    Ok(())
}
