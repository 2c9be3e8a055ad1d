//! Health probes: one HTTP GET, TCP connect or command, bounded by its timeout.

use std::time::Duration;

use crate::config::{ProbeCheck, ProbeSettings};

/// How one probe went.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeOutcome {
    pub ok: bool,
    /// One line: what was seen.
    pub detail: String,
    pub took: Duration,
}

/// Runs one probe, bounded by `p.timeout` as a whole.
pub async fn run(p: &ProbeSettings) -> ProbeOutcome {
    let start = tokio::time::Instant::now();
    let (ok, detail) = match &p.check {
        ProbeCheck::Tcp(addr) => {
            match tokio::time::timeout(p.timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => (true, "connected".to_string()),
                Ok(Err(e)) => (false, format!("connect to {addr}: {e}")),
                Err(_) => (false, "no answer".to_string()),
            }
        }
        _ => (false, "not available".to_string()),
    };
    ProbeOutcome {
        ok,
        detail,
        took: start.elapsed(),
    }
}
