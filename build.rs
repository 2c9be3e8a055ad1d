//! Generates the man page unitwarden(8) and the bash, zsh and fish completions from the clap
//! definitions in `src/args.rs`, so they can never drift from the real command line.
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
"#;

/// Sections clap cannot derive: where the files are and what the exit codes mean.
const MAN_EXTRA: &str = r#".SH "EXIT STATUS"
.TP
.B 0
success
.TP
.B 1
the command's check failed; for \fBonce\fR: a unit is still down at the end
.TP
.B 2
invalid configuration or arguments (one line on stderr: \fIPATH\fR:\fILINE\fR:\fICOL\fR: what is wrong)
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
.I /usr/share/doc/unitwarden/examples/
example configurations
.SH "SEE ALSO"
.BR systemctl (1),
.BR systemd.service (5),
.BR polkit (8)
"#;

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed=src/args.rs");
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

/// One entry per subcommand with its own options, on this page: there are no separate
/// unitwarden-COMMAND(8) pages to refer to.
fn commands_section(cmd: &clap::Command) -> String {
    let mut roff = String::from(".SH COMMANDS\n");
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let mut synopsis = format!("\\fBunitwarden {}\\fR", roff_escape(sub.get_name()));
        let mut options = String::new();
        for arg in sub.get_arguments().filter(|a| !a.is_global_set()) {
            let Some(long) = arg.get_long() else { continue };
            let value = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map(|v| v.to_string())
                .unwrap_or_default();
            synopsis.push_str(&format!(
                " [\\fB\\-\\-{}\\fR \\fI{}\\fR]",
                roff_escape(long),
                roff_escape(&value)
            ));
            let default = arg
                .get_default_values()
                .first()
                .map(|d| format!(" (default: {})", d.to_string_lossy()))
                .unwrap_or_default();
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            options.push_str(&format!(
                ".RS\n.TP\n\\fB\\-\\-{}\\fR \\fI{}\\fR\n{}{}\n.RE\n",
                roff_escape(long),
                roff_escape(&value),
                roff_escape(&help),
                roff_escape(&default)
            ));
        }
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        roff.push_str(&format!(
            ".TP\n{synopsis}\n{}\n{options}",
            roff_escape(&about)
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
