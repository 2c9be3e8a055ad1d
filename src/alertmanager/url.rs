//! The Alertmanager's address as written in `[alertmanager] url`: plain `http://` only, since
//! the sink speaks HTTP/1.1 itself (see the module doc of [`super`]).

use std::fmt;

use crate::probe::target::{self, Host};

/// `http://HOST[:PORT][/PREFIX]`, checked when the config is read.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    /// A name or an IP address; IPv6 without its brackets.
    pub host: String,
    pub port: u16,
    /// The path Alertmanager is served under (`--web.route-prefix`), without a trailing slash;
    /// empty for the root.
    pub prefix: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(format!(
                    "url {s:?}: https is not supported; give the Alertmanager's plain http:// \
                     address on this host or the LAN (or a local proxy that adds TLS)"
                ));
            }
            _ => return Err(format!("url {s:?} must start with http://")),
        };
        // The probes' parser: hosts, ports, IPv6 brackets, user@ and fragments are refused
        // alike everywhere the config names a URL.
        let u = target::Url::parse(&format!("http://{rest}"))
            .map_err(|why| format!("url {s:?} {why}"))?;
        if u.target.contains('?') {
            return Err(format!("url {s:?} must not have a query"));
        }
        let host = match u.authority.host {
            Host::Name(name) => name,
            Host::Ip(ip) => ip.to_string(),
        };
        Ok(Url {
            host,
            port: u.authority.port,
            prefix: u.target.trim_end_matches('/').to_string(),
        })
    }

    /// `HOST:PORT` for connecting, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The v2 API's alerts endpoint on this Alertmanager.
    pub fn alerts_path(&self) -> String {
        format!("{}/api/v2/alerts", self.prefix)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.prefix)
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_read_as_written_and_bad_ones_say_why() {
        let ok = [
            ("http://127.0.0.1:9093", "127.0.0.1", 9093, ""),
            ("http://am.lan", "am.lan", 80, ""),
            ("HTTP://am.lan:9093/", "am.lan", 9093, ""),
            (
                "http://[::1]:9093/alertmanager/",
                "::1",
                9093,
                "/alertmanager",
            ),
        ];
        for (text, host, port, prefix) in ok {
            let u = Url::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (u.host.as_str(), u.port, u.prefix.as_str()),
                (host, port, prefix)
            );
        }
        assert_eq!(
            Url::parse("http://[::1]:9093/am").unwrap().alerts_path(),
            "/am/api/v2/alerts"
        );
        assert_eq!(
            Url::parse("http://[::1]:9093").unwrap().to_string(),
            "http://[::1]:9093"
        );
        let bad = [
            ("https://am:9093", "https is not supported"),
            ("am:9093", "must start with http://"),
            ("http://:9093", "has no host"),
            ("http://am:0", "outside 1-65535"),
            ("http://am:99999", "outside 1-65535"),
            ("http://u:p@am:9093", "user:password@"),
            ("http://am:9093/?x=1", "query"),
            ("http://am:9093/\n", "control character"),
            ("http://[::1:9093", "never closes it"),
        ];
        for (text, why) in bad {
            let e = Url::parse(text).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
