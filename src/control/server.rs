//! The daemon's end of the control socket. Each connection is a task of its own that reads one
//! request line (bounded in size and time), checks the peer may ask it, hands it to the watch
//! loop and writes the reply. The loop only ever sees whole, valid requests, and never waits
//! for a client: a slow or silent one costs a task and a file descriptor until its deadline.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::protocol::{Envelope, MAX_REQUEST, Reply, Request, VERSION};

/// How long a client has to send its request, and to read the reply.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// How long a request may wait for the watch loop (busy with a poll of many units).
const LOOP_DEADLINE: Duration = Duration::from_secs(30);
/// Connections served at once; more wait in the kernel's backlog.
const CONCURRENT: usize = 64;

/// A request on its way to the watch loop, with where the answer goes.
#[derive(Debug)]
pub struct Ask {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
}

/// Binds the socket at `path`: 0660, so the daemon's group may connect (read `status`); a
/// socket left by a daemon that died is replaced, one a live daemon answers on is not.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process answers on it (a second unitwarden?)",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Who may change things: root, and the user the daemon runs as. Anyone who can connect (the
/// socket's group) may read `status`. Supplementary groups are not consulted: under the
/// shipped unit's `PrivateUsers=` and `ProtectProc=invisible` they cannot be read reliably.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub own_uid: u32,
}

impl Access {
    pub fn of_this_process() -> Access {
        Access {
            own_uid: nix::unistd::geteuid().as_raw(),
        }
    }

    fn may_change(&self, peer_uid: Option<u32>) -> bool {
        peer_uid.is_some_and(|uid| uid == 0 || uid == self.own_uid)
    }
}

/// Serves `listener` until the loop's end of `asks` is gone. Removes the socket file when
/// done.
pub async fn serve(listener: UnixListener, path: PathBuf, access: Access, asks: mpsc::Sender<Ask>) {
    let limit = Arc::new(Semaphore::new(CONCURRENT));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = asks.closed() => break,
        };
        let stream = tokio::select! {
            s = listener.accept() => match s {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, typically: wait a little rather than spin.
                    tracing::warn!("control socket: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = asks.closed() => break,
        };
        let asks = asks.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = serve_one(stream, access, &asks).await {
                tracing::debug!("control socket client: {e}");
            }
        });
    }
    let _ = std::fs::remove_file(&path);
}

async fn serve_one(stream: UnixStream, access: Access, asks: &mpsc::Sender<Ask>) -> io::Result<()> {
    let peer_uid = stream.peer_cred().ok().map(|c| c.uid());
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut line = Vec::new();
    let read = tokio::time::timeout(CLIENT_DEADLINE, reader.read_until(b'\n', &mut line)).await;
    let reply = match read {
        Err(_) => Reply::error("no request within 5s"),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) if line.len() > MAX_REQUEST => Reply::error("request longer than 1 MiB"),
        Ok(Ok(0)) => return Ok(()),
        Ok(Ok(_)) => answer(&line, peer_uid, access, asks).await,
    };
    let mut text = serde_json::to_vec(&reply).map_err(io::Error::other)?;
    text.push(b'\n');
    tokio::time::timeout(CLIENT_DEADLINE, write.write_all(&text))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client does not read"))??;
    let _ = write.shutdown().await;
    Ok(())
}

async fn answer(
    line: &[u8],
    peer_uid: Option<u32>,
    access: Access,
    asks: &mpsc::Sender<Ask>,
) -> Reply {
    let envelope: Envelope = match serde_json::from_slice(line) {
        Ok(e) => e,
        Err(e) => {
            // A request from a newer client says its version; tell it which one is spoken.
            let v = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("v").and_then(|v| v.as_u64()));
            return match v {
                Some(v) if v != u64::from(VERSION) => Reply::error(format!(
                    "protocol version {v} is not spoken here; this daemon speaks {VERSION}"
                )),
                _ => Reply::error(format!("malformed request: {e}")),
            };
        }
    };
    if envelope.v != VERSION {
        return Reply::error(format!(
            "protocol version {} is not spoken here; this daemon speaks {VERSION}",
            envelope.v
        ));
    }
    if envelope.request.changes_anything() && !access.may_change(peer_uid) {
        return Reply::error(
            "permission denied: pause, resume and retry need root or the user unitwarden runs as",
        );
    }
    let (tx, rx) = oneshot::channel();
    let ask = Ask {
        request: envelope.request,
        reply: tx,
    };
    let answered = tokio::time::timeout(LOOP_DEADLINE, async move {
        asks.send(ask).await.ok()?;
        rx.await.ok()
    })
    .await;
    match answered {
        Ok(Some(reply)) => reply,
        Ok(None) => Reply::error("the daemon is stopping"),
        Err(_) => Reply::error("the watch loop did not answer within 30s"),
    }
}
