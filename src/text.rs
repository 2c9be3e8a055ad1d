//! Text from the config, the command line or the system made inert for one-line outputs: the
//! `STATUS=` field of an `sd_notify` datagram, `check-config`'s report, a config error.

use std::borrow::Cow;
use std::path::Path;

/// Whether `c` could end a line or drive a terminal: control characters (C0, DEL, C1) and the
/// Unicode line and paragraph separators, which some readers take for line breaks.
pub fn is_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// `s` on one line: each control character written as Rust writes it in a string (`\n`,
/// `\u{1b}`), everything else as it is. Borrowed when there is nothing to escape.
pub fn one_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_control(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A path for a message: lossy UTF-8, on one line.
pub fn path(p: &Path) -> String {
    one_line(&p.display().to_string()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let cases = [
            ("nginx.service", "nginx.service"),
            ("a\nb", r"a\nb"),
            ("a\r\nREADY=1", r"a\r\nREADY=1"),
            ("nul\0", r"nul\u{0}"),
            ("\u{1b}[2J\u{1b}[31mred", r"\u{1b}[2J\u{1b}[31mred"),
            ("line\u{2028}sep\u{2029}", r"line\u{2028}sep\u{2029}"),
            ("c1\u{85}\u{9b}", r"c1\u{85}\u{9b}"),
            ("del\u{7f}", r"del\u{7f}"),
            ("tab\t", r"tab\t"),
            (r#"quote " and back\slash"#, r#"quote " and back\slash"#),
            ("pazartesi sabahı", "pazartesi sabahı"),
        ];
        for (raw, want) in cases {
            assert_eq!(one_line(raw), want, "{raw:?}");
            assert!(!one_line(raw).chars().any(is_control));
        }
        assert!(matches!(one_line("plain"), Cow::Borrowed(_)));
    }
}
