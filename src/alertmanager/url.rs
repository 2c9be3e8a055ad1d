//! The Alertmanager's address as written in `[alertmanager] url`: plain `http://` only, since
//! the sink speaks HTTP/1.1 itself (see the module doc of [`super`]).

use std::fmt;

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
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("url {s:?} contains {c:?}"));
        }
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
        if rest.contains(['?', '#']) {
            return Err(format!("url {s:?} must not have a query or a fragment"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!(
                "url {s:?}: user names and passwords are not supported"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("url {s:?}: an IPv6 address needs its closing ]"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("url {s:?} has no host"));
        }
        if host.len() > 253 {
            return Err(format!("url {s:?}: the host has more than 253 characters"));
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("url {s:?}: the port must be from 1 to 65535")),
            },
        };
        Ok(Url {
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
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
            ("http://am:0", "port must be from 1 to 65535"),
            ("http://am:99999", "port must be from 1 to 65535"),
            ("http://u:p@am:9093", "user names and passwords"),
            ("http://am:9093/?x=1", "query"),
            ("http://am:9093/\n", "contains"),
            ("http://[::1:9093", "closing ]"),
        ];
        for (text, why) in bad {
            let e = Url::parse(text).expect_err(text);
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
