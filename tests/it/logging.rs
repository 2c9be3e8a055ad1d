//! The real binary's log output where no systemd is needed: a daemon that cannot reach its bus
//! still logs, so it shows what stderr looks like when it is the journal, and that a clean exit
//! leaves every line in the file.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{unitwarden_command, wait_until};

const T: Duration = Duration::from_secs(30);

#[test]
fn under_the_journal_stderr_lines_carry_a_priority_and_no_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("unitwarden.toml");
    fs::write(
        &cfg,
        format!(
            "[daemon]\nbus = \"user\"\nlog_dir = \"{log}\"\nstate_dir = \"{state}\"\ncontrol_socket = \"{sock}\"\n",
            log = dir.path().join("log").display(),
            state = dir.path().join("state").display(),
            sock = dir.path().join("control.sock").display(),
        ),
    )
    .unwrap();
    // A file stands in for journald's stream: what matters is that JOURNAL_STREAM names the
    // device and inode stderr really is.
    let stderr_path = dir.path().join("stderr");
    let stderr = File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut child = unitwarden_command(None)
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stderr_text = || fs::read_to_string(&stderr_path).unwrap();
    // No bus listens at the address unitwarden_command sets, so the daemon warns and retries.
    wait_until("a warning about the unreachable bus", T, || {
        stderr_text()
            .lines()
            .any(|l| l.starts_with("<4>WARN ") && l.contains("retrying"))
            .then_some(())
    });
    kill(
        Pid::from_raw(child.id().try_into().unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_until("the daemon to exit after SIGTERM", T, || {
        child.try_wait().unwrap()
    });
    assert!(status.success(), "{status}\n{}", stderr_text());

    let text = stderr_text();
    let mut events = Vec::new();
    for line in text.lines() {
        let rest = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .unwrap_or_else(|| panic!("line without a priority: {line:?}"));
        // The level comes first: journald's own timestamp is the only one.
        if !rest.starts_with("unitwarden: ") {
            assert!(
                ["ERROR ", "WARN ", "INFO ", "DEBUG ", "TRACE "]
                    .iter()
                    .any(|level| rest.starts_with(level)),
                "timestamp or junk before the level: {line:?}"
            );
            events.push(rest);
        }
    }
    assert!(
        events
            .iter()
            .any(|l| l.starts_with("INFO ") && l.ends_with("unitwarden starting")),
        "{text}"
    );
    // The file has the same events with full timestamps and no prefix, the last ones included:
    // the writer emptied its queue before the process ended.
    let file = fs::read_to_string(dir.path().join("log/unitwarden.log")).unwrap();
    let file_events: Vec<_> = file
        .lines()
        .map(|line| {
            let (time, rest) = line.split_once(' ').unwrap_or_default();
            assert!(
                jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%.f%:z", time).is_ok(),
                "no RFC 3339 time first in {line:?}"
            );
            rest
        })
        .collect();
    assert_eq!(file_events, events);
    assert_eq!(events.last().copied(), Some("INFO stopping"), "{text}");
}
