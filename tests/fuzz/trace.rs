//! What a case did, kept only when a case is replayed (`UNITWARDEN_FUZZ_REPLAY`): formatting
//! every input would cost more than the inputs themselves.

use std::cell::{Cell, RefCell};

use unitwarden::monitor::engine::Input;

/// Lines kept: the end of the story is the part that matters.
const KEEP: usize = 400;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

pub fn enable() {
    ON.with(|on| on.set(true));
}

pub fn note(line: impl FnOnce() -> String) {
    if ON.with(Cell::get) {
        let mut text = line();
        if text.len() > 2000 {
            let mut cut = 2000;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(" ...");
        }
        LINES.with(|l| {
            let mut l = l.borrow_mut();
            l.push(text);
            if l.len() > 2 * KEEP {
                l.drain(..KEEP);
            }
        });
    }
}

pub fn input(input: &Input) {
    note(|| format!("{input:?}"));
}

/// The last lines noted, oldest first.
pub fn take() -> Vec<String> {
    LINES.with(|l| {
        let mut l = l.borrow_mut();
        let skip = l.len().saturating_sub(KEEP);
        l.drain(..).skip(skip).collect()
    })
}
