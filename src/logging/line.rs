//! One event as one line: its fields, the text and JSON renderings, and the journal's style of stderr.

use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use jiff::ZonedDateTime;
use tracing::Level;
use tracing::field::{Field, Visit};

use super::LogFormat;

const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3f%:z";
/// JSON keys of the event itself, which a field of the same name must not replace.
const RESERVED_KEYS: [&str; 3] = ["time", "level", "message"];

/// How lines written to stderr look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StderrStyle {
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
pub(super) fn process_stderr_style() -> StderrStyle {
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

/// The sd-daemon(3) prefix journald strips, filing the line at that syslog priority.
pub(super) fn priority(level: Level) -> &'static str {
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
pub(super) struct Fields {
    message: Option<String>,
    fields: Vec<(&'static str, FieldValue)>,
}

impl Fields {
    /// An event that is only a message: the log file's own notes.
    pub(super) fn message(message: String) -> Fields {
        Fields {
            message: Some(message),
            fields: Vec::new(),
        }
    }

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
pub(super) fn render(
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

pub(super) fn timestamp_text(now: &ZonedDateTime) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::tests::{Capture, fixed_now, settings};
    use crate::logging::{build, format_duration};
    use std::fs;
    use std::time::Duration;

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
}
