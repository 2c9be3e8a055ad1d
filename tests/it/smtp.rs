//! A real SMTP server for the email tests: aiosmtpd (from PyPI) driven through
//! `tests/smtp/server.py`, writing each accepted message into a Maildir that the tests read.
//! Also a self-signed certificate made with `openssl req`. A missing python3, aiosmtpd or
//! openssl fails the test with the reason.

// Not every test uses every helper.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::support::wait_until;

pub const SERVER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp/server.py");
const READY_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Starttls,
    Tls,
}

/// A private CA and a server certificate it signed for `localhost` / `127.0.0.1`, made by
/// `openssl`: the shape of a relay with an in-house CA, which `ca_file` trusts.
pub struct Cert {
    /// The CA certificate, for `ca_file`.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Cert {
    #[track_caller]
    pub fn generate(dir: &Path) -> Cert {
        let ca = dir.join("smtp-ca.pem");
        let ca_key = dir.join("smtp-ca-key.pem");
        let csr = dir.join("smtp.csr");
        let ext = dir.join("smtp-ext.cnf");
        let cert = dir.join("smtp-cert.pem");
        let key = dir.join("smtp-key.pem");
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let p = |p: &PathBuf| p.to_str().unwrap().to_string();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=unitwarden test CA",
            "-keyout",
            &p(&ca_key),
            "-out",
            &p(&ca),
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &p(&key),
            "-out",
            &p(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p(&csr),
            "-CA",
            &p(&ca),
            "-CAkey",
            &p(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p(&ext),
            "-out",
            &p(&cert),
        ]);
        Cert { ca, cert, key }
    }
}

#[track_caller]
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl (Debian package openssl) to make a test certificate: {e}")
        });
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Options<'a> {
    pub mode: Mode,
    pub cert: Option<&'a Cert>,
    /// Require AUTH as this user with this password.
    pub auth: Option<(&'a str, &'a str)>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            mode: Mode::Plain,
            cert: None,
            auth: None,
        }
    }
}

/// One received message, read back from the Maildir.
#[derive(Clone, Debug)]
pub struct Mail {
    pub file: PathBuf,
    pub raw: String,
    headers: Vec<(String, String)>,
    /// Body with quoted-printable undone.
    pub body: String,
}

impl Mail {
    pub fn parse(file: PathBuf, raw: String) -> Mail {
        let text = raw.replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = headers.last_mut() {
                    v.push_str(line);
                }
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let qp = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("Content-Transfer-Encoding")
                && v.eq_ignore_ascii_case("quoted-printable")
        });
        let body = if qp {
            decode_qp(body)
        } else {
            body.to_string()
        };
        Mail {
            file,
            raw,
            headers,
            body,
        }
    }

    /// The first header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[track_caller]
    pub fn must(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in\n{}", self.raw))
    }

    pub fn subject(&self) -> &str {
        self.header("Subject").unwrap_or("")
    }
}

/// Undoes quoted-printable (soft line breaks and `=XX`); our bodies are UTF-8.
fn decode_qp(s: &str) -> String {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            if bytes.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if let Some(hex) = s.get(i + 1..i + 3)
                && let Ok(b) = u8::from_str_radix(hex, 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// aiosmtpd, running. Dropping it stops the server.
pub struct Smtp {
    child: Option<(Child, ChildStdin)>,
    pub port: u16,
    pub maildir: PathBuf,
    args: Vec<String>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Smtp {
    /// Starts a server writing into `dir/maildir`.
    #[track_caller]
    pub fn start(dir: &Path, opts: &Options<'_>) -> Smtp {
        let maildir = dir.join("maildir");
        let mut args = vec![
            SERVER_SCRIPT.to_string(),
            "--maildir".into(),
            maildir.display().to_string(),
            "--tls".into(),
            match opts.mode {
                Mode::Plain => "none",
                Mode::Starttls => "starttls",
                Mode::Tls => "tls",
            }
            .into(),
        ];
        if let Some(c) = opts.cert {
            args.extend([
                "--cert".into(),
                c.cert.display().to_string(),
                "--key".into(),
                c.key.display().to_string(),
            ]);
        }
        if let Some((user, password)) = opts.auth {
            let file = dir.join("smtp-server-password");
            fs::write(&file, password).unwrap();
            args.extend([
                "--user".into(),
                user.into(),
                "--password-file".into(),
                file.display().to_string(),
            ]);
        }
        let mut smtp = Smtp {
            child: None,
            port: 0,
            maildir,
            args,
            stderr: Default::default(),
        };
        smtp.spawn(0);
        smtp
    }

    #[track_caller]
    fn spawn(&mut self, port: u16) {
        let mut child = Command::new("python3")
            .args(&self.args)
            .args(["--port", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 for the SMTP server (aiosmtpd): {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[smtp] {line}");
                let _ = tx.send(line);
            }
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let lines = std::sync::Arc::clone(&self.stderr);
        thread::spawn(move || {
            let mut text = String::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(i) = text.find('\n') {
                    let line: String = text.drain(..=i).collect();
                    eprintln!("[smtp err] {}", line.trim_end());
                    lines.lock().unwrap().push(line.trim_end().to_string());
                }
            }
        });
        let ready = rx.recv_timeout(READY_DEADLINE);
        match ready {
            Ok(line) if line.starts_with("SMTP_READY port=") => {
                self.port = line["SMTP_READY port=".len()..].trim().parse().unwrap();
                self.child = Some((child, stdin));
            }
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the SMTP server (aiosmtpd via {SERVER_SCRIPT}) did not start: {other:?}\n--- its stderr ---\n{}",
                    self.stderr.lock().unwrap().join("\n")
                );
            }
        }
    }

    /// Stops the server (SIGKILL): the port refuses connections afterwards.
    pub fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            drop(stdin);
        }
    }

    /// Starts it again on the same port, with the same Maildir.
    #[track_caller]
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.spawn(port);
    }

    /// Every message received so far, in arrival order.
    pub fn messages(&self) -> Vec<Mail> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = fs::read_dir(self.maildir.join(sub)) {
                for e in entries.flatten() {
                    let t = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    files.push((t, e.path()));
                }
            }
        }
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, p)| {
                let raw = fs::read_to_string(&p).ok()?;
                Some(Mail::parse(p, raw))
            })
            .collect()
    }

    /// Waits until `pred` holds for the messages received so far; returns them.
    #[track_caller]
    pub fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&[Mail]) -> bool,
    ) -> Vec<Mail> {
        wait_until(what, deadline, || {
            let m = self.messages();
            pred(&m).then_some(m)
        })
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A listener that accepts connections and never says a word: a hung SMTP server.
pub struct Silent {
    pub port: u16,
    _listener: std::net::TcpListener,
}

impl Silent {
    pub fn start() -> Silent {
        // The kernel completes the handshakes from the backlog; nobody ever reads or writes.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Silent {
            port: listener.local_addr().unwrap().port(),
            _listener: listener,
        }
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
