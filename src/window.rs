//! Critical windows: a weekly calendar of wall-clock periods, each in its own time zone, during which the watchdog tightens its polling, failure and alert thresholds.
//!
//! Everything here is pure: the current instant is always an argument and
//! nothing reads the clock or the file system, so the daemon, the
//! `windows` command and the tests all see the same answers.
//!
//! # Semantics
//!
//! * An occurrence belongs to the day it starts on, in the window's own zone.
//!   `days = ["fri"]` with 22:00–02:00 runs Friday 22:00 → Saturday 02:00;
//!   there is no occurrence starting on Thursday, so Friday 01:00 is outside.
//! * `end <= start` (in wall-clock terms) means the occurrence ends on the
//!   following day.
//! * Each occurrence is active on the half-open interval `[start, end)`.
//! * DST gap: a wall time that is skipped takes effect at the transition
//!   itself, i.e. the first instant after the gap (America/New_York
//!   2026-03-08 02:30 → 03:00 EDT = 07:00 UTC). This applies to starts and
//!   ends alike.
//! * DST overlap: a wall time that happens twice starts at its first
//!   occurrence and ends at its second, so a window is never shorter than
//!   its wall-clock length.
//! * An occurrence whose resolved end is not after its resolved start is
//!   empty and skipped. Occurrences of one window that overlap after DST
//!   resolution are merged, so [`Window::occurrences`] is always sorted and
//!   non-overlapping; occurrences that merely touch stay separate.
//! * [`Calendar::effective_interval`] and friends take the smallest value
//!   among the *active windows that set one*, and fall back to the base only
//!   when none does.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};

/// How many days before the day of `from` occurrences are generated, so that
/// one that started earlier (crossing midnight, or stretched by a fold) and
/// is still running is not missed.
const LOOKBACK_DAYS: usize = 3;

/// A set of weekdays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DaySet(u8);

const ALL_DAYS: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

impl DaySet {
    pub fn all() -> DaySet {
        DaySet(0x7f)
    }

    fn bit(day: Weekday) -> u8 {
        1 << day.to_monday_zero_offset()
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & Self::bit(day) != 0
    }

    pub fn insert(&mut self, day: Weekday) {
        self.0 |= Self::bit(day);
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The days in the set, Monday first.
    pub fn iter(self) -> impl Iterator<Item = Weekday> {
        ALL_DAYS.into_iter().filter(move |d| self.contains(*d))
    }
}

impl FromIterator<Weekday> for DaySet {
    fn from_iter<I: IntoIterator<Item = Weekday>>(iter: I) -> DaySet {
        let mut set = DaySet::default();
        for day in iter {
            set.insert(day);
        }
        set
    }
}

/// Comma-separated three-letter names (`mon,wed,fri`), or `none`.
impl fmt::Display for DaySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, day) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(short_name(day))?;
        }
        Ok(())
    }
}

fn short_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

/// One configured `[[window]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub name: String,
    /// Weekdays on which an occurrence *starts*.
    pub days: DaySet,
    pub start: Time,
    /// `end <= start` means the occurrence ends on the next day.
    pub end: Time,
    pub tz: TimeZone,
    /// The IANA name as configured; `None` means host local time.
    pub tz_name: Option<String>,
    pub interval: Option<Duration>,
    pub failures: Option<u32>,
    pub min_interval: Option<Duration>,
    /// This long before each start, every unit, probe and resource is checked once.
    pub preflight: Option<Duration>,
}

#[derive(Clone, Copy)]
enum Edge {
    Start,
    End,
}

/// Maps a wall-clock time in `tz` to an instant following the module's DST
/// rules; `None` only at the edges of jiff's representable range.
fn resolve(tz: &TimeZone, dt: DateTime, edge: Edge) -> Option<Timestamp> {
    let ambiguous = tz.to_ambiguous_timestamp(dt);
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
        AmbiguousOffset::Gap { .. } => {
            // Read with the post-gap offset, `dt` lands strictly before the
            // transition, so the next transition from there is the one that
            // skipped `dt`.
            let before_gap = ambiguous.earlier().ok()?;
            match tz.following(before_gap).next() {
                Some(transition) => Some(transition.timestamp()),
                None => ambiguous.later().ok(),
            }
        }
        AmbiguousOffset::Fold { before, after } => match edge {
            Edge::Start => before.to_timestamp(dt).ok(),
            Edge::End => after.to_timestamp(dt).ok(),
        },
    }
}

impl Window {
    /// The occurrence starting on `date`, unless the window does not run
    /// that day or DST resolution leaves it empty.
    fn occurrence_on(&self, date: Date) -> Option<(Timestamp, Timestamp)> {
        if !self.days.contains(date.weekday()) {
            return None;
        }
        let start = resolve(&self.tz, date.to_datetime(self.start), Edge::Start)?;
        let end_date = if self.end <= self.start {
            date.tomorrow().ok()?
        } else {
            date
        };
        let end = resolve(&self.tz, end_date.to_datetime(self.end), Edge::End)?;
        (end > start).then_some((start, end))
    }

    pub fn is_active(&self, now: Timestamp) -> bool {
        self.occurrences(now, 1)
            .first()
            .is_some_and(|&(start, _)| start <= now)
    }

    /// The first instant strictly after `now` at which this window starts or
    /// ends; `None` when it has no days.
    pub fn next_transition(&self, now: Timestamp) -> Option<Timestamp> {
        let &(start, end) = self.occurrences(now, 1).first()?;
        Some(if start > now { start } else { end })
    }

    /// The next `n` occurrences `(start, end)` whose end is after `from`,
    /// sorted and non-overlapping. The first one may have started already.
    pub fn occurrences(&self, from: Timestamp, n: usize) -> Vec<(Timestamp, Timestamp)> {
        let mut out = Vec::new();
        if n == 0 || self.days.is_empty() {
            return out;
        }
        let mut date = self.tz.to_datetime(from).date();
        for _ in 0..LOOKBACK_DAYS {
            date = date.yesterday().unwrap_or(date);
        }
        // A single weekday gives one occurrence a week; the slack covers the
        // lookback and the odd occurrence that DST leaves empty, while
        // bounding the walk for windows that never produce anything.
        let mut days_left = n.saturating_mul(8).saturating_add(LOOKBACK_DAYS + 21);
        let mut pending: Option<(Timestamp, Timestamp)> = None;
        loop {
            if let Some(next) = self.occurrence_on(date) {
                pending = match pending {
                    Some((start, end)) if next.0 < end => Some((start, end.max(next.1))),
                    Some(done) => {
                        if done.1 > from {
                            out.push(done);
                            if out.len() == n {
                                return out;
                            }
                        }
                        Some(next)
                    }
                    None => Some(next),
                };
            }
            days_left -= 1;
            if days_left == 0 {
                break;
            }
            match date.tomorrow() {
                Ok(d) => date = d,
                Err(_) => break,
            }
        }
        out.extend(pending.filter(|last| last.1 > from));
        out
    }
}

/// A pre-flight check: at `at`, before `window` opens at `opens`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preflight {
    pub at: Timestamp,
    pub window: String,
    pub opens: Timestamp,
}

/// All configured windows, in config order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calendar {
    pub windows: Vec<Window>,
}

impl Calendar {
    /// The windows active at `now`, in config order.
    pub fn active(&self, now: Timestamp) -> Vec<&Window> {
        self.windows.iter().filter(|w| w.is_active(now)).collect()
    }

    /// The first instant strictly after `now` at which any window starts or
    /// ends.
    pub fn next_transition(&self, now: Timestamp) -> Option<Timestamp> {
        self.windows
            .iter()
            .filter_map(|w| w.next_transition(now))
            .min()
    }

    /// The smallest `interval` among active windows that set one, else `base`.
    pub fn effective_interval(&self, now: Timestamp, base: Duration) -> Duration {
        self.active(now)
            .iter()
            .filter_map(|w| w.interval)
            .min()
            .unwrap_or(base)
    }

    /// The smallest `failures` among active windows that set one, else `base`.
    pub fn effective_failures(&self, now: Timestamp, base: u32) -> u32 {
        self.active(now)
            .iter()
            .filter_map(|w| w.failures)
            .min()
            .unwrap_or(base)
    }

    /// The smallest `min_interval` among active windows that set one, else
    /// `base`.
    pub fn effective_min_interval(&self, now: Timestamp, base: Duration) -> Duration {
        self.active(now)
            .iter()
            .filter_map(|w| w.min_interval)
            .min()
            .unwrap_or(base)
    }

    /// The next pre-flight check: of the windows that set `preflight`, the occurrence not yet
    /// started (and not in `done`, as `(window, start)`) whose check time, its start minus
    /// `preflight`, comes first. The time may be past already: a check is due until its window
    /// opens.
    pub fn next_preflight(
        &self,
        now: Timestamp,
        done: &[(String, Timestamp)],
    ) -> Option<Preflight> {
        self.windows
            .iter()
            .filter_map(|w| {
                let lead = w.preflight?;
                let (opens, _) = w
                    .occurrences(now, 3)
                    .into_iter()
                    .find(|(start, _)| *start > now && !done.contains(&(w.name.clone(), *start)))?;
                let lead = jiff::SignedDuration::try_from(lead).ok()?;
                Some(Preflight {
                    at: opens.checked_sub(lead).unwrap_or(Timestamp::MIN),
                    window: w.name.clone(),
                    opens,
                })
            })
            .min_by_key(|p| p.at)
    }

    /// The names of the active windows joined with `+`, or `None` when none
    /// is active.
    pub fn mode(&self, now: Timestamp) -> Option<String> {
        let names: Vec<&str> = self.active(now).iter().map(|w| w.name.as_str()).collect();
        (!names.is_empty()).then(|| names.join("+"))
    }
}

/// Parses `HH:MM` (00:00 to 23:59, exactly two digits each).
pub fn parse_hhmm(s: &str) -> Result<Time, String> {
    let err = || format!("invalid time {s:?}: expected HH:MM between 00:00 and 23:59");
    let b = s.as_bytes();
    let two_digits = |i: usize| -> Option<i8> {
        let (hi, lo) = (*b.get(i)?, *b.get(i + 1)?);
        (hi.is_ascii_digit() && lo.is_ascii_digit()).then(|| ((hi - b'0') * 10 + (lo - b'0')) as i8)
    };
    if b.len() != 5 || b[2] != b':' {
        return Err(err());
    }
    let (Some(hour), Some(minute)) = (two_digits(0), two_digits(3)) else {
        return Err(err());
    };
    if hour > 23 || minute > 59 {
        return Err(err());
    }
    Time::new(hour, minute, 0, 0).map_err(|_| err())
}

/// Parses a weekday: `mon`..`sun` or the full English name, any case.
pub fn parse_day(s: &str) -> Result<Weekday, String> {
    let lower = s.to_ascii_lowercase();
    ALL_DAYS
        .into_iter()
        .find(|&day| lower == short_name(day) || lower == full_name(day))
        .ok_or_else(|| {
            format!("invalid day {s:?}: expected one of mon, tue, wed, thu, fri, sat, sun")
        })
}

fn full_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Monday => "monday",
        Weekday::Tuesday => "tuesday",
        Weekday::Wednesday => "wednesday",
        Weekday::Thursday => "thursday",
        Weekday::Friday => "friday",
        Weekday::Saturday => "saturday",
        Weekday::Sunday => "sunday",
    }
}

/// `YYYY-MM-DD HH:MM±HH:MM` in `tz`. Sub-minute parts of the offset (only
/// seen in historical local mean time) are dropped rather than rendered in a
/// format nobody parses.
fn render(at: Timestamp, tz: &TimeZone) -> String {
    let dt = tz.to_datetime(at);
    let offset = tz.to_offset(at).seconds();
    let sign = if offset < 0 { '-' } else { '+' };
    let abs = offset.unsigned_abs();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}{sign}{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        abs / 3600,
        abs % 3600 / 60,
    )
}

/// Text for `unitwarden windows --next N`: the next `n` transitions after
/// `now` across all windows, in time order, one `\n`-terminated line each:
///
/// ```text
/// 2026-11-30 07:30+03:00  start  monday-morning  (2026-11-30 04:30+00:00 host)
/// 2026-11-30 08:30+03:00  end    monday-morning  (2026-11-30 05:30+00:00 host)
/// ```
///
/// The host rendering is appended only when the host's offset differs from
/// the window's at that instant. At equal instants ends come before starts,
/// then config order.
pub fn format_upcoming(cal: &Calendar, now: Timestamp, n: usize, host: &TimeZone) -> String {
    if cal.windows.is_empty() {
        return "no critical windows configured\n".to_string();
    }
    // (instant, config index, 0 = end / 1 = start) sorts into display order.
    let mut events: Vec<(Timestamp, usize, u8)> = Vec::new();
    for (idx, w) in cal.windows.iter().enumerate() {
        // n occurrences hold at least n transitions after `now`, since only
        // the first can have started already.
        for (start, end) in w.occurrences(now, n) {
            if start > now {
                events.push((start, idx, 1));
            }
            events.push((end, idx, 0));
        }
    }
    events.sort_unstable();
    events.truncate(n);
    if events.is_empty() && n > 0 {
        return "no upcoming window transitions\n".to_string();
    }
    let mut out = String::new();
    for (at, idx, kind) in events {
        let w = &cal.windows[idx];
        let kind = if kind == 1 { "start" } else { "end" };
        out.push_str(&format!("{}  {kind:<5}  {}", render(at, &w.tz), w.name));
        if host.to_offset(at) != w.tz.to_offset(at) {
            out.push_str(&format!("  ({} host)", render(at, host)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn win(name: &str, days: &[&str], start: &str, end: &str, tz: &str) -> Window {
        Window {
            name: name.to_string(),
            days: if days.is_empty() {
                DaySet::all()
            } else {
                days.iter().map(|d| parse_day(d).unwrap()).collect()
            },
            start: parse_hhmm(start).unwrap(),
            end: parse_hhmm(end).unwrap(),
            tz: zone(tz),
            tz_name: Some(tz.to_string()),
            interval: None,
            failures: None,
            min_interval: None,
            preflight: None,
        }
    }

    #[test]
    fn is_active_table() {
        let ist = win("m", &["mon"], "07:30", "08:30", "Europe/Istanbul");
        let utc = win("m", &["mon"], "07:30", "08:30", "UTC");
        let fri_night = win("n", &["fri"], "22:00", "02:00", "UTC");
        let daily = win("d", &[], "12:00", "13:00", "UTC");
        let ny_gap = win("g", &["sun"], "02:30", "04:00", "America/New_York");
        let ny_fold_start = win("f", &["sun"], "01:30", "03:00", "America/New_York");
        let ny_fold_end = win("e", &["sun"], "00:00", "01:30", "America/New_York");
        let cases: &[(&Window, &str, bool)] = &[
            // Monday 2026-11-30, Istanbul is +03:00.
            (&ist, "2026-11-30T04:29:59Z", false),
            (&ist, "2026-11-30T04:30:00Z", true),
            (&ist, "2026-11-30T05:29:59Z", true),
            (&ist, "2026-11-30T05:30:00Z", false),
            (&ist, "2026-12-01T04:45:00Z", false),
            (&ist, "2026-12-07T05:00:00Z", true),
            (&utc, "2026-11-30T07:29:59Z", false),
            (&utc, "2026-11-30T07:30:00Z", true),
            (&utc, "2026-11-30T08:29:59Z", true),
            (&utc, "2026-11-30T08:30:00Z", false),
            (&utc, "2026-11-30T04:45:00Z", false),
            // Friday 2026-12-04 22:00 → Saturday 02:00.
            (&fri_night, "2026-12-04T21:59:59Z", false),
            (&fri_night, "2026-12-04T22:00:00Z", true),
            (&fri_night, "2026-12-05T01:59:59Z", true),
            (&fri_night, "2026-12-05T02:00:00Z", false),
            (&fri_night, "2026-12-04T01:00:00Z", false),
            (&fri_night, "2026-12-05T22:30:00Z", false),
            (&fri_night, "2026-12-03T23:00:00Z", false),
            (&daily, "2026-12-01T12:30:00Z", true),
            (&daily, "2026-12-05T12:00:00Z", true),
            (&daily, "2026-12-06T13:00:00Z", false),
            (&daily, "2026-12-06T11:59:59Z", false),
            // Spring forward 2026-03-08: 02:30 does not exist, start is 03:00 EDT.
            (&ny_gap, "2026-03-08T06:59:59Z", false),
            (&ny_gap, "2026-03-08T07:00:00Z", true),
            (&ny_gap, "2026-03-08T07:59:59Z", true),
            (&ny_gap, "2026-03-08T08:00:00Z", false),
            // Fall back 2026-11-01: 01:30 happens at 05:30Z (EDT) and 06:30Z (EST).
            (&ny_fold_start, "2026-11-01T05:29:59Z", false),
            (&ny_fold_start, "2026-11-01T05:30:00Z", true),
            (&ny_fold_start, "2026-11-01T07:59:59Z", true),
            (&ny_fold_start, "2026-11-01T08:00:00Z", false),
            (&ny_fold_end, "2026-11-01T04:00:00Z", true),
            (&ny_fold_end, "2026-11-01T06:29:59Z", true),
            (&ny_fold_end, "2026-11-01T06:30:00Z", false),
        ];
        for &(w, at, want) in cases {
            assert_eq!(w.is_active(ts(at)), want, "{} at {at}", w.name);
        }
    }

    #[test]
    fn dst_occurrences() {
        let gap = win("g", &["sun"], "02:30", "04:00", "America/New_York");
        assert_eq!(
            gap.occurrences(ts("2026-03-07T00:00:00Z"), 2),
            vec![
                (ts("2026-03-08T07:00:00Z"), ts("2026-03-08T08:00:00Z")),
                (ts("2026-03-15T06:30:00Z"), ts("2026-03-15T08:00:00Z")),
            ]
        );
        let fold = win("f", &["sun"], "01:30", "01:30", "America/New_York");
        assert_eq!(
            fold.occurrences(ts("2026-10-31T00:00:00Z"), 1),
            vec![(ts("2026-11-01T05:30:00Z"), ts("2026-11-02T06:30:00Z"))]
        );
        // The fold makes Saturday's occurrence end (01:10 EST) after Sunday's
        // starts (01:20 EDT), so the two are reported as one.
        let merged = win("m", &[], "01:20", "01:10", "America/New_York");
        assert_eq!(
            merged.occurrences(ts("2026-10-31T06:00:00Z"), 2),
            vec![
                (ts("2026-10-31T05:20:00Z"), ts("2026-11-02T06:10:00Z")),
                (ts("2026-11-02T06:20:00Z"), ts("2026-11-03T06:10:00Z")),
            ]
        );
        assert!(merged.is_active(ts("2026-11-01T05:30:00Z")));
        assert!(merged.is_active(ts("2026-11-01T06:15:00Z")));
        assert_eq!(
            merged.next_transition(ts("2026-11-01T05:00:00Z")),
            Some(ts("2026-11-02T06:10:00Z"))
        );
        // Both ends inside the skipped hour: nothing left that Sunday.
        let swallowed = win("s", &["sun"], "02:10", "02:40", "America/New_York");
        assert_eq!(
            swallowed.occurrences(ts("2026-03-07T00:00:00Z"), 1),
            vec![(ts("2026-03-15T06:10:00Z"), ts("2026-03-15T06:40:00Z"))]
        );
    }

    #[test]
    fn next_transition_table() {
        let fri_night = win("n", &["fri"], "22:00", "02:00", "UTC");
        let cases = [
            ("2026-12-04T21:00:00Z", "2026-12-04T22:00:00Z"),
            ("2026-12-04T22:00:00Z", "2026-12-05T02:00:00Z"),
            ("2026-12-05T01:00:00Z", "2026-12-05T02:00:00Z"),
            ("2026-12-05T02:00:00Z", "2026-12-11T22:00:00Z"),
        ];
        for (now, want) in cases {
            assert_eq!(fri_night.next_transition(ts(now)), Some(ts(want)), "{now}");
        }
        let never = Window {
            days: DaySet::default(),
            ..fri_night
        };
        assert_eq!(never.next_transition(ts("2026-12-04T21:00:00Z")), None);
        assert!(!never.is_active(ts("2026-12-04T23:00:00Z")));
    }

    #[test]
    fn effective_values_and_mode() {
        let mut wide = win("wide", &["mon"], "07:00", "09:00", "UTC");
        wide.interval = Some(Duration::from_secs(30));
        wide.failures = Some(2);
        let mut narrow = win("narrow", &["mon"], "07:30", "08:00", "UTC");
        narrow.interval = Some(Duration::from_secs(10));
        narrow.min_interval = Some(Duration::from_secs(120));
        let cal = Calendar {
            windows: vec![wide, narrow],
        };
        let base = Duration::from_secs(60);
        let base_min = Duration::from_secs(900);
        let cases = [
            ("2026-11-30T07:45:00Z", 10, 2, 120, Some("wide+narrow")),
            ("2026-11-30T07:15:00Z", 30, 2, 900, Some("wide")),
            ("2026-11-30T08:00:00Z", 30, 2, 900, Some("wide")),
            ("2026-11-30T10:00:00Z", 60, 5, 900, None),
        ];
        for (at, interval, failures, min_interval, mode) in cases {
            let now = ts(at);
            assert_eq!(
                cal.effective_interval(now, base),
                Duration::from_secs(interval),
                "{at}"
            );
            assert_eq!(cal.effective_failures(now, 5), failures, "{at}");
            assert_eq!(
                cal.effective_min_interval(now, base_min),
                Duration::from_secs(min_interval),
                "{at}"
            );
            assert_eq!(cal.mode(now).as_deref(), mode, "{at}");
        }
        assert_eq!(
            cal.next_transition(ts("2026-11-30T07:15:00Z")),
            Some(ts("2026-11-30T07:30:00Z"))
        );
        assert_eq!(
            cal.next_transition(ts("2026-11-30T07:30:00Z")),
            Some(ts("2026-11-30T08:00:00Z"))
        );
    }

    #[test]
    fn parse_hhmm_cases() {
        for (s, h, m) in [("00:00", 0, 0), ("07:30", 7, 30), ("23:59", 23, 59)] {
            assert_eq!(parse_hhmm(s), Ok(Time::new(h, m, 0, 0).unwrap()), "{s}");
        }
        for s in [
            "",
            "7:30",
            "07:3",
            "24:00",
            "23:60",
            "07-30",
            "07:30:00",
            " 07:30",
            "0a:30",
            "+7:30",
            "٠٧:٣٠",
        ] {
            let err = parse_hhmm(s).unwrap_err();
            assert!(err.contains("HH:MM") && !err.ends_with('.'), "{s}: {err}");
        }
    }

    #[test]
    fn parse_day_cases() {
        let cases = [
            ("mon", Weekday::Monday),
            ("TUE", Weekday::Tuesday),
            ("Wednesday", Weekday::Wednesday),
            ("thu", Weekday::Thursday),
            ("FRIDAY", Weekday::Friday),
            ("sat", Weekday::Saturday),
            ("sun", Weekday::Sunday),
        ];
        for (s, want) in cases {
            assert_eq!(parse_day(s), Ok(want), "{s}");
        }
        for s in ["", "mo", "tues", "mon ", "lundi", "7"] {
            let err = parse_day(s).unwrap_err();
            assert!(
                err.contains("mon, tue") && !err.ends_with('.'),
                "{s}: {err}"
            );
        }
    }

    #[test]
    fn dayset() {
        let set: DaySet = [Weekday::Friday, Weekday::Monday].into_iter().collect();
        assert!(set.contains(Weekday::Monday) && !set.contains(Weekday::Sunday));
        assert_eq!(set.to_string(), "mon,fri");
        assert_eq!(DaySet::all().iter().count(), 7);
        assert!(DaySet::default().is_empty());
        assert_eq!(DaySet::default().to_string(), "none");
    }

    #[test]
    fn format_upcoming_lines() {
        let cal = Calendar {
            windows: vec![
                win(
                    "monday-morning",
                    &["mon"],
                    "07:30",
                    "08:30",
                    "Europe/Istanbul",
                ),
                win("nightly", &["sun"], "23:00", "05:00", "UTC"),
            ],
        };
        let out = format_upcoming(&cal, ts("2026-11-29T00:00:00Z"), 5, &zone("UTC"));
        assert_eq!(
            out,
            "2026-11-29 23:00+00:00  start  nightly\n\
             2026-11-30 07:30+03:00  start  monday-morning  (2026-11-30 04:30+00:00 host)\n\
             2026-11-30 05:00+00:00  end    nightly\n\
             2026-11-30 08:30+03:00  end    monday-morning  (2026-11-30 05:30+00:00 host)\n\
             2026-12-06 23:00+00:00  start  nightly\n"
        );
        // Inside an occurrence only its end is upcoming.
        let out = format_upcoming(
            &cal,
            ts("2026-11-30T05:00:00Z"),
            2,
            &zone("Europe/Istanbul"),
        );
        assert_eq!(
            out,
            "2026-11-30 08:30+03:00  end    monday-morning\n\
             2026-12-06 23:00+00:00  start  nightly  (2026-12-07 02:00+03:00 host)\n"
        );
        assert_eq!(
            format_upcoming(
                &Calendar::default(),
                ts("2026-11-29T00:00:00Z"),
                5,
                &zone("UTC")
            ),
            "no critical windows configured\n"
        );
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let cal = Calendar {
            windows: vec![
                win("a", &[], "22:00", "02:00", "Australia/Lord_Howe"),
                win("b", &["sun"], "02:30", "02:30", "America/New_York"),
            ],
        };
        for now in [Timestamp::MIN, Timestamp::MAX] {
            let _ = cal.mode(now);
            let _ = cal.effective_interval(now, Duration::from_secs(1));
            if let Some(next) = cal.next_transition(now) {
                assert!(next > now);
            }
            let _ = format_upcoming(&cal, now, 3, &TimeZone::UTC);
        }
    }

    const ZONES: [&str; 4] = [
        "America/New_York",
        "Europe/Istanbul",
        "Australia/Lord_Howe",
        "UTC",
    ];

    /// Instants in 2025–2027, half of them pulled to within 36 hours of one
    /// of the zone's transitions so DST days are actually exercised.
    fn instant(tz: &TimeZone, secs: i64, near_transition: bool, shift: i64) -> Timestamp {
        let base = Timestamp::from_second(1_735_689_600 + secs).unwrap();
        if !near_transition {
            return base;
        }
        match tz.following(base).next() {
            Some(t) => Timestamp::from_second(t.timestamp().as_second() + shift).unwrap(),
            None => base,
        }
    }

    fn minute_of_day() -> impl Strategy<Value = i32> {
        prop_oneof![
            0..1440i32,
            prop::sample::select(vec![0, 60, 90, 120, 135, 150, 1410]),
        ]
    }

    fn arb_window() -> impl Strategy<Value = Window> {
        (
            0usize..ZONES.len(),
            0u8..128,
            minute_of_day(),
            minute_of_day(),
        )
            .prop_map(|(z, days, start, end)| Window {
                name: "w".to_string(),
                days: DaySet(days),
                start: Time::new((start / 60) as i8, (start % 60) as i8, 0, 0).unwrap(),
                end: Time::new((end / 60) as i8, (end % 60) as i8, 0, 0).unwrap(),
                tz: zone(ZONES[z]),
                tz_name: Some(ZONES[z].to_string()),
                interval: None,
                failures: None,
                preflight: None,
                min_interval: None,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn transitions_are_consistent(
            w in arb_window(),
            secs in 0i64..3 * 365 * 86_400,
            near in any::<bool>(),
            shift in -129_600i64..129_600,
        ) {
            let now = instant(&w.tz, secs, near, shift);
            let one = jiff::SignedDuration::from_secs(1);
            let Some(next) = w.next_transition(now) else {
                prop_assert!(w.days.is_empty());
                return Ok(());
            };
            prop_assert!(next > now);
            prop_assert!(next.as_second() - now.as_second() <= 9 * 86_400);
            let before = next.checked_sub(one).unwrap().max(now);
            prop_assert_eq!(w.is_active(now), w.is_active(before));
            let occs = w.occurrences(before, 2);
            let abuts = occs.windows(2).any(|p| p[0].1 == next && p[1].0 == next);
            prop_assert!(
                w.is_active(next) != w.is_active(before) || abuts,
                "no flip at {} for {:?}", next, w
            );
        }

        #[test]
        fn occurrences_sorted_and_disjoint(
            w in arb_window(),
            secs in 0i64..3 * 365 * 86_400,
            near in any::<bool>(),
            shift in -129_600i64..129_600,
        ) {
            let from = instant(&w.tz, secs, near, shift);
            let occs = w.occurrences(from, 10);
            if !w.days.is_empty() {
                prop_assert_eq!(occs.len(), 10);
            }
            for &(start, end) in &occs {
                prop_assert!(start < end);
            }
            prop_assert!(occs.first().is_none_or(|o| o.1 > from));
            for pair in occs.windows(2) {
                prop_assert!(pair[0].1 <= pair[1].0, "{:?}", pair);
            }
            let inside = occs.iter().any(|&(s, e)| s <= from && from < e);
            prop_assert_eq!(w.is_active(from), inside);
        }
    }
}
