//! Health probes: runs one http, tcp or exec check of a unit, bounded by its timeout, and says
//! in one line what it saw. Scheduling, failure counts and grace belong to the watch loop.

mod exec;
mod http;
mod net;
pub(crate) mod target;
mod tls;

#[cfg(test)]
mod tests;

use std::time::Duration;

use tokio::time::{Instant, timeout};

use crate::config::{ProbeCheck, ProbeSettings};
use crate::logging::format_duration;
use crate::text::one_line;

use self::tls::Trust;

/// The longest `detail`, in characters: a line in a log or an email's summary.
const MAX_DETAIL: usize = 300;

/// After an exec probe's timeout, how long killing and reaping it may take before the probe
/// gives up on the process (stuck in the kernel) and leaves it to tokio's reaper.
const KILL_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub ok: bool,
    /// One line, control characters escaped, what was seen: `HTTP 200 OK`, `HTTP 502 Bad
    /// Gateway`, `connect to 127.0.0.1:8000: connection refused`, `no answer within 3s`,
    /// `exit status 1: <last output lines>`, `killed after 3s (timeout): <output tail>`.
    pub detail: String,
    /// How long the probe took.
    pub took: Duration,
}

/// Healthy with what was seen, or failed with what went wrong; both in a few words.
type Verdict = Result<String, String>;

/// Where an http or tcp probe was when its time ran out, for the words of its timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    Start,
    Resolve(String),
    /// `127.0.0.1:8000`, or `localhost:8000 (127.0.0.1:8000)`.
    Connect(String),
    Tls(String),
    /// The request is sent; nothing has come back.
    Request,
    /// Part of the response headers has come back.
    Headers,
    /// The status was as expected; the body is being searched.
    Body {
        status: String,
        needle: String,
    },
}

impl Stage {
    fn timed_out(&self, t: Duration) -> String {
        let t = format_duration(t);
        match self {
            Stage::Start | Stage::Request => format!("no answer within {t}"),
            Stage::Resolve(host) => format!("resolve {host}: no answer within {t}"),
            Stage::Connect(to) => format!("connect to {to}: no answer within {t}"),
            Stage::Tls(to) => format!("TLS handshake with {to}: no answer within {t}"),
            Stage::Headers => format!("the response headers were not complete within {t}"),
            Stage::Body { status, needle } => {
                format!("{status} but {needle:?} was not in the body received within {t}")
            }
        }
    }
}

/// Runs one probe, bounded by `p.timeout` as a whole (connect + TLS + request + response, or
/// the whole exec). Never panics; every failure is an outcome.
pub async fn run(p: &ProbeSettings) -> ProbeOutcome {
    run_trusting(p, &Trust::System).await
}

async fn run_trusting(p: &ProbeSettings, trust: &Trust) -> ProbeOutcome {
    let start = Instant::now();
    let verdict = match &p.check {
        ProbeCheck::Http {
            url,
            expect_status,
            expect_body,
        } => {
            let mut stage = Stage::Start;
            let expect = http::Expect {
                status: *expect_status,
                body: expect_body.as_deref(),
            };
            let done = timeout(p.timeout, http::check(url, expect, trust, &mut stage)).await;
            done.unwrap_or_else(|_| Err(stage.timed_out(p.timeout)))
        }
        ProbeCheck::Tcp(addr) => {
            let mut stage = Stage::Start;
            let done = timeout(p.timeout, tcp(addr, &mut stage)).await;
            done.unwrap_or_else(|_| Err(stage.timed_out(p.timeout)))
        }
        ProbeCheck::Exec(argv) => {
            // The exec probe keeps its own deadline to kill and reap the process group; this
            // bound is for a process that will not die.
            let limit = p.timeout.saturating_add(KILL_GRACE);
            let done = timeout(limit, exec::check(argv, p.timeout)).await;
            done.unwrap_or_else(|_| {
                Err(format!(
                    "killed after {} (timeout), but it had not exited {} later",
                    format_duration(p.timeout),
                    format_duration(KILL_GRACE)
                ))
            })
        }
    };
    let (ok, detail) = match verdict {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    ProbeOutcome {
        ok,
        detail: shape(&detail),
        took: start.elapsed(),
    }
}

/// A tcp probe: a connection is health; it is closed at once.
async fn tcp(addr: &str, stage: &mut Stage) -> Verdict {
    let target = target::HostPort::parse(addr).map_err(|e| format!("tcp {addr:?} {e}"))?;
    let (_stream, peer) = net::connect(&target, stage).await?;
    Ok(format!("connected to {}", net::label(&target, peer)))
}

/// One line of at most `MAX_DETAIL` characters, control characters escaped.
fn shape(detail: &str) -> String {
    let line = one_line(detail);
    if line.chars().count() <= MAX_DETAIL {
        return line.into_owned();
    }
    let mut cut: String = line.chars().take(MAX_DETAIL - 3).collect();
    cut.push_str("...");
    cut
}
