//! Reads the config file into its raw shape. A host with hundreds of `[[unit]]` entries is
//! read in slices: toml builds a tree of the whole document before deserializing it, about
//! 1.4 KiB per `[[unit]]`, and the allocator keeps that high-water mark for the daemon's
//! lifetime. Here the document's table headers are located first (by toml's own parser,
//! without building anything), then the rest of the file and the unit blocks, a slice of them
//! at a time, are deserialized each as a copy of the file with everything else blanked out,
//! so every position (and so every error's `LINE:COL`) is that of the file itself. Anything
//! this does not expect is read as one document, as is any file that fails either way, so the
//! outcome and the error messages are always those of a plain `toml::from_str`.

use std::ops::Range;

use toml_parser::parser::{EventReceiver, parse_document};
use toml_parser::{ErrorSink, ParseError, Source, Span};

use super::raw::RawConfig;

/// Below this many `[[unit]]` blocks the file is read whole.
const SLICE_FROM: usize = 64;
/// `[[unit]]` blocks deserialized together.
const SLICE: usize = 64;

/// `toml::from_str::<RawConfig>(text)`, with the memory of a small document.
pub(super) fn read(text: &str) -> Result<RawConfig, toml::de::Error> {
    match blocks(text) {
        Some(units) if units.len() >= SLICE_FROM => {
            read_in_slices(text, &units).or_else(|_| toml::from_str(text))
        }
        _ => toml::from_str(text),
    }
}

fn read_in_slices(text: &str, units: &[Range<usize>]) -> Result<RawConfig, toml::de::Error> {
    let mut rest = blanked(text, |keep| {
        let mut last = 0;
        for u in units {
            keep(last..u.start);
            last = u.end;
        }
        keep(last..text.len());
    });
    // `unit` also defined outside the blocks (`unit = []`): let the whole document say what is
    // wrong with that.
    if toml::from_str::<UnitKey>(&rest)?.unit.is_some() {
        return Err(serde::de::Error::custom(
            "unit defined outside [[unit]] blocks",
        ));
    }
    let mut config: RawConfig = toml::from_str(&rest)?;
    rest.clear();
    rest.shrink_to_fit();
    for slice in units.chunks(SLICE) {
        let part = blanked(text, |keep| slice.iter().for_each(|u| keep(u.clone())));
        let part: RawConfig = toml::from_str(&part)?;
        config.units.extend(part.units);
    }
    Ok(config)
}

/// Whether the root table has a `unit` key, whatever its value.
#[derive(serde::Deserialize)]
struct UnitKey {
    unit: Option<serde::de::IgnoredAny>,
}

/// A copy of `text` with only the ranges `ranges` hands to its callback kept; every other
/// byte is a space, so positions are unchanged.
fn blanked(text: &str, ranges: impl FnOnce(&mut dyn FnMut(Range<usize>))) -> String {
    let mut out = vec![b' '; text.len()];
    ranges(&mut |r: Range<usize>| out[r.clone()].copy_from_slice(&text.as_bytes()[r]));
    // Every range starts at a header's `[` or ends where one starts (or at the end), all
    // ASCII boundaries, so the bytes are UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// The byte ranges of the `[[unit]]` blocks: from a `[[unit]]` header up to the next header
/// that is neither `[unit.…]` nor `[[unit.…]]`. `None` if the file does not parse or holds
/// anything this reading does not expect.
fn blocks(text: &str) -> Option<Vec<Range<usize>>> {
    let tokens = Source::new(text).lex().into_vec();
    let mut headers = Headers::default();
    let mut errors: Vec<ParseError> = Vec::new();
    parse_document(&tokens, &mut headers, &mut errors);
    drop(tokens);
    if !errors.is_empty() || headers.odd {
        return None;
    }
    let mut units: Vec<Range<usize>> = Vec::new();
    let mut open: Option<usize> = None;
    for h in &headers.found {
        let unit = h.first_key(text) == Some("unit");
        match (h.array, h.keys, unit) {
            (true, 1, true) => {
                if let Some(start) = open.replace(h.start) {
                    units.push(start..h.start);
                }
            }
            // A sub-table of the last unit: part of its block.
            (_, k, true) if k > 1 && open.is_some() => {}
            // `[unit]`, or `[unit.x]` after another section: unusual, read whole.
            (_, _, true) => return None,
            _ => {
                if let Some(start) = open.take() {
                    units.push(start..h.start);
                }
            }
        }
    }
    if let Some(start) = open {
        units.push(start..text.len());
    }
    Some(units)
}

struct Header {
    start: usize,
    array: bool,
    keys: usize,
    first: Option<Span>,
}

impl Header {
    fn first_key<'t>(&self, text: &'t str) -> Option<&'t str> {
        self.first.and_then(|s| text.get(s.start()..s.end()))
    }
}

/// Collects the table headers from toml's parser events.
#[derive(Default)]
struct Headers {
    found: Vec<Header>,
    open: Option<Header>,
    /// A quoted key in a header: compared as written it could hide `unit`.
    odd: bool,
}

impl Headers {
    fn open(&mut self, span: Span, array: bool) {
        self.open = Some(Header {
            start: span.start(),
            array,
            keys: 0,
            first: None,
        });
    }

    fn close(&mut self) {
        if let Some(h) = self.open.take() {
            self.found.push(h);
        }
    }
}

impl EventReceiver for Headers {
    fn std_table_open(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.open(span, false);
    }

    fn std_table_close(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.close();
    }

    fn array_table_open(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.open(span, true);
    }

    fn array_table_close(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.close();
    }

    fn simple_key(
        &mut self,
        span: Span,
        kind: Option<toml_parser::decoder::Encoding>,
        _error: &mut dyn ErrorSink,
    ) {
        if let Some(h) = &mut self.open {
            h.keys += 1;
            if h.first.is_none() {
                h.first = Some(span);
            }
            if kind.is_some() {
                self.odd = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn many(n: usize, between: &str) -> String {
        let mut s = String::from("# head\n[daemon]\ninterval = \"5s\"\n\n");
        for i in 0..n {
            s.push_str(&format!("[[unit]]\nname = \"u{i}\"  # unit {i}\n"));
            if i % 7 == 0 {
                s.push_str("depends_on = [\n  \"u0\",\n]\n[unit.probe]\ntcp = \"127.0.0.1:80\"\n");
            }
            if i == n / 2 {
                s.push_str(between);
            }
        }
        s.push_str("[restart]\nmax_attempts = 4\n");
        s
    }

    fn same(text: &str) {
        let sliced = read(text)
            .map(|c| format!("{c:?}"))
            .map_err(|e| e.to_string());
        let whole = toml::from_str::<RawConfig>(text)
            .map(|c| format!("{c:?}"))
            .map_err(|e| e.to_string());
        assert_eq!(sliced, whole);
    }

    #[test]
    fn unit_blocks_span_their_sub_tables_and_stop_at_other_sections() {
        let text = "[daemon]\n[[unit]]\nname = \"a\"\n[unit.probe]\ntcp = \"h:1\"\n[email]\nto = []\n[[unit]]\nname = \"b\"\n";
        let units = blocks(text).unwrap();
        let cut: Vec<&str> = units.iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(
            cut,
            [
                "[[unit]]\nname = \"a\"\n[unit.probe]\ntcp = \"h:1\"\n",
                "[[unit]]\nname = \"b\"\n"
            ]
        );
    }

    #[test]
    fn reading_in_slices_gives_what_reading_whole_gives() {
        same(&many(
            300,
            "[[window]]\nname = \"w\"\nstart = \"07:00\"\nend = \"08:00\"\n",
        ));
        same(&many(80, ""));
        // Errors inside a slice and outside them: the same message, the same position.
        same(&many(200, "[[unit]]\nname = \"x\"\nmax_atempts = 3\n"));
        same(&many(200, "[daemon]\nbus = \"session\"\n"));
        same(&many(200, "unit = 3\n"));
        same(&many(200, "[unit]\nname = \"odd\"\n"));
        same(&many(200, "[[\"unit\"]]\nname = \"quoted\"\n"));
        same(&many(200, "[[unit]\n"));
        same(&format!("unit = []\n{}", many(100, "")));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Whatever is spliced between the unit blocks (other sections, stray keys, broken
        /// headers), reading in slices agrees with reading the whole document.
        #[test]
        fn any_interleaving_reads_the_same(
            spliced in proptest::collection::vec(
                (0usize..120, proptest::sample::select(vec![
                    "[[window]]\nname = \"w\"\nstart = \"07:00\"\nend = \"08:00\"\n",
                    "[email]\nto = [\"a@b\"]\n",
                    "[unit.probe]\ntcp = \"h:1\"\n",
                    "[[unit.probe]]\n",
                    "unit = 1\n",
                    "[daemon]\n",
                    "[unit]\n",
                    "x = 1\n",
                    "[[unit]]\nname = \"extra\"\n",
                    "name = \"again\"\n",
                    "# [[unit]]\n",
                    "s = \"\"\"\n[[unit]]\n\"\"\"\n",
                    "[[unit\n",
                ])),
                0..4,
            ),
        ) {
            let mut text = String::new();
            for i in 0..120 {
                for (at, piece) in &spliced {
                    if *at == i {
                        text.push_str(piece);
                    }
                }
                text.push_str(&format!("[[unit]]\nname = \"u{i}\"\n"));
            }
            same(&text);
        }
    }
}
