//! The http probe: one HTTP/1.1 GET over TCP or TLS, written by hand on tokio because a whole
//! HTTP client would cost more memory than the daemon's budget allows for what a health check
//! needs. Reads the status line and headers (bounded), then the body only when a text is
//! expected in it (bounded, with Content-Length, chunked or read-to-close framing). Redirects
//! are not followed.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::net::{connect, io_text};
use super::target::{Scheme, Url};
use super::tls::{Trust, handshake};
use super::{Stage, Verdict};

/// A status line and headers longer than this are refused: no health endpoint needs them.
const MAX_HEAD: usize = 16 * 1024;
/// How much of a body is searched for the expected text.
const MAX_BODY: usize = 64 * 1024;
/// A chunk-size line (size and extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 1024;
/// The most read from the socket at once.
const READ_SIZE: usize = 8 * 1024;

const USER_AGENT: &str = concat!("unitwarden/", env!("CARGO_PKG_VERSION"));

/// A plain TCP stream or a TLS one behind one type, so the exchange is compiled once.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What the probe expects of the response.
pub(super) struct Expect<'a> {
    /// One status; any 2xx when not set.
    pub status: Option<u16>,
    /// A text the body contains.
    pub body: Option<&'a str>,
}

pub(super) async fn check(
    url: &str,
    expect: Expect<'_>,
    trust: &Trust,
    stage: &mut Stage,
) -> Verdict {
    let url = Url::parse(url).map_err(|e| format!("URL {url:?} {e}"))?;
    let (tcp, _) = connect(&url.authority, stage).await?;
    let mut stream: Box<dyn Stream> = match url.scheme {
        Scheme::Http => Box::new(tcp),
        Scheme::Https => {
            *stage = Stage::Tls(url.authority.to_string());
            Box::new(handshake(tcp, &url.authority, trust).await?)
        }
    };
    *stage = Stage::Request;
    let request = request(&url);
    let sent = async {
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await
    };
    sent.await
        .map_err(|e| format!("send the request: {}", io_text(&e)))?;

    let mut buf = Vec::new();
    let head = read_head(&mut stream, &mut buf, stage).await?;
    let status = head.status_text();
    let wanted = match expect.status {
        Some(s) => head.status == s,
        None => (200..300).contains(&head.status),
    };
    if !wanted {
        return Err(status_failure(&head, expect.status));
    }
    let Some(needle) = expect.body.filter(|n| !n.is_empty()) else {
        return Ok(status);
    };
    *stage = Stage::Body {
        status: status.clone(),
        needle: needle.to_string(),
    };
    let found = search_body(&mut stream, buf, &head, needle.as_bytes()).await;
    match found {
        Ok(()) => Ok(status),
        Err(why) => {
            let encoded = match &head.content_encoding {
                Some(enc) if !enc.eq_ignore_ascii_case("identity") => {
                    format!(" (the body is {enc}-encoded)")
                }
                _ => String::new(),
            };
            Err(format!("{status} but {why}{encoded}"))
        }
    }
}

fn request(url: &Url) -> String {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n",
        url.target,
        url.host_header()
    )
}

/// A read that takes a peer's close without TLS's close_notify for the end of the stream, as
/// browsers do: many servers close that way after a read-to-close body.
async fn read_some(stream: &mut Box<dyn Stream>, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(READ_SIZE);
    match stream.read_buf(buf).await {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        r => r,
    }
}

/// The final response's status line and headers; interim 1xx responses are skipped. The bytes
/// read past the headers stay in `buf`.
async fn read_head(
    stream: &mut Box<dyn Stream>,
    buf: &mut Vec<u8>,
    stage: &mut Stage,
) -> Result<Head, String> {
    loop {
        if let Some(end) = head_end(buf) {
            let head = parse_head(&buf[..end])?;
            buf.drain(..end);
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            return Ok(head);
        }
        not_http(buf)?;
        if buf.len() >= MAX_HEAD {
            return Err(format!(
                "the response headers exceed {} KiB",
                MAX_HEAD / 1024
            ));
        }
        let n = read_some(stream, buf)
            .await
            .map_err(|e| format!("read the response: {}", io_text(&e)))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                "the connection closed without a response".into()
            } else {
                "the connection closed in the middle of the response headers".into()
            });
        }
        *stage = Stage::Headers;
    }
}

/// Where the header block ends (after its blank line), CRLF or bare LF.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).enumerate().find_map(|(i, w)| match w {
        b"\n\n" => Some(i + 2),
        b"\n\r" if buf.get(i + 2) == Some(&b'\n') => Some(i + 3),
        _ => None,
    })
}

/// Fails early on a server that answers, but not in HTTP (an SSH banner, a TLS alert).
fn not_http(buf: &[u8]) -> Result<(), String> {
    let n = buf.len().min(5);
    if buf[..n] == b"HTTP/"[..n] {
        return Ok(());
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(&line[..line.len().min(60)]);
    Err(format!("not an HTTP response: {:?}", line.trim_end()))
}

#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    reason: String,
    framing: Framing,
    location: Option<String>,
    content_encoding: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// The body ends when the server closes the connection.
    Close,
}

impl Head {
    /// `HTTP 200 OK`.
    fn status_text(&self) -> String {
        if self.reason.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            format!("HTTP {} {}", self.status, self.reason)
        }
    }
}

fn status_failure(head: &Head, expected: Option<u16>) -> String {
    let status = head.status_text();
    let redirect = match (&head.location, head.status) {
        (Some(to), 300..=399) => Some(format!("redirects to {to}")),
        _ => None,
    };
    match (redirect, expected) {
        (Some(r), Some(e)) => format!("{status} ({r}; expected {e})"),
        (Some(r), None) => format!("{status} ({r}; redirects are not followed)"),
        (None, Some(e)) => format!("{status} (expected {e})"),
        (None, None) => status,
    }
}

fn parse_head(block: &[u8]) -> Result<Head, String> {
    let text = String::from_utf8_lossy(block);
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let status_line = lines.next().unwrap_or_default();
    let bad = || format!("not an HTTP status line: {status_line:?}");
    let (version, rest) = status_line.split_once(' ').ok_or_else(bad)?;
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(bad());
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    let mut length = None;
    let mut chunked = None;
    let mut location = None;
    let mut content_encoding = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = value
                    .parse::<u64>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?;
                length = Some(n);
            }
            // The last coding decides: chunked is always applied last.
            "transfer-encoding" => {
                let last = value.rsplit(',').next().unwrap_or_default().trim();
                chunked = Some(last.eq_ignore_ascii_case("chunked"));
            }
            "location" => location = Some(value.to_string()),
            "content-encoding" => content_encoding = Some(value.to_string()),
            _ => {}
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    Ok(Head {
        status,
        reason: reason.trim().to_string(),
        framing,
        location,
        content_encoding,
    })
}

/// Reads the body until it contains `needle`, ends, or passes `MAX_BODY`. `raw` holds the
/// bytes already read past the headers. The error completes "HTTP 200 OK but ...".
async fn search_body(
    stream: &mut Box<dyn Stream>,
    mut raw: Vec<u8>,
    head: &Head,
    needle: &[u8],
) -> Result<(), String> {
    let lacks = format!("the body lacks {:?}", String::from_utf8_lossy(needle));
    let mut body: Vec<u8> = Vec::new();
    let mut searched: usize = 0;
    let mut remaining = match head.framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut chunks = Dechunk::default();
    loop {
        let ended = match head.framing {
            Framing::Length(_) => {
                let take = raw
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                body.extend_from_slice(&raw[..take]);
                remaining -= take as u64;
                remaining == 0
            }
            Framing::Chunked => chunks
                .feed(&raw, &mut body)
                .map_err(|e| format!("the body could not be read: {e}"))?,
            Framing::Close => {
                body.extend_from_slice(&raw);
                false
            }
        };
        raw.clear();
        let full = body.len() >= MAX_BODY;
        body.truncate(MAX_BODY);
        // Search only what is new, plus the overlap a match across two reads needs.
        let from = searched.saturating_sub(needle.len().saturating_sub(1));
        if body[from..].windows(needle.len()).any(|w| w == needle) {
            return Ok(());
        }
        searched = body.len();
        if ended {
            return Err(lacks);
        }
        if full {
            return Err(format!("{lacks} in its first {} KiB", MAX_BODY / 1024));
        }
        let n = read_some(stream, &mut raw)
            .await
            .map_err(|e| format!("{lacks} (reading it failed: {})", io_text(&e)))?;
        if n == 0 {
            return Err(match head.framing {
                Framing::Close => lacks,
                Framing::Length(n) => {
                    format!("{lacks} (the connection closed {remaining} bytes short of its {n})")
                }
                Framing::Chunked => format!("{lacks} (the connection closed inside it)"),
            });
        }
    }
}

/// Undoes chunked transfer coding as the bytes arrive. Trailers are never needed: the body
/// ends at the last chunk.
#[derive(Debug, Default)]
struct Dechunk {
    state: ChunkState,
    /// A size line or a chunk's CRLF read so far.
    line: Vec<u8>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Done,
}

impl Dechunk {
    /// Appends the body bytes of `input` to `out`; true once the last chunk was reached.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<bool, String> {
        while !input.is_empty() && self.state != ChunkState::Done {
            match self.state {
                ChunkState::Data(left) => {
                    let take = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd => {
                    let Some(nl) = input.iter().position(|b| *b == b'\n') else {
                        self.line.extend_from_slice(input);
                        if self.line.len() > MAX_CHUNK_LINE {
                            return Err("a chunk size line is too long".into());
                        }
                        return Ok(false);
                    };
                    self.line.extend_from_slice(&input[..nl]);
                    input = &input[nl + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = if self.state == ChunkState::DataEnd {
                        if !line.is_empty() {
                            return Err("a chunk is longer than its size".into());
                        }
                        ChunkState::Size
                    } else {
                        match chunk_size(line)? {
                            0 => ChunkState::Done,
                            n => ChunkState::Data(n),
                        }
                    };
                }
                ChunkState::Done => {}
            }
        }
        Ok(self.state == ChunkState::Done)
    }
}

/// The hex size of a chunk-size line, extensions (`;name=value`) ignored.
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(line);
    let size = text.split(';').next().unwrap_or_default().trim();
    if size.is_empty() || size.len() > 15 {
        return Err(format!("bad chunk size {size:?}"));
    }
    u64::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {size:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_says_who_asks_and_closes_the_connection() {
        let url = Url::parse("http://[::1]:8000/health?full=1").unwrap();
        assert_eq!(
            request(&url),
            format!(
                "GET /health?full=1 HTTP/1.1\r\nHost: [::1]:8000\r\nUser-Agent: unitwarden/{}\r\n\
                 Accept: */*\r\nConnection: close\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn heads_give_status_framing_and_redirect_target() {
        let head = |s: &str| parse_head(s.as_bytes());
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!(
            (h.status, h.status_text(), h.framing),
            (200, "HTTP 200 OK".to_string(), Framing::Length(12))
        );
        let h = head(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\ncontent-length: 3\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Close);
        let h = head("HTTP/1.0 503\nServer: x\n\n").unwrap();
        assert_eq!(
            (h.status_text(), h.framing),
            ("HTTP 503".into(), Framing::Close)
        );
        let h = head("HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Length(0));
        let h = head("HTTP/1.1 301 Moved Permanently\r\nLocation: /new\r\n\r\n").unwrap();
        assert_eq!(
            status_failure(&h, None),
            "HTTP 301 Moved Permanently (redirects to /new; redirects are not followed)"
        );
        assert_eq!(
            status_failure(&h, Some(200)),
            "HTTP 301 Moved Permanently (redirects to /new; expected 200)"
        );
        let h = head("HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert_eq!(status_failure(&h, Some(204)), "HTTP 200 OK (expected 204)");
        for bad in [
            "HTTP/2 200\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                head(bad)
                    .unwrap_err()
                    .starts_with("not an HTTP status line"),
                "{bad:?}"
            );
        }
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n").unwrap_err(),
            "bad Content-Length \"lots\""
        );
    }

    #[test]
    fn the_head_ends_at_its_blank_line_with_crlf_or_lf() {
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r\nbody"), Some(19));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\n\nbody"), Some(17));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
        assert!(not_http(b"HTT").is_ok());
        assert_eq!(
            not_http(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap_err(),
            "not an HTTP response: \"SSH-2.0-OpenSSH_9.2\""
        );
    }

    #[test]
    fn chunked_bodies_decode_however_the_bytes_are_split() {
        let wire =
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\n";
        let want = b"Wikipedia in\r\n\r\nchunks.";
        for split in 0..wire.len() {
            let mut d = Dechunk::default();
            let mut out = Vec::new();
            let first = d.feed(&wire[..split], &mut out).unwrap();
            let done = first || d.feed(&wire[split..], &mut out).unwrap();
            assert!(done, "split at {split}");
            assert_eq!(out, want, "split at {split}");
        }
        let mut d = Dechunk::default();
        let mut out = Vec::new();
        let ends: Vec<bool> = wire
            .iter()
            .map(|b| d.feed(std::slice::from_ref(b), &mut out).unwrap())
            .collect();
        assert_eq!(ends.iter().position(|e| *e), Some(wire.len() - 15));
        assert_eq!(out, want);
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        let err = |wire: &[u8]| Dechunk::default().feed(wire, &mut Vec::new()).unwrap_err();
        assert_eq!(err(b"zz\r\n"), "bad chunk size \"zz\"");
        assert_eq!(err(b"\r\n"), "bad chunk size \"\"");
        assert_eq!(err(b"2\r\nabc\r\n"), "a chunk is longer than its size");
        assert_eq!(
            err(b"ffffffffffffffffff\r\n"),
            "bad chunk size \"ffffffffffffffffff\""
        );
        assert_eq!(err(&[b'1'; 2000]), "a chunk size line is too long");
    }
}
