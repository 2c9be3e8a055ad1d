//! The rotating file under `log_dir`: its periods, the `unitwarden.log` symlink, pruning, modes
//! and group, and how it recovers from a full disk or a deleted `log_dir` without losing a line
//! silently.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::time::{Duration, SystemTime};

use jiff::{SignedDuration, Timestamp, ZonedDateTime};
use nix::unistd::{Gid, Group};
use tracing::Level;

use super::line::{Fields, StderrStyle, priority, process_stderr_style, render, timestamp_text};
use super::{LogFormat, Rotation, lock};

/// The stable name operators `tail -F`; always a symlink to the current file.
const LINK_NAME: &str = "unitwarden.log";
const FILE_PREFIX: &str = "unitwarden-";
const FILE_SUFFIX: &str = ".log";
/// Debian's group for logs an operator may read without root.
const LOG_GROUP: &str = "adm";
/// Set explicitly rather than left to the umask, so a unit's `UMask=0077` cannot lock the group
/// out of files it is meant to read, and a shell's `umask 000` cannot open them to everyone.
const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;
/// While the file cannot be written, how often to try again: soon enough that logging resumes
/// within seconds of the disk having room, rare enough that a dead disk costs nothing.
const RETRY: SignedDuration = SignedDuration::from_secs(5);
/// How often the retry thread looks while the file is failing, so that a retry is due at most
/// this long before it is made even when nothing is logged.
const RETRY_TICK: Duration = Duration::from_secs(1);
/// Lines kept in memory while the file cannot be written, at most this many bytes of them (the
/// newest); every line also went to stderr, and the note says how many were not kept.
const KEEP_BYTES: usize = 256 * 1024;
/// Set in `ps -T` and `/proc/PID/task/*/comm` (at most 15 bytes).
const RETRY_THREAD: &str = "unitwarden-logr";

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
    pub(super) file: Arc<Mutex<RotatingFile>>,
    pub(super) clock: fn() -> ZonedDateTime,
}

impl Write for ClockedFile {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        // Failures are handled by the file itself; an Err here would only be swallowed by the
        // writer thread.
        lock(&self.file).write_line(&(self.clock)(), line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Wakes the retry thread while the file is failing, and stops it.
#[derive(Default)]
pub(super) struct RetrySignal {
    state: Mutex<RetryState>,
    changed: Condvar,
}

#[derive(Default)]
struct RetryState {
    failing: bool,
    stop: bool,
}

impl RetrySignal {
    fn set_failing(&self, failing: bool) {
        let mut state = lock(&self.state);
        if state.failing != failing {
            state.failing = failing;
            self.changed.notify_all();
        }
    }

    fn stop(&self) {
        lock(&self.state).stop = true;
        self.changed.notify_all();
    }
}

/// The file's side of the non-blocking writer: retries a failing file even while nothing is
/// logged, and makes a last attempt when the writer stops.
pub(super) struct FileKeeper {
    file: Arc<Mutex<RotatingFile>>,
    signal: Arc<RetrySignal>,
    clock: fn() -> ZonedDateTime,
}

impl FileKeeper {
    /// Starts the retry thread for `file`. Without it (no thread to be had), retries follow the
    /// next line logged instead.
    pub(super) fn start(file: Arc<Mutex<RotatingFile>>, clock: fn() -> ZonedDateTime) -> Self {
        let signal = Arc::clone(&lock(&file).retry);
        let (thread_file, thread_signal) = (Arc::clone(&file), Arc::clone(&signal));
        let spawned = std::thread::Builder::new()
            .name(RETRY_THREAD.into())
            .stack_size(64 * 1024)
            .spawn(move || retry_loop(&thread_file, &thread_signal, clock));
        if let Err(err) = spawned {
            report(
                Level::WARN,
                format_args!(
                    "cannot start the log retry thread: {err}; a failing log file is retried when the next line is logged"
                ),
            );
        }
        FileKeeper {
            file,
            signal,
            clock,
        }
    }
}

impl Drop for FileKeeper {
    /// Dropped after the writer thread has written what was queued (see `FileWriter`): the lines
    /// still kept because the file failed get one last try, so a short-lived `once` loses none
    /// that could be written, and the retry thread ends.
    fn drop(&mut self) {
        self.signal.stop();
        // The writer or the retry thread may still be stuck on a hung disk: never wait for it
        // at exit.
        let mut file = match self.file.try_lock() {
            Ok(file) => file,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        file.retry(&(self.clock)(), Attempt::Now);
    }
}

/// Sleeps until the file fails, then ticks it every [`RETRY_TICK`] until it works again.
fn retry_loop(file: &Mutex<RotatingFile>, signal: &RetrySignal, clock: fn() -> ZonedDateTime) {
    loop {
        let state = lock(&signal.state);
        let state = signal
            .changed
            .wait_while(state, |s| !s.failing && !s.stop)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.stop {
            return;
        }
        let (state, _) = signal
            .changed
            .wait_timeout_while(state, RETRY_TICK, |s| !s.stop)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.stop {
            return;
        }
        drop(state);
        lock(file).retry(&clock(), Attempt::WhenDue);
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

/// The file half of the logger. Time is passed in so tests can drive rotation and retries.
pub(super) struct RotatingFile {
    dir: PathBuf,
    rotation: Rotation,
    keep: usize,
    /// How the file's own notes (lines lost, file replaced) are written: like every other line.
    format: LogFormat,
    period: Option<Period>,
    current: Option<Current>,
    /// `current`'s path, kept apart from it so that asking never waits behind a write to a slow
    /// disk.
    shown: SharedPath,
    /// Set while the file cannot be written: the lines kept for it, and when to try again.
    outage: Option<Outage>,
    retry: Arc<RetrySignal>,
    /// [`LOG_GROUP`], if we may give files to it.
    group: Option<Gid>,
    /// A failure to give a file to the group has been reported: it would recur at every rotation.
    group_reported: bool,
}

/// The open file and the identity of what its name pointed at when it was opened.
struct Current {
    file: File,
    path: PathBuf,
    dev: u64,
    ino: u64,
}

/// A time when the file could not be written. Every line still reached stderr; the newest
/// [`KEEP_BYTES`] of them wait here for the file.
struct Outage {
    since: ZonedDateTime,
    /// The first failure, which is usually the cause of the rest.
    reason: String,
    /// Lines that could not be written, whether kept or not.
    lines: u64,
    kept: VecDeque<Vec<u8>>,
    kept_bytes: usize,
    retry_at: Timestamp,
}

impl Outage {
    fn keep(&mut self, line: &[u8]) {
        self.lines += 1;
        self.kept_bytes += line.len();
        self.kept.push_back(line.to_vec());
        while self.kept_bytes > KEEP_BYTES {
            let Some(oldest) = self.kept.pop_front() else {
                break;
            };
            self.kept_bytes -= oldest.len();
        }
    }
}

/// Whether [`RotatingFile::retry`] waits for [`RETRY`] since the last failure.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    WhenDue,
    Now,
}

impl RotatingFile {
    pub(super) fn new(dir: PathBuf, rotation: Rotation, keep: usize, format: LogFormat) -> Self {
        RotatingFile {
            dir,
            rotation,
            keep: keep.max(1),
            format,
            period: None,
            current: None,
            shown: SharedPath::default(),
            outage: None,
            retry: Arc::default(),
            group: log_group(),
            group_reported: false,
        }
    }

    pub(super) fn shared_path(&self) -> SharedPath {
        Arc::clone(&self.shown)
    }

    /// Appends one complete line. While the file fails, the line is kept for it instead, and
    /// the file is retried once [`RETRY`] has passed.
    pub(super) fn write_line(&mut self, now: &ZonedDateTime, line: &[u8]) {
        if let Some(outage) = &mut self.outage {
            outage.keep(line);
            self.retry(now, Attempt::WhenDue);
            return;
        }
        self.roll(now);
        self.append_or_keep(now, line);
    }

    /// Appends `line` to the open file; if there is none (`roll` could not open it) or the
    /// write fails, the outage keeps it.
    fn append_or_keep(&mut self, now: &ZonedDateTime, line: &[u8]) {
        if let Some(current) = &mut self.current
            && let Err(err) = append(&mut current.file, line)
        {
            let path = current.path.clone();
            self.fail(now, format_args!("log file {}", path.display()), &err);
        }
        if let Some(outage) = &mut self.outage {
            outage.keep(line);
        }
    }

    /// Makes sure the file for `now`'s period is open, and still the file its name points at;
    /// cheap when nothing changed.
    pub(super) fn roll(&mut self, now: &ZonedDateTime) {
        if self.outage.is_some() {
            return;
        }
        let ts = now.timestamp();
        if self.period.as_ref().is_some_and(|p| p.contains(ts)) {
            // Checked before every line: a write to a file someone deleted (or a `log_dir`
            // removed whole) succeeds silently, so without this the line would vanish.
            if let Some(gone) = self.current.as_ref().filter(|c| !c.still_linked()) {
                let gone = gone.path.clone();
                if self.open(now) {
                    let note = format!(
                        "the log file {} was deleted or moved away while in use; continuing in a new file",
                        gone.display()
                    );
                    report(Level::WARN, format_args!("{note}"));
                    self.write_note(now, &note);
                }
            }
            return;
        }
        let period = Period::of(self.rotation, now);
        let same_file = self.period.as_ref().is_some_and(|p| p.name == period.name);
        self.period = Some(period);
        // Also reopened when the name did not change but the file was lost (e.g. a clock step).
        if !same_file || self.current.is_none() {
            self.open(now);
        }
    }

    /// Writes a note of the file's own as a log line, kept like any line if that fails.
    fn write_note(&mut self, now: &ZonedDateTime, message: &str) {
        let line = self.note(now, message);
        self.append_or_keep(now, &line);
    }

    fn note(&self, now: &ZonedDateTime, message: &str) -> Vec<u8> {
        render(
            self.format,
            Some(now),
            Level::WARN,
            &Fields::message(message.to_owned()),
        )
    }

    /// Begins an outage (or notes a further failure during one): closes the file, reports once
    /// on stderr, and asks the retry thread to tick.
    fn fail(&mut self, now: &ZonedDateTime, what: std::fmt::Arguments<'_>, err: &io::Error) {
        self.set_current(None);
        let retry_at = now.timestamp().checked_add(RETRY).unwrap_or(Timestamp::MAX);
        if let Some(outage) = &mut self.outage {
            outage.retry_at = retry_at;
            return;
        }
        report(
            Level::WARN,
            format_args!(
                "{what}: {err}; logging to stderr only, keeping the lines for the file and trying again every {}s",
                RETRY.as_secs()
            ),
        );
        self.outage = Some(Outage {
            since: now.clone(),
            reason: err.to_string(),
            lines: 0,
            kept: VecDeque::new(),
            kept_bytes: 0,
            retry_at,
        });
        self.retry.set_failing(true);
    }

    /// During an outage, once [`RETRY`] has passed since the last failure (or at once with
    /// [`Attempt::Now`]): reopens the file and writes a note followed by the kept lines, all with
    /// one write, so they land together or not at all.
    pub(super) fn retry(&mut self, now: &ZonedDateTime, attempt: Attempt) {
        let Some(outage) = &self.outage else {
            return;
        };
        if attempt == Attempt::WhenDue && now.timestamp() < outage.retry_at {
            return;
        }
        // Reopened, not reused: the failure may have been the file or its directory (EIO, a
        // deleted `log_dir`) as much as the space.
        self.period = Some(Period::of(self.rotation, now));
        if !self.open(now) {
            return;
        }
        let Some(outage) = self.outage.take() else {
            return;
        };
        let not_kept = outage.lines - outage.kept.len() as u64;
        let mut note = format!(
            "{} line(s) could not be written to the log file between {} and {} ({}); ",
            outage.lines,
            timestamp_text(&outage.since),
            timestamp_text(now),
            outage.reason,
        );
        if not_kept == 0 {
            note.push_str("they follow");
        } else {
            note.push_str(&format!(
                "the last {} follow, the {not_kept} before them are on stderr only",
                outage.kept.len()
            ));
        }
        let mut block = self.note(now, &note);
        block.reserve(outage.kept_bytes);
        for line in &outage.kept {
            block.extend_from_slice(line);
        }
        let Some(current) = &mut self.current else {
            self.outage = Some(outage);
            return;
        };
        match append(&mut current.file, &block) {
            Ok(()) => {
                report(
                    Level::INFO,
                    format_args!(
                        "logging to {} again; {} line(s) written late",
                        current.path.display(),
                        outage.kept.len()
                    ),
                );
                self.retry.set_failing(false);
            }
            Err(err) => {
                let path = current.path.clone();
                self.outage = Some(outage);
                self.fail(now, format_args!("log file {}", path.display()), &err);
            }
        }
    }

    fn set_current(&mut self, current: Option<Current>) {
        *lock(&self.shown) = current.as_ref().map(|c| c.path.clone());
        self.current = current;
    }

    /// Opens the file of the current period (creating `log_dir` if it is missing), points the
    /// link at it and prunes. False, with an outage begun or extended, if it cannot be opened.
    fn open(&mut self, now: &ZonedDateTime) -> bool {
        self.set_current(None);
        let Some(name) = self.period.as_ref().map(Period::file_name) else {
            return false;
        };
        let path = self.dir.join(&name);
        let opened = self.create_dir().and_then(|()| self.open_file(&path));
        let file = match opened.and_then(|file| Current::new(file, path.clone())) {
            Ok(current) => current,
            Err(err) => {
                let dir = self.dir.clone();
                self.fail(now, format_args!("log_dir {}", dir.display()), &err);
                return false;
            }
        };
        self.set_current(Some(file));
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
        true
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

impl Current {
    fn new(file: File, path: PathBuf) -> io::Result<Current> {
        let meta = file.metadata()?;
        Ok(Current {
            file,
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Whether the name still leads to the open file: not deleted, not moved away, `log_dir`
    /// not removed.
    fn still_linked(&self) -> bool {
        fs::metadata(&self.path)
            .is_ok_and(|named| named.dev() == self.dev && named.ino() == self.ino)
    }
}

/// Appends `bytes` whole: one write, more only if the disk takes part of it. If it cannot be
/// completed, what was written is cut off again, so the file never holds a torn line.
fn append(file: &mut File, bytes: &[u8]) -> io::Result<()> {
    let mut written = 0;
    let err = loop {
        if written == bytes.len() {
            return Ok(());
        }
        match file.write(&bytes[written..]) {
            Ok(0) => break io::Error::from(io::ErrorKind::WriteZero),
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => break err,
        }
    };
    if written > 0 {
        // With O_APPEND our offset is the end of our own bytes, wherever another writer's went.
        let cut = file
            .stream_position()
            .and_then(|end| file.set_len(end.saturating_sub(written as u64)));
        if let Err(cut_err) = cut {
            report(
                Level::WARN,
                format_args!(
                    "log file: cannot remove the part of a line written before {err}: {cut_err}"
                ),
            );
        }
    }
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::tests::{at, fixed_now};
    use crate::testing::on_tiny_tmpfs;
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
        crate::files::test_support::umask_000();
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        let mut file = RotatingFile::new(logs.clone(), Rotation::Daily, 3, LogFormat::Text);
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
        let mut file =
            RotatingFile::new(dir.path().to_owned(), Rotation::Daily, 3, LogFormat::Text);
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
        let mut file =
            RotatingFile::new(dir.path().to_owned(), Rotation::Hourly, 2, LogFormat::Text);
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
        let mut file =
            RotatingFile::new(dir.path().to_owned(), Rotation::Daily, 14, LogFormat::Text);
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
        let mut file =
            RotatingFile::new(dir.path().to_owned(), Rotation::Hourly, 10, LogFormat::Text);
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
        let mut file =
            RotatingFile::new(dir.path().to_owned(), Rotation::Never, 1, LogFormat::Text);
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
        let mut file =
            RotatingFile::new(dir.path().to_owned(), Rotation::Hourly, 3, LogFormat::Text);
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
        let mut file =
            RotatingFile::new(dir.path().to_owned(), Rotation::Daily, 5, LogFormat::Text);
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

    fn later(now: &ZonedDateTime, secs: i64) -> ZonedDateTime {
        now.checked_add(SignedDuration::from_secs(secs))
            .expect("time in range")
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("stat").mode() & 0o777
    }

    /// The file's own note line, in the text format.
    fn is_note(line: &str) -> bool {
        line.starts_with("2026-11-23T") && line.contains(" WARN ")
    }

    #[test]
    fn a_deleted_log_dir_is_recreated_with_its_mode_link_and_a_note() {
        crate::files::test_support::umask_000();
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        let mut file = RotatingFile::new(logs.clone(), Rotation::Daily, 5, LogFormat::Text);
        let now = fixed_now();
        file.write_line(&now, b"a\n");
        fs::remove_dir_all(&logs).expect("remove dir");
        // The very next line notices, not the next rotation or check.
        file.write_line(&later(&now, 1), b"b\n");
        assert_eq!(mode(&logs), DIR_MODE);
        assert_eq!(link_target(&logs), "unitwarden-2026-11-23.log");
        assert_eq!(mode(&logs.join(link_target(&logs))), FILE_MODE);
        let text = fs::read_to_string(logs.join(LINK_NAME)).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            is_note(lines[0]) && lines[0].contains("was deleted or moved away while in use"),
            "{text}"
        );
        assert_eq!(lines[1], "b");
    }

    #[test]
    fn lines_logged_while_log_dir_is_unusable_follow_a_note_once_it_works() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A file where the directory should be: every attempt to create it fails.
        let logs = dir.path().join("logs");
        fs::write(&logs, b"in the way").expect("write");
        let mut file = RotatingFile::new(logs.clone(), Rotation::Daily, 5, LogFormat::Text);
        let t0 = fixed_now();
        file.roll(&t0);
        assert!(file.outage.is_some());
        assert_eq!(*lock(&file.shared_path()), None);
        // More than the memory bound: the oldest are only counted.
        let line = |n: usize| format!("line {n:05} {}\n", "x".repeat(90));
        let total = KEEP_BYTES / line(0).len() + 100;
        for n in 0..total {
            file.write_line(&t0, line(n).as_bytes());
        }
        fs::remove_file(&logs).expect("unblock");
        // Not before RETRY has passed since the failure...
        file.write_line(&later(&t0, 4), line(total).as_bytes());
        file.retry(&later(&t0, 4), Attempt::WhenDue);
        assert!(file.outage.is_some() && !logs.exists());
        // ...then at once, from the retry thread's tick with nothing new logged.
        file.retry(&later(&t0, 5), Attempt::WhenDue);
        assert!(file.outage.is_none());
        let text = fs::read_to_string(logs.join(LINK_NAME)).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        let kept = lines.len() - 1;
        let lost = total + 1 - kept;
        assert!(kept > 0 && lost > 0, "{kept} kept, {lost} not");
        assert!(is_note(lines[0]), "{}", lines[0]);
        assert!(
            lines[0].contains(&format!(
                " {} line(s) could not be written to the log file between 2026-11-23T14:05:01.123+03:00 and 2026-11-23T14:05:06.123+03:00 ("
            , total + 1)) && lines[0].ends_with(&format!(
                "); the last {kept} follow, the {lost} before them are on stderr only"
            )),
            "{}",
            lines[0]
        );
        // The newest, in order.
        for (i, l) in lines[1..].iter().enumerate() {
            assert_eq!(format!("{l}\n"), line(lost + i));
        }
        assert!(text.len() - lines[0].len() <= KEEP_BYTES + 1);
    }

    /// Fills the file system of `dir` to the last byte; returns the filler's path.
    fn fill(dir: &Path) -> PathBuf {
        let path = dir.join("filler");
        let mut filler = File::create(&path).expect("create filler");
        let chunk = [b'f'; 512];
        loop {
            match filler.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        path
    }

    #[test]
    fn on_a_full_disk_no_line_is_torn_and_the_kept_lines_follow_a_note_once_there_is_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        on_tiny_tmpfs(dir.path(), "64k", || {
            let logs = dir.path().join("logs");
            let mut file = RotatingFile::new(logs.clone(), Rotation::Daily, 5, LogFormat::Text);
            let t0 = fixed_now();
            file.write_line(&t0, b"start\n");
            let filler = fill(dir.path());
            // 300-byte lines straddle the 4 KiB pages: the one that meets the end of the disk
            // is written in part, and must be cut back.
            let line = |n: usize| format!("line {n:04} {}\n", "y".repeat(289));
            let mut n = 0;
            while file.outage.is_none() {
                assert!(n < 100, "the disk never filled");
                file.write_line(&later(&t0, 1), line(n).as_bytes());
                n += 1;
            }
            let failed_at = n - 1;
            for _ in 0..3 {
                file.write_line(&later(&t0, 2), line(n).as_bytes());
                n += 1;
            }
            let path = logs.join("unitwarden-2026-11-23.log");
            let written = fs::read_to_string(&path).expect("read");
            assert!(written.ends_with('\n'), "a torn last line");
            let expected: String = std::iter::once("start\n".to_owned())
                .chain((0..failed_at).map(line))
                .collect();
            assert_eq!(written, expected);

            fs::remove_file(filler).expect("make room");
            file.retry(&later(&t0, 6), Attempt::WhenDue);
            assert!(file.outage.is_none(), "logging resumed");
            let text = fs::read_to_string(&path).expect("read");
            let after: Vec<&str> = text[written.len()..].lines().collect();
            assert!(is_note(after[0]), "{}", after[0]);
            assert!(
                after[0].contains(&format!(
                    " {} line(s) could not be written to the log file between 2026-11-23T14:05:02.123+03:00 and 2026-11-23T14:05:07.123+03:00 (No space left on device (os error 28)); they follow",
                    n - failed_at
                )),
                "{}",
                after[0]
            );
            let kept: Vec<String> = after[1..].iter().map(|l| format!("{l}\n")).collect();
            assert_eq!(kept, (failed_at..n).map(line).collect::<Vec<_>>());
            file.write_line(&later(&t0, 7), b"after\n");
            assert!(
                fs::read_to_string(&path)
                    .expect("read")
                    .ends_with("y\nafter\n")
            );
        });
    }
}
