//! The real Prometheus, Alertmanager and promtool of Debian's packages (`prometheus`,
//! `prometheus-alertmanager`) for the fleet tests, each started on its own loopback port with
//! its own data directory, and a plain HTTP/1.1 client to talk to them and to `/metrics`. A
//! missing binary fails the test with the package to install.

// Not every test uses every helper.
#![allow(dead_code)]

use crate::support::web::free_port;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::support::{run_to_completion, wait_until};

const READY_DEADLINE: Duration = Duration::from_secs(60);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// `program`'s path, or a panic naming the Debian package that has it.
#[track_caller]
pub fn tool(program: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "{program} is not installed: apt-get install --no-install-recommends {package} (.ci/run does)"
            )
        })
}

/// An HTTP answer: status code, headers as read, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// One HTTP/1.1 request to 127.0.0.1:`port` with `Connection: close`; `Err` when the server
/// cannot be reached or answers nothing readable.
pub fn request(port: u16, method: &str, path: &str, body: Option<&str>) -> Result<Answer, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(HTTP_TIMEOUT)).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(b) = body {
        req += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        );
    }
    req += "\r\n";
    req += body.unwrap_or("");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Answer {
        status,
        head: head.to_string(),
        body,
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out += &rest[..n];
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `GET path`, expecting 200.
#[track_caller]
pub fn get(port: u16, path: &str) -> String {
    let a = request(port, "GET", path, None).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(a.status, 200, "GET {path}: {a:?}");
    a.body
}

/// `promtool ARGS` (stdin from `input`), with its output.
pub fn promtool(args: &[&str], input: Option<&str>) -> Output {
    let mut cmd = Command::new(tool("promtool", "prometheus"));
    cmd.args(args);
    match input {
        None => run_to_completion(cmd, Duration::from_secs(60)),
        Some(text) => {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }
    }
}

/// A child process killed (and reaped) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut cmd: Command, log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    Proc(child)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A real Prometheus scraping unitwarden's `/metrics` every second.
pub struct Prometheus {
    _proc: Proc,
    pub port: u16,
    log: PathBuf,
}

impl Prometheus {
    #[track_caller]
    pub fn start(dir: &Path, target_port: u16) -> Prometheus {
        let bin = tool("prometheus", "prometheus");
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: unitwarden\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.join("prometheus.log");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let proc = spawn(cmd, &log);
        let p = Prometheus {
            _proc: proc,
            port,
            log,
        };
        let ready = crate::support::wait_until_or(READY_DEADLINE, || {
            request(port, "GET", "/-/ready", None)
                .ok()
                .filter(|a| a.status == 200)
        });
        if ready.is_none() {
            panic!(
                "prometheus not ready within {READY_DEADLINE:?}:\n{}",
                log_tail(&p.log)
            );
        }
        p
    }

    /// An instant query through the HTTP API: the result vector.
    #[track_caller]
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", urlencode(expr));
        let body = get(self.port, &path);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value of `expr`, if it has one now.
    pub fn value(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr);
        let v = r.first()?["value"][1].as_str()?.parse().ok()?;
        Some(v)
    }

    /// Waits until `expr` has the single value `want`.
    #[track_caller]
    pub fn wait_value(&self, what: &str, expr: &str, want: f64, deadline: Duration) {
        let mut last = None;
        let got = crate::support::wait_until_or(deadline, || {
            last = self.value(expr);
            (last == Some(want)).then_some(())
        });
        if got.is_none() {
            panic!(
                "{what}: {expr} was {last:?}, not {want}, after {deadline:?}\n--- prometheus ---\n{}\n--- targets ---\n{}",
                log_tail(&self.log),
                get(self.port, "/api/v1/targets")
            );
        }
    }
}

/// A real Alertmanager (no cluster port) routing everything to a receiver without
/// integrations: the tests read its alerts through the v2 API.
pub struct Alertmanager {
    proc: Option<Proc>,
    pub port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Alertmanager {
    #[track_caller]
    pub fn start(dir: &Path) -> Alertmanager {
        Alertmanager::start_on(dir, free_port())
    }

    /// On `port`, with a fresh data dir each time (a restarted Alertmanager keeps nothing).
    #[track_caller]
    pub fn start_on(dir: &Path, port: u16) -> Alertmanager {
        let dir = dir.join(format!("alertmanager-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut am = Alertmanager {
            proc: None,
            port,
            log: dir.join("alertmanager.log"),
            dir,
        };
        am.run();
        am
    }

    #[track_caller]
    fn run(&mut self) {
        let bin = tool("prometheus-alertmanager", "prometheus-alertmanager");
        let config = self.dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: nobody\n  group_wait: 1s\nreceivers:\n  - name: nobody\n",
        )
        .unwrap();
        let data = self.dir.join("data");
        let _ = std::fs::remove_dir_all(&data);
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--cluster.listen-address=");
        self.proc = Some(spawn(cmd, &self.log));
        let port = self.port;
        let ready = crate::support::wait_until_or(READY_DEADLINE, || {
            request(port, "GET", "/-/ready", None)
                .ok()
                .filter(|a| a.status == 200)
        });
        if ready.is_none() {
            panic!(
                "alertmanager not ready within {READY_DEADLINE:?}:\n{}",
                log_tail(&self.log)
            );
        }
    }

    /// Stops it (SIGKILL): the port refuses connections until [`Alertmanager::restart`].
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Starts it again on the same port, with nothing remembered.
    #[track_caller]
    pub fn restart(&mut self) {
        self.run();
    }

    /// Active alerts (`GET /api/v2/alerts`).
    #[track_caller]
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let body = get(self.port, "/api/v2/alerts");
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The active alert whose labels include all of `labels`.
    pub fn find(&self, labels: &[(&str, &str)]) -> Option<serde_json::Value> {
        self.alerts()
            .into_iter()
            .find(|a| labels.iter().all(|(k, v)| a["labels"][*k] == *v))
    }

    /// Waits for an active alert with `labels`.
    #[track_caller]
    pub fn wait_for(&self, labels: &[(&str, &str)], deadline: Duration) -> serde_json::Value {
        wait_until(&format!("an alert {labels:?}"), deadline, || {
            self.find(labels)
        })
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
