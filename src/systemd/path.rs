//! Object paths on the bus: a unit's path (with systemd's escaping), a job's path, and the
//! router that maps the paths signals arrive on to the watched units' names.

use std::collections::HashMap;
use std::fmt;

use crate::unit::UnitName;

const UNIT_PREFIX: &str = "/org/freedesktop/systemd1/unit/";

/// The object path of a unit, e.g. `/org/freedesktop/systemd1/unit/nginx_2eservice`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnitPath(String);

impl UnitPath {
    /// The path systemd gives `name` (`sd_bus_path_encode` rules), so signals can be routed
    /// without a round trip to the manager.
    pub fn of(name: &UnitName) -> UnitPath {
        let mut path = String::from(UNIT_PREFIX);
        for (i, b) in name.as_str().bytes().enumerate() {
            if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
                path.push(b as char);
            } else {
                path.push_str(&format!("_{b:02x}"));
            }
        }
        UnitPath(path)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Lets the router look a signal's path up without allocating; the derived Hash and Eq are
// those of the inner string, as `Borrow` requires.
impl std::borrow::Borrow<str> for UnitPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnitPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The object path of a job, as `RestartUnit` returns it and `JobRemoved` names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobPath(String);

impl JobPath {
    pub fn from_bus(path: &str) -> JobPath {
        JobPath(path.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which watched unit a signal's object path belongs to. A unit's own path names it
/// (systemd's escaping, undone), so only aliases need remembering: `mysql` changes on
/// `mariadb.service`'s path. systemd signals every unit's changes once anyone subscribes;
/// resolving the path first skips decoding the others' property maps.
#[derive(Debug, Default)]
pub struct Router {
    aliases: HashMap<UnitPath, UnitName>,
}

impl Router {
    /// Also routes `path` to `name`. Returns whether the path is new.
    pub fn follow(&mut self, name: &UnitName, path: &UnitPath) -> bool {
        if self.aliases.contains_key(path) {
            return false;
        }
        self.aliases.insert(path.clone(), name.clone());
        true
    }

    /// Forgets the aliases that lead to `name`.
    pub fn unwatch(&mut self, name: &UnitName) {
        self.aliases.retain(|_, n| n != name);
    }

    /// The watched unit `path` belongs to; `watched` says which names are.
    pub fn resolve(&self, path: &str, watched: impl Fn(&UnitName) -> bool) -> Option<UnitName> {
        if let Some(name) = self.aliases.get(path) {
            return Some(name.clone());
        }
        let name = decode(path.strip_prefix(UNIT_PREFIX)?)?;
        let name = UnitName::parse(&name).ok()?;
        watched(&name).then_some(name)
    }
}

/// `sd_bus_path_decode`: `_xx` is the byte with hex value xx.
fn decode(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = escaped.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> UnitName {
        UnitName::parse(s).unwrap()
    }

    #[test]
    fn unit_paths_follow_systemd_escaping() {
        let cases = [
            (
                "nginx.service",
                "/org/freedesktop/systemd1/unit/nginx_2eservice",
            ),
            (
                "celery@a-1.service",
                "/org/freedesktop/systemd1/unit/celery_40a_2d1_2eservice",
            ),
            (
                "1x.service",
                "/org/freedesktop/systemd1/unit/_31x_2eservice",
            ),
            (
                "postgresql@15-main.service",
                "/org/freedesktop/systemd1/unit/postgresql_4015_2dmain_2eservice",
            ),
        ];
        for (name, path) in cases {
            assert_eq!(UnitPath::of(&n(name)).as_str(), path);
        }
    }

    #[test]
    fn router_names_watched_units_by_their_path_and_follows_aliases() {
        let mut r = Router::default();
        let mysql = n("mysql");
        let celery = n("celery@a-1");
        let watched = |u: &UnitName| *u == mysql || *u == celery;
        assert_eq!(
            r.resolve(UnitPath::of(&celery).as_str(), watched),
            Some(celery.clone())
        );
        assert_eq!(r.resolve(UnitPath::of(&n("other")).as_str(), watched), None);
        let real = UnitPath::of(&n("mariadb"));
        assert_eq!(r.resolve(real.as_str(), watched), None, "not followed yet");
        assert!(r.follow(&mysql, &real));
        assert!(!r.follow(&mysql, &real), "known path");
        assert_eq!(r.resolve(real.as_str(), watched), Some(mysql.clone()));
        r.unwatch(&mysql);
        assert_eq!(r.resolve(real.as_str(), watched), None);
        for bad in [
            "/org/freedesktop/systemd1/unit/x_zz",
            "/org/freedesktop/systemd1/job/1",
            "/",
        ] {
            assert_eq!(r.resolve(bad, |_| true), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn decoding_undoes_the_escaping(raw in "[a-zA-Z0-9:_.@\\\\-]{1,40}") {
            if let Ok(name) = UnitName::parse(&raw) {
                let path = UnitPath::of(&name);
                let back = Router::default().resolve(path.as_str(), |_| true);
                proptest::prop_assert_eq!(back, Some(name));
            }
        }
    }
}
