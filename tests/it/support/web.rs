//! The real web stack of the health-probe tests, run as units of a test's `systemd --user`
//! manager: gunicorn (from PyPI) serving `tests/probe/health_app.py`, nginx (Debian's package)
//! proxying to it with `tests/probe/nginx.conf`, and a plain TCP service
//! (`tests/probe/tcp_server.py`). A missing python3, gunicorn or nginx fails the test with the
//! command that installs it.
//!
//! The units run inside the harness's private PID and mount namespaces, as root, but share the
//! host's network and file system (except `/run/user` and `/run/systemd`): a port they listen
//! on is reachable from the test and from the daemon, and the files they write under
//! `Manager::work_dir()` are read by the test directly. Their `HOME` is the harness's throw-away
//! one, so the units run Python by the absolute path of the interpreter that has gunicorn
//! (a pyenv shim would not find its versions there).

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Manager, wait_until};

/// The fixtures, found from the crate root.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/probe");
/// Where Debian's nginx package puts the binary.
pub const NGINX: &str = "/usr/sbin/nginx";
/// The gunicorn release `.ci/run` installs.
pub const GUNICORN_PIN: &str = "gunicorn==23.0.0";

/// A server must answer within this after its unit started.
const LISTEN_DEADLINE: Duration = Duration::from_secs(30);

/// The interpreter that imports gunicorn, by absolute path (see the module doc).
#[track_caller]
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys, gunicorn; print(sys.executable); print(gunicorn.__version__)",
            ])
            .output()
            .unwrap_or_else(|e| {
                panic!("python3 not found ({e}): apt-get install python3 (.ci/run installs it)")
            });
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        match (out.status.success(), lines.next()) {
            (true, Some(exe)) if Path::new(exe).is_absolute() => PathBuf::from(exe),
            _ => panic!(
                "gunicorn is not importable by python3: python3 -m pip install {GUNICORN_PIN} \
                 (.ci/run installs it)\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    })
}

/// nginx's binary, or a panic that says how to get it.
#[track_caller]
pub fn nginx() -> &'static str {
    assert!(
        Path::new(NGINX).is_file(),
        "nginx not installed ({NGINX} missing): apt-get install nginx (.ci/run installs it)"
    );
    NGINX
}

/// A free TCP port on 127.0.0.1 for a server the test starts later, outside the kernel's
/// ephemeral range, so that no outgoing connection (a probe's, a test's) takes it meanwhile,
/// and never the same twice in one test run.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let (low, high) = ephemeral_range();
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos()
        ^ std::process::id().rotate_left(16);
    let mut x = u64::from(seed) | 1;
    for _ in 0..10_000 {
        // xorshift: a different start per run, no dependency for a random number
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 10_000 + (x % 50_000) as u16;
        if (low..=high).contains(&port) || handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 outside the ephemeral range {low}-{high}");
}

fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// `GET path` on 127.0.0.1:`port` over HTTP/1.0: the status code and the body, or `None` if
/// nothing answered within `timeout`.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// The unit's `MainPID` as a number (0: none).
#[track_caller]
pub fn main_pid(mgr: &Manager, unit: &str) -> u32 {
    mgr.show(unit, "MainPID").parse().unwrap_or(0)
}

/// Waits until `unit` runs a main process other than `old`; returns the new PID.
#[track_caller]
pub fn wait_new_main_pid(mgr: &Manager, unit: &str, old: u32, deadline: Duration) -> u32 {
    wait_until(
        &format!("a new MainPID of {unit} (was {old})"),
        deadline,
        || {
            let pid = main_pid(mgr, unit);
            (pid != 0 && pid != old).then_some(pid)
        },
    )
}

/// Replaces `path` in one rename: a server that reads it at any moment sees the old or the new
/// contents, never an empty file.
fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents)
        .and_then(|()| fs::rename(&tmp, path))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// What `/health/` answers (`tests/probe/health_app.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    Error500,
    Hang,
}

/// One `/health/` request as the app recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// gunicorn's arbiter: the unit's `MainPID` when it was answered.
    pub arbiter: u32,
    pub worker: u32,
    /// "200", "500" or "hang".
    pub status: String,
}

/// gunicorn serving `health_app:app` as a `Type=notify` unit (gunicorn's arbiter sends
/// `READY=1` once it listens), one worker with threads, so a hung request does not block the
/// next probe.
pub struct Gunicorn {
    pub unit: String,
    pub port: u16,
    mode_file: PathBuf,
    request_log: PathBuf,
}

impl Gunicorn {
    /// Writes `NAME.service` into `mgr` (no daemon-reload, no start), answering `health` at
    /// first.
    #[track_caller]
    pub fn install(mgr: &Manager, name: &str, health: Health) -> Gunicorn {
        let port = free_port();
        let dir = mgr.work_dir();
        let g = Gunicorn {
            unit: format!("{name}.service"),
            port,
            mode_file: dir.join(format!("{name}.health-mode")),
            request_log: dir.join(format!("{name}.requests")),
        };
        g.set_health(health);
        // PYTHONDONTWRITEBYTECODE: the app is imported from the source tree, which must not
        // gain a __pycache__.
        mgr.write_unit(
            &g.unit,
            &format!(
                "[Unit]\nDescription=gunicorn serving tests/probe/health_app.py\n\
                 StartLimitIntervalSec=0\n\
                 [Service]\nType=notify\n\
                 Environment=HEALTH_MODE_FILE={mode} HEALTH_REQUEST_LOG={log} PYTHONDONTWRITEBYTECODE=1\n\
                 ExecStart={python} -m gunicorn --chdir {fixtures} --bind 127.0.0.1:{port} \
                 --workers 1 --worker-class gthread --threads 8 --graceful-timeout 1 \
                 health_app:app\n",
                mode = g.mode_file.display(),
                log = g.request_log.display(),
                python = python().display(),
                fixtures = FIXTURES,
            ),
        );
        g
    }

    /// The probe's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/health/", self.port)
    }

    pub fn set_health(&self, health: Health) {
        let mode = match health {
            Health::Ok => "ok",
            Health::Error500 => "500",
            Health::Hang => "hang",
        };
        write_atomic(&self.mode_file, mode);
    }

    /// Every `/health/` request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        let text = fs::read_to_string(&self.request_log).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                Some(Request {
                    arbiter: f.next()?.parse().ok()?,
                    worker: f.next()?.parse().ok()?,
                    status: f.next()?.to_string(),
                })
            })
            .collect()
    }

    /// Requests answered by the instance whose arbiter is `arbiter`, with `status`.
    pub fn count(&self, arbiter: u32, status: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.arbiter == arbiter && r.status == status)
            .count()
    }

    /// Waits until it answers `GET /` (not a probe: not in the request log).
    #[track_caller]
    pub fn wait_listening(&self, mgr: &Manager) {
        let answered = super::poll(LISTEN_DEADLINE, &mut || {
            http_get(self.port, "/", Duration::from_secs(2)).filter(|(status, _)| *status == 200)
        });
        if answered.is_none() {
            panic!(
                "gunicorn ({}) does not answer on port {} within {LISTEN_DEADLINE:?}\n--- manager log ---\n{}",
                self.unit,
                self.port,
                mgr.log_tail(40)
            );
        }
    }
}

/// nginx in the foreground as a unit, proxying its port to an upstream port.
pub struct Nginx {
    pub unit: String,
    pub port: u16,
    prefix: PathBuf,
}

impl Nginx {
    /// Writes `NAME.service` and its config (from `tests/probe/nginx.conf`) into `mgr`.
    #[track_caller]
    pub fn install(mgr: &Manager, name: &str, upstream: u16) -> Nginx {
        let nginx = nginx();
        let port = free_port();
        let prefix = mgr.work_dir().join(name);
        fs::create_dir_all(prefix.join("temp"))
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", prefix.display()));
        let template = fs::read_to_string(Path::new(FIXTURES).join("nginx.conf"))
            .unwrap_or_else(|e| panic!("cannot read {FIXTURES}/nginx.conf: {e}"));
        let conf = prefix.join("nginx.conf");
        fs::write(
            &conf,
            template
                .replace("@PREFIX@", &prefix.display().to_string())
                .replace("@PORT@", &port.to_string())
                .replace("@UPSTREAM@", &upstream.to_string()),
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
        let unit = format!("{name}.service");
        mgr.write_unit(
            &unit,
            &format!(
                "[Unit]\nDescription=nginx in front of gunicorn\nStartLimitIntervalSec=0\n\
                 [Service]\n\
                 ExecStart={nginx} -e {p}/error.log -p {p} -c {c} -g 'daemon off;'\n",
                p = prefix.display(),
                c = conf.display(),
            ),
        );
        Nginx { unit, port, prefix }
    }

    /// The probe's URL, through the proxy.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/health/", self.port)
    }

    /// Status codes of the `/health/` requests in nginx's access log, in order.
    pub fn health_statuses(&self) -> Vec<u16> {
        let text = fs::read_to_string(self.prefix.join("access.log")).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("\"GET /health/ "))
            .filter_map(|l| l.split('"').nth(2)?.split_whitespace().next()?.parse().ok())
            .collect()
    }

    #[track_caller]
    pub fn wait_listening(&self, mgr: &Manager) {
        if super::poll(LISTEN_DEADLINE, &mut || accepts(self.port).then_some(())).is_none() {
            panic!(
                "nginx ({}) does not accept connections on port {} within {LISTEN_DEADLINE:?}\n--- error.log ---\n{}\n--- manager log ---\n{}",
                self.unit,
                self.port,
                fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default(),
                mgr.log_tail(40)
            );
        }
    }
}

/// `tests/probe/tcp_server.py` as a unit: listens until SIGUSR1, then stays active with the
/// port closed.
pub struct TcpServer {
    pub unit: String,
    pub port: u16,
    connection_log: PathBuf,
}

impl TcpServer {
    #[track_caller]
    pub fn install(mgr: &Manager, name: &str) -> TcpServer {
        let port = free_port();
        let connection_log = mgr.work_dir().join(format!("{name}.connections"));
        let unit = format!("{name}.service");
        mgr.write_unit(
            &unit,
            &format!(
                "[Unit]\nDescription=a TCP service\nStartLimitIntervalSec=0\n\
                 [Service]\nExecStart={python} {FIXTURES}/tcp_server.py {port} {log}\n",
                python = python().display(),
                log = connection_log.display(),
            ),
        );
        TcpServer {
            unit,
            port,
            connection_log,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far by the process `pid`.
    pub fn connections(&self, pid: u32) -> usize {
        fs::read_to_string(&self.connection_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.trim().parse() == Ok(pid))
            .count()
    }

    /// Makes the running process close its listening socket; it stays active.
    #[track_caller]
    pub fn close_port(&self, mgr: &Manager) {
        mgr.systemctl_ok(&["kill", "-s", "USR1", "--kill-who=main", &self.unit]);
        if super::poll(LISTEN_DEADLINE, &mut || (!accepts(self.port)).then_some(())).is_none() {
            panic!("{} still accepts connections on {}", self.unit, self.port);
        }
    }
}
