//! Mutations of a config text: byte-level (flips, inserts, deletes, truncation), token-aware
//! (a value, a key, a number or a string swapped for one at or past an edge), line-level
//! (deleted, duplicated, moved, a table header or a whole section repeated) and splices of
//! two seeds. Each case stacks a few.

use crate::generate::{self, Kind};
use crate::rng::Rng;

/// `text` with 1 to 5 mutations, mostly one; `other` is a second seed for splices.
pub fn mutate(rng: &mut Rng, text: &str, other: &str) -> String {
    let mut t = text.to_string();
    let n = match rng.below(10) {
        0..=5 => 1,
        6..=8 => 2,
        _ => 3 + rng.below(3),
    };
    for _ in 0..n {
        t = once(rng, &t, other);
    }
    t
}

fn once(rng: &mut Rng, t: &str, other: &str) -> String {
    match rng.below(100) {
        0..=9 => bytes(rng, t),
        10..=34 => swap_value(rng, t),
        35..=41 => swap_key(rng, t),
        42..=49 => number(rng, t),
        50..=59 => string(rng, t),
        60..=74 => lines(rng, t),
        75..=79 => header(rng, t),
        80..=89 => insert_line(rng, t),
        90..=95 => splice(rng, t, other),
        _ => truncate(rng, t),
    }
}

fn bytes(rng: &mut Rng, t: &str) -> String {
    let mut b = t.as_bytes().to_vec();
    let at = if b.is_empty() { 0 } else { rng.below(b.len()) };
    match rng.below(4) {
        0 if !b.is_empty() => b[at] ^= 1 << rng.below(8),
        1 => b.insert(at, rng.pick(b"\0\"'[]{}=#\\\n\r\t,.:-+ x\xff\xc3")),
        2 if !b.is_empty() => {
            b.remove(at);
        }
        _ if !b.is_empty() => b[at] = rng.next_u64() as u8,
        _ => b.push(b'='),
    }
    // The daemon reads the file as UTF-8 (invalid UTF-8 is refused before parsing).
    String::from_utf8_lossy(&b).into_owned()
}

/// The lines of `t` with a `key = value` shape: (line index, key, start of the value).
fn assignments(t: &str) -> Vec<(usize, String, usize)> {
    t.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let eq = l.find('=')?;
            let key = l[..eq].trim();
            (!key.is_empty() && !key.starts_with('#') && !key.starts_with('['))
                .then(|| (i, key.to_string(), eq + 1))
        })
        .collect()
}

fn replace_line(t: &str, index: usize, new: &str) -> String {
    let mut out = String::with_capacity(t.len() + new.len());
    for (i, l) in t.lines().enumerate() {
        out.push_str(if i == index { new } else { l });
        out.push('\n');
    }
    out
}

/// A value replaced: one of the key's own kind (often at an edge) or any value at all.
fn swap_value(rng: &mut Rng, t: &str) -> String {
    let found = assignments(t);
    if found.is_empty() {
        return insert_line(rng, t);
    }
    let (i, key, _) = rng.pick_ref(&found).clone();
    let value = match generate::kind_of(&key) {
        Some(kind) if rng.percent(70) => generate::value(rng, kind, &["web".into()]),
        _ => generate::evil_value(rng),
    };
    replace_line(t, i, &format!("{key} = {value}"))
}

fn swap_key(rng: &mut Rng, t: &str) -> String {
    let found = assignments(t);
    if found.is_empty() {
        return insert_line(rng, t);
    }
    let (i, _, v) = rng.pick_ref(&found).clone();
    let line = t.lines().nth(i).unwrap_or("");
    let key = rng.pick(&generate::all_keys());
    replace_line(t, i, &format!("{key} ={}", &line[v..]))
}

/// A number literal (or the digits in a duration) replaced by one at an edge.
fn number(rng: &mut Rng, t: &str) -> String {
    let b = t.as_bytes();
    let runs: Vec<(usize, usize)> = {
        let mut runs = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                let s = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                runs.push((s, i));
            } else {
                i += 1;
            }
        }
        runs
    };
    if runs.is_empty() {
        return swap_value(rng, t);
    }
    let (s, e) = rng.pick(&runs);
    let n = rng
        .pick(&[
            "0",
            "1",
            "00",
            "9",
            "59",
            "60",
            "24",
            "255",
            "256",
            "65536",
            "4294967296",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
        ])
        .to_string();
    format!("{}{n}{}", &t[..s], &t[e..])
}

/// The contents of a quoted string replaced: an edge duration, a unit name, hostile text.
fn string(rng: &mut Rng, t: &str) -> String {
    let quotes: Vec<usize> = t.match_indices('"').map(|(i, _)| i).collect();
    if quotes.len() < 2 {
        return swap_value(rng, t);
    }
    let k = rng.below(quotes.len() / 2) * 2;
    let (s, e) = (quotes[k], quotes[k + 1]);
    let inner = match rng.below(4) {
        0 => generate::duration(rng, true, true),
        1 => generate::unit_name(rng, true, true),
        2 => generate::evil_string(rng),
        _ => generate::value(rng, Kind::Text, &[]),
    };
    let inner = generate::quoted(&inner);
    format!("{}{}{}", &t[..s], inner, &t[e + 1..])
}

fn lines(rng: &mut Rng, t: &str) -> String {
    let mut ls: Vec<String> = t.lines().map(str::to_string).collect();
    if ls.is_empty() {
        return generate::line(rng);
    }
    let i = rng.below(ls.len());
    match rng.below(6) {
        0 => {
            ls.remove(i);
        }
        1 => {
            let l = ls[i].clone();
            ls.insert(i, l);
        }
        2 => {
            let j = rng.below(ls.len());
            ls.swap(i, j);
        }
        3 => {
            // A table header repeated further down: `[daemon]` twice is an error, `[[unit]]`
            // twice is an empty unit.
            let headers: Vec<usize> = (0..ls.len()).filter(|k| ls[*k].starts_with('[')).collect();
            if let Some(&h) = headers.get(rng.below(headers.len().max(1))) {
                let l = ls[h].clone();
                let at = rng.below(ls.len() + 1);
                ls.insert(at, l);
            }
        }
        4 => {
            // A whole section repeated at the end.
            let headers: Vec<usize> = (0..ls.len()).filter(|k| ls[*k].starts_with('[')).collect();
            if let Some(&h) = headers.get(rng.below(headers.len().max(1))) {
                let end = (h + 1..ls.len())
                    .find(|k| ls[*k].starts_with('['))
                    .unwrap_or(ls.len());
                let section: Vec<String> = ls[h..end].to_vec();
                ls.extend(section);
            }
        }
        _ => {
            let l = ls.remove(i);
            let at = rng.below(ls.len() + 1);
            ls.insert(at, l);
        }
    }
    let mut out = ls.join("\n");
    out.push('\n');
    out
}

/// A table header replaced by another, or by the same table spelled otherwise (spaces,
/// quotes, a comment): what `config/document.rs` reads to find the `[[unit]]` blocks.
fn header(rng: &mut Rng, t: &str) -> String {
    let headers: Vec<usize> = t
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with('['))
        .map(|(i, _)| i)
        .collect();
    if headers.is_empty() {
        return lines(rng, t);
    }
    let i = rng.pick(&headers);
    let new = rng.pick(&[
        "[[unit]]",
        "[unit]",
        "[[unit.probe]]",
        "[unit.probe]",
        "[unit.x]",
        "[[ unit ]]",
        "[[unit]] # a comment",
        "[[\"unit\"]]",
        "[['unit']]",
        "[ unit . probe ]",
        "[daemon]",
        "[restart]",
        "[[window]]",
        "[email]",
        "[[daemon]]",
        "[metrics]",
        "[[unit]]\nname = \"inserted\"",
        "unit = []",
        "[unit.probe.x]",
    ]);
    replace_line(t, i, new)
}

fn insert_line(rng: &mut Rng, t: &str) -> String {
    let mut ls: Vec<&str> = t.lines().collect();
    let new = generate::line(rng);
    let at = rng.below(ls.len() + 1);
    ls.insert(at, new.trim_end());
    let mut out = ls.join("\n");
    out.push('\n');
    out
}

/// The head of `t` and the tail of `other`, cut at line boundaries.
fn splice(rng: &mut Rng, t: &str, other: &str) -> String {
    let a: Vec<&str> = t.lines().collect();
    let b: Vec<&str> = other.lines().collect();
    let cut_a = rng.below(a.len() + 1);
    let cut_b = rng.below(b.len() + 1);
    let mut out = a[..cut_a].join("\n");
    out.push('\n');
    out.push_str(&b[cut_b..].join("\n"));
    out.push('\n');
    out
}

fn truncate(rng: &mut Rng, t: &str) -> String {
    let mut at = rng.below(t.len() + 1);
    while !t.is_char_boundary(at) {
        at -= 1;
    }
    t[..at].to_string()
}
