//! `/metrics` over HTTP/1.1, kept small and bounded like the control socket: each connection is
//! a task that reads one request head (at most [`MAX_HEAD`] bytes, within [`CLIENT_DEADLINE`]),
//! asks the watch loop for its status, writes one response and closes. At most [`CONCURRENT`]
//! clients are served at once; the others wait in the kernel's backlog. A slow, silent or
//! hostile client costs a task and a descriptor until its deadline, never a turn of the loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::{Metrics, Rendered};
use crate::alert::Alerts;
use crate::control::protocol::Request;
use crate::control::server::Ask;

/// The longest request head read; Prometheus sends a few hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request, and then to read the answer.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// How long a scrape waits for the watch loop (busy with a poll of many units): below
/// Prometheus's default scrape timeout, so it gets a 503 rather than a timeout of its own.
const LOOP_DEADLINE: Duration = Duration::from_secs(8);
/// Connections served at once.
pub const CONCURRENT: usize = 64;

/// Serves `/metrics` wherever [`Metrics::reload`] last said (nowhere without `[metrics]`),
/// until the loop's end of `asks` is gone. A bind failure is logged and the old listener, if
/// any, kept: the watchdog goes on either way.
pub async fn serve(metrics: Arc<Metrics>, asks: mpsc::Sender<Ask>, alerts: Alerts) {
    let mut want = metrics.listening();
    let limit = Arc::new(Semaphore::new(CONCURRENT));
    let mut bound: Option<(SocketAddr, TcpListener)> = None;
    loop {
        let target = *want.borrow_and_update();
        rebind(&mut bound, target);
        loop {
            tokio::select! {
                changed = want.changed() => match changed {
                    Ok(()) => break,
                    Err(_) => return,
                },
                _ = asks.closed() => return,
                (stream, permit) = accept(bound.as_ref().map(|b| &b.1), &limit) => {
                    let (metrics, asks, alerts) = (Arc::clone(&metrics), asks.clone(), alerts.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        if let Err(e) = serve_one(stream, &metrics, &asks, &alerts).await {
                            tracing::debug!("metrics client: {e}");
                        }
                    });
                }
            }
        }
    }
}

fn rebind(bound: &mut Option<(SocketAddr, TcpListener)>, target: Option<SocketAddr>) {
    let current = bound.as_ref().map(|b| b.0);
    if current == target {
        return;
    }
    let Some(addr) = target else {
        if let Some((old, _)) = bound.take() {
            tracing::info!("metrics no longer served at http://{old}/metrics");
        }
        return;
    };
    match bind(addr) {
        Ok(listener) => {
            tracing::info!("metrics served at http://{addr}/metrics");
            *bound = Some((addr, listener));
        }
        Err(e) => {
            let still = match current {
                Some(old) => format!("still served at http://{old}/metrics"),
                None => "not served".to_string(),
            };
            tracing::error!("metrics: cannot listen on {addr}: {e}; {still}; the watchdog goes on");
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    // std's bind sets SO_REUSEADDR on Unix, so a restart finds the port free at once.
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// The next client, once one of the [`CONCURRENT`] places is free; never, without a listener.
async fn accept(
    listener: Option<&TcpListener>,
    limit: &Arc<Semaphore>,
) -> (TcpStream, OwnedSemaphorePermit) {
    let Some(listener) = listener else {
        return std::future::pending().await;
    };
    let Ok(permit) = Arc::clone(limit).acquire_owned().await else {
        return std::future::pending().await;
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return (stream, permit),
            Err(e) => {
                // Out of descriptors, typically: wait a little rather than spin.
                tracing::warn!("metrics: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A response: status line, content type, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: Body,
}

enum Body {
    Text(String),
    /// Written one family at a time and ended by closing the connection, so a scrape of
    /// thousands of units is never held whole in memory.
    Metrics(Rendered),
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Body::Text(body.into()),
        }
    }
}

async fn serve_one(
    mut stream: TcpStream,
    metrics: &Metrics,
    asks: &mpsc::Sender<Ask>,
    alerts: &Alerts,
) -> io::Result<()> {
    let head = match tokio::time::timeout(CLIENT_DEADLINE, read_head(&mut stream)).await {
        Err(_) => Err(Response::text(
            "408 Request Timeout",
            "no request within 5s\n",
        )),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(head))) => head,
    };
    let (response, head_only) = match head.and_then(|h| parse(&h)) {
        Err(r) => (r, false),
        Ok(Target::Metrics { head_only }) => (scrape(metrics, asks, alerts).await, head_only),
        Ok(Target::Index { head_only }) => (
            Response::text("200 OK", "unitwarden: Prometheus metrics at /metrics\n"),
            head_only,
        ),
    };
    let length = match &response.body {
        Body::Text(t) => format!("Content-Length: {}\r\n", t.len()),
        Body::Metrics(_) => String::new(),
    };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\n{length}Connection: close\r\n\r\n",
        response.status, response.content_type,
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        if head_only {
            return Ok(());
        }
        match &response.body {
            Body::Text(t) => stream.write_all(t.as_bytes()).await,
            Body::Metrics(m) => {
                for family in m.families() {
                    stream.write_all(family.as_bytes()).await?;
                }
                Ok(())
            }
        }
    };
    tokio::time::timeout(CLIENT_DEADLINE, write)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client does not read"))??;
    let _ = stream.shutdown().await;
    Ok(())
}

/// Reads up to the blank line that ends the request head. `Ok(None)`: the client left without
/// a word; `Some(Err(response))`: what to answer a head that is cut short or too long.
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<Result<Vec<u8>, Response>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(if head.is_empty() {
                None
            } else {
                Some(Err(Response::text(
                    "400 Bad Request",
                    "incomplete request\n",
                )))
            });
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = find_end(&head) {
            head.truncate(end);
            return Ok(Some(Ok(head)));
        }
        if head.len() > MAX_HEAD {
            return Ok(Some(Err(Response::text(
                "431 Request Header Fields Too Large",
                "request head longer than 8 KiB\n",
            ))));
        }
    }
}

fn find_end(head: &[u8]) -> Option<usize> {
    let crlf = head.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = head.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

enum Target {
    Metrics { head_only: bool },
    Index { head_only: bool },
}

fn parse(head: &[u8]) -> Result<Target, Response> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::text(
            "400 Bad Request",
            "malformed request line\n",
        ));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Response::text(
            "505 HTTP Version Not Supported",
            "HTTP/1.0 and HTTP/1.1 only\n",
        ));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return Err(Response::text(
                "405 Method Not Allowed",
                "GET or HEAD only\n",
            ));
        }
    };
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/metrics" => Ok(Target::Metrics { head_only }),
        "/" => Ok(Target::Index { head_only }),
        _ => Err(Response::text("404 Not Found", "see /metrics\n")),
    }
}

async fn scrape(metrics: &Metrics, asks: &mpsc::Sender<Ask>, alerts: &Alerts) -> Response {
    let (tx, rx) = oneshot::channel();
    let ask = Ask {
        request: Request::Status { unit: None },
        reply: tx,
    };
    let answered = tokio::time::timeout(LOOP_DEADLINE, async move {
        asks.send(ask).await.ok()?;
        rx.await.ok()
    })
    .await;
    let status = match answered {
        Ok(Some(reply)) => match reply.status {
            Some(status) => status,
            None => {
                let why = reply.error.unwrap_or_default();
                return Response::text("500 Internal Server Error", format!("{why}\n"));
            }
        },
        Ok(None) => return Response::text("503 Service Unavailable", "the daemon is stopping\n"),
        Err(_) => {
            return Response::text(
                "503 Service Unavailable",
                "the watch loop did not answer within 8s\n",
            );
        }
    };
    Response {
        status: "200 OK",
        content_type: prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        body: Body::Metrics(metrics.render(&status, &alerts.sink_stats())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(head: &str) -> Result<Target, Response> {
        parse(head.as_bytes())
    }

    #[test]
    fn requests_are_read_as_http_1_and_anything_else_refused_with_a_status() {
        assert!(matches!(
            target("GET /metrics HTTP/1.1\r\nHost: x"),
            Ok(Target::Metrics { head_only: false })
        ));
        assert!(matches!(
            target("HEAD /metrics?x=1 HTTP/1.0"),
            Ok(Target::Metrics { head_only: true })
        ));
        assert!(matches!(target("GET / HTTP/1.1"), Ok(Target::Index { .. })));
        for (head, status) in [
            ("POST /metrics HTTP/1.1", "405 Method Not Allowed"),
            ("GET /secret HTTP/1.1", "404 Not Found"),
            ("GET /metrics HTTP/2", "505 HTTP Version Not Supported"),
            ("GET /metrics", "400 Bad Request"),
            ("GET  /metrics HTTP/1.1", "400 Bad Request"),
            ("\u{0}\u{ff}", "400 Bad Request"),
        ] {
            match target(head) {
                Err(r) => assert_eq!(r.status, status, "{head:?}"),
                Ok(_) => panic!("{head:?} accepted"),
            }
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(find_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(20));
        assert_eq!(find_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(find_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
