//! The exec probe: a program run without a shell, in its own process group, with its output
//! (stdout and stderr through one pipe, in the order written) kept as a bounded tail. At the
//! timeout, or when the probe is dropped, the whole group is killed, so helpers it started
//! die with it.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

use super::Verdict;
use super::net::io_text;
use crate::logging::format_duration;
use crate::text::one_line;

/// How much of the output is kept: its end, where the reason for a failure usually is.
const MAX_TAIL: usize = 4 * 1024;
/// How much of the tail goes into the detail, in characters.
const TAIL_CHARS: usize = 200;
/// After the program exits, at most this much more is read from the pipe: a background
/// process it left behind may hold the pipe open and keep writing.
const MAX_DRAIN: usize = 64 * 1024;

pub(super) async fn check(argv: &[String], timeout: Duration) -> Verdict {
    let Some(program) = argv.first().filter(|p| !p.is_empty()) else {
        return Err("exec needs a program".into());
    };
    let (mut output, mut child) = spawn(program, &argv[1..])?;
    let mut group = Group::of(&child);
    let mut tail = Tail::default();
    let mut buf = vec![0u8; 4096];
    let mut open = true;
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let status = loop {
        tokio::select! {
            status = child.wait() => break Some(status),
            n = output.read(&mut buf), if open => match n {
                Ok(0) | Err(_) => open = false,
                Ok(n) => tail.push(&buf[..n]),
            },
            () = &mut deadline => break None,
        }
    };
    let status = match status {
        Some(status) => {
            if status.is_ok() {
                group.reaped();
            }
            status
        }
        None => {
            group.kill();
            if child.wait().await.is_ok() {
                group.reaped();
            }
            drain(&output, open, &mut buf, &mut tail);
            return Err(with_tail(
                format!("killed after {} (timeout)", format_duration(timeout)),
                &tail,
            ));
        }
    };
    drain(&output, open, &mut buf, &mut tail);
    let status = status.map_err(|e| format!("could not wait for {program}: {}", io_text(&e)))?;
    if status.success() {
        return Ok("exit status 0".into());
    }
    Err(with_tail(exit_text(&status), &tail))
}

/// Starts `program` with stdin from /dev/null and stdout and stderr into one pipe.
fn spawn(program: &str, args: &[String]) -> Result<(pipe::Receiver, Child), String> {
    let piped = |e: nix::Error| format!("could not make a pipe for {program}: {}", e.desc());
    // Close-on-exec, so that programs that other probes start at the same time do not inherit
    // this pipe and hold it open.
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(piped)?;
    let write2: OwnedFd = write
        .try_clone()
        .map_err(|e| format!("could not make a pipe for {program}: {}", io_text(&e)))?;
    let output = pipe::Receiver::from_owned_fd(read)
        .map_err(|e| format!("could not make a pipe for {program}: {}", io_text(&e)))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(write)
        .stderr(write2)
        .kill_on_drop(true)
        .process_group(0);
    let child = cmd.spawn();
    // Our copies of the write end go with the command: the pipe ends when the program's do.
    drop(cmd);
    let child = child.map_err(|e| format!("could not start {program}: {}", io_text(&e)))?;
    Ok((output, child))
}

/// What a program left in the pipe by the time it exited (or was killed), without waiting
/// for the pipe to close.
fn drain(output: &pipe::Receiver, open: bool, buf: &mut [u8], tail: &mut Tail) {
    if !open {
        return;
    }
    let mut read = 0;
    while read < MAX_DRAIN {
        match output.try_read(buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.push(&buf[..n]);
                read += n;
            }
        }
    }
}

/// The child's process group, killed with SIGKILL when the probe times out or is dropped. It
/// is only ever signalled while its leader is unreaped: until then no other process can be
/// given that number as its own group.
struct Group(Option<Pid>);

impl Group {
    fn of(child: &Child) -> Group {
        Group(
            child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        )
    }

    fn kill(&self) {
        if let Some(pgid) = self.0 {
            // ESRCH (all gone already) is the only failure, and harmless.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// The leader is reaped: its number may now be reused, so the group is no longer ours.
    fn reaped(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `MAX_TAIL` bytes of output.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        let bytes = &bytes[bytes.len().saturating_sub(MAX_TAIL)..];
        let over = (self.0.len() + bytes.len()).saturating_sub(MAX_TAIL);
        self.0.drain(..over);
        self.0.extend_from_slice(bytes);
    }

    /// The last lines, joined by ` | `, at most `TAIL_CHARS` characters (the start cut off),
    /// blank lines left out.
    fn text(&self) -> String {
        // A cut may have split a UTF-8 sequence: skip its continuation bytes.
        let start = self
            .0
            .iter()
            .position(|b| b & 0xC0 != 0x80)
            .unwrap_or(self.0.len());
        let text = String::from_utf8_lossy(&self.0[start..]);
        let mut lines = Vec::new();
        let mut chars = 0;
        for line in text.split(['\n', '\r']).rev() {
            let line = one_line(line.trim());
            if line.is_empty() {
                continue;
            }
            let n = line.chars().count();
            if chars + n > TAIL_CHARS {
                if lines.is_empty() {
                    let keep: String = line.chars().skip(n - (TAIL_CHARS - 3)).collect();
                    lines.push(format!("...{keep}"));
                }
                break;
            }
            chars += n + 3;
            lines.push(line.into_owned());
        }
        lines.reverse();
        lines.join(" | ")
    }
}

fn with_tail(what: String, tail: &Tail) -> String {
    let text = tail.text();
    if text.is_empty() {
        what
    } else {
        format!("{what}: {text}")
    }
}

fn exit_text(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
            let core = if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            };
            format!("killed by signal {name}{core}")
        }
        None => format!("ended with {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(bytes: &[u8]) -> String {
        let mut t = Tail::default();
        t.push(bytes);
        t.text()
    }

    #[test]
    fn the_tail_keeps_the_last_lines_on_one_line() {
        assert_eq!(tail_of(b""), "");
        assert_eq!(tail_of(b"\n\n  \n"), "");
        assert_eq!(
            tail_of(b"starting\r\n\ndb: connection refused\n"),
            "starting | db: connection refused"
        );
        assert_eq!(
            tail_of(b"bell\x07 and \x1b[31mred\n"),
            r"bell\u{7} and \u{1b}[31mred"
        );
        let many: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = tail_of(many.as_bytes());
        assert!(t.ends_with("line 98 | line 99"), "{t}");
        assert!(t.chars().count() <= TAIL_CHARS, "{t}");
        let long = format!("{}END\n", "x".repeat(1000));
        let t = tail_of(long.as_bytes());
        assert!(t.starts_with("...x") && t.ends_with("xEND"), "{t}");
        assert_eq!(t.chars().count(), TAIL_CHARS);
    }

    #[test]
    fn the_tail_is_bounded_and_survives_a_cut_utf8_sequence() {
        let mut t = Tail::default();
        for _ in 0..100 {
            t.push("çay ".repeat(100).as_bytes());
        }
        assert_eq!(t.0.len(), MAX_TAIL);
        assert!(!t.text().contains('\u{FFFD}'), "{}", t.text());
        t.push(&vec![b'a'; 3 * MAX_TAIL]);
        assert_eq!(t.0.len(), MAX_TAIL);
    }
}
