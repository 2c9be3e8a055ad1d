//! The probes against real servers and real processes: Python's http.server (plain and TLS,
//! `tests/probe/http_server.py`), certificates made by `openssl`, TCP listeners that accept
//! and say nothing or the wrong thing, and programs run by the exec probe. A missing
//! `python3` or `openssl` fails the test with the reason.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::*;

const SERVER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/probe/http_server.py");
/// Time enough for a probe that should succeed, on a busy machine.
const LONG: Duration = Duration::from_secs(10);
/// The timeout of probes that are meant to run out of time.
const SHORT: Duration = Duration::from_millis(500);
/// What a probe may take beyond its timeout: killing, reaping, a busy machine.
const MARGIN: Duration = Duration::from_millis(1500);

/// A server process; it exits when its stdin closes, which is when the test binary ends.
struct Server {
    port: u16,
    _child: Child,
}

impl Server {
    #[track_caller]
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new("python3")
            .arg(SERVER_SCRIPT)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 (Debian package python3): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the probe test server did not start within 30s");
        let port = line
            .trim()
            .strip_prefix("HTTP_READY port=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the probe test server did not start: {line:?}"));
        Server {
            port,
            _child: child,
        }
    }
}

fn plain() -> u16 {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start(&[])).port
}

/// A TLS server whose certificate (for `localhost` only) a private CA signed, one whose
/// certificate signed itself, and the private CA.
struct TlsServers {
    ca_pem: Vec<u8>,
    signed: Server,
    self_signed: Server,
}

fn tls() -> &'static TlsServers {
    static SERVERS: OnceLock<TlsServers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let f = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-days",
                    "2",
                    "-subj",
                    "/CN=unitwarden probe test CA",
                    "-keyout",
                    &f("ca.key"),
                    "-out",
                    &f("ca.pem"),
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"],
                &ec[..],
                &[
                    "-subj",
                    "/CN=localhost",
                    "-keyout",
                    &f("leaf.key"),
                    "-out",
                    &f("leaf.csr"),
                ],
            ]
            .concat(),
        );
        std::fs::write(
            f("leaf.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &f("leaf.csr"),
            "-CA",
            &f("ca.pem"),
            "-CAkey",
            &f("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &f("leaf.ext"),
            "-out",
            &f("leaf.pem"),
        ]);
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-days",
                    "2",
                    "-subj",
                    "/CN=localhost",
                    "-addext",
                    "subjectAltName=DNS:localhost",
                    "-keyout",
                    &f("self.key"),
                    "-out",
                    &f("self.pem"),
                ],
            ]
            .concat(),
        );
        TlsServers {
            ca_pem: std::fs::read(f("ca.pem")).unwrap(),
            signed: Server::start(&["--cert", &f("leaf.pem"), "--key", &f("leaf.key")]),
            self_signed: Server::start(&["--cert", &f("self.pem"), "--key", &f("self.key")]),
        }
    })
}

#[track_caller]
fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (Debian package openssl): {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args[0],
        String::from_utf8_lossy(&out.stderr)
    );
}

fn http(url: &str, status: Option<u16>, body: Option<&str>, timeout: Duration) -> ProbeSettings {
    settings(
        ProbeCheck::Http {
            url: url.into(),
            expect_status: status,
            expect_body: body.map(str::to_string),
        },
        timeout,
    )
}

fn settings(check: ProbeCheck, timeout: Duration) -> ProbeSettings {
    ProbeSettings {
        check,
        timeout,
        failures: 1,
        grace: Duration::ZERO,
    }
}

fn exec(argv: &[&str], timeout: Duration) -> ProbeSettings {
    settings(
        ProbeCheck::Exec(argv.iter().map(|a| a.to_string()).collect()),
        timeout,
    )
}

#[track_caller]
fn assert_detail(o: &ProbeOutcome, ok: bool, want: &str) {
    assert_eq!(o.ok, ok, "{o:?}");
    assert_eq!(o.detail, want, "{o:?}");
}

#[track_caller]
fn assert_bounded(o: &ProbeOutcome, timeout: Duration) {
    assert!(!o.ok, "{o:?}");
    assert!(
        o.took >= timeout && o.took < timeout + MARGIN,
        "took {:?} for a timeout of {timeout:?}: {o:?}",
        o.took
    );
}

/// A port nothing listens on: one the kernel just handed out and took back.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// A server that accepts connections, writes `greeting` and then holds them open in silence.
async fn silent_server(greeting: &'static [u8]) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(greeting).await;
            held.push(s);
        }
    });
    port
}

/// Polls `f` until it gives a value or `deadline` passes, then fails naming `what`. The pause
/// between polls is the loop's cadence, not a wait for anything.
async fn eventually<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
    }
}

/// The processes of group `pgid` that are alive (not zombies waiting for their parent).
fn live_members(pgid: i32) -> Vec<i32> {
    let mut live = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command name in parentheses: state, ppid, pgrp.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(2) == Some(&pgid.to_string().as_str()) && fields[0] != "Z" {
            live.push(pid);
        }
    }
    live
}

// ---- http ----

#[tokio::test]
async fn a_2xx_is_healthy_by_default_and_reads_as_its_status_line() {
    let o = run(&http(
        &format!("http://127.0.0.1:{}/ok", plain()),
        None,
        None,
        LONG,
    ))
    .await;
    assert_detail(&o, true, "HTTP 200 OK");
    assert!(o.took < LONG);
}

#[tokio::test]
async fn an_error_status_fails_with_its_status_line() {
    let base = format!("http://127.0.0.1:{}", plain());
    let o = run(&http(&format!("{base}/status?502"), None, None, LONG)).await;
    assert_detail(&o, false, "HTTP 502 Bad Gateway");
    let o = run(&http(&format!("{base}/status?404"), None, None, LONG)).await;
    assert_detail(&o, false, "HTTP 404 Not Found");
    let o = run(&http(&format!("{base}/status?503"), Some(503), None, LONG)).await;
    assert_detail(&o, true, "HTTP 503 Service Unavailable");
    let o = run(&http(&format!("{base}/ok"), Some(204), None, LONG)).await;
    assert_detail(&o, false, "HTTP 200 OK (expected 204)");
}

#[tokio::test]
async fn redirects_are_not_followed_unless_expected() {
    let url = format!("http://127.0.0.1:{}/redirect", plain());
    let o = run(&http(&url, None, None, LONG)).await;
    assert_detail(
        &o,
        false,
        "HTTP 301 Moved Permanently (redirects to /ok; redirects are not followed)",
    );
    let o = run(&http(&url, Some(301), None, LONG)).await;
    assert_detail(&o, true, "HTTP 301 Moved Permanently");
}

#[tokio::test]
async fn the_body_is_searched_for_the_expected_text_whatever_its_framing() {
    let base = format!("http://127.0.0.1:{}", plain());
    for path in ["/ok", "/chunked", "/close-delimited", "/early-hints"] {
        let o = run(&http(&format!("{base}{path}"), None, Some("ok"), LONG)).await;
        assert_detail(&o, true, "HTTP 200 OK");
    }
    let o = run(&http(&format!("{base}/ok"), None, Some("healthy"), LONG)).await;
    assert_detail(&o, false, "HTTP 200 OK but the body lacks \"healthy\"");
    let o = run(&http(
        &format!("{base}/chunked"),
        None,
        Some("all fine, ok!"),
        LONG,
    ))
    .await;
    assert_detail(
        &o,
        false,
        "HTTP 200 OK but the body lacks \"all fine, ok!\"",
    );
    let o = run(&http(
        &format!("{base}/close-delimited"),
        None,
        Some("nope"),
        LONG,
    ))
    .await;
    assert_detail(&o, false, "HTTP 200 OK but the body lacks \"nope\"");
    // The text spans two chunks.
    let o = run(&http(
        &format!("{base}/chunked"),
        None,
        Some("all fine"),
        LONG,
    ))
    .await;
    assert_detail(&o, true, "HTTP 200 OK");
}

#[tokio::test]
async fn only_the_first_64_kib_of_a_body_are_searched() {
    let o = run(&http(
        &format!("http://127.0.0.1:{}/big", plain()),
        None,
        Some("ok"),
        LONG,
    ))
    .await;
    assert_detail(
        &o,
        false,
        "HTTP 200 OK but the body lacks \"ok\" in its first 64 KiB",
    );
}

#[tokio::test]
async fn an_encoded_body_is_named_when_the_text_is_not_found() {
    let o = run(&http(
        &format!("http://127.0.0.1:{}/gzip", plain()),
        None,
        Some("status: ok"),
        LONG,
    ))
    .await;
    assert_detail(
        &o,
        false,
        "HTTP 200 OK but the body lacks \"status: ok\" (the body is gzip-encoded)",
    );
}

#[tokio::test]
async fn the_request_names_the_host_the_agent_and_closes() {
    let port = plain();
    let url = format!("http://127.0.0.1:{port}/echo?x=1");
    for line in [
        "GET /echo?x=1 HTTP/1.1".to_string(),
        format!("Host: 127.0.0.1:{port}"),
        format!("User-Agent: unitwarden/{}", env!("CARGO_PKG_VERSION")),
        "Accept: */*".into(),
        "Connection: close".into(),
    ] {
        let o = run(&http(&url, None, Some(&line), LONG)).await;
        assert_detail(&o, true, "HTTP 200 OK");
    }
}

#[tokio::test]
async fn a_name_is_resolved_and_its_addresses_tried_in_turn() {
    // The server listens on 127.0.0.1 only: where localhost is also ::1, that is refused first.
    let o = run(&http(
        &format!("http://localhost:{}/ok", plain()),
        None,
        None,
        LONG,
    ))
    .await;
    assert_detail(&o, true, "HTTP 200 OK");
    let o = run(&http("http://no-such-host.invalid/", None, None, LONG)).await;
    assert!(
        !o.ok && o.detail.starts_with("resolve no-such-host.invalid: "),
        "{o:?}"
    );
}

#[tokio::test]
async fn a_closed_port_is_refused_at_once() {
    let port = closed_port().await;
    let o = run(&http(
        &format!("http://127.0.0.1:{port}/"),
        None,
        None,
        LONG,
    ))
    .await;
    assert_detail(
        &o,
        false,
        &format!("connect to 127.0.0.1:{port}: connection refused"),
    );
    assert!(o.took < LONG);
}

#[tokio::test]
async fn a_server_that_never_answers_is_cut_at_the_timeout() {
    let port = silent_server(b"").await;
    let o = run(&http(
        &format!("http://127.0.0.1:{port}/"),
        None,
        None,
        SHORT,
    ))
    .await;
    assert_detail(&o, false, "no answer within 0.5s");
    assert_bounded(&o, SHORT);
    let o = run(&http(
        &format!("http://127.0.0.1:{}/hang", plain()),
        None,
        None,
        SHORT,
    ))
    .await;
    assert_detail(&o, false, "no answer within 0.5s");
    assert_bounded(&o, SHORT);
}

#[tokio::test]
async fn slow_headers_and_a_slow_body_are_cut_at_the_timeout() {
    let base = format!("http://127.0.0.1:{}", plain());
    let o = run(&http(&format!("{base}/slow-headers"), None, None, SHORT)).await;
    assert_detail(
        &o,
        false,
        "the response headers were not complete within 0.5s",
    );
    assert_bounded(&o, SHORT);
    let o = run(&http(&format!("{base}/slow-body"), None, Some("ok"), SHORT)).await;
    assert_detail(
        &o,
        false,
        "HTTP 200 OK but \"ok\" was not in the body received within 0.5s",
    );
    assert_bounded(&o, SHORT);
    // Without an expected text the body is never read: the status decides.
    let o = run(&http(&format!("{base}/slow-body"), None, None, SHORT)).await;
    assert_detail(&o, true, "HTTP 200 OK");
}

#[tokio::test]
async fn a_server_that_does_not_speak_http_is_named_as_such() {
    let port = silent_server(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n").await;
    let o = run(&http(
        &format!("http://127.0.0.1:{port}/"),
        None,
        None,
        LONG,
    ))
    .await;
    assert_detail(
        &o,
        false,
        "not an HTTP response: \"SSH-2.0-OpenSSH_9.2p1 Debian-2\"",
    );
    let port = silent_server(b"\x1b[2J\x07\n").await;
    let o = run(&http(
        &format!("http://127.0.0.1:{port}/"),
        None,
        None,
        LONG,
    ))
    .await;
    assert_detail(&o, false, r#"not an HTTP response: "\u{1b}[2J\u{7}""#);
}

#[tokio::test]
async fn a_url_the_probe_cannot_send_is_an_outcome() {
    let o = run(&http("http://user:pw@127.0.0.1/", None, None, LONG)).await;
    assert!(!o.ok && o.detail.contains("user:password@"), "{o:?}");
    let o = run(&http("gopher://x/", None, None, LONG)).await;
    assert_detail(
        &o,
        false,
        "URL \"gopher://x/\" must start with http:// or https://",
    );
}

// ---- https ----

#[tokio::test]
async fn https_is_healthy_with_a_certificate_from_a_trusted_ca() {
    let t = tls();
    let trust = Trust::roots(&t.ca_pem);
    let base = format!("https://localhost:{}", t.signed.port);
    let o = run_trusting(&http(&format!("{base}/ok"), None, Some("ok"), LONG), &trust).await;
    assert_detail(&o, true, "HTTP 200 OK");
    // A body that ends when the server closes, without TLS's close_notify.
    let p = http(
        &format!("{base}/close-delimited"),
        None,
        Some("then ok"),
        LONG,
    );
    assert_detail(&run_trusting(&p, &trust).await, true, "HTTP 200 OK");
    let p = http(&format!("{base}/chunked"), None, Some("fine, ok"), LONG);
    assert_detail(&run_trusting(&p, &trust).await, true, "HTTP 200 OK");
}

#[tokio::test]
async fn a_certificate_the_system_does_not_trust_is_named() {
    let t = tls();
    let o = run(&http(
        &format!("https://localhost:{}/ok", t.signed.port),
        None,
        None,
        LONG,
    ))
    .await;
    assert!(!o.ok, "{o:?}");
    assert!(
        o.detail
            .starts_with("certificate not trusted (unknown issuer)"),
        "{o:?}"
    );
    let o = run(&http(
        &format!("https://localhost:{}/ok", t.self_signed.port),
        None,
        None,
        LONG,
    ))
    .await;
    assert!(!o.ok, "{o:?}");
    assert!(o.detail.starts_with("certificate not trusted"), "{o:?}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_named() {
    let t = tls();
    let trust = Trust::roots(&t.ca_pem);
    let p = http(
        &format!("https://127.0.0.1:{}/ok", t.signed.port),
        None,
        None,
        LONG,
    );
    assert_detail(
        &run_trusting(&p, &trust).await,
        false,
        "certificate is not valid for 127.0.0.1 (it names localhost)",
    );
}

#[tokio::test]
async fn tls_against_a_server_without_it_fails_in_the_handshake() {
    let port = plain();
    let o = run(&http(
        &format!("https://127.0.0.1:{port}/"),
        None,
        None,
        LONG,
    ))
    .await;
    assert_detail(
        &o,
        false,
        &format!(
            "TLS handshake with 127.0.0.1:{port}: the server does not speak TLS \
             (plain HTTP on an https:// URL?)"
        ),
    );
    let port = silent_server(b"").await;
    let o = run(&http(
        &format!("https://127.0.0.1:{port}/"),
        None,
        None,
        SHORT,
    ))
    .await;
    assert_detail(
        &o,
        false,
        &format!("TLS handshake with 127.0.0.1:{port}: no answer within 0.5s"),
    );
    assert_bounded(&o, SHORT);
    // And plain HTTP to a TLS server: whatever comes back is not a response.
    let port = tls().signed.port;
    let o = run(&http(
        &format!("http://127.0.0.1:{port}/"),
        None,
        None,
        LONG,
    ))
    .await;
    assert!(!o.ok, "{o:?}");
}

// ---- tcp ----

#[tokio::test]
async fn tcp_is_healthy_when_the_port_accepts() {
    let port = silent_server(b"").await;
    let o = run(&settings(
        ProbeCheck::Tcp(format!("127.0.0.1:{port}")),
        LONG,
    ))
    .await;
    assert_detail(&o, true, &format!("connected to 127.0.0.1:{port}"));
    let o = run(&settings(
        ProbeCheck::Tcp(format!("localhost:{port}")),
        LONG,
    ))
    .await;
    assert_detail(
        &o,
        true,
        &format!("connected to localhost:{port} (127.0.0.1:{port})"),
    );
}

#[tokio::test]
async fn tcp_fails_on_a_closed_port_or_a_bad_address() {
    let port = closed_port().await;
    let o = run(&settings(
        ProbeCheck::Tcp(format!("127.0.0.1:{port}")),
        LONG,
    ))
    .await;
    assert_detail(
        &o,
        false,
        &format!("connect to 127.0.0.1:{port}: connection refused"),
    );
    let o = run(&settings(ProbeCheck::Tcp("nowhere".into()), LONG)).await;
    assert_detail(&o, false, "tcp \"nowhere\" must be host:port");
}

// ---- exec ----

#[tokio::test]
async fn exec_is_healthy_on_exit_status_0() {
    let o = run(&exec(&["/bin/true"], LONG)).await;
    assert_detail(&o, true, "exit status 0");
    let o = run(&exec(&["/bin/false"], LONG)).await;
    assert_detail(&o, false, "exit status 1");
}

#[tokio::test]
async fn a_failing_program_reports_its_status_and_last_output() {
    let o = run(&exec(
        &[
            "/bin/sh",
            "-c",
            "echo starting; echo 'db: connection refused' >&2; echo \"$1\"; exit 3",
            "sh",
            "arg with spaces\u{1b}[31m",
        ],
        LONG,
    ))
    .await;
    assert_detail(
        &o,
        false,
        r"exit status 3: starting | db: connection refused | arg with spaces\u{1b}[31m",
    );
    let o = run(&exec(&["/bin/sh", "-c", "kill -TERM $$"], LONG)).await;
    assert_detail(&o, false, "killed by signal SIGTERM");
}

#[tokio::test]
async fn a_flood_of_output_keeps_only_its_end() {
    let o = run(&exec(
        &[
            "/bin/sh",
            "-c",
            "i=0; while [ $i -lt 5000 ]; do echo \"line $i\"; i=$((i+1)); done; \
             echo 'last words' >&2; exit 2",
        ],
        LONG,
    ))
    .await;
    assert!(!o.ok, "{o:?}");
    assert!(o.detail.starts_with("exit status 2: "), "{o:?}");
    assert!(o.detail.ends_with("line 4999 | last words"), "{o:?}");
    assert!(o.detail.chars().count() <= MAX_DETAIL, "{o:?}");
}

#[tokio::test]
async fn a_program_that_cannot_start_says_why() {
    let o = run(&exec(&["/nonexistent/probe-program", "x"], LONG)).await;
    assert_detail(
        &o,
        false,
        "could not start /nonexistent/probe-program: no such file or directory",
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let script = script.to_str().unwrap();
    let o = run(&exec(&[script], LONG)).await;
    assert_detail(
        &o,
        false,
        &format!("could not start {script}: permission denied"),
    );
    let o = run(&settings(ProbeCheck::Exec(Vec::new()), LONG)).await;
    assert_detail(&o, false, "exec needs a program");
}

#[tokio::test]
async fn a_program_past_its_timeout_is_killed_with_its_whole_group() {
    let o = run(&exec(
        &["/bin/sh", "-c", "sleep 60 & echo group $$; wait"],
        SHORT,
    ))
    .await;
    assert_bounded(&o, SHORT);
    let pgid: i32 = o
        .detail
        .strip_prefix("killed after 0.5s (timeout): group ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{o:?}"));
    eventually("the probe's process group to die", LONG, || {
        live_members(pgid).is_empty().then_some(())
    })
    .await;
    let o = run(&exec(&["sleep", "60"], SHORT)).await;
    assert_detail(&o, false, "killed after 0.5s (timeout)");
    assert_bounded(&o, SHORT);
}

#[tokio::test]
async fn a_dropped_exec_probe_kills_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgid");
    let f = file.to_str().unwrap();
    let script = format!("echo $$ > {f}.tmp && mv {f}.tmp {f}; sleep 60 & wait");
    let p = exec(&["/bin/sh", "-c", &script], Duration::from_secs(60));
    // Boxed, so that `drop` ends the future itself and not a pinned reference to it.
    let mut probe = Box::pin(run(&p));
    let read_pgid = || {
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
    };
    let pgid = tokio::select! {
        o = &mut probe => panic!("the probe ended: {o:?}"),
        pgid = eventually("the probe's script to start", LONG, read_pgid) => pgid,
    };
    eventually("the group's sleep to start", LONG, || {
        (live_members(pgid).len() >= 2).then_some(())
    })
    .await;
    drop(probe);
    eventually("the dropped probe's process group to die", LONG, || {
        live_members(pgid).is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_background_process_holding_the_output_does_not_delay_the_verdict() {
    let o = run(&exec(
        &["/bin/sh", "-c", "sleep 60 & echo child $!; exit 4"],
        LONG,
    ))
    .await;
    let child: i32 = o
        .detail
        .strip_prefix("exit status 4: child ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{o:?}"));
    // The program's own helper outlives a normal exit: not ours to kill, but the test's.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(o.took < LONG / 2, "{o:?}");
}

// ---- all of them ----

#[tokio::test]
async fn many_probes_run_at_once_on_one_thread() {
    let port = plain();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let p = match i % 4 {
            0 => http(
                &format!("http://127.0.0.1:{port}/ok"),
                None,
                Some("ok"),
                LONG,
            ),
            1 => http(
                &format!("http://127.0.0.1:{port}/chunked"),
                None,
                None,
                LONG,
            ),
            2 => settings(ProbeCheck::Tcp(format!("127.0.0.1:{port}")), LONG),
            _ => exec(&["/bin/true"], LONG),
        };
        // Spawning needs a Send future: the watch loop may run probes as tasks.
        set.spawn(async move { run(&p).await });
    }
    let mut healthy = 0;
    while let Some(o) = set.join_next().await {
        let o = o.unwrap();
        assert!(o.ok, "{o:?}");
        healthy += 1;
    }
    assert_eq!(healthy, 40);
}

#[test]
fn details_are_one_line_and_cut_to_length() {
    assert_eq!(shape("HTTP 200 OK"), "HTTP 200 OK");
    assert_eq!(shape("a\nb\u{1b}"), r"a\nb\u{1b}");
    let long = shape(&"é".repeat(1000));
    assert_eq!(long.chars().count(), MAX_DETAIL);
    assert!(long.ends_with("é..."));
}

#[test]
fn timeouts_say_where_the_probe_was() {
    let t = Duration::from_secs(3);
    let table = [
        (Stage::Start, "no answer within 3s"),
        (
            Stage::Resolve("db".into()),
            "resolve db: no answer within 3s",
        ),
        (
            Stage::Connect("db:5432 (10.0.0.5:5432)".into()),
            "connect to db:5432 (10.0.0.5:5432): no answer within 3s",
        ),
        (
            Stage::Tls("app:443".into()),
            "TLS handshake with app:443: no answer within 3s",
        ),
        (Stage::Request, "no answer within 3s"),
    ];
    for (stage, want) in table {
        assert_eq!(stage.timed_out(t), want);
    }
}
