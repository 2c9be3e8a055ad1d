//! What a probe talks to, parsed by hand: an `http://` / `https://` URL and a `host:port`.
//! Config validation parses with the same functions, so `check-config` refuses exactly the
//! targets a probe could not reach. Pure: no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Host names longer than this are not valid DNS names.
const MAX_HOST: usize = 253;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A name to resolve, ASCII (an internationalised name is written in its `xn--` form).
    Name(String),
    Ip(IpAddr),
}

/// As written in a URL or a `host:port`: an IPv6 address in brackets.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: Host,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl HostPort {
    /// `host:port`, `[v6]:port`. Errors read after the quoted input: `"x" must be host:port`.
    pub fn parse(s: &str) -> Result<HostPort, String> {
        let Some((host, port)) = split_port(s)? else {
            return Err("must be host:port".into());
        };
        Ok(HostPort {
            host: parse_host(host)?,
            port: parse_port(port)?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: Scheme,
    pub authority: HostPort,
    /// Path and query as sent in the request line, never empty: `/`, `/health?full=1`.
    pub target: String,
}

impl Url {
    /// An absolute `http` or `https` URL. Errors read after the quoted URL:
    /// `"http://x#top" has a fragment ...`.
    pub fn parse(s: &str) -> Result<Url, String> {
        let (scheme, rest) = if let Some(rest) = s.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = s.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            return Err("must start with http:// or https://".into());
        };
        if let Some(c) = s.chars().find(|c| c.is_control()) {
            return Err(format!("holds the control character {:?}", c));
        }
        if let Some(i) = s.find('#') {
            return Err(format!(
                "has a fragment ({}), which is never sent to the server: remove it",
                &s[i..]
            ));
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        if authority.contains('@') {
            return Err(
                "holds user@ or user:password@, which unitwarden never sends: remove it".into(),
            );
        }
        let (host, port) = match split_port(authority)? {
            Some((host, port)) => (host, parse_port(port)?),
            None => (authority, scheme.default_port()),
        };
        let host = parse_host(host)?;
        let target = if target.starts_with('/') {
            escape_target(target)
        } else {
            format!("/{}", escape_target(target))
        };
        Ok(Url {
            scheme,
            authority: HostPort { host, port },
            target,
        })
    }

    /// The `Host:` header: the port only when it is not the scheme's own.
    pub fn host_header(&self) -> String {
        if self.authority.port == self.scheme.default_port() {
            self.authority.host.to_string()
        } else {
            self.authority.to_string()
        }
    }
}

/// Splits `host:port` at the port's colon, if there is one. A bracketed IPv6 address keeps its
/// colons; an unbracketed one is refused, since its last group would pass for a port.
fn split_port(s: &str) -> Result<Option<(&str, &str)>, String> {
    if s.starts_with('[') {
        let Some(close) = s.find(']') else {
            return Err("opens an IPv6 address with [ but never closes it".into());
        };
        let after = &s[close + 1..];
        return match after.strip_prefix(':') {
            Some(port) => Ok(Some((&s[..=close], port))),
            None if after.is_empty() => Ok(None),
            None => Err(format!("has {after:?} after the IPv6 address")),
        };
    }
    match s.matches(':').count() {
        0 => Ok(None),
        1 => Ok(s.split_once(':')),
        _ => Err("holds an IPv6 address without brackets: write [::1]:8000".into()),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("has an empty port".into());
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("has the port {p:?}, which is not a number"));
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("has the port {p}, outside 1-65535")),
        Ok(n) => Ok(n),
    }
}

fn parse_host(h: &str) -> Result<Host, String> {
    if let Some(inner) = h.strip_prefix('[') {
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        return inner
            .parse::<Ipv6Addr>()
            .map(|a| Host::Ip(IpAddr::V6(a)))
            .map_err(|_| format!("has [{inner}], which is not an IPv6 address"));
    }
    if h.is_empty() {
        return Err("has no host".into());
    }
    if let Ok(a) = h.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(a)));
    }
    if h.len() > MAX_HOST
        || !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(format!(
            "has the host {h:?}: a host name holds only letters, digits, '-', '.' and '_' \
             (an internationalised name in its xn-- form)"
        ));
    }
    Ok(Host::Name(h.to_ascii_lowercase()))
}

/// A request target as it may go on the wire: spaces and non-ASCII bytes percent-encoded, as
/// a browser would send them. Control characters were refused before.
fn escape_target(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for b in t.bytes() {
        if b == b' ' || !b.is_ascii() {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Host {
        Host::Name(n.into())
    }

    #[test]
    fn urls_split_into_scheme_host_port_and_target() {
        let v6: IpAddr = "::1".parse().unwrap();
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let table: &[(&str, Scheme, Host, u16, &str, &str)] = &[
            (
                "http://127.0.0.1:8000/health/",
                Scheme::Http,
                Host::Ip(v4),
                8000,
                "/health/",
                "127.0.0.1:8000",
            ),
            (
                "https://Example.COM",
                Scheme::Https,
                name("example.com"),
                443,
                "/",
                "example.com",
            ),
            (
                "https://example.com:443/x",
                Scheme::Https,
                name("example.com"),
                443,
                "/x",
                "example.com",
            ),
            (
                "http://[::1]:8080/a?b=c&d",
                Scheme::Http,
                Host::Ip(v6),
                8080,
                "/a?b=c&d",
                "[::1]:8080",
            ),
            ("http://[::1]", Scheme::Http, Host::Ip(v6), 80, "/", "[::1]"),
            (
                "http://host?q=1",
                Scheme::Http,
                name("host"),
                80,
                "/?q=1",
                "host",
            ),
            (
                "http://my_host.local:81/a b/çay",
                Scheme::Http,
                name("my_host.local"),
                81,
                "/a%20b/%C3%A7ay",
                "my_host.local:81",
            ),
            ("http://h/p@q:r", Scheme::Http, name("h"), 80, "/p@q:r", "h"),
        ];
        for (raw, scheme, host, port, target, host_header) in table {
            let u = Url::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(u.scheme, *scheme, "{raw}");
            assert_eq!(u.authority.host, *host, "{raw}");
            assert_eq!(u.authority.port, *port, "{raw}");
            assert_eq!(u.target, *target, "{raw}");
            assert_eq!(u.host_header(), *host_header, "{raw}");
        }
    }

    #[test]
    fn urls_a_probe_cannot_send_are_refused_with_the_reason() {
        let table: &[(&str, &str)] = &[
            ("ftp://x/", "must start with http:// or https://"),
            ("HTTP://x/", "must start with http:// or https://"),
            ("http://", "has no host"),
            ("http:///health", "has no host"),
            ("http://:80/", "has no host"),
            (
                "http://x/#top",
                "has a fragment (#top), which is never sent",
            ),
            ("http://user:pw@x/", "holds user@ or user:password@"),
            ("http://x:0/", "has the port 0, outside 1-65535"),
            ("http://x:65536/", "has the port 65536, outside 1-65535"),
            ("http://x:/", "has an empty port"),
            (
                "http://x:http/",
                "has the port \"http\", which is not a number",
            ),
            ("http://::1:80/", "holds an IPv6 address without brackets"),
            (
                "http://[::1/",
                "opens an IPv6 address with [ but never closes it",
            ),
            ("http://[::1]x/", "has \"x\" after the IPv6 address"),
            ("http://[fe80::1%25eth0]/", "which is not an IPv6 address"),
            ("http://[nope]/", "has [nope], which is not an IPv6 address"),
            ("http://bücher.de/", "a host name holds only letters"),
            ("http://a%20b/", "a host name holds only letters"),
            ("http://x/\nHost: evil", "holds the control character '\\n'"),
        ];
        for (raw, want) in table {
            let e = Url::parse(raw).expect_err(raw);
            assert!(e.contains(want), "{raw}: {e}");
        }
        let long = format!("http://{}/", "a".repeat(254));
        assert!(Url::parse(&long).is_err());
    }

    #[test]
    fn host_ports_need_a_port_and_bracket_ipv6() {
        let ok: &[(&str, &str)] = &[
            ("127.0.0.1:5432", "127.0.0.1:5432"),
            ("[::1]:80", "[::1]:80"),
            ("DB.internal:6379", "db.internal:6379"),
        ];
        for (raw, shown) in ok {
            let hp = HostPort::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(hp.to_string(), *shown);
        }
        let bad: &[(&str, &str)] = &[
            ("host", "must be host:port"),
            ("[::1]", "must be host:port"),
            ("h:99999", "outside 1-65535"),
            ("h:0", "outside 1-65535"),
            (":80", "has no host"),
            ("::1:80", "without brackets"),
            ("a b:80", "a host name holds only"),
        ];
        for (raw, want) in bad {
            let e = HostPort::parse(raw).expect_err(raw);
            assert!(e.contains(want), "{raw}: {e}");
        }
    }

    proptest::proptest! {
        /// Whatever is written, a URL that parses gives a request line and a Host header that
        /// hold nothing a server could read as the end of a line or of a field.
        #[test]
        fn what_parses_is_safe_to_send(
            scheme in "https?://",
            rest in r"(\PC|[ \t\r\n@#\[\]:/?%]){0,40}",
        ) {
            let raw = format!("{scheme}{rest}");
            if let Ok(u) = Url::parse(&raw) {
                proptest::prop_assert!(u.target.starts_with('/'));
                let line = format!("{} {}", u.target, u.host_header());
                proptest::prop_assert!(
                    line.bytes().filter(|b| *b == b' ').count() == 1
                        && line.bytes().all(|b| b.is_ascii_graphic() || b == b' '),
                    "{raw:?} gave {line:?}"
                );
            }
            let _ = HostPort::parse(&rest);
        }
    }
}
