//! `doctor`'s report for people (a table aligned like `unitwarden status`, colour only when
//! asked) and for scripts (`--json`, schema 1). Text from the system and the config is shown
//! with control characters escaped.

use std::fmt::Write as _;

use super::{Report, Severity};
use crate::control::render::{Colour, Paint, clean, line};

/// The findings as a table and a closing count, or a line saying there are none.
pub fn table(r: &Report, colour: Colour) -> String {
    let units = format!(
        "{} unit{}",
        r.checked,
        if r.checked == 1 { "" } else { "s" }
    );
    if r.findings.is_empty() {
        return format!("{units} checked: no findings.\n");
    }
    let titles = ["UNIT", "SEVERITY", "FINDING", "WHAT TO DO"];
    let rows: Vec<[(String, Paint); 4]> = r
        .findings
        .iter()
        .map(|f| {
            [
                (f.unit.as_deref().map_or("-".into(), clean), Paint::Plain),
                (
                    f.severity.as_str().to_string(),
                    match f.severity {
                        Severity::Warning => Paint::Warn,
                        Severity::Info => Paint::Plain,
                    },
                ),
                (clean(&f.what), Paint::Plain),
                (clean(&f.fix), Paint::Plain),
            ]
        })
        .collect();
    let mut widths = titles.map(str::len);
    for row in &rows {
        for (w, (cell, _)) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = line(
        titles.map(|t| (t.to_string(), Paint::Plain)),
        &widths,
        Colour::No,
    );
    if colour == Colour::Yes {
        out = format!("\x1b[1m{out}\x1b[0m");
    }
    out.push('\n');
    for row in rows {
        out.push_str(&line(row, &widths, colour));
        out.push('\n');
    }
    let warnings = r
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    let infos = r.findings.len() - warnings;
    let mut counts = Vec::new();
    if warnings > 0 {
        counts.push(format!(
            "{warnings} warning{}",
            if warnings == 1 { "" } else { "s" }
        ));
    }
    if infos > 0 {
        counts.push(format!("{infos} info"));
    }
    let _ = writeln!(out, "\n{units} checked: {}.", counts.join(", "));
    out
}

/// The report as pretty JSON (serde escapes what JSON needs escaped).
pub fn json(r: &Report) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(r)
}
