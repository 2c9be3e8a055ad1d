//! The corpus the mutations start from: the shipped example configs, the package's conffile,
//! the TOML blocks of the README, the regression corpus, and every config string the tests
//! (unit and integration) spell out, so a new test's config becomes a seed by itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The regression corpus: inputs that once crashed or hung something, kept as files.
pub fn corpus_dir() -> PathBuf {
    root().join("tests/fuzz/corpus")
}

pub fn load() -> Vec<String> {
    let mut seeds = BTreeSet::new();
    for dir in [root().join("config"), corpus_dir()] {
        for path in files(&dir, "toml") {
            seeds.insert(read(&path));
        }
    }
    seeds.insert(read(&root().join("packaging/unitwarden.toml")));
    seeds.extend(toml_blocks(&read(&root().join("README.md"))));
    for dir in ["src", "tests"] {
        for path in files(&root().join(dir), "rs") {
            seeds.extend(
                string_literals(&read(&path))
                    .into_iter()
                    .filter(|s| looks_like_config(s)),
            );
        }
    }
    seeds.into_iter().collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files under `dir` (recursively) ending in `.ext`, sorted so the corpus order is stable.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path, ext));
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in markdown.lines() {
        match &mut block {
            None if line.trim_start().starts_with("```toml") => block = Some(String::new()),
            Some(_) if line.trim_start().starts_with("```") => out.extend(block.take()),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

fn looks_like_config(s: &str) -> bool {
    const MARKS: [&str; 7] = [
        "[daemon]",
        "[restart]",
        "[[unit]]",
        "[[window]]",
        "[email]",
        "[metrics]",
        "[resources]",
    ];
    MARKS.iter().any(|m| s.contains(m)) || (s.contains(" = ") && s.contains('\n'))
}

/// The string literals of a Rust source file, unescaped; `format!` placeholders are dropped
/// and `{{`/`}}` are undoubled, which leaves a config-shaped text to mutate.
pub fn string_literals(src: &str) -> Vec<String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'\'' => {
                // A char literal ('"', '\'', '\u{1F600}') or a lifetime ('a).
                if b.get(i + 1) == Some(&b'\\') {
                    i += 2;
                    while i < b.len() && b[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    let ch_len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    if b.get(i + 1 + ch_len) == Some(&b'\'') {
                        i += 2 + ch_len;
                    } else {
                        i += 1;
                    }
                }
            }
            b'r' if !prev_is_ident(b, i) && matches!(b.get(i + 1), Some(b'"' | b'#')) => {
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let body_start = j + 1;
                match src[body_start..].find(&close) {
                    Some(len) => {
                        out.push(placeholders(&src[body_start..body_start + len]));
                        i = body_start + len + close.len();
                    }
                    None => break,
                }
            }
            b'"' => {
                let (text, end) = unescape(src, i + 1);
                out.push(placeholders(&text));
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// A normal string literal's text from `start` (just after the quote); returns it and the
/// index after the closing quote.
fn unescape(src: &str, start: usize) -> (String, usize) {
    let mut out = String::new();
    let mut chars = src[start..].char_indices().peekable();
    while let Some((k, c)) = chars.next() {
        match c {
            '"' => return (out, start + k + 1),
            '\\' => match chars.next().map(|(_, e)| e) {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('0') => out.push('\0'),
                Some('x') => {
                    let hex: String = (0..2)
                        .filter_map(|_| chars.next().map(|(_, h)| h))
                        .collect();
                    out.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
                }
                Some('u') => {
                    let mut hex = String::new();
                    for (_, h) in chars.by_ref() {
                        match h {
                            '{' => {}
                            '}' => break,
                            h => hex.push(h),
                        }
                    }
                    out.extend(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32));
                }
                Some('\n') => {
                    while chars.peek().is_some_and(|(_, w)| w.is_whitespace()) {
                        chars.next();
                    }
                }
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    (out, src.len())
}

/// `{BASE}` and `{}` (format arguments) are dropped; `{{` and `}}` become single braces.
fn placeholders(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let rest: String = chars.clone().take_while(|c| *c != '}').collect();
                if rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_:?#.".contains(c))
                {
                    for _ in 0..=rest.chars().count() {
                        chars.next();
                    }
                } else {
                    out.push('{');
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_literals_are_read_as_rust_reads_them() {
        let src = r####"let a = '"'; let b = "x = \"1\"\n[daemon]"; // "not this"
let c = r#"raw "quoted" {{x}}"#; let d = format!("{BASE}y = {}\n", 1); let e: &'static str = "\u{41}\
        B";"####;
        assert_eq!(
            string_literals(src),
            ["x = \"1\"\n[daemon]", "raw \"quoted\" {x}", "y = \n", "AB"]
        );
    }
}
