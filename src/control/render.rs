//! `unitwarden status` for people: a header and a table aligned like `systemctl list-units`,
//! or one unit in detail. Colour only when asked (a terminal); every string from the daemon
//! is shown with control characters escaped, so a unit's text cannot drive the terminal.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::protocol::{EpisodeState, ProbeReport, StatusReport, UnitReport};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Yes,
    No,
}

impl Colour {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset.
    pub fn of_stdout() -> Colour {
        if std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::env::var_os("NO_COLOR").is_none()
        {
            Colour::Yes
        } else {
            Colour::No
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Paint {
    Plain,
    Good,
    Bad,
    Warn,
    Dim,
}

impl Paint {
    fn code(self) -> &'static str {
        match self {
            Paint::Plain => "",
            Paint::Good => "\x1b[32m",
            Paint::Bad => "\x1b[1;31m",
            Paint::Warn => "\x1b[33m",
            Paint::Dim => "\x1b[2m",
        }
    }
}

/// Text with control characters escaped (`\n`, `\u{1b}`), for a terminal or a pipe.
pub fn clean(s: &str) -> String {
    crate::text::one_line(s).into_owned()
}

/// The whole report: header, table, and a closing count.
pub fn table(r: &StatusReport, colour: Colour, tz: &TimeZone) -> String {
    let mut out = header(r);
    out.push('\n');
    let titles = [
        "UNIT",
        "STATE",
        "SUB",
        "SINCE",
        "ATTEMPTS",
        "EPISODE",
        "PROBE",
        "LAST ACTION",
        "NEXT CHECK",
    ];
    let rows: Vec<[(String, Paint); 9]> = r.units.iter().map(|u| row(u, r.now, tz)).collect();
    let mut widths = titles.map(str::len);
    for row in &rows {
        for (w, (cell, _)) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let bold = |s: &str| match colour {
        Colour::Yes => format!("\x1b[1m{s}\x1b[0m"),
        Colour::No => s.to_string(),
    };
    let titles_line = line(
        titles.map(|t| (t.to_string(), Paint::Plain)),
        &widths,
        Colour::No,
    );
    out.push_str(&bold(&titles_line));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row, &widths, colour));
        out.push('\n');
    }
    let n = r.units.len();
    let mut counts: Vec<(EpisodeState, usize)> = Vec::new();
    for u in &r.units {
        match counts.iter_mut().find(|(e, _)| *e == u.episode) {
            Some((_, k)) => *k += 1,
            None => counts.push((u.episode, 1)),
        }
    }
    counts.sort_by_key(|(e, _)| *e as u8);
    let parts: Vec<String> = counts
        .iter()
        .map(|(e, k)| format!("{k} {}", e.as_str()))
        .collect();
    let _ = writeln!(
        out,
        "\n{n} unit{}: {}.",
        if n == 1 { "" } else { "s" },
        parts.join(", ")
    );
    out
}

fn header(r: &StatusReport) -> String {
    let uptime = r.now.duration_since(r.started);
    let uptime = Duration::try_from(uptime).unwrap_or_default();
    let mode = match &r.window {
        Some(w) => format!("window {}", clean(w)),
        None => "normal".to_string(),
    };
    let outbox = match &r.outbox {
        None => "email off".to_string(),
        Some(o) if o.messages == 0 => "outbox empty".to_string(),
        Some(o) => {
            let age = o
                .oldest
                .map(|t| format!(", oldest {}", ago(r.now, t)))
                .unwrap_or_default();
            format!(
                "outbox {} message{}{age}",
                o.messages,
                if o.messages == 1 { "" } else { "s" }
            )
        }
    };
    let mut out = format!(
        "unitwarden {} on {} (pid {}) · up {} · config {}\n",
        clean(&r.version),
        clean(&r.host),
        r.pid,
        short(uptime),
        clean(&r.config)
    );
    let _ = writeln!(
        out,
        "mode {mode} · interval {} · next poll {} · {outbox}",
        short(Duration::from_millis(r.interval_ms)),
        until(r.now, r.next_poll),
    );
    if let Some(note) = &r.note {
        let _ = writeln!(out, "note: {}", clean(note));
    }
    if r.shutting_down {
        out.push_str("the manager is shutting down: nothing is restarted\n");
    }
    out
}

fn row(u: &UnitReport, now: Timestamp, tz: &TimeZone) -> [(String, Paint); 9] {
    let state_paint = match u.state.as_str() {
        "active" => Paint::Good,
        "failed" => Paint::Bad,
        "inactive" => Paint::Dim,
        _ => Paint::Warn,
    };
    let mut episode = u.episode.as_str().to_string();
    if let Some(t) = u.until {
        let _ = write!(episode, " until {}", clock(t, now, tz));
    }
    let last = u.last_action.as_ref().map_or("-".to_string(), |a| {
        format!(
            "{} {}",
            clean(a.action.as_deref().unwrap_or("-")),
            ago(now, a.at)
        )
    });
    [
        (clean(&u.unit), Paint::Plain),
        (clean(&u.state), state_paint),
        (clean(&u.sub), Paint::Plain),
        (u.since.map_or("-".into(), |t| ago(now, t)), Paint::Plain),
        (format!("{}/{}", u.attempts, u.max_attempts), Paint::Plain),
        (episode, episode_paint(u.episode)),
        probe_cell(u.probe.as_ref(), now),
        (last, Paint::Plain),
        (until(now, u.next_check), Paint::Plain),
    ]
}

/// `ok`, `failing 2/3`, `down 3/3`, `grace 20s`, `-` (no probe), `waiting` (none run yet).
fn probe_cell(p: Option<&ProbeReport>, now: Timestamp) -> (String, Paint) {
    let Some(p) = p else {
        return ("-".into(), Paint::Dim);
    };
    if p.down {
        return (format!("down {}/{}", p.failures, p.of), Paint::Bad);
    }
    if let Some(g) = p.grace_until
        && p.last.as_ref().is_none_or(|l| !l.ok)
    {
        return (format!("grace {}", until(now, g)), Paint::Warn);
    }
    match &p.last {
        None => ("waiting".into(), Paint::Dim),
        Some(l) if l.ok => (format!("ok {}ms", l.took_ms), Paint::Good),
        Some(_) => (format!("failing {}/{}", p.failures, p.of), Paint::Warn),
    }
}

fn episode_paint(e: EpisodeState) -> Paint {
    match e {
        EpisodeState::Healthy => Paint::Good,
        EpisodeState::GaveUp | EpisodeState::Down | EpisodeState::NotLoaded => Paint::Bad,
        EpisodeState::Stopped | EpisodeState::Unknown => Paint::Dim,
        _ => Paint::Warn,
    }
}

/// One row of an aligned table: each cell but the last padded to its column's width and two
/// spaces, painted when colour is on.
pub(crate) fn line<const N: usize>(
    cells: [(String, Paint); N],
    widths: &[usize; N],
    colour: Colour,
) -> String {
    let mut out = String::new();
    for (i, (cell, paint)) in cells.iter().enumerate() {
        let last = i + 1 == N;
        let pad = if last {
            0
        } else {
            widths[i] - cell.chars().count() + 2
        };
        match (colour, paint) {
            (Colour::Yes, p) if !matches!(p, Paint::Plain) => {
                let _ = write!(out, "{}{cell}\x1b[0m", p.code());
            }
            _ => out.push_str(cell),
        }
        out.extend(std::iter::repeat_n(' ', pad));
    }
    out
}

/// One unit in detail, with its recent history.
pub fn detail(r: &StatusReport, u: &UnitReport, tz: &TimeZone) -> String {
    let now = r.now;
    let mut out = format!("{}\n", clean(&u.unit));
    let since = u.since.map_or(String::new(), |t| {
        format!(" since {} ({})", full(t, tz), ago(now, t))
    });
    let _ = writeln!(
        out,
        "     State: {} ({}){since}",
        clean(&u.state),
        clean(&u.sub)
    );
    let mut result = vec![u.result.clone().unwrap_or_else(|| "-".into())];
    if let Some(x) = &u.exec_status {
        result.push(x.clone());
    }
    if let Some(n) = u.n_restarts {
        result.push(format!("restarted by systemd {n} times"));
    }
    let _ = writeln!(out, "    Result: {}", clean(&result.join(" · ")));
    let mut episode = u.episode.as_str().to_string();
    if let Some(t) = u.until {
        let _ = write!(episode, " until {} ({})", full(t, tz), until(now, t));
    }
    let _ = writeln!(
        out,
        "   Episode: {episode} · attempts {}/{}",
        u.attempts, u.max_attempts
    );
    if let Some(a) = &u.last_action {
        let _ = writeln!(
            out,
            "    Action: {} at {}: {}",
            clean(a.action.as_deref().unwrap_or("-")),
            full(a.at, tz),
            clean(&a.text)
        );
    }
    if let Some(p) = &u.probe {
        let last = p.last.as_ref().map_or("not run yet".to_string(), |l| {
            format!(
                "{} {} ({}ms, {})",
                if l.ok { "ok:" } else { "failed:" },
                clean(&l.detail),
                l.took_ms,
                ago(now, l.at)
            )
        });
        let _ = writeln!(
            out,
            "     Probe: {} · {last} · failures {}/{}{}",
            clean(&p.check),
            p.failures,
            p.of,
            p.grace_until
                .map(|g| format!(" · grace {}", until(now, g)))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "Next check: {}", until(now, u.next_check));
    if !u.recent.is_empty() {
        out.push_str("\nRecent:\n");
        for e in &u.recent {
            let _ = writeln!(out, "  {}  {}", full(e.at, tz), clean(&e.text));
        }
    }
    out
}

/// "5s ago", "3m ago", "2h 5m ago".
fn ago(now: Timestamp, t: Timestamp) -> String {
    match Duration::try_from(now.duration_since(t)) {
        Ok(d) => format!("{} ago", short(d)),
        Err(_) => "just now".to_string(),
    }
}

/// "in 4s", "now".
fn until(now: Timestamp, t: Timestamp) -> String {
    match Duration::try_from(t.duration_since(now)) {
        Ok(d) if d >= Duration::from_secs(1) => format!("in {}", short(d)),
        _ => "now".to_string(),
    }
}

/// The two largest units: "42s", "3m 5s", "2h 5m", "3d 4h".
fn short(d: Duration) -> String {
    let s = d.as_secs();
    let (big, small, a, b) = match s {
        0..60 => return format!("{s}s"),
        60..3600 => (s / 60, s % 60, "m", "s"),
        3600..86_400 => (s / 3600, s % 3600 / 60, "h", "m"),
        _ => (s / 86_400, s % 86_400 / 3600, "d", "h"),
    };
    if small == 0 {
        format!("{big}{a}")
    } else {
        format!("{big}{a} {small}{b}")
    }
}

/// Time of day when `t` is today, else the date too.
fn clock(t: Timestamp, now: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned_datetime(tz.clone());
    if z.date() == now.to_zoned_datetime(tz.clone()).date() {
        z.strftime("%H:%M:%S").to_string()
    } else {
        z.strftime("%Y-%m-%d %H:%M").to_string()
    }
}

fn full(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned_datetime(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::{OutboxReport, RecentReport};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_796_022_000 + s).unwrap()
    }

    fn unit(name: &str, state: &str, episode: EpisodeState) -> UnitReport {
        UnitReport {
            unit: name.into(),
            load: "loaded".into(),
            state: state.into(),
            sub: if state == "active" {
                "running"
            } else {
                "failed"
            }
            .into(),
            since: Some(at(-7300)),
            result: None,
            exec_status: None,
            n_restarts: Some(0),
            attempts: 0,
            max_attempts: 3,
            episode,
            until: None,
            last_action: None,
            probe: None,
            next_check: at(42),
            recent: Vec::new(),
        }
    }

    fn report() -> StatusReport {
        let mut g = unit("gunicorn.service", "failed", EpisodeState::BackingOff);
        g.attempts = 1;
        g.until = Some(at(12));
        g.since = Some(at(-5));
        g.last_action = Some(RecentReport {
            at: at(-3),
            action: Some("restart".into()),
            text: "restart attempt failed".into(),
        });
        StatusReport {
            schema: 1,
            version: "0.1.0".into(),
            host: "web1".into(),
            pid: 42,
            config: "/etc/unitwarden/unitwarden.toml".into(),
            started: at(-11_520),
            now: at(0),
            mode: "normal".into(),
            window: None,
            interval_ms: 60_000,
            next_poll: at(42),
            note: None,
            shutting_down: false,
            outbox: Some(OutboxReport {
                messages: 2,
                oldest: Some(at(-600)),
            }),
            units: vec![
                unit("nginx.service", "active", EpisodeState::Healthy),
                g,
                unit("evil\x1b[2J.service", "active", EpisodeState::Paused),
            ],
        }
    }

    #[test]
    fn the_table_is_aligned_and_plain_through_a_pipe() {
        let out = table(&report(), Colour::No, &TimeZone::UTC);
        assert!(!out.contains('\x1b'), "{out}");
        assert!(out.contains("up 3h 12m"), "{out}");
        assert!(out.contains("outbox 2 messages, oldest 10m ago"), "{out}");
        let lines: Vec<&str> = out.lines().collect();
        let title = lines.iter().position(|l| l.starts_with("UNIT")).unwrap();
        let col = lines[title].find("EPISODE").unwrap();
        for row in &lines[title + 1..title + 4] {
            let cells: String = row.chars().skip(col).collect();
            assert!(
                ["healthy", "backing off", "paused"]
                    .iter()
                    .any(|e| cells.starts_with(e)),
                "{row}"
            );
        }
        assert!(out.contains("backing off until 07:00:12"), "{out}");
        assert!(out.contains("restart 3s ago"), "{out}");
        assert!(out.contains("evil\\u{1b}[2J.service"), "{out}");
    }

    #[test]
    fn colour_only_when_asked() {
        let out = table(&report(), Colour::Yes, &TimeZone::UTC);
        assert!(out.contains("\x1b[32mactive\x1b[0m"), "{out}");
        assert!(out.contains("\x1b[1;31mfailed\x1b[0m"), "{out}");
        // The unit's own escape sequence stays escaped even in colour.
        assert!(!out.contains("\x1b[2J"));
    }

    #[test]
    fn durations_read_short() {
        let table = [
            (5, "5s"),
            (60, "1m"),
            (185, "3m 5s"),
            (7500, "2h 5m"),
            (273_600, "3d 4h"),
        ];
        for (s, want) in table {
            assert_eq!(short(Duration::from_secs(s)), want);
        }
    }
}
