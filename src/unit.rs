//! Names and states of systemd units as typed values, shared by the pure core and the D-Bus layer.

use std::fmt;

/// The unit types systemd knows; a configured name ending in one of these keeps its suffix.
const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "target",
    "timer",
    "mount",
    "automount",
    "swap",
    "path",
    "slice",
    "scope",
    "device",
];

/// A full unit name such as `gunicorn.service`.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct UnitName(String);

impl UnitName {
    /// Accepts `nginx` or `nginx.service`; the bare form gets `.service`, as `systemctl` does.
    /// The rules are systemd's own (`unit_name_is_valid`), so a name accepted here is one the
    /// manager accepts too: a name it refuses would fail the whole batch it is listed with.
    pub fn parse(raw: &str) -> Result<UnitName, String> {
        // Spaces around a name are forgiven; other white space (U+2028, ...) is not a name.
        let raw = raw.trim_ascii();
        if raw.is_empty() {
            return Err("unit name is empty".into());
        }
        if raw.contains(GLOB_CHARS) {
            return Err(format!("{raw:?} is a glob, not a unit name"));
        }
        check_chars(raw, "unit name", "")?;
        let name = with_suffix(raw);
        check_shape(raw, &name, "unit name")?;
        let (stem, _) = name.rsplit_once('.').unwrap_or((&name, ""));
        if let Some((_, instance)) = stem.split_once('@')
            && instance.is_empty()
        {
            // A template (`getty@`) is not a unit; systemd would refuse the whole batch of
            // names it is listed with.
            return Err(format!(
                "{raw:?} is a template, not a unit: name an instance (\"getty@tty1\") or use a glob (\"getty@*\")"
            ));
        }
        Ok(UnitName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest unit name systemd takes, suffix included (`UNIT_NAME_MAX` − 1).
pub const NAME_MAX: usize = 255;

/// Characters that make a name a glob (fnmatch(3), as systemd matches patterns).
const GLOB_CHARS: [char; 3] = ['*', '?', '['];

/// The characters systemd allows in a unit name (`VALID_CHARS` and `@`), plus `extra`.
fn check_chars(raw: &str, what: &str, extra: &str) -> Result<(), String> {
    match raw
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":-_.\\@".contains(*c) || extra.contains(*c)))
    {
        Some(bad) => Err(format!(
            "{what} {raw:?} contains {bad:?}; systemd allows ASCII letters, digits and \":-_.\\@\"{}",
            if extra.is_empty() {
                String::new()
            } else {
                format!(" (and {extra:?} in a glob)")
            }
        )),
        None => Ok(()),
    }
}

/// Length and prefix, as systemd checks them: at most [`NAME_MAX`] characters with the
/// suffix, something before the suffix, and a name (not `@`) before an instance.
fn check_shape(raw: &str, name: &str, what: &str) -> Result<(), String> {
    if name.len() > NAME_MAX {
        return Err(format!(
            "{what} {raw:?} is {} characters long with its suffix; systemd allows at most {NAME_MAX}",
            name.len()
        ));
    }
    let (stem, _) = name.rsplit_once('.').unwrap_or((name, ""));
    if stem.is_empty() {
        return Err(format!("{what} {raw:?} has nothing before its suffix"));
    }
    if stem.starts_with('@') {
        return Err(format!("{what} {raw:?} starts with '@'"));
    }
    Ok(())
}

fn with_suffix(raw: &str) -> String {
    match raw.rsplit_once('.') {
        Some((_, suffix)) if UNIT_SUFFIXES.contains(&suffix) => raw.to_string(),
        _ => format!("{raw}.service"),
    }
}

/// A configured unit: one exact name, or a glob that picks up matching units as they appear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitPattern {
    Exact(UnitName),
    Glob(String),
}

impl UnitPattern {
    pub fn parse(raw: &str) -> Result<UnitPattern, String> {
        // Spaces around a name are forgiven; other white space (U+2028, ...) is not a name.
        let raw = raw.trim_ascii();
        if raw.contains(GLOB_CHARS) {
            // systemd's own glob characters (`VALID_CHARS_GLOB`), and `^` for a negated class:
            // nothing else can be part of a name the pattern is meant to match.
            check_chars(raw, "glob", "*?[]!^")?;
            let glob = with_suffix(raw);
            check_shape(raw, &glob, "glob")?;
            Ok(UnitPattern::Glob(glob))
        } else {
            UnitName::parse(raw).map(UnitPattern::Exact)
        }
    }

    pub fn matches(&self, name: &UnitName) -> bool {
        match self {
            UnitPattern::Exact(n) => n == name,
            UnitPattern::Glob(g) => glob_match(g.as_bytes(), name.as_str().as_bytes()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            UnitPattern::Exact(n) => n.as_str(),
            UnitPattern::Glob(g) => g,
        }
    }
}

impl fmt::Display for UnitPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// fnmatch(3)-style matching (`*`, `?`, `[...]`), the dialect systemd uses for unit patterns.
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(&pat[p..], s[i]) {
                        if matched {
                            p += next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                c if c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches one byte against a `[...]` class at the start of `pat`; returns (matched, class length).
fn class_match(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut j = 1;
    let negate = matches!(pat.get(j), Some(b'!') | Some(b'^'));
    if negate {
        j += 1;
    }
    let mut matched = false;
    let mut first = true;
    while j < pat.len() {
        if pat[j] == b']' && !first {
            return Some((matched != negate, j + 1));
        }
        first = false;
        if j + 2 < pat.len() && pat[j + 1] == b'-' && pat[j + 2] != b']' {
            if pat[j] <= c && c <= pat[j + 2] {
                matched = true;
            }
            j += 3;
        } else {
            if pat[j] == c {
                matched = true;
            }
            j += 1;
        }
    }
    None
}

/// `ActiveState` as systemd reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveState {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    Maintenance,
    Refreshing,
    Unknown,
}

impl ActiveState {
    pub fn parse(s: &str) -> ActiveState {
        match s {
            "active" => ActiveState::Active,
            "reloading" => ActiveState::Reloading,
            "inactive" => ActiveState::Inactive,
            "failed" => ActiveState::Failed,
            "activating" => ActiveState::Activating,
            "deactivating" => ActiveState::Deactivating,
            "maintenance" => ActiveState::Maintenance,
            "refreshing" => ActiveState::Refreshing,
            _ => ActiveState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Reloading => "reloading",
            ActiveState::Inactive => "inactive",
            ActiveState::Failed => "failed",
            ActiveState::Activating => "activating",
            ActiveState::Deactivating => "deactivating",
            ActiveState::Maintenance => "maintenance",
            ActiveState::Refreshing => "refreshing",
            ActiveState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ActiveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `LoadState` as systemd reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadState {
    Loaded,
    NotFound,
    BadSetting,
    Error,
    Masked,
    Stub,
    Merged,
    Unknown,
}

impl LoadState {
    pub fn parse(s: &str) -> LoadState {
        match s {
            "loaded" => LoadState::Loaded,
            "not-found" => LoadState::NotFound,
            "bad-setting" => LoadState::BadSetting,
            "error" => LoadState::Error,
            "masked" => LoadState::Masked,
            "stub" => LoadState::Stub,
            "merged" => LoadState::Merged,
            _ => LoadState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LoadState::Loaded => "loaded",
            LoadState::NotFound => "not-found",
            LoadState::BadSetting => "bad-setting",
            LoadState::Error => "error",
            LoadState::Masked => "masked",
            LoadState::Stub => "stub",
            LoadState::Merged => "merged",
            LoadState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for LoadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `SubState`: dozens of values across unit types, so it stays a name; the one that changes our
/// decisions, `auto-restart`, has its own predicate. The names systemd uses are kept as static
/// strings: every watched unit holds one, and a thousand small allocations are not free.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SubState(std::borrow::Cow<'static, str>);

/// systemd's sub-states (services, sockets, timers, targets, mounts, paths, ...).
const KNOWN_SUB_STATES: [&str; 37] = [
    "running",
    "dead",
    "failed",
    "exited",
    "start",
    "start-pre",
    "start-post",
    "condition",
    "reload",
    "reload-signal",
    "reload-notify",
    "stop",
    "stop-watchdog",
    "stop-sigterm",
    "stop-sigkill",
    "stop-post",
    "final-watchdog",
    "final-sigterm",
    "final-sigkill",
    "auto-restart",
    "auto-restart-queued",
    "dead-before-auto-restart",
    "failed-before-auto-restart",
    "dead-resources-pinned",
    "cleaning",
    "active",
    "listening",
    "waiting",
    "elapsed",
    "mounted",
    "mounting",
    "unmounting",
    "plugged",
    "tentative",
    "abandoned",
    "start-chown",
    "refreshing",
];

impl SubState {
    pub fn new(s: &str) -> SubState {
        match KNOWN_SUB_STATES.iter().find(|k| **k == s) {
            Some(k) => SubState(std::borrow::Cow::Borrowed(k)),
            None => SubState(std::borrow::Cow::Owned(s.to_string())),
        }
    }

    pub fn is_auto_restart(&self) -> bool {
        self.0 == "auto-restart"
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service's `Result=`: why it last stopped, as systemd words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceResult {
    Success,
    Protocol,
    Timeout,
    ExitCode,
    Signal,
    CoreDump,
    Watchdog,
    StartLimitHit,
    Resources,
    OomKill,
    /// A value newer than this code, kept verbatim for logs and emails.
    Other(String),
}

impl ServiceResult {
    pub fn parse(s: &str) -> ServiceResult {
        match s {
            "success" => ServiceResult::Success,
            "protocol" => ServiceResult::Protocol,
            "timeout" => ServiceResult::Timeout,
            "exit-code" => ServiceResult::ExitCode,
            "signal" => ServiceResult::Signal,
            "core-dump" => ServiceResult::CoreDump,
            "watchdog" => ServiceResult::Watchdog,
            "start-limit-hit" => ServiceResult::StartLimitHit,
            "resources" => ServiceResult::Resources,
            "oom-kill" => ServiceResult::OomKill,
            other => ServiceResult::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ServiceResult::Success => "success",
            ServiceResult::Protocol => "protocol",
            ServiceResult::Timeout => "timeout",
            ServiceResult::ExitCode => "exit-code",
            ServiceResult::Signal => "signal",
            ServiceResult::CoreDump => "core-dump",
            ServiceResult::Watchdog => "watchdog",
            ServiceResult::StartLimitHit => "start-limit-hit",
            ServiceResult::Resources => "resources",
            ServiceResult::OomKill => "oom-kill",
            ServiceResult::Other(s) => s,
        }
    }
}

impl fmt::Display for ServiceResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a job ended, from `JobRemoved`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobResult {
    Done,
    Canceled,
    Timeout,
    Failed,
    Dependency,
    Skipped,
    Invalid,
    Assert,
    Unsupported,
    Collected,
    Once,
    /// A value newer than this code, kept verbatim.
    Other(String),
}

impl JobResult {
    pub fn parse(s: &str) -> JobResult {
        match s {
            "done" => JobResult::Done,
            "canceled" => JobResult::Canceled,
            "timeout" => JobResult::Timeout,
            "failed" => JobResult::Failed,
            "dependency" => JobResult::Dependency,
            "skipped" => JobResult::Skipped,
            "invalid" => JobResult::Invalid,
            "assert" => JobResult::Assert,
            "unsupported" => JobResult::Unsupported,
            "collected" => JobResult::Collected,
            "once" => JobResult::Once,
            other => JobResult::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            JobResult::Done => "done",
            JobResult::Canceled => "canceled",
            JobResult::Timeout => "timeout",
            JobResult::Failed => "failed",
            JobResult::Dependency => "dependency",
            JobResult::Skipped => "skipped",
            JobResult::Invalid => "invalid",
            JobResult::Assert => "assert",
            JobResult::Unsupported => "unsupported",
            JobResult::Collected => "collected",
            JobResult::Once => "once",
            JobResult::Other(s) => s,
        }
    }
}

impl fmt::Display for JobResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What we last saw of a unit: the merge of polls and `PropertiesChanged` signals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub load: LoadState,
    pub active: ActiveState,
    pub sub: SubState,
    /// `Result` of a service, when known.
    pub result: Option<ServiceResult>,
    /// systemd's own automatic restart counter (services only).
    pub n_restarts: Option<u32>,
    /// A job (start, stop, restart) is queued or running for the unit.
    pub job_pending: bool,
    /// How the main process last ended: `ExecMainCode` (`CLD_*`) and `ExecMainStatus`.
    pub exec_main: Option<(i32, i32)>,
}

impl Observation {
    pub fn new(load: LoadState, active: ActiveState, sub: SubState) -> Observation {
        Observation {
            load,
            active,
            sub,
            result: None,
            n_restarts: None,
            job_pending: false,
            exec_main: None,
        }
    }

    /// `code=exited, status=203/EXEC` or `code=killed, status=9/KILL`, as `systemctl status`
    /// words it.
    pub fn exec_status(&self) -> Option<String> {
        let (code, status) = self.exec_main?;
        let code_name = match code {
            1 => "exited",
            2 => "killed",
            3 => "dumped",
            _ => return None,
        };
        if code == 1 {
            return Some(match crate::diagnosis::exit_name(status) {
                Some(name) => format!("code={code_name}, status={status}/{name}"),
                None => format!("code={code_name}, status={status}"),
            });
        }
        let sig = nix::sys::signal::Signal::try_from(status)
            .map(|s| s.as_str().trim_start_matches("SIG").to_string())
            .unwrap_or_else(|_| "?".into());
        Some(format!("code={code_name}, status={status}/{sig}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_get_service_suffix() {
        assert_eq!(UnitName::parse("nginx").unwrap().as_str(), "nginx.service");
        assert_eq!(
            UnitName::parse("postgresql@15-main").unwrap().as_str(),
            "postgresql@15-main.service"
        );
        assert_eq!(UnitName::parse("x.socket").unwrap().as_str(), "x.socket");
        assert_eq!(UnitName::parse("a.b").unwrap().as_str(), "a.b.service");
        assert!(UnitName::parse("").is_err());
        assert!(UnitName::parse("a b").is_err());
        assert!(UnitName::parse("a*").is_err());
        assert!(UnitName::parse("getty@").is_err());
        assert!(UnitName::parse("getty@.service").is_err());
        assert!(UnitName::parse("@x").is_err());
        assert!(UnitName::parse(".service").is_err());
    }

    #[test]
    fn names_follow_systemds_own_rules() {
        let long = "a".repeat(NAME_MAX - ".service".len());
        let accepted = [
            ("nginx", "nginx.service"),
            ("postgresql@15-main", "postgresql@15-main.service"),
            ("a@b@c", "a@b@c.service"),
            (
                r"dev-disk-by\x2dlabel-data.mount",
                r"dev-disk-by\x2dlabel-data.mount",
            ),
            ("a:b_c.d-e", "a:b_c.d-e.service"),
            (long.as_str(), &format!("{long}.service")),
        ];
        for (raw, want) in accepted {
            assert_eq!(
                UnitName::parse(raw).map(|n| n.0).as_deref(),
                Ok(want),
                "{raw:?}"
            );
        }
        let chars = "systemd allows ASCII letters, digits and \":-_.\\@\"";
        let too_long = format!("{long}x");
        let rejected = [
            ("", "unit name is empty".to_string()),
            ("a b", format!("unit name \"a b\" contains ' '; {chars}")),
            ("a\nb", format!("unit name \"a\\nb\" contains '\\n'; {chars}")),
            ("a\u{1b}[31m", "\"a\\u{1b}[31m\" is a glob, not a unit name".to_string()),
            ("a\u{1b}", format!("unit name \"a\\u{{1b}}\" contains '\\u{{1b}}'; {chars}")),
            ("caf\u{e9}", format!("unit name \"caf\u{e9}\" contains '\u{e9}'; {chars}")),
            ("a/b", format!("unit name \"a/b\" contains '/'; {chars}")),
            ("a\"b", format!("unit name \"a\\\"b\" contains '\"'; {chars}")),
            (
                &too_long,
                format!(
                    "unit name {too_long:?} is 256 characters long with its suffix; systemd allows at most 255"
                ),
            ),
            (".service", "unit name \".service\" has nothing before its suffix".into()),
            ("@x", "unit name \"@x\" starts with '@'".into()),
            ("@x.service", "unit name \"@x.service\" starts with '@'".into()),
            ("a*", "\"a*\" is a glob, not a unit name".into()),
            (
                "getty@",
                "\"getty@\" is a template, not a unit: name an instance (\"getty@tty1\") or use a glob (\"getty@*\")".into(),
            ),
            (
                "getty@.service",
                "\"getty@.service\" is a template, not a unit: name an instance (\"getty@tty1\") or use a glob (\"getty@*\")".into(),
            ),
        ];
        for (raw, want) in rejected {
            assert_eq!(UnitName::parse(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn globs_take_systemds_characters_and_length_too() {
        for (raw, want) in [
            ("celery@*", "celery@*.service"),
            ("app[!0-9]?.socket", "app[!0-9]?.socket"),
            ("app[^a]*", "app[^a]*.service"),
        ] {
            assert_eq!(UnitPattern::parse(raw).unwrap().as_str(), want);
        }
        let chars =
            "systemd allows ASCII letters, digits and \":-_.\\@\" (and \"*?[]!^\" in a glob)";
        let long = format!("{}*", "a".repeat(NAME_MAX));
        for (raw, want) in [
            ("a *", format!("glob \"a *\" contains ' '; {chars}")),
            ("a/*", format!("glob \"a/*\" contains '/'; {chars}")),
            (
                "*\u{2028}",
                format!("glob \"*\\u{{2028}}\" contains '\\u{{2028}}'; {chars}"),
            ),
            ("(*)", format!("glob \"(*)\" contains '('; {chars}")),
            ("@*", "glob \"@*\" starts with '@'".into()),
            (
                &long,
                format!(
                    "glob {long:?} is 264 characters long with its suffix; systemd allows at most 255"
                ),
            ),
        ] {
            assert_eq!(UnitPattern::parse(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn globs_match_like_fnmatch() {
        let g = UnitPattern::parse("celery@*").unwrap();
        assert_eq!(g.as_str(), "celery@*.service");
        let n = |s| UnitName::parse(s).unwrap();
        assert!(g.matches(&n("celery@worker1.service")));
        assert!(!g.matches(&n("celerybeat.service")));
        let c = UnitPattern::parse("web[0-9].service").unwrap();
        assert!(c.matches(&n("web3.service")));
        assert!(!c.matches(&n("webx.service")));
        let q = UnitPattern::parse("w?b.service").unwrap();
        assert!(q.matches(&n("web.service")));
        let neg = UnitPattern::parse("a[!b]c.service").unwrap();
        assert!(neg.matches(&n("axc.service")));
        assert!(!neg.matches(&n("abc.service")));
    }

    #[test]
    fn exec_status_reads_like_systemctl() {
        let mut o = Observation::new(
            LoadState::Loaded,
            ActiveState::Failed,
            SubState::new("failed"),
        );
        assert_eq!(o.exec_status(), None);
        o.exec_main = Some((2, 9));
        assert_eq!(o.exec_status().unwrap(), "code=killed, status=9/KILL");
        o.exec_main = Some((1, 3));
        assert_eq!(o.exec_status().unwrap(), "code=exited, status=3");
        o.exec_main = Some((1, 203));
        assert_eq!(o.exec_status().unwrap(), "code=exited, status=203/EXEC");
    }

    #[test]
    fn states_parse_and_print() {
        for s in [
            "active",
            "failed",
            "inactive",
            "activating",
            "deactivating",
            "reloading",
        ] {
            assert_eq!(ActiveState::parse(s).as_str(), s);
        }
        assert_eq!(ActiveState::parse("weird"), ActiveState::Unknown);
        assert_eq!(LoadState::parse("not-found"), LoadState::NotFound);
        assert!(SubState::new("auto-restart").is_auto_restart());
        for r in [
            "success",
            "exit-code",
            "signal",
            "core-dump",
            "oom-kill",
            "start-limit-hit",
        ] {
            assert_eq!(ServiceResult::parse(r).as_str(), r);
        }
        assert_eq!(
            ServiceResult::parse("brand-new"),
            ServiceResult::Other("brand-new".into())
        );
        for r in [
            "done",
            "canceled",
            "timeout",
            "failed",
            "dependency",
            "skipped",
        ] {
            assert_eq!(JobResult::parse(r).as_str(), r);
        }
    }
}
