//! Log output (SPEC §4): one line per event on stderr and in rotating files under `log_dir`, as text or JSON.
//!
//! The file writer is our own rather than tracing-appender's: that one rotates on UTC boundaries and
//! cannot maintain the `unitwarden.log` symlink that `tail -F` relies on. tracing-appender's
//! non-blocking writer sits in front of it, so a slow or hung log disk stalls a thread of its own
//! rather than the watch loop and its watchdog pings.

mod file;
mod line;

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry, reload};

use file::{ClockedFile, FileKeeper, RotatingFile, SharedPath};
use line::{Fields, StderrStyle, priority, process_stderr_style, render};

/// Lines queued for the file writer. A burst of this many never waits on the disk; past it the
/// logging thread waits for room, because a dropped line could be the one explaining an outage.
const QUEUE_LINES: usize = 1024;
/// Set in `ps -T` and `/proc/PID/task/*/comm` (at most 15 bytes).
const WRITER_THREAD: &str = "unitwarden-log";

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
    _writer: Option<Arc<FileWriter>>,
}

/// What keeps the file written: dropped with the last [`LogHandle`].
struct FileWriter {
    /// Declared first, so dropped first: the writer thread writes what is still queued...
    _guard: WorkerGuard,
    /// ...before the keeper gives the lines a failing file still holds one last try.
    _keeper: FileKeeper,
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
/// (retried every few seconds, the lines kept for the file meanwhile), so a bad `log_dir` never
/// keeps the watchdog from running.
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
    // Beyond a minute, milliseconds are noise ("1h2m59s", not "1h2m59s722ms"). Saturating: an
    // interval of `Duration::MAX` is accepted config and must not overflow here.
    let secs = Duration::from_secs(
        ms.as_secs()
            .saturating_add(u64::from(ms.subsec_millis() >= 500)),
    );
    humantime::format_duration(secs)
        .to_string()
        .replace(' ', "")
}

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
            let mut file = RotatingFile::new(
                dir.clone(),
                settings.rotation,
                settings.keep,
                settings.format,
            );
            // Open now so a bad log_dir is reported at startup, not at the first event.
            file.roll(&clock());
            let path = file.shared_path();
            let file = Arc::new(Mutex::new(file));
            let keeper = FileKeeper::start(Arc::clone(&file), clock);
            let (writer, guard) = NonBlockingBuilder::default()
                .buffered_lines_limit(QUEUE_LINES)
                .lossy(false)
                .thread_name(WRITER_THREAD)
                .finish(ClockedFile { file, clock });
            let writer_side = FileWriter {
                _guard: guard,
                _keeper: keeper,
            };
            (Some(writer), Some(path), Some(Arc::new(writer_side)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use jiff::tz::offset;
    use std::fs;

    fn tz() -> TimeZone {
        TimeZone::fixed(offset(3))
    }

    pub(super) fn at(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> ZonedDateTime {
        date(y, mo, d)
            .at(h, mi, 1, 123_456_789)
            .to_zoned_datetime(tz())
            .expect("valid test time")
    }

    pub(super) fn fixed_now() -> ZonedDateTime {
        at(2026, 11, 23, 14, 5)
    }

    /// A console sink the test can read back.
    #[derive(Clone, Default)]
    pub(super) struct Capture(Arc<Mutex<Vec<u8>>>);

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
        pub(super) fn text(&self) -> String {
            String::from_utf8(lock(&self.0).clone()).expect("utf-8 log output")
        }
    }

    pub(super) fn settings(dir: Option<PathBuf>, format: LogFormat) -> LogSettings {
        LogSettings {
            dir,
            rotation: Rotation::Daily,
            keep: 3,
            level: LogLevel::Info,
            format,
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
    fn lines_kept_for_a_failing_file_get_a_last_try_when_logging_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        fs::write(&logs, "in the way").expect("write");
        let (subscriber, handle) = build(
            &settings(Some(logs.clone()), LogFormat::Json),
            Box::new(Capture::default()),
            StderrStyle::Plain,
            fixed_now,
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(unit = "a.service", "unit is down");
        });
        assert_eq!(handle.file_path(), None);
        fs::remove_file(&logs).expect("unblock");
        // Well before the next retry is due: only the last try at exit writes them.
        drop(handle);
        let text = fs::read_to_string(logs.join("unitwarden.log")).expect("read log");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "WARN");
        let note = lines[0]["message"].as_str().expect("message");
        assert!(
            note.starts_with("1 line(s) could not be written to the log file between ")
                && note.ends_with("; they follow"),
            "{note}"
        );
        assert_eq!(lines[1]["message"], "unit is down");
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
        // Found by the fuzzer: `interval = "18446744073709551615s 999999999ns"` overflowed.
        assert!(format_duration(Duration::MAX).starts_with("584542046090y"));
    }
}
