//! Subject and plain-text body of an alert email, from a [`Draft`]. Pure: the time zone, host
//! and journal excerpts are arguments. Written for a phone screen: an email about several units
//! opens with a table of one row per unit, then short `Key: value` lines, one block per event,
//! for at most [`DETAILED_UNITS`] units, so a storm over hundreds of units still reads from the
//! top. ASCII where we choose the characters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::batch::{Draft, Item, Suppressed};
use super::{Event, EventKind};
use crate::unit::UnitName;

/// Subjects longer than this (after the prefix) list fewer units and say how many more.
const SUBJECT_MAX: usize = 100;
/// An email tells this many units in full (each event's block and the journal lines); the
/// rest of a larger batch get their row in the summary table only. Ten units of two or three
/// events and 20 journal lines each stay within a few hundred lines, while a hundred would be
/// thousands that nobody reads on call.
pub const DETAILED_UNITS: usize = 10;
/// Rows of the summary table, one per unit; a batch over more units ends it with a count.
pub const SUMMARY_ROWS: usize = 200;
/// Lines of the list of suppressed events; the rest is counted.
const SUPPRESSED_ROWS: usize = 20;
/// The summary's NEXT column keeps this many characters of the plan.
const NEXT_MAX: usize = 60;
/// Widest UNIT and RESULT cells that still pull the other rows' columns along.
const UNIT_WIDTH_MAX: usize = 32;
const RESULT_WIDTH_MAX: usize = 28;

/// What the journal said about one unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Excerpt {
    /// The command, as an operator would type it to see more.
    pub command: String,
    /// The lines, or why there are none.
    pub lines: Result<Vec<String>, String>,
}

pub struct Context<'a> {
    pub host: &'a str,
    pub prefix: &'a str,
    pub tz: &'a TimeZone,
    pub min_interval: Duration,
    pub remind_after: &'a [Duration],
    pub journal_lines: u32,
    pub journal: &'a BTreeMap<UnitName, Excerpt>,
}

/// The subject key of an item: its unit, or the kind for events about unitwarden itself.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Unit(UnitName),
    Own(EventKind),
}

fn key(item: &Item) -> Key {
    match item.unit() {
        Some(u) => Key::Unit(u.clone()),
        None => Key::Own(match item {
            Item::Event(e) => e.kind,
            Item::Reminder { gave_up, .. } => gave_up.kind,
        }),
    }
}

/// The short form of a unit in lists: `nginx` for `nginx.service`.
fn short(u: &UnitName) -> &str {
    u.as_str().strip_suffix(".service").unwrap_or(u.as_str())
}

fn attempt(e: &Event) -> String {
    e.attempt
        .map(|(k, n)| format!("{k}/{n}"))
        .unwrap_or_default()
}

/// The one-line headline of a single item.
pub fn headline(item: &Item) -> String {
    let e = match item {
        Item::Reminder { n, of, gave_up, .. } => {
            let unit = gave_up.unit.as_ref().map_or("unit", |u| u.as_str());
            return format!("{unit} still given up (reminder {n}/{of})");
        }
        Item::Event(e) => e,
    };
    let unit = e.unit.as_ref().map_or("unit", |u| u.as_str());
    match e.kind {
        EventKind::Down => format!("{unit} is down"),
        EventKind::Restarted if e.attempt.is_some() => {
            format!("{unit} restarted (attempt {})", attempt(e))
        }
        EventKind::Restarted => format!("{unit} restarted"),
        EventKind::RestartFailed if e.attempt.is_some() => {
            format!("{unit} restart failed (attempt {})", attempt(e))
        }
        EventKind::RestartFailed => format!("{unit} restart failed"),
        EventKind::GaveUp if e.attempt.is_some() => {
            format!("{unit} gave up after {} restarts", attempt(e))
        }
        EventKind::GaveUp => format!("{unit} gave up"),
        EventKind::Recovered if e.unit.is_none() => e.detail.clone(),
        EventKind::Recovered => format!("{unit} recovered"),
        EventKind::NotFound => format!("{unit} cannot be loaded"),
        EventKind::ProbeFailed => format!("{unit} health probe failed"),
        EventKind::Flapping => format!("{unit} is flapping"),
        EventKind::Crashed => format!("{unit} crashed; systemd restarted it"),
        EventKind::OperatorStop => format!("{unit} stopped by an operator"),
        EventKind::Operator => e.detail.clone(),
        EventKind::Recovery => format!("{unit}: recovery unit ran"),
        EventKind::Preflight => e.detail.clone(),
        EventKind::ConfigReloadFailed => "config reload failed".into(),
        EventKind::Resource if e.detail.is_empty() => "resource threshold crossed".into(),
        EventKind::Resource => e.detail.clone(),
        EventKind::Started => "unitwarden started".into(),
        EventKind::Stopping => "unitwarden stopping".into(),
    }
}

/// Words for several units in the same state, and the order groups are listed in (most
/// urgent first).
fn group(item: &Item) -> (u8, &'static str) {
    match item {
        Item::Reminder { .. } => (1, "still given up"),
        Item::Event(e) => match e.kind {
            EventKind::GaveUp => (0, "gave up"),
            EventKind::NotFound => (2, "cannot be loaded"),
            EventKind::RestartFailed => (3, "restart failed"),
            EventKind::Down => (4, "down"),
            EventKind::ProbeFailed => (5, "probe failed"),
            EventKind::Flapping => (6, "flapping"),
            EventKind::Crashed => (6, "crashed"),
            EventKind::OperatorStop => (8, "stopped by an operator"),
            EventKind::Operator => (8, "operator action"),
            EventKind::Resource => (7, "resource"),
            EventKind::Recovery => (7, "recovery unit ran"),
            EventKind::Preflight => (7, "pre-flight check"),
            EventKind::ConfigReloadFailed => (8, "config reload failed"),
            EventKind::Restarted => (9, "restarted"),
            EventKind::Recovered => (10, "recovered"),
            EventKind::Started => (11, "unitwarden started"),
            EventKind::Stopping => (12, "unitwarden stopping"),
        },
    }
}

/// Joins `names` as `a, b, c`, cut to fit `room` characters with `+N more`.
fn list(names: &[&str], room: usize) -> String {
    let mut out = String::new();
    for (i, n) in names.iter().enumerate() {
        let more = format!(" +{} more", names.len() - i);
        let sep = if i == 0 { "" } else { ", " };
        let last = i + 1 == names.len();
        let needed = out.len() + sep.len() + n.len() + if last { 0 } else { more.len() };
        if i > 0 && needed > room {
            out.push_str(&more);
            return out;
        }
        out.push_str(sep);
        out.push_str(n);
    }
    out
}

/// What the email is about, without the prefix and host.
pub fn summary(d: &Draft) -> String {
    // The latest item per subject is the current news about it.
    let mut latest: Vec<(Key, &Item)> = Vec::new();
    for item in &d.items {
        let k = key(item);
        match latest.iter_mut().find(|(x, _)| *x == k) {
            Some(slot) => slot.1 = item,
            None => latest.push((k, item)),
        }
    }
    if let [(_, item)] = &latest[..] {
        return headline(item);
    }
    let all_units = latest.iter().all(|(k, _)| matches!(k, Key::Unit(_)));
    let first = group(latest[0].1);
    if all_units && latest.iter().all(|(_, i)| group(i) == first) {
        let names: Vec<&str> = latest
            .iter()
            .filter_map(|(_, i)| i.unit().map(short))
            .collect();
        let head = format!("{} units {}: ", names.len(), first.1);
        return head.clone() + &list(&names, SUBJECT_MAX.saturating_sub(head.len()));
    }
    let mut groups: BTreeMap<(u8, &str), Vec<&str>> = BTreeMap::new();
    for (k, item) in &latest {
        let names = groups.entry(group(item)).or_default();
        if let Key::Unit(u) = k {
            names.push(short(u));
        }
    }
    let mut out = String::new();
    for ((_, label), names) in groups {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(label);
        if !names.is_empty() {
            out.push_str(": ");
            let room = SUBJECT_MAX.saturating_sub(out.len()).max(20);
            out.push_str(&list(&names, room));
        }
        if out.len() > SUBJECT_MAX {
            break;
        }
    }
    out
}

pub fn subject(d: &Draft, ctx: &Context<'_>) -> String {
    format!("{} {}: {}", ctx.prefix, ctx.host, summary(d))
}

/// `2026-11-23 08:02:11 +03:00 (Europe/Istanbul)`
pub fn local_time(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned_datetime(tz.clone());
    let zone = match tz.iana_name() {
        Some(name) => name.to_string(),
        None => z.strftime("%Z").to_string(),
    };
    format!("{} ({zone})", z.strftime("%Y-%m-%d %H:%M:%S %:z"))
}

fn since(from: Timestamp, to: Timestamp) -> String {
    let secs = to.duration_since(from).as_secs().max(0) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn field(out: &mut String, name: &str, value: &str) {
    let value = if value.is_empty() { "-" } else { value };
    let _ = writeln!(out, "{:<10} {value}", format!("{name}:"));
}

fn event_fields(out: &mut String, e: &Event) {
    field(out, "What", &e.detail);
    if e.unit.is_some() {
        if e.attempt.is_some() {
            field(out, "Attempt", &attempt(e));
        }
        field(out, "Result", e.result.as_deref().unwrap_or(""));
        field(out, "Exit", e.exec_status.as_deref().unwrap_or(""));
        if let Some(d) = &e.diagnosis {
            field(out, "Meaning", &d.meaning);
            field(out, "Check", &d.check);
        }
        field(
            out,
            "NRestarts",
            &e.n_restarts.map(|n| n.to_string()).unwrap_or_default(),
        );
    }
    field(out, "Window", e.window.as_deref().unwrap_or("none"));
}

fn block(out: &mut String, item: &Item, ctx: &Context<'_>) {
    let unit = item.unit().map_or("unitwarden", |u| u.as_str());
    match item {
        Item::Event(e) => {
            let _ = writeln!(out, "## {unit}: {}", e.kind.as_str().replace('_', " "));
            field(out, "Time", &local_time(e.at, ctx.tz));
            event_fields(out, e);
            field(out, "Next", &e.next);
        }
        Item::Reminder { at, n, of, gave_up } => {
            let _ = writeln!(out, "## {unit}: still given up (reminder {n}/{of})");
            field(out, "Time", &local_time(*at, ctx.tz));
            field(
                out,
                "Since",
                &format!(
                    "{}, {} ago",
                    local_time(gave_up.at, ctx.tz),
                    since(gave_up.at, *at)
                ),
            );
            event_fields(out, gave_up);
            let next_reminder = match ctx.remind_after.get(*n) {
                Some(d) => {
                    let due = d.saturating_sub(Duration::from_secs(
                        at.duration_since(gave_up.at).as_secs().max(0) as u64,
                    ));
                    format!(
                        "next reminder in {} if it stays given up",
                        humantime::format_duration(due)
                    )
                }
                None => "this is the last reminder".into(),
            };
            let next = if gave_up.next.is_empty() {
                next_reminder
            } else {
                format!("{}; {next_reminder}", gave_up.next)
            };
            field(out, "Next", &next);
        }
    }
}

fn journal(out: &mut String, unit: &UnitName, ctx: &Context<'_>) {
    if ctx.journal_lines == 0 {
        return;
    }
    let Some(x) = ctx.journal.get(unit) else {
        return;
    };
    let _ = writeln!(out, "\nJournal ({}):", x.command);
    match &x.lines {
        Ok(lines) if lines.is_empty() => {
            let _ = writeln!(out, "  no journal entries for {unit}");
        }
        Ok(lines) => {
            for l in lines {
                let _ = writeln!(out, "  {l}");
            }
        }
        Err(why) => {
            let _ = writeln!(out, "  journal unavailable: {why}");
        }
    }
}

fn suppressed(out: &mut String, s: &[Suppressed], ctx: &Context<'_>) {
    if s.is_empty() {
        return;
    }
    let total: u32 = s.iter().map(|s| s.count).sum();
    let _ = writeln!(
        out,
        "\nSuppressed since the last email: {total} repeated event{} (same event for the same unit within min_interval {}):",
        if total == 1 { "" } else { "s" },
        humantime::format_duration(ctx.min_interval)
    );
    for x in s.iter().take(SUPPRESSED_ROWS) {
        let _ = writeln!(
            out,
            "  {} x {} {}",
            x.count,
            x.kind.as_str(),
            x.unit.as_ref().map_or("(unitwarden)", |u| u.as_str())
        );
    }
    if s.len() > SUPPRESSED_ROWS {
        let _ = writeln!(out, "  ... and {} more", s.len() - SUPPRESSED_ROWS);
    }
}

/// Each unit of the email with its latest item (the current news about it), most urgent first
/// and otherwise in the order they appeared.
fn ranked(d: &Draft) -> Vec<(&UnitName, &Item)> {
    let mut index: BTreeMap<&UnitName, usize> = BTreeMap::new();
    let mut latest: Vec<(&UnitName, &Item)> = Vec::new();
    for item in &d.items {
        let Some(u) = item.unit() else { continue };
        match index.get(u) {
            Some(&i) => latest[i].1 = item,
            None => {
                index.insert(u, latest.len());
                latest.push((u, item));
            }
        }
    }
    // Stable: equal urgency keeps the order of appearance.
    latest.sort_by_key(|(_, item)| group(item).0);
    latest
}

/// The units whose events and journal lines the body tells in full, in the body's order.
pub fn detailed(d: &Draft) -> Vec<&UnitName> {
    ranked(d)
        .into_iter()
        .take(DETAILED_UNITS)
        .map(|(u, _)| u)
        .collect()
}

/// The plan's first clause, cut to `NEXT_MAX` characters: enough to tell "restart attempt 2/3
/// in 10s" from "no more restarts".
fn next_brief(next: &str) -> String {
    let first = next.split("; ").next().unwrap_or_default();
    if first.chars().count() <= NEXT_MAX {
        return first.to_string();
    }
    let cut: String = first.chars().take(NEXT_MAX - 3).collect();
    format!("{}...", cut.trim_end())
}

/// One summary row: unit, what happened, attempt, result, next.
fn row(unit: &UnitName, item: &Item) -> [String; 5] {
    let e = match item {
        Item::Event(e) => e,
        Item::Reminder { gave_up, .. } => gave_up,
    };
    let result = match (&e.diagnosis, &e.result) {
        (Some(d), _) => d.label.clone(),
        (None, Some(r)) => r.clone(),
        (None, None) => "-".into(),
    };
    let next = next_brief(&e.next);
    [
        short(unit).to_string(),
        group(item).1.to_string(),
        e.attempt.map_or("-".into(), |(k, n)| format!("{k}/{n}")),
        result,
        if next.is_empty() { "-".into() } else { next },
    ]
}

/// The table that opens an email about several units, aligned like `systemctl list-units`.
fn summary_table(out: &mut String, ranked: &[(&UnitName, &Item)]) {
    let header = ["UNIT", "EVENT", "ATTEMPT", "RESULT", "NEXT"].map(String::from);
    let rows: Vec<[String; 5]> = ranked
        .iter()
        .take(SUMMARY_ROWS)
        .map(|(u, item)| row(u, item))
        .collect();
    let caps = [UNIT_WIDTH_MAX, usize::MAX, usize::MAX, RESULT_WIDTH_MAX];
    let mut width = [0usize; 4];
    for r in std::iter::once(&header).chain(&rows) {
        for (i, w) in width.iter_mut().enumerate() {
            *w = (*w).max(r[i].len().min(caps[i]));
        }
    }
    out.push('\n');
    for r in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, w) in width.iter().enumerate() {
            let _ = write!(line, "{:<w$}  ", r[i]);
        }
        line.push_str(&r[4]);
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if ranked.len() > rows.len() {
        let _ = writeln!(
            out,
            "... and {} more units: unitwarden's log has them all",
            ranked.len() - rows.len()
        );
    }
}

/// Layout: the summary line and host; for several units, a table with one row per unit; then,
/// per unit (at most `DETAILED_UNITS`, most urgent first), each event's block and the journal
/// excerpt; a line counting the units left out; the events about unitwarden itself; the
/// suppressed repeats.
pub fn body(d: &Draft, ctx: &Context<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", summary(d));
    let _ = writeln!(out, "Host: {}", ctx.host);
    if d.items.len() > 1 {
        let _ = writeln!(out, "Events: {}", d.items.len());
    }
    let ranked = ranked(d);
    if ranked.len() > 1 {
        summary_table(&mut out, &ranked);
    }
    for (unit, _) in ranked.iter().take(DETAILED_UNITS) {
        for item in d.items.iter().filter(|i| i.unit() == Some(*unit)) {
            out.push('\n');
            block(&mut out, item, ctx);
        }
        journal(&mut out, unit, ctx);
    }
    if ranked.len() > DETAILED_UNITS {
        let left: Vec<&UnitName> = ranked[DETAILED_UNITS..].iter().map(|(u, _)| *u).collect();
        let events = d
            .items
            .iter()
            .filter(|i| i.unit().is_some_and(|u| left.contains(&u)))
            .count();
        let _ = writeln!(
            out,
            "\nNot detailed here: {} more units ({events} events); the table above has each one's \
             latest event.\nunitwarden's log has every event, and journalctl -u UNIT a unit's own lines.",
            left.len()
        );
    }
    for item in d.items.iter().filter(|i| i.unit().is_none()) {
        out.push('\n');
        block(&mut out, item, ctx);
    }
    suppressed(&mut out, &d.suppressed, ctx);
    let _ = write!(
        out,
        "\n-- \nunitwarden {} on {}\n",
        env!("CARGO_PKG_VERSION"),
        ctx.host
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(n: &str) -> UnitName {
        UnitName::parse(n).unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ev(kind: EventKind, u: Option<&str>) -> Event {
        Event::new(
            kind,
            u.map(unit),
            at("2026-11-23T05:02:11Z"),
            format!("{kind:?}"),
        )
    }

    fn draft(items: Vec<Item>) -> Draft {
        Draft {
            message_id: "<m@test>".into(),
            at: at("2026-11-23T05:02:41Z"),
            items,
            suppressed: Vec::new(),
            in_reply_to: None,
            references: Vec::new(),
        }
    }

    fn with_attempt(mut e: Event, k: u32, n: u32) -> Event {
        e.attempt = Some((k, n));
        e
    }

    #[test]
    fn subjects() {
        use EventKind::*;
        let down = |u| Item::Event(ev(Down, Some(u)));
        let table: Vec<(Vec<Item>, &str)> = vec![
            (
                vec![Item::Event(with_attempt(
                    ev(GaveUp, Some("gunicorn")),
                    3,
                    3,
                ))],
                "gunicorn.service gave up after 3/3 restarts",
            ),
            (
                vec![
                    down("nginx"),
                    down("gunicorn"),
                    down("daphne"),
                    down("celery"),
                    down("celerybeat"),
                ],
                "5 units down: nginx, gunicorn, daphne, celery, celerybeat",
            ),
            (
                vec![
                    down("gunicorn"),
                    Item::Event(with_attempt(ev(RestartFailed, Some("gunicorn")), 1, 3)),
                ],
                "gunicorn.service restart failed (attempt 1/3)",
            ),
            (
                vec![
                    down("nginx"),
                    Item::Event(with_attempt(ev(GaveUp, Some("celery")), 3, 3)),
                    down("daphne"),
                    Item::Event(ev(Recovered, Some("redis"))),
                ],
                "gave up: celery; down: nginx, daphne; recovered: redis",
            ),
            (
                vec![Item::Event(ev(Stopping, None)), down("nginx")],
                "down: nginx; unitwarden stopping",
            ),
            (vec![Item::Event(ev(Started, None))], "unitwarden started"),
            (
                vec![Item::Reminder {
                    at: at("2026-11-23T06:02:11Z"),
                    n: 1,
                    of: 3,
                    gave_up: ev(GaveUp, Some("gunicorn")),
                }],
                "gunicorn.service still given up (reminder 1/3)",
            ),
        ];
        for (items, want) in table {
            assert_eq!(summary(&draft(items)), want);
        }
    }

    #[test]
    fn long_unit_lists_are_cut_with_a_count() {
        let items: Vec<Item> = (0..40)
            .map(|i| Item::Event(ev(EventKind::Down, Some(&format!("worker-number-{i:02}")))))
            .collect();
        let s = summary(&draft(items));
        assert!(s.starts_with("40 units down: worker-number-00, "), "{s}");
        assert!(s.ends_with(" more"), "{s}");
        assert!(s.len() <= SUBJECT_MAX + 12, "{} chars: {s}", s.len());
    }

    #[test]
    fn body_names_everything_the_person_on_call_needs() {
        let mut e = with_attempt(ev(EventKind::GaveUp, Some("gunicorn")), 3, 3);
        e.result = Some("exit-code".into());
        e.exec_status = Some("code=exited, status=3".into());
        e.diagnosis = crate::diagnosis::diagnose(
            &unit("gunicorn"),
            Some(&crate::unit::ServiceResult::ExitCode),
            Some((1, 3)),
            None,
        );
        e.n_restarts = Some(0);
        e.window = Some("monday-morning".into());
        e.next = "no more restarts".into();
        let mut d = draft(vec![Item::Event(e)]);
        d.suppressed = vec![Suppressed {
            unit: Some(unit("gunicorn")),
            kind: EventKind::RestartFailed,
            count: 2,
        }];
        let journal = [(
            unit("gunicorn"),
            Excerpt {
                command: "journalctl -u gunicorn.service -n 20".into(),
                lines: Err("No journal files were found.".into()),
            },
        )]
        .into_iter()
        .collect();
        let tz = TimeZone::get("Europe/Istanbul").unwrap();
        let ctx = Context {
            host: "web-1",
            prefix: "[unitwarden]",
            tz: &tz,
            min_interval: Duration::from_secs(900),
            remind_after: &[],
            journal_lines: 20,
            journal: &journal,
        };
        assert_eq!(
            subject(&d, &ctx),
            "[unitwarden] web-1: gunicorn.service gave up after 3/3 restarts"
        );
        let body = body(&d, &ctx);
        for want in [
            "Host: web-1",
            "## gunicorn.service: gave up",
            "Time:      2026-11-23 08:02:11 +03:00 (Europe/Istanbul)",
            "Attempt:   3/3",
            "Result:    exit-code",
            "Exit:      code=exited, status=3",
            "Meaning:   exited with status 3; by convention NOTIMPLEMENTED, unimplemented feature",
            "Check:     the program's last log lines: journalctl -u gunicorn.service",
            "NRestarts: 0",
            "Window:    monday-morning",
            "Next:      no more restarts",
            "Journal (journalctl -u gunicorn.service -n 20):",
            "  journal unavailable: No journal files were found.",
            "Suppressed since the last email: 2 repeated events",
            "  2 x restart_failed gunicorn.service",
        ] {
            assert!(body.contains(want), "missing {want:?} in\n{body}");
        }
        assert!(body.is_ascii());
        assert!(body.lines().all(|l| l.len() < 160), "{body}");
        assert!(!body.contains("UNIT "), "one unit needs no table: {body}");
    }

    #[test]
    fn reminder_body_says_since_when_and_what_comes_next() {
        let tz = TimeZone::UTC;
        let journal = BTreeMap::new();
        let remind = [Duration::from_secs(3600), Duration::from_secs(4 * 3600)];
        let ctx = Context {
            host: "h",
            prefix: "[unitwarden]",
            tz: &tz,
            min_interval: Duration::from_secs(900),
            remind_after: &remind,
            journal_lines: 20,
            journal: &journal,
        };
        let item = |n| Item::Reminder {
            at: at("2026-11-23T06:02:11Z"),
            n,
            of: 2,
            gave_up: ev(EventKind::GaveUp, Some("gunicorn")),
        };
        let b = body(&draft(vec![item(1)]), &ctx);
        assert!(
            b.contains("Since:     2026-11-23 05:02:11 +00:00 (UTC), 1h ago"),
            "{b}"
        );
        assert!(
            b.contains("next reminder in 3h if it stays given up"),
            "{b}"
        );
        let b = body(&draft(vec![item(2)]), &ctx);
        assert!(b.contains("this is the last reminder"), "{b}");
    }

    fn context<'a>(tz: &'a TimeZone, journal: &'a BTreeMap<UnitName, Excerpt>) -> Context<'a> {
        Context {
            host: "web-1",
            prefix: "[unitwarden]",
            tz,
            min_interval: Duration::from_secs(900),
            remind_after: &[],
            journal_lines: 20,
            journal,
        }
    }

    /// A unit killed by SIGKILL: its `down` event as narration builds it.
    fn killed(u: &str) -> Event {
        let mut e = ev(EventKind::Down, Some(u));
        e.detail = format!("{u}.service is down (failed/failed)");
        e.result = Some("signal".into());
        e.exec_status = Some("code=killed, status=9/KILL".into());
        e.diagnosis = crate::diagnosis::diagnose(
            &unit(u),
            Some(&crate::unit::ServiceResult::Signal),
            Some((2, 9)),
            None,
        );
        e.next = "restart attempt 1/3 in 5s".into();
        e
    }

    fn excerpts(units: &[String], lines: usize) -> BTreeMap<UnitName, Excerpt> {
        units
            .iter()
            .map(|u| {
                let x = Excerpt {
                    command: format!("journalctl -u {u}.service -n 20"),
                    lines: Ok((0..lines).map(|i| format!("{u} line {i}")).collect()),
                };
                (unit(u), x)
            })
            .collect()
    }

    #[test]
    fn a_batch_over_several_units_opens_with_one_aligned_row_per_unit_most_urgent_first() {
        let mut gave_up = with_attempt(ev(EventKind::GaveUp, Some("gunicorn")), 3, 3);
        gave_up.result = Some("exit-code".into());
        gave_up.diagnosis = crate::diagnosis::diagnose(
            &unit("gunicorn"),
            Some(&crate::unit::ServiceResult::ExitCode),
            Some((1, 203)),
            None,
        );
        gave_up.next = "no more restarts; a new episode starts in 1h if it is still down".into();
        let mut recovered = ev(EventKind::Recovered, Some("redis"));
        recovered.next = "keep watching".into();
        let items = vec![
            Item::Event(killed("nginx")),
            Item::Event(killed("daphne")),
            Item::Event(gave_up),
            Item::Event(recovered),
        ];
        let names = ["nginx", "daphne", "gunicorn", "redis"].map(String::from);
        let journal = excerpts(&names, 2);
        let tz = TimeZone::UTC;
        let body = body(&draft(items), &context(&tz, &journal));
        let table: Vec<&str> = body
            .lines()
            .skip_while(|l| !l.starts_with("UNIT"))
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(
            table,
            [
                "UNIT      EVENT      ATTEMPT  RESULT              NEXT",
                "gunicorn  gave up    3/3      exit-code 203/EXEC  no more restarts",
                "nginx     down       -        signal 9/KILL       restart attempt 1/3 in 5s",
                "daphne    down       -        signal 9/KILL       restart attempt 1/3 in 5s",
                "redis     recovered  -        -                   keep watching",
            ],
            "{body}"
        );
        let headings: Vec<&str> = body.lines().filter(|l| l.starts_with("## ")).collect();
        assert_eq!(
            headings,
            [
                "## gunicorn.service: gave up",
                "## nginx.service: down",
                "## daphne.service: down",
                "## redis.service: recovered",
            ],
            "details follow the table's order"
        );
        assert!(body.find("UNIT ").unwrap() < body.find("## ").unwrap());
        assert!(
            body.contains("Meaning:   killed (SIGKILL): by an operator"),
            "{body}"
        );
        assert!(body.contains("Check:     the ExecStart= path"), "{body}");
        assert_eq!(body.matches("Journal (").count(), 4);
        assert!(!body.contains("Not detailed here"), "{body}");
    }

    #[test]
    fn a_hundred_units_killed_together_read_in_a_bounded_body() {
        let names: Vec<String> = (0..100).map(|i| format!("worker-{i:02}")).collect();
        let mut items: Vec<Item> = names.iter().map(|u| Item::Event(killed(u))).collect();
        for u in &names {
            let mut failed = with_attempt(killed(u), 1, 3);
            failed.kind = EventKind::RestartFailed;
            failed.detail = format!("restart attempt 1/3 of {u}.service failed: job failed");
            failed.next = "restart attempt 2/3 in 10s".into();
            items.push(Item::Event(failed));
        }
        let d = draft(items);
        let journal = excerpts(&names, 20);
        let tz = TimeZone::UTC;
        let body = body(&d, &context(&tz, &journal));
        let lines: Vec<&str> = body.lines().collect();

        // Four lines of head, a table of one header and one row per unit, the detailed units'
        // two blocks (12 lines each) and journal (22 lines), the note on the rest, the signature.
        let bound = 4 + (1 + names.len()) + DETAILED_UNITS * (2 * 12 + 22) + 3 + 3;
        assert!(
            lines.len() <= bound,
            "{} lines, bound {bound}:\n{body}",
            lines.len()
        );
        assert!(lines.len() < 600, "{} lines", lines.len());
        for u in &names {
            let rows: Vec<&&str> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("{u} ")))
                .collect();
            assert_eq!(rows.len(), 1, "{u}: {rows:?}");
            assert!(
                rows[0].contains("restart failed  1/3      signal 9/KILL"),
                "{}",
                rows[0]
            );
            assert!(
                rows[0].ends_with("restart attempt 2/3 in 10s"),
                "{}",
                rows[0]
            );
        }
        let detailed: Vec<String> = names[..DETAILED_UNITS].to_vec();
        let headed: Vec<String> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("## "))
            .map(|l| l.split(".service").next().unwrap().to_string())
            .collect();
        assert_eq!(headed.len(), 2 * DETAILED_UNITS, "{headed:?}");
        assert!(headed.iter().all(|u| detailed.contains(u)), "{headed:?}");
        assert_eq!(body.matches("Journal (").count(), DETAILED_UNITS);
        assert!(
            body.contains("worker-09 line 19"),
            "journal of a detailed unit"
        );
        assert!(!body.contains("worker-10 line"), "no journal of the others");
        assert!(
            body.contains("Not detailed here: 90 more units (180 events)"),
            "{body}"
        );
        assert_eq!(
            detailed_names(&d),
            detailed,
            "the journal is read for exactly the units shown"
        );
        assert!(body.is_ascii());
        assert!(lines.iter().all(|l| l.len() < 160), "{body}");
    }

    fn detailed_names(d: &Draft) -> Vec<String> {
        detailed(d).iter().map(|u| short(u).to_string()).collect()
    }

    #[test]
    fn the_table_and_the_suppressed_list_are_cut_with_a_count() {
        let names: Vec<String> = (0..SUMMARY_ROWS + 50).map(|i| format!("w{i:03}")).collect();
        let items: Vec<Item> = names.iter().map(|u| Item::Event(killed(u))).collect();
        let mut d = draft(items);
        d.suppressed = names[..SUPPRESSED_ROWS + 5]
            .iter()
            .map(|u| Suppressed {
                unit: Some(unit(u)),
                kind: EventKind::Down,
                count: 2,
            })
            .collect();
        let journal = BTreeMap::new();
        let tz = TimeZone::UTC;
        let body = body(&d, &context(&tz, &journal));
        let rows = body.lines().filter(|l| l.starts_with('w')).count();
        assert_eq!(rows, SUMMARY_ROWS, "{body}");
        assert!(
            body.contains("... and 50 more units: unitwarden's log has them all"),
            "{body}"
        );
        let listed = body.lines().filter(|l| l.ends_with(" x down")).count();
        assert_eq!(listed, 0, "units are named after the kind");
        let listed = body
            .lines()
            .filter(|l| l.starts_with("  2 x down "))
            .count();
        assert_eq!(listed, SUPPRESSED_ROWS);
        assert!(body.contains("  ... and 5 more\n"), "{body}");
        assert!(
            body.contains("50 repeated events"),
            "the total counts them all"
        );
    }

    #[test]
    fn the_next_column_keeps_the_first_clause_of_the_plan() {
        assert_eq!(
            next_brief("keep watching; the counter resets"),
            "keep watching"
        );
        assert_eq!(next_brief(""), "");
        let long = "x".repeat(100);
        let brief = next_brief(&long);
        assert_eq!(brief.chars().count(), NEXT_MAX);
        assert!(brief.ends_with("..."));
        let wide = "\u{e9}".repeat(100);
        assert_eq!(next_brief(&wide).chars().count(), NEXT_MAX);
    }
}
