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
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// Sends STATUS= only when it changed, since it is recomputed on every loop turn.
    pub fn status(&mut self, status: &str) {
        if status != self.last_status {
            self.last_status = status.to_string();
            self.send(&format!("STATUS={status}"));
        }
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
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
