//! Log output (SPEC §4): one line per event on stderr and in rotating files under `log_dir`, as text or JSON.
//!
//! The file writer is our own rather than tracing-appender's: that one rotates on UTC boundaries and
//! cannot maintain the `unitwarden.log` symlink that `tail -F` relies on. tracing-appender's
//! non-blocking writer sits in front of it, so a slow or hung log disk stalls a thread of its own
//! rather than the watch loop and its watchdog pings.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ZonedDateTime};
use nix::unistd::{Gid, Group};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry, reload};

/// The stable name operators `tail -F`; always a symlink to the current file.
const LINK_NAME: &str = "unitwarden.log";
const FILE_PREFIX: &str = "unitwarden-";
const FILE_SUFFIX: &str = ".log";
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3f%:z";
/// How often to check that the current file is still linked in `log_dir`: writes to a file someone
/// deleted succeed silently, so without this its lines would vanish until the next rotation.
const RELINK_CHECK: SignedDuration = SignedDuration::from_secs(10);
/// Lines queued for the file writer. A burst of this many never waits on the disk; past it the
/// logging thread waits for room, because a dropped line could be the one explaining an outage.
const QUEUE_LINES: usize = 1024;
/// Set in `ps -T` and `/proc/PID/task/*/comm` (at most 15 bytes).
const WRITER_THREAD: &str = "unitwarden-log";
/// Debian's group for logs an operator may read without root.
const LOG_GROUP: &str = "adm";
/// Set explicitly rather than left to the umask, so a unit's `UMask=0077` cannot lock the group
/// out of files it is meant to read.
const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;
/// JSON keys of the event itself, which a field of the same name must not replace.
const RESERVED_KEYS: [&str; 3] = ["time", "level", "message"];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    Hourly,
    #[default]
    Daily,
    Never,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LogSettings {
    /// `None` logs to stderr only.
    pub dir: Option<PathBuf>,
    pub rotation: Rotation,
    /// Number of files kept, the current one included; 0 is treated as 1.
    pub keep: usize,
    pub level: LogLevel,
    pub format: LogFormat,
}

/// Lets the daemon adjust logging after [`init`] (config reload, status).
///
/// Keep one alive until the end: when the last clone is dropped, the file writer writes what is
/// still queued (waiting at most about a second for a stuck disk) and stops, and lines logged
/// after that reach stderr only.
#[derive(Clone)]
pub struct LogHandle {
    level: reload::Handle<LevelFilter, Registry>,
    file: Option<SharedPath>,
    _writer: Option<Arc<WorkerGuard>>,
}

impl LogHandle {
    pub fn set_level(&self, level: LogLevel) {
        // Fails only once the subscriber is gone, when there is nothing left to adjust.
        let _ = self.level.modify(|filter| *filter = level.into());
    }

    /// The file currently written to, or `None` when logging to stderr only.
    pub fn file_path(&self) -> Option<PathBuf> {
        lock(self.file.as_ref()?).clone()
    }
}

/// Installs the global tracing subscriber: stderr always, plus the rotating file in `dir` when set.
///
/// An unusable `dir` is reported with one line on stderr and logging carries on to stderr alone
/// (retried at the next rotation), so a bad `log_dir` never keeps the watchdog from running.
/// Errors only if a global subscriber is already installed.
pub fn init(settings: &LogSettings) -> anyhow::Result<LogHandle> {
    let (subscriber, handle) = build(
        settings,
        Box::new(io::stderr()),
        process_stderr_style(),
        system_now,
    );
    tracing::subscriber::set_global_default(subscriber)
        .context("cannot install the logger: a global tracing subscriber is already set")?;
    Ok(handle)
}

/// Compact humantime rendering for log fields ("5s", "1m 30s", "250ms").
pub fn format_duration(d: Duration) -> String {
    // Sub-millisecond digits are noise in logs and make humantime print "us"/"ns" parts.
    let round_up = d.subsec_nanos() % 1_000_000 >= 500_000;
    let ms = Duration::new(d.as_secs(), d.subsec_millis() * 1_000_000)
        .saturating_add(Duration::from_millis(u64::from(round_up)));
    // Below a minute, "1.022s" reads better in a key=value line than humantime's "1s 22ms".
    if ms < Duration::from_secs(60) {
        let text = format!("{:.3}", ms.as_secs_f64());
        let text = text.trim_end_matches('0').trim_end_matches('.');
        return format!("{text}s");
    }
    // Beyond a minute, milliseconds are noise ("1h2m59s", not "1h2m59s722ms").
    let secs = Duration::from_secs(ms.as_secs() + u64::from(ms.subsec_millis() >= 500));
    humantime::format_duration(secs)
        .to_string()
        .replace(' ', "")
}

/// How lines written to stderr look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StderrStyle {
    /// The same line as the file's.
    Plain,
    /// journald reads stderr: an sd-daemon(3) priority prefix, and no timestamp, since journald
    /// stamps each line itself.
    Journal,
}

/// `Journal` when `JOURNAL_STREAM` (`DEV:INODE`, decimal) names the very stream stderr is. Merely
/// being set is not enough: a child of a service inherits the variable even when its stderr has
/// been redirected elsewhere.
fn stderr_style(journal_stream: Option<&str>, stderr_dev_ino: Option<(u64, u64)>) -> StderrStyle {
    let stream = journal_stream.and_then(|value| {
        let (dev, ino) = value.split_once(':')?;
        Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))
    });
    match (stream, stderr_dev_ino) {
        (Some(stream), Some(stderr)) if stream == stderr => StderrStyle::Journal,
        _ => StderrStyle::Plain,
    }
}

/// Looked at once: fd 2 is the same stream for the whole process.
fn process_stderr_style() -> StderrStyle {
    static STYLE: OnceLock<StderrStyle> = OnceLock::new();
    *STYLE.get_or_init(|| {
        let journal_stream = std::env::var("JOURNAL_STREAM").ok();
        stderr_style(journal_stream.as_deref(), stderr_dev_ino())
    })
}

fn stderr_dev_ino() -> Option<(u64, u64)> {
    // fstat(2) on a duplicate of fd 2: the same open file, and closing it leaves stderr open.
    let fd = io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// `current`'s path, published by the writer for [`LogHandle::file_path`].
type SharedPath = Arc<Mutex<Option<PathBuf>>>;

fn build(
    settings: &LogSettings,
    console: Box<dyn Write + Send>,
    stderr: StderrStyle,
    clock: fn() -> ZonedDateTime,
) -> (impl Subscriber + Send + Sync + 'static, LogHandle) {
    let (filter, level) = reload::Layer::new(LevelFilter::from(settings.level));
    let (file, path, guard) = match &settings.dir {
        None => (None, None, None),
        Some(dir) => {
            let mut file = RotatingFile::new(dir.clone(), settings.rotation, settings.keep);
            // Open now so a bad log_dir is reported at startup, not at the first event.
            file.roll(&clock());
            let path = file.shared_path();
            let (writer, guard) = NonBlockingBuilder::default()
                .buffered_lines_limit(QUEUE_LINES)
                .lossy(false)
                .thread_name(WRITER_THREAD)
                .finish(ClockedFile { file, clock });
            (Some(writer), Some(path), Some(Arc::new(guard)))
        }
    };
    let layer = LineLayer {
        format: settings.format,
        console: Mutex::new(console),
        stderr,
        file,
        clock,
    };
    let handle = LogHandle {
        level,
        file: path,
        _writer: guard,
    };
    (Registry::default().with(filter).with(layer), handle)
}

fn system_now() -> ZonedDateTime {
    // Unlike ZonedDateTime::now(), never panics on an absurd clock.
    Timestamp::try_from(SystemTime::now())
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_zoned_datetime(TimeZone::system())
}

/// A poisoned lock only means another thread panicked mid-log; the data is still usable.
fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
struct ClockedFile {
    file: RotatingFile,
    clock: fn() -> ZonedDateTime,
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

struct LineLayer {
    format: LogFormat,
    console: Mutex<Box<dyn Write + Send>>,
    stderr: StderrStyle,
    file: Option<NonBlocking>,
    clock: fn() -> ZonedDateTime,
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let now = (self.clock)();
        let level = *event.metadata().level();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = render(self.format, Some(&now), level, &fields);
        if let Some(file) = &self.file {
            // Fails only after the writer stopped at exit; the line still reaches stderr.
            let _ = file.clone().write_all(&line);
        }
        let console_line = match self.stderr {
            StderrStyle::Plain => line,
            StderrStyle::Journal => {
                let mut prefixed = priority(level).as_bytes().to_vec();
                prefixed.extend(render(self.format, None, level, &fields));
                prefixed
            }
        };
        let _ = lock(&self.console).write_all(&console_line);
    }
}

/// The sd-daemon(3) prefix journald strips, filing the line at that syslog priority.
fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

#[derive(Debug)]
enum FieldValue {
    Str(String),
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Str(s) => f.write_str(s),
            FieldValue::I64(n) => write!(f, "{n}"),
            FieldValue::U64(n) => write!(f, "{n}"),
            FieldValue::F64(n) => write!(f, "{n}"),
            FieldValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl FieldValue {
    fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::Str(s) => s.as_str().into(),
            FieldValue::I64(n) => (*n).into(),
            FieldValue::U64(n) => (*n).into(),
            FieldValue::F64(n) => serde_json::Number::from_f64(*n)
                .map_or_else(|| n.to_string().into(), serde_json::Value::Number),
            FieldValue::Bool(b) => (*b).into(),
        }
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    fields: Vec<(&'static str, FieldValue)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: FieldValue) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.fields.push((field.name(), value));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%x` values arrive here too, already rendered with Display.
        self.push(field, FieldValue::Str(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, FieldValue::Str(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, FieldValue::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, FieldValue::U64(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, FieldValue::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, FieldValue::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The causes are usually what the operator needs ("connect: Connection refused").
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        self.push(field, FieldValue::Str(text));
    }
}

/// One event as a line; `time` is `None` where the reader stamps lines itself (the journal).
fn render(
    format: LogFormat,
    time: Option<&ZonedDateTime>,
    level: Level,
    fields: &Fields,
) -> Vec<u8> {
    match format {
        LogFormat::Text => text_line(time, level, fields),
        LogFormat::Json => json_line(time, level, fields),
    }
}

fn timestamp_text(now: &ZonedDateTime) -> String {
    let mut out = String::with_capacity(32);
    let _ = write!(out, "{}", now.strftime(TIME_FORMAT));
    out
}

fn text_line(time: Option<&ZonedDateTime>, level: Level, fields: &Fields) -> Vec<u8> {
    let mut line = time.map(timestamp_text).unwrap_or_default();
    if !line.is_empty() {
        line.push(' ');
    }
    line.push_str(level.as_str());
    for (key, value) in &fields.fields {
        let value = match value {
            FieldValue::Str(s) => quote_if_needed(s),
            other => other.to_string(),
        };
        let _ = write!(line, " {key}={value}");
    }
    if let Some(message) = fields.message.as_deref().filter(|m| !m.is_empty()) {
        line.push(' ');
        // The message stays unquoted for readability, but must not break "one event per line".
        escape_into(&mut line, message, false);
    }
    line.push('\n');
    line.into_bytes()
}

/// Quotes a value that would otherwise be ambiguous to split on spaces and `=`.
fn quote_if_needed(value: &str) -> String {
    let needs_quotes = value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '=' || c == '"');
    if !needs_quotes {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    escape_into(&mut out, value, true);
    out.push('"');
    out
}

fn escape_into(out: &mut String, value: &str, quoted: bool) {
    for c in value.chars() {
        match c {
            '"' | '\\' if quoted => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' if quoted => out.push_str("\\t"),
            c if c.is_control() && c != '\t' => {
                let _ = write!(out, "{}", c.escape_unicode());
            }
            c => out.push(c),
        }
    }
}

fn json_line(time: Option<&ZonedDateTime>, level: Level, fields: &Fields) -> Vec<u8> {
    let mut object = serde_json::Map::new();
    if let Some(time) = time {
        object.insert("time".into(), timestamp_text(time).into());
    }
    object.insert("level".into(), level.as_str().into());
    object.insert(
        "message".into(),
        fields.message.clone().unwrap_or_default().into(),
    );
    for (key, value) in &fields.fields {
        // Checked against the fixed list too, so a field called "time" gets the same key with or
        // without the event's own time.
        let key = if RESERVED_KEYS.contains(key) || object.contains_key(*key) {
            format!("field.{key}")
        } else {
            (*key).to_owned()
        };
        object.insert(key, value.to_json());
    }
    let mut line = serde_json::to_vec(&serde_json::Value::Object(object)).unwrap_or_default();
    line.push(b'\n');
    line
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
pub(crate) struct RotatingFile {
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
    pub(crate) fn new(dir: PathBuf, rotation: Rotation, keep: usize) -> Self {
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

    pub(crate) fn shared_path(&self) -> SharedPath {
        Arc::clone(&self.shown)
    }

    /// Appends one complete line with a single write, so a reader never sees half of it.
    pub(crate) fn write_line(&mut self, now: &ZonedDateTime, line: &[u8]) {
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
    fn roll(&mut self, now: &ZonedDateTime) {
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
    use jiff::civil::date;
    use jiff::tz::offset;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn tz() -> TimeZone {
        TimeZone::fixed(offset(3))
    }

    fn at(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> ZonedDateTime {
        date(y, mo, d)
            .at(h, mi, 1, 123_456_789)
            .to_zoned_datetime(tz())
            .expect("valid test time")
    }

    fn fixed_now() -> ZonedDateTime {
        at(2026, 11, 23, 14, 5)
    }

    /// A console sink the test can read back.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.0).clone()).expect("utf-8 log output")
        }
    }

    fn settings(dir: Option<PathBuf>, format: LogFormat) -> LogSettings {
        LogSettings {
            dir,
            rotation: Rotation::Daily,
            keep: 3,
            level: LogLevel::Info,
            format,
        }
    }

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
    fn text_line_has_fields_in_order_then_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let console = Capture::default();
        let (subscriber, handle) = build(
            &settings(Some(dir.path().to_owned()), LogFormat::Text),
            Box::new(console.clone()),
            StderrStyle::Plain,
            fixed_now,
        );
        tracing::subscriber::with_default(subscriber, || {
            let state = "failed";
            tracing::info!(
                unit = "gunicorn.service",
                state = %state,
                action = "restart",
                attempt = %format_args!("{}/{}", 2, 3),
                delay = %format_duration(Duration::from_secs(10)),
                result = "exit code",
                quoted = "say \"hi\"",
                eq = "a=b",
                empty = "",
                count = 7u64,
                ok = true,
                "restarting unit"
            );
        });
        let expected = "2026-11-23T14:05:01.123+03:00 INFO unit=gunicorn.service state=failed \
            action=restart attempt=2/3 delay=10s result=\"exit code\" quoted=\"say \\\"hi\\\"\" \
            eq=\"a=b\" empty=\"\" count=7 ok=true restarting unit\n";
        assert_eq!(console.text(), expected);
        assert!(!expected.contains('\x1b'));
        let path = handle.file_path().expect("file open");
        assert_eq!(path, dir.path().join("unitwarden-2026-11-23.log"));
        // The last handle waits for the writer to empty its queue, as at the daemon's exit.
        drop(handle);
        assert_eq!(fs::read_to_string(path).expect("read log"), expected);
    }

    #[test]
    fn multiline_message_stays_on_one_line() {
        let console = Capture::default();
        let (subscriber, _handle) = build(
            &settings(None, LogFormat::Text),
            Box::new(console.clone()),
            StderrStyle::Plain,
            fixed_now,
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(detail = "two\nlines", "first\nsecond");
        });
        assert_eq!(
            console.text(),
            "2026-11-23T14:05:01.123+03:00 WARN detail=\"two\\nlines\" first\\nsecond\n"
        );
    }

    #[test]
    fn json_line_is_one_object_with_typed_fields() {
        let console = Capture::default();
        let (subscriber, _handle) = build(
            &settings(None, LogFormat::Json),
            Box::new(console.clone()),
            StderrStyle::Plain,
            fixed_now,
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(unit = "nginx.service", attempt = 3i64, verified = false, ratio = 0.5, delay = %"5s", "gave up");
        });
        let text = console.text();
        assert_eq!(text.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(value["time"], "2026-11-23T14:05:01.123+03:00");
        assert_eq!(value["level"], "ERROR");
        assert_eq!(value["message"], "gave up");
        assert_eq!(value["unit"], "nginx.service");
        assert_eq!(value["attempt"], 3);
        assert_eq!(value["verified"], false);
        assert_eq!(value["ratio"], 0.5);
        assert_eq!(value["delay"], "5s");
    }

    #[test]
    fn stderr_is_the_journal_only_when_journal_stream_names_it() {
        let stderr = Some((64769, 1234567));
        let cases = [
            (Some("64769:1234567"), stderr, StderrStyle::Journal),
            (
                Some("18446744073709551615:1"),
                Some((u64::MAX, 1)),
                StderrStyle::Journal,
            ),
            (None, stderr, StderrStyle::Plain),
            // Inherited from a service, but stderr was redirected since.
            (Some("64769:7654321"), stderr, StderrStyle::Plain),
            (Some("1:1234567"), stderr, StderrStyle::Plain),
            (Some("64769:1234567"), None, StderrStyle::Plain),
            (Some(""), stderr, StderrStyle::Plain),
            (Some("64769:1234567:0"), stderr, StderrStyle::Plain),
            (Some("0x fd01:1234567"), stderr, StderrStyle::Plain),
        ];
        for (journal_stream, stderr, expected) in cases {
            assert_eq!(
                stderr_style(journal_stream, stderr),
                expected,
                "JOURNAL_STREAM={journal_stream:?}, stderr={stderr:?}"
            );
        }
    }

    #[test]
    fn journal_lines_carry_a_priority_and_no_timestamp_while_the_file_keeps_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let console = Capture::default();
        let (subscriber, handle) = build(
            &LogSettings {
                level: LogLevel::Trace,
                ..settings(Some(dir.path().to_owned()), LogFormat::Text)
            },
            Box::new(console.clone()),
            StderrStyle::Journal,
            fixed_now,
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(unit = "a.service", "gave up");
            tracing::warn!(unit = "a.service", "unit is down");
            tracing::info!("started");
            tracing::debug!("polling");
            tracing::trace!("signal");
        });
        assert_eq!(
            console.text(),
            "<3>ERROR unit=a.service gave up\n\
             <4>WARN unit=a.service unit is down\n\
             <6>INFO started\n\
             <7>DEBUG polling\n\
             <7>TRACE signal\n"
        );
        let path = handle.file_path().expect("file open");
        drop(handle);
        let file = fs::read_to_string(path).expect("read log");
        assert_eq!(
            file.lines().next(),
            Some("2026-11-23T14:05:01.123+03:00 ERROR unit=a.service gave up")
        );
        assert_eq!(file.lines().count(), 5);
        assert!(file.lines().all(|l| l.starts_with("2026-11-23T14:05:01")));
    }

    #[test]
    fn journal_json_lines_have_a_priority_and_no_time_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let console = Capture::default();
        let (subscriber, handle) = build(
            &settings(Some(dir.path().to_owned()), LogFormat::Json),
            Box::new(console.clone()),
            StderrStyle::Journal,
            fixed_now,
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(unit = "a.service", time = "08:00", "unit is down");
        });
        let text = console.text();
        let object = text.strip_prefix("<4>").expect("priority prefix");
        let value: serde_json::Value = serde_json::from_str(object).expect("valid JSON");
        assert_eq!(
            value,
            serde_json::json!({
                "level": "WARN",
                "message": "unit is down",
                "unit": "a.service",
                "field.time": "08:00",
            })
        );
        let path = handle.file_path().expect("file open");
        drop(handle);
        let file: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(path).expect("read log")).expect("JSON");
        assert_eq!(file["time"], "2026-11-23T14:05:01.123+03:00");
        assert_eq!(file["field.time"], "08:00");
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
    fn set_level_takes_effect() {
        let console = Capture::default();
        let (subscriber, handle) = build(
            &settings(None, LogFormat::Text),
            Box::new(console.clone()),
            StderrStyle::Plain,
            fixed_now,
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("hidden");
            handle.set_level(LogLevel::Debug);
            tracing::debug!("shown");
            handle.set_level(LogLevel::Error);
            tracing::warn!("hidden too");
        });
        assert_eq!(
            console.text(),
            "2026-11-23T14:05:01.123+03:00 DEBUG shown\n"
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

    #[test]
    fn unusable_dir_falls_back_to_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file.txt");
        fs::write(&blocker, "not a directory").expect("write");
        let bad = LogSettings {
            dir: Some(blocker.join("sub")),
            ..settings(None, LogFormat::Text)
        };
        // The only test that installs the global subscriber.
        let handle = init(&bad).expect("init succeeds without a usable log_dir");
        assert_eq!(handle.file_path(), None);
        tracing::info!("still logging");
        assert!(init(&bad).is_err(), "a second global subscriber is refused");
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_micros(1_500_700)), "1.501s");
        assert_eq!(format_duration(Duration::from_millis(250)), "0.25s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_millis(3_779_722)), "1h3m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
