//! The systemd notification protocol (`sd_notify`): READY, STATUS, WATCHDOG, RELOADING,
//! STOPPING, sent whenever `NOTIFY_SOCKET` is set.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    socket: Option<(UnixDatagram, NotifyAddr)>,
    last_status: String,
}

enum NotifyAddr {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`; without it every call is a no-op.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|raw| {
            let raw = raw.into_encoded_bytes();
            let addr = match raw.first() {
                Some(b'@') => NotifyAddr::Abstract(raw[1..].to_vec()),
                Some(b'/') => NotifyAddr::Path(std::path::PathBuf::from(
                    std::ffi::OsString::from_vec_compat(raw),
                )),
                _ => return None,
            };
            UnixDatagram::unbound().ok().map(|s| (s, addr))
        });
        Notifier {
            socket,
            last_status: String::new(),
        }
    }

    pub fn send(&self, msg: &str) {
        let Some((sock, addr)) = &self.socket else {
            return;
        };
        let sent = match addr {
            NotifyAddr::Path(p) => sock.send_to(msg.as_bytes(), p),
            NotifyAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
            }
        };
        if let Err(e) = sent {
            tracing::debug!("sd_notify failed: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\n{}", status_assignment(status)));
    }

    /// Sends STATUS= only when it changed, since it is recomputed on every loop turn.
    pub fn status(&mut self, status: &str) {
        if status != self.last_status {
            self.last_status = status.to_string();
            self.send(&status_assignment(status));
        }
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

/// `STATUS=…` for a datagram whose assignments are separated by newlines: the text holds unit
/// and window names and error messages, and a newline in it would add an assignment of its
/// own (`READY=1`, `MAINPID=…`). Control characters are escaped, so it stays one line.
fn status_assignment(status: &str) -> String {
    format!("STATUS={}", crate::text::one_line(status))
}

/// Half the `WatchdogSec` systemd asked for (via `WATCHDOG_USEC`, for this PID), if any.
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

trait FromVecCompat {
    fn from_vec_compat(v: Vec<u8>) -> std::ffi::OsString;
}

impl FromVecCompat for std::ffi::OsString {
    fn from_vec_compat(v: Vec<u8>) -> std::ffi::OsString {
        use std::os::unix::ffi::OsStringExt;
        std::ffi::OsString::from_vec(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_one_assignment_whatever_it_holds() {
        let cases = [
            ("3 active", "STATUS=3 active"),
            ("w\nREADY=1\nMAINPID=1", r"STATUS=w\nREADY=1\nMAINPID=1"),
            (
                "reload failed: /etc/u\r\n.toml: x",
                r"STATUS=reload failed: /etc/u\r\n.toml: x",
            ),
            ("nul\0 esc\u{1b}[2J", r"STATUS=nul\u{0} esc\u{1b}[2J"),
            ("sep\u{2028}\u{2029}", r"STATUS=sep\u{2028}\u{2029}"),
            ("quotes \"'\\ and ü", "STATUS=quotes \"'\\ and ü"),
        ];
        for (status, want) in cases {
            let got = status_assignment(status);
            assert_eq!(got, want);
            assert_eq!(got.lines().count(), 1, "{got:?}");
        }
    }

    /// The datagram itself, read back from a socket standing in for systemd's.
    #[test]
    fn a_ready_datagram_carries_exactly_two_assignments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), NotifyAddr::Path(path))),
            last_status: String::new(),
        };
        n.ready("rush\nWATCHDOG=1");
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..len]).unwrap();
        assert_eq!(got, "READY=1\nSTATUS=rush\\nWATCHDOG=1");
    }
}
