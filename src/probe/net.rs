//! Reaching a `host:port`: name resolution and a TCP connection to each address in turn, for
//! the tcp and http probes; and the words for what went wrong.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::Stage;
use super::target::{Host, HostPort};

/// A connected stream and the address that answered.
pub(super) async fn connect(
    t: &HostPort,
    stage: &mut Stage,
) -> Result<(TcpStream, SocketAddr), String> {
    let addrs: Vec<SocketAddr> = match &t.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, t.port)],
        Host::Name(name) => {
            *stage = Stage::Resolve(name.clone());
            let found = tokio::net::lookup_host((name.as_str(), t.port))
                .await
                .map_err(|e| format!("resolve {name}: {}", resolve_text(&e)))?;
            let addrs: Vec<SocketAddr> = found.collect();
            if addrs.is_empty() {
                return Err(format!("resolve {name}: no addresses"));
            }
            addrs
        }
    };
    let mut failed = Vec::new();
    for addr in addrs {
        *stage = Stage::Connect(label(t, addr));
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok((s, addr)),
            Err(e) => failed.push((addr, io_text(&e))),
        }
    }
    Err(connect_failure(t, &failed))
}

/// `127.0.0.1:8000`, or `localhost:8000 (127.0.0.1:8000)` when a name was resolved.
pub(super) fn label(t: &HostPort, addr: SocketAddr) -> String {
    match t.host {
        Host::Ip(_) => t.to_string(),
        Host::Name(_) => format!("{t} ({addr})"),
    }
}

/// Every address tried, with one reason when they all failed alike.
fn connect_failure(t: &HostPort, failed: &[(SocketAddr, String)]) -> String {
    match failed {
        [] => format!("connect to {t}: no address to try"),
        [(addr, why)] => format!("connect to {}: {why}", label(t, *addr)),
        [(_, first), rest @ ..] if rest.iter().all(|(_, why)| why == first) => {
            let addrs: Vec<String> = failed.iter().map(|(a, _)| a.to_string()).collect();
            format!("connect to {t} ({}): {first}", addrs.join(", "))
        }
        _ => {
            let each: Vec<String> = failed.iter().map(|(a, why)| format!("{a} {why}")).collect();
            format!("connect to {t}: {}", each.join("; "))
        }
    }
}

/// An I/O error in a few lowercase words: `connection refused`, `no such file or directory`,
/// without Rust's `(os error 111)`.
pub(super) fn io_text(e: &io::Error) -> String {
    if let Some(code) = e.raw_os_error() {
        return lower_first(nix::errno::Errno::from_raw(code).desc());
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "the connection closed".into(),
        _ => lower_first(&e.to_string()),
    }
}

/// getaddrinfo's verdict without the standard library's prefix.
fn resolve_text(e: &io::Error) -> String {
    let text = e.to_string();
    let text = text
        .strip_prefix("failed to lookup address information: ")
        .unwrap_or(&text);
    lower_first(text)
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        // Keep acronyms (`TLS`, `EOF`) as they are.
        Some(c) if !chars.next().is_some_and(|n| n.is_uppercase()) => {
            c.to_lowercase().chain(s[c.len_utf8()..].chars()).collect()
        }
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_name_the_target_and_each_address_once() {
        let ip = HostPort::parse("127.0.0.1:8000").unwrap();
        let name = HostPort::parse("localhost:8000").unwrap();
        let v4: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let v6: SocketAddr = "[::1]:8000".parse().unwrap();
        let refused = || "connection refused".to_string();
        assert_eq!(
            connect_failure(&ip, &[(v4, refused())]),
            "connect to 127.0.0.1:8000: connection refused"
        );
        assert_eq!(
            connect_failure(&name, &[(v4, refused())]),
            "connect to localhost:8000 (127.0.0.1:8000): connection refused"
        );
        assert_eq!(
            connect_failure(&name, &[(v6, refused()), (v4, refused())]),
            "connect to localhost:8000 ([::1]:8000, 127.0.0.1:8000): connection refused"
        );
        assert_eq!(
            connect_failure(
                &name,
                &[(v6, "network is unreachable".into()), (v4, refused())]
            ),
            "connect to localhost:8000: [::1]:8000 network is unreachable; \
             127.0.0.1:8000 connection refused"
        );
    }

    #[test]
    fn io_errors_read_as_lowercase_words() {
        let refused = io::Error::from_raw_os_error(nix::libc::ECONNREFUSED);
        assert_eq!(io_text(&refused), "connection refused");
        let missing = io::Error::from_raw_os_error(nix::libc::ENOENT);
        assert_eq!(io_text(&missing), "no such file or directory");
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(io_text(&eof), "the connection closed");
        assert_eq!(lower_first("TLS alert"), "TLS alert");
        let dns =
            io::Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(resolve_text(&dns), "name or service not known");
    }
}
