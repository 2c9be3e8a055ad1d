//! The command line's end of the control socket: one request, one reply, blocking (a CLI
//! command has nothing else to do meanwhile).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::protocol::{Envelope, Reply, Request, VERSION};

/// Long enough for a status of thousands of units on a loaded host.
const DEADLINE: Duration = Duration::from_secs(40);
/// A status reply of 10,000 units is a few MiB.
const MAX_REPLY: u64 = 64 << 20;

/// Why no answer came.
#[derive(Debug)]
pub enum Failure {
    /// Nothing that speaks our protocol is there.
    NoDaemon(String),
    /// The socket exists but may not be opened by this user.
    Denied(String),
}

pub fn ask(path: &Path, request: Request) -> Result<Reply, Failure> {
    let shown = path.display();
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => Failure::Denied(format!(
            "permission denied on {shown}: status needs root or membership in the socket's group (adm under the shipped unit)"
        )),
        io::ErrorKind::NotFound => Failure::NoDaemon(format!(
            "no unitwarden daemon answers at {shown}: the socket does not exist (is unitwarden running?)"
        )),
        io::ErrorKind::ConnectionRefused => Failure::NoDaemon(format!(
            "no unitwarden daemon answers at {shown}: connection refused (unitwarden is not running)"
        )),
        _ => Failure::NoDaemon(format!("no unitwarden daemon answers at {shown}: {e}")),
    })?;
    let not_ours =
        |why: String| Failure::NoDaemon(format!("no unitwarden daemon answers at {shown}: {why}"));
    let _ = stream.set_read_timeout(Some(DEADLINE));
    let _ = stream.set_write_timeout(Some(DEADLINE));
    let mut line = serde_json::to_vec(&Envelope {
        v: VERSION,
        request,
    })
    .map_err(|e| not_ours(e.to_string()))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| not_ours(format!("cannot send the request: {e}")))?;
    let mut reply = Vec::new();
    BufReader::new(io::Read::take(stream, MAX_REPLY))
        .read_until(b'\n', &mut reply)
        .map_err(|e| not_ours(format!("no reply: {e}")))?;
    if reply.is_empty() {
        return Err(not_ours("it closed the connection without a reply".into()));
    }
    let reply: Reply = serde_json::from_slice(&reply)
        .map_err(|_| not_ours("the reply is not unitwarden's protocol".into()))?;
    if reply.v != VERSION {
        return Err(not_ours(format!(
            "it speaks protocol version {}, this command {VERSION}",
            reply.v
        )));
    }
    if let Some(e) = &reply.error
        && e.starts_with("permission denied")
    {
        return Err(Failure::Denied(e.clone()));
    }
    Ok(reply)
}
