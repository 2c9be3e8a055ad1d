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
    pub(super) fn from_bus(path: &str) -> JobPath {
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

/// Which watched unit a signal's object path belongs to. systemd signals every unit's changes
/// once anyone subscribes; looking the path up first skips decoding the others' property maps.
#[derive(Debug, Default)]
pub struct Router {
    by_path: HashMap<UnitPath, UnitName>,
}

impl Router {
    /// Routes the unit's own path to it.
    pub fn watch(&mut self, name: &UnitName) {
        self.by_path.insert(UnitPath::of(name), name.clone());
    }

    /// Also routes `path` to `name`: an alias (`mysql` for `mariadb.service`) changes on the
    /// real unit's path. Returns whether the path is new.
    pub fn follow(&mut self, name: &UnitName, path: &UnitPath) -> bool {
        if self.by_path.contains_key(path) {
            return false;
        }
        self.by_path.insert(path.clone(), name.clone());
        true
    }

    /// Forgets every path that leads to `name`.
    pub fn unwatch(&mut self, name: &UnitName) {
        self.by_path.retain(|_, n| n != name);
    }

    pub fn resolve(&self, path: &str) -> Option<&UnitName> {
        self.by_path.get(path)
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
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
    fn router_follows_aliases_and_forgets_all_paths_of_a_unit() {
        let mut r = Router::default();
        let mysql = n("mysql");
        r.watch(&mysql);
        let real = UnitPath::of(&n("mariadb"));
        assert!(r.follow(&mysql, &real));
        assert!(!r.follow(&mysql, &real), "known path");
        assert_eq!(r.resolve(real.as_str()), Some(&mysql));
        assert_eq!(r.resolve(UnitPath::of(&mysql).as_str()), Some(&mysql));
        assert_eq!(r.resolve("/org/freedesktop/systemd1/unit/other"), None);
        r.unwatch(&mysql);
        assert!(r.is_empty());
    }
}
