//! The rotating file under `log_dir`: its periods, the `unitwarden.log` symlink, pruning, modes and group.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use jiff::{SignedDuration, Timestamp, ZonedDateTime};
use nix::unistd::{Gid, Group};
use tracing::Level;

use super::line::{StderrStyle, priority, process_stderr_style};
use super::{Rotation, lock};

/// The stable name operators `tail -F`; always a symlink to the current file.
const LINK_NAME: &str = "unitwarden.log";
const FILE_PREFIX: &str = "unitwarden-";
const FILE_SUFFIX: &str = ".log";
/// How often to check that the current file is still linked in `log_dir`: writes to a file someone
/// deleted succeed silently, so without this its lines would vanish until the next rotation.
const RELINK_CHECK: SignedDuration = SignedDuration::from_secs(10);
/// Debian's group for logs an operator may read without root.
const LOG_GROUP: &str = "adm";
/// Set explicitly rather than left to the umask, so a unit's `UMask=0077` cannot lock the group
/// out of files it is meant to read.
const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;

/// `current`'s path, published by the writer for [`super::LogHandle::file_path`].
pub(super) type SharedPath = Arc<Mutex<Option<PathBuf>>>;

/// Problems with logging itself can only go to stderr; `eprintln!` would panic if that fails too.
fn report(level: Level, message: std::fmt::Arguments<'_>) {
    let prefix = match process_stderr_style() {
        StderrStyle::Plain => "",
        StderrStyle::Journal => priority(level),
    };
    let _ = writeln!(io::stderr(), "{prefix}unitwarden: {message}");
}

/// The rotating file as the non-blocking writer's thread drives it, one `write` per line.
///
/// Rotation follows the clock when the line is written, not the line's timestamp: a line queued
/// across a boundary lands in the new period's file, which beats parsing times back out of lines.
pub(super) struct ClockedFile {
    pub(super) file: RotatingFile,
    pub(super) clock: fn() -> ZonedDateTime,
}

impl Write for ClockedFile {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        // Failures are reported by the file itself; an Err here would only be swallowed by the
        // writer thread.
        self.file.write_line(&(self.clock)(), line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The local-time span one log file covers.
#[derive(Debug)]
struct Period {
    /// What goes between `unitwarden-` and `.log`.
    name: String,
    start: Timestamp,
    /// `None` for a period that never ends.
    end: Option<Timestamp>,
}

impl Period {
    fn of(rotation: Rotation, now: &ZonedDateTime) -> Period {
        let ts = now.timestamp();
        match rotation {
            Rotation::Never => Period {
                name: "all".into(),
                start: Timestamp::MIN,
                end: None,
            },
            Rotation::Hourly => {
                // Counting back from `now` rather than rebuilding HH:00 in civil time keeps the
                // repeated hour of a DST fall-back from mapping to its first occurrence.
                let into_hour = SignedDuration::new(
                    i64::from(now.minute()) * 60 + i64::from(now.second()),
                    now.subsec_nanosecond(),
                );
                let start = ts.checked_sub(into_hour).unwrap_or(ts);
                Period {
                    name: format!("{}", now.strftime("%Y-%m-%dT%H")),
                    start,
                    end: start.checked_add(SignedDuration::from_hours(1)).ok(),
                }
            }
            Rotation::Daily => Period {
                name: format!("{}", now.strftime("%Y-%m-%d")),
                start: now.start_of_day().map_or(ts, |z| z.timestamp()),
                end: now
                    .date()
                    .tomorrow()
                    .and_then(|day| day.to_zoned_datetime(now.time_zone().clone()))
                    .map(|z| z.timestamp())
                    .ok(),
            },
        }
    }

    fn contains(&self, ts: Timestamp) -> bool {
        self.start <= ts && self.end.is_none_or(|end| ts < end)
    }

    fn file_name(&self) -> String {
        format!("{FILE_PREFIX}{}{FILE_SUFFIX}", self.name)
    }
}

/// The file half of the logger. Time is passed in so tests can drive rotation across boundaries.
pub(super) struct RotatingFile {
    dir: PathBuf,
    rotation: Rotation,
    keep: usize,
    period: Option<Period>,
    current: Option<(File, PathBuf)>,
    /// `current`'s path, kept apart from it so that asking never waits behind a write to a slow
    /// disk.
    shown: SharedPath,
    relink_check_at: Timestamp,
    /// [`LOG_GROUP`], if we may give files to it.
    group: Option<Gid>,
    /// A failure has been reported and not yet recovered from, so a full disk costs one stderr
    /// line rather than one per event.
    broken: bool,
    /// A failure to give a file to the group has been reported: it would recur at every rotation.
    group_reported: bool,
}

impl RotatingFile {
    pub(super) fn new(dir: PathBuf, rotation: Rotation, keep: usize) -> Self {
        RotatingFile {
            dir,
            rotation,
            keep: keep.max(1),
            period: None,
            current: None,
            shown: SharedPath::default(),
            relink_check_at: Timestamp::MIN,
            group: log_group(),
            broken: false,
            group_reported: false,
        }
    }

    pub(super) fn shared_path(&self) -> SharedPath {
        Arc::clone(&self.shown)
    }

    /// Appends one complete line with a single write, so a reader never sees half of it.
    pub(super) fn write_line(&mut self, now: &ZonedDateTime, line: &[u8]) {
        self.roll(now);
        let Some((file, path)) = &mut self.current else {
            return;
        };
        let Err(err) = file.write_all(line) else {
            return;
        };
        let retry = match self.rotation {
            Rotation::Never => "",
            Rotation::Hourly | Rotation::Daily => " until the next rotation",
        };
        report(
            Level::WARN,
            format_args!(
                "log file {}: {err}; logging to stderr only{retry}",
                path.display()
            ),
        );
        self.set_current(None);
        self.broken = true;
    }

    fn set_current(&mut self, current: Option<(File, PathBuf)>) {
        *lock(&self.shown) = current.as_ref().map(|(_, path)| path.clone());
        self.current = current;
    }

    /// Makes sure the file for `now`'s period is open; cheap when nothing changed.
    pub(super) fn roll(&mut self, now: &ZonedDateTime) {
        let ts = now.timestamp();
        if self.period.as_ref().is_some_and(|p| p.contains(ts)) {
            if self.current.is_some() && ts >= self.relink_check_at {
                self.relink_check_at = ts.checked_add(RELINK_CHECK).unwrap_or(ts);
                if !self.current_still_linked() {
                    self.open();
                }
            }
            return;
        }
        let period = Period::of(self.rotation, now);
        let same_file = self.period.as_ref().is_some_and(|p| p.name == period.name);
        self.period = Some(period);
        // Also retried when the name did not change but the file was lost (e.g. a clock step).
        if !same_file || self.current.is_none() {
            self.relink_check_at = ts.checked_add(RELINK_CHECK).unwrap_or(ts);
            self.open();
        }
    }

    fn current_still_linked(&self) -> bool {
        let Some((file, path)) = &self.current else {
            return false;
        };
        match (file.metadata(), fs::metadata(path)) {
            (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
            _ => false,
        }
    }

    fn open(&mut self) {
        self.set_current(None);
        let Some(name) = self.period.as_ref().map(Period::file_name) else {
            return;
        };
        let path = self.dir.join(&name);
        let file = match self.create_dir().and_then(|()| self.open_file(&path)) {
            Ok(file) => file,
            Err(err) => {
                if !self.broken {
                    report(
                        Level::WARN,
                        format_args!(
                            "log_dir {}: {err}; logging to stderr only",
                            self.dir.display()
                        ),
                    );
                    self.broken = true;
                }
                return;
            }
        };
        if self.broken {
            report(
                Level::INFO,
                format_args!("logging to {} again", path.display()),
            );
            self.broken = false;
        }
        self.set_current(Some((file, path)));
        // The link moves before pruning, so it never points at a file about to be deleted.
        if let Err(err) = point_link(&self.dir, &name) {
            report(
                Level::WARN,
                format_args!(
                    "log_dir {}: cannot point {LINK_NAME} at {name}: {err}",
                    self.dir.display()
                ),
            );
        }
        if let Err(err) = prune(&self.dir, &name, self.keep) {
            report(
                Level::WARN,
                format_args!(
                    "log_dir {}: cannot remove old log files: {err}",
                    self.dir.display()
                ),
            );
        }
    }

    /// Creates a missing `dir` with [`DIR_MODE`] and the group. One that exists is left as it
    /// is: it may be shared (`log_dir = "/var/log"`) or set up by systemd's `LogsDirectory=`.
    fn create_dir(&mut self) -> io::Result<()> {
        if fs::metadata(&self.dir).is_ok_and(|meta| meta.is_dir()) {
            return Ok(());
        }
        let dir = self.dir.clone();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)?;
        fs::set_permissions(&dir, Permissions::from_mode(DIR_MODE))?;
        self.set_group(&dir, fs::metadata(&dir), |gid| {
            std::os::unix::fs::chown(&dir, None, Some(gid))
        });
        Ok(())
    }

    /// Opens `path` for appending. A file created here gets [`FILE_MODE`] and the group; one
    /// that exists keeps what it has, which may be an operator's choice.
    fn open_file(&mut self, path: &Path) -> io::Result<File> {
        let created = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(path);
        match created {
            Ok(file) => {
                file.set_permissions(Permissions::from_mode(FILE_MODE))?;
                self.set_group(path, file.metadata(), |gid| {
                    std::os::unix::fs::fchown(&file, None, Some(gid))
                });
                Ok(file)
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                OpenOptions::new().append(true).open(path)
            }
            Err(err) => Err(err),
        }
    }

    /// Logging works without the group, so a failure is only reported, and once.
    fn set_group(
        &mut self,
        path: &Path,
        meta: io::Result<fs::Metadata>,
        chown: impl FnOnce(u32) -> io::Result<()>,
    ) {
        let Some(gid) = self.group.map(Gid::as_raw) else {
            return;
        };
        // Already the group's when the process runs in it (`Group=` of a unit) or the parent
        // directory is setgid; a sandbox may forbid chown(2) even then.
        if meta.is_ok_and(|meta| meta.gid() == gid) {
            return;
        }
        if let Err(err) = chown(gid)
            && !self.group_reported
        {
            report(
                Level::WARN,
                format_args!(
                    "{}: cannot give it to group {LOG_GROUP}: {err}",
                    path.display()
                ),
            );
            self.group_reported = true;
        }
    }
}

/// [`LOG_GROUP`]'s id when it exists and we can give files to it: as root, or as a member.
/// Anyone else cannot, which is the ordinary least-privilege setup rather than a fault.
fn log_group() -> Option<Gid> {
    let group = Group::from_name(LOG_GROUP).ok()??;
    let allowed = nix::unistd::geteuid().is_root()
        || nix::unistd::getegid() == group.gid
        || nix::unistd::getgroups().is_ok_and(|groups| groups.contains(&group.gid));
    allowed.then_some(group.gid)
}

/// Repoints `dir/unitwarden.log` at `target` by renaming a fresh symlink over it, so readers never
/// find the link missing.
fn point_link(dir: &Path, target: &str) -> io::Result<()> {
    let link = dir.join(LINK_NAME);
    // A regular file here was left by an older logger; keep it among the rotated files instead of
    // renaming over (destroying) it.
    if fs::symlink_metadata(&link).is_ok_and(|meta| meta.is_file()) {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        fs::rename(
            &link,
            dir.join(format!("{FILE_PREFIX}preexisting-{secs}{FILE_SUFFIX}")),
        )?;
    }
    // Hidden and outside the `unitwarden-*.log` pattern, so pruning and `ls` ignore it.
    let tmp = dir.join(format!(".{LINK_NAME}.{}.tmp", std::process::id()));
    match fs::remove_file(&tmp) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, &link).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Deletes the oldest `unitwarden-*.log` files so that `keep` remain, `current` included.
fn prune(dir: &Path, current: &str, keep: usize) -> io::Result<()> {
    let mut old = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name == current || !name.starts_with(FILE_PREFIX) || !name.ends_with(FILE_SUFFIX) {
            continue;
        }
        // DirEntry::metadata does not follow symlinks, so the link itself is never a candidate.
        let meta = entry.metadata()?;
        if meta.is_file() {
            // Modification time first: names from different rotation settings do not sort by age.
            old.push((meta.modified().ok(), name));
        }
    }
    old.sort();
    let excess = (old.len() + 1).saturating_sub(keep.max(1));
    let mut first_error = None;
    for (_, name) in old.into_iter().take(excess) {
        match fs::remove_file(dir.join(name)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                first_error.get_or_insert(err);
            }
            _ => {}
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::tests::{at, fixed_now};
    use jiff::civil::date;
    use jiff::tz::TimeZone;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn log_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read log dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8")
            })
            .collect();
        names.sort();
        names
    }

    fn link_target(dir: &Path) -> String {
        fs::read_link(dir.join(LINK_NAME))
            .expect("symlink present")
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn created_files_and_dirs_get_fixed_modes_and_the_log_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        let mut file = RotatingFile::new(logs.clone(), Rotation::Daily, 3);
        file.write_line(&fixed_now(), b"a\n");
        // Root (as in CI) on a system with the group gets it; anyone else keeps their own.
        let group = log_group().map_or_else(|| nix::unistd::getegid().as_raw(), Gid::as_raw);
        if nix::unistd::geteuid().is_root() {
            assert_eq!(
                Group::from_name(LOG_GROUP)
                    .expect("group database")
                    .map(|g| g.gid.as_raw()),
                Some(group),
                "root on a system with group {LOG_GROUP}"
            );
        }
        let dir_meta = fs::metadata(&logs).expect("stat dir");
        assert_eq!(dir_meta.mode() & 0o777, DIR_MODE);
        assert_eq!(dir_meta.gid(), group);
        let file_meta = fs::metadata(logs.join("unitwarden-2026-11-23.log")).expect("stat file");
        assert_eq!(file_meta.mode() & 0o777, FILE_MODE);
        assert_eq!(file_meta.gid(), group);
    }

    #[test]
    fn existing_dirs_and_files_keep_their_modes_and_groups() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).expect("chmod dir");
        let existing = dir.path().join("unitwarden-2026-11-23.log");
        fs::write(&existing, "kept\n").expect("write");
        fs::set_permissions(&existing, Permissions::from_mode(0o600)).expect("chmod file");
        let before = (
            fs::metadata(dir.path()).expect("stat").gid(),
            fs::metadata(&existing).expect("stat").gid(),
        );
        let mut file = RotatingFile::new(dir.path().to_owned(), Rotation::Daily, 3);
        file.write_line(&fixed_now(), b"appended\n");
        let dir_meta = fs::metadata(dir.path()).expect("stat dir");
        let file_meta = fs::metadata(&existing).expect("stat file");
        assert_eq!(dir_meta.mode() & 0o777, 0o700);
        assert_eq!(file_meta.mode() & 0o777, 0o600);
        assert_eq!((dir_meta.gid(), file_meta.gid()), before);
        assert_eq!(
            fs::read_to_string(&existing).expect("read"),
            "kept\nappended\n"
        );
    }

    #[test]
    fn hourly_rotation_keeps_newest_files_and_moves_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = RotatingFile::new(dir.path().to_owned(), Rotation::Hourly, 2);
        for (hour, minute) in [(22, 10), (22, 59), (23, 0), (23, 30)] {
            file.write_line(&at(2026, 11, 23, hour, minute), b"line\n");
        }
        // Crosses midnight: the third boundary.
        file.write_line(&at(2026, 11, 24, 0, 1), b"after midnight\n");
        assert_eq!(
            log_names(dir.path()),
            [
                "unitwarden-2026-11-23T23.log",
                "unitwarden-2026-11-24T00.log",
                "unitwarden.log"
            ]
        );
        assert_eq!(link_target(dir.path()), "unitwarden-2026-11-24T00.log");
        assert_eq!(
            fs::read_to_string(dir.path().join(LINK_NAME)).expect("read through link"),
            "after midnight\n"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("unitwarden-2026-11-23T23.log")).expect("read"),
            "line\nline\n"
        );
        let mode = fs::metadata(dir.path().join("unitwarden-2026-11-24T00.log"))
            .expect("stat")
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn daily_rotation_follows_local_midnight() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = RotatingFile::new(dir.path().to_owned(), Rotation::Daily, 14);
        // 23:30 at +03:00 is already the 23rd in UTC; the file must be named by local time.
        file.write_line(&at(2026, 11, 22, 23, 30), b"a\n");
        file.write_line(&at(2026, 11, 23, 0, 0), b"b\n");
        file.write_line(&at(2026, 11, 23, 2, 59), b"c\n");
        assert_eq!(
            log_names(dir.path()),
            [
                "unitwarden-2026-11-22.log",
                "unitwarden-2026-11-23.log",
                "unitwarden.log"
            ]
        );
        assert_eq!(link_target(dir.path()), "unitwarden-2026-11-23.log");
        assert_eq!(
            fs::read_to_string(dir.path().join(LINK_NAME)).expect("read"),
            "b\nc\n"
        );
    }

    #[test]
    fn hourly_rotation_survives_dst_fall_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tz = TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").expect("posix tz");
        let mut file = RotatingFile::new(dir.path().to_owned(), Rotation::Hourly, 10);
        // 05:30Z and 06:30Z are both 01:30 local on 2026-11-01; 07:30Z is 02:30.
        for hour in [5, 6, 7] {
            let ts = date(2026, 11, 1)
                .at(hour, 30, 0, 0)
                .to_zoned_datetime(TimeZone::UTC)
                .expect("utc")
                .timestamp();
            file.write_line(&ts.to_zoned_datetime(tz.clone()), b"x\n");
        }
        assert_eq!(
            log_names(dir.path()),
            [
                "unitwarden-2026-11-01T01.log",
                "unitwarden-2026-11-01T02.log",
                "unitwarden.log"
            ]
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("unitwarden-2026-11-01T01.log")).expect("read"),
            "x\nx\n"
        );
    }

    #[test]
    fn never_rotation_uses_one_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = RotatingFile::new(dir.path().to_owned(), Rotation::Never, 1);
        file.write_line(&at(2026, 1, 1, 0, 0), b"a\n");
        file.write_line(&at(2027, 6, 1, 12, 0), b"b\n");
        assert_eq!(
            log_names(dir.path()),
            ["unitwarden-all.log", "unitwarden.log"]
        );
        assert_eq!(link_target(dir.path()), "unitwarden-all.log");
        assert_eq!(
            fs::read_to_string(dir.path().join(LINK_NAME)).expect("read"),
            "a\nb\n"
        );
    }

    #[test]
    fn link_always_resolves_while_rotating() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join(LINK_NAME);
        let mut file = RotatingFile::new(dir.path().to_owned(), Rotation::Hourly, 3);
        let mut now = at(2026, 11, 23, 0, 0);
        file.write_line(&now, b"start\n");
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (done, link) = (done.clone(), link.clone());
            std::thread::spawn(move || {
                let mut misses = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    // The link itself must never be missing, even mid-rename.
                    let Ok(before) = fs::read_link(&link) else {
                        misses.push("link missing".to_owned());
                        continue;
                    };
                    // A reader stalled across several rotations may find its target pruned, but a
                    // target missing while the link still names it is a real bug. Names never
                    // repeat, so an unchanged link means it named the missing file throughout.
                    if fs::metadata(&link).is_err() {
                        let after = fs::read_link(&link).ok();
                        if after.as_ref() == Some(&before) {
                            misses.push(format!("{} missing", before.display()));
                        }
                    }
                }
                misses
            })
        };
        for _ in 0..300 {
            now = now
                .checked_add(SignedDuration::from_hours(1))
                .expect("time in range");
            file.write_line(&now, b"tick\n");
        }
        done.store(true, Ordering::Relaxed);
        assert_eq!(reader.join().expect("reader thread"), Vec::<String>::new());
        let names = log_names(dir.path());
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.iter().all(|n| !n.ends_with(".tmp")));
        assert_eq!(
            Some(dir.path().join(link_target(dir.path()))),
            *lock(&file.shared_path())
        );
    }

    #[test]
    fn preexisting_regular_file_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(LINK_NAME), "old shell monitor log\n").expect("write");
        let mut file = RotatingFile::new(dir.path().to_owned(), Rotation::Daily, 5);
        file.write_line(&fixed_now(), b"new\n");
        assert_eq!(link_target(dir.path()), "unitwarden-2026-11-23.log");
        let kept: Vec<_> = log_names(dir.path())
            .into_iter()
            .filter(|n| n.starts_with("unitwarden-preexisting-"))
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            fs::read_to_string(dir.path().join(&kept[0])).expect("read"),
            "old shell monitor log\n"
        );
    }

    #[test]
    fn deleted_file_is_recreated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut file = RotatingFile::new(dir.path().join("logs"), Rotation::Daily, 5);
        let now = fixed_now();
        file.write_line(&now, b"a\n");
        fs::remove_dir_all(dir.path().join("logs")).expect("remove dir");
        let later = now
            .checked_add(SignedDuration::from_mins(1))
            .expect("time in range");
        file.write_line(&later, b"b\n");
        assert_eq!(
            fs::read_to_string(dir.path().join("logs").join(LINK_NAME)).expect("read"),
            "b\n"
        );
    }
}
