//! Task-written text made safe and shaped for a pane: escaped (nothing a task or a model wrote can reach the
//! terminal as a control), cut to a bound, and wrapped to a width by display cells.
//!
//! Escaping is the CLI's own ([`crate::escape`], `cli/src/escape.rs`, compiled into this crate too): a control
//! character shows as `\u{1b}`, never acts.

use unicode_width::UnicodeWidthChar;

use crate::escape::visible;

/// Most bytes of one piece of task-written text kept for display (a description, a prompt, a tool result line).
pub const MAX_SHOWN_BYTES: usize = 4096;

/// One line of task-written text: escaped (newlines and tabs included) and cut to [`MAX_SHOWN_BYTES`].
pub fn one_line(text: &str) -> String {
    visible(cut(text, MAX_SHOWN_BYTES))
}

/// The first line of `text`, escaped and cut to `max_chars` characters (with `…` when cut).
pub fn first_line(text: &str, max_chars: usize) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let shown = visible(cut(line, MAX_SHOWN_BYTES));
    shorten(&shown, max_chars)
}

/// Multi-line text as escaped lines (a tab shown as four spaces), at most `max_lines` of them (the last ones).
pub fn lines(text: &str, max_lines: usize) -> Vec<String> {
    let all: Vec<&str> = text.split('\n').collect();
    let skip = all.len().saturating_sub(max_lines);
    all[skip..].iter().map(|l| visible(&l.replace('\t', "    "))).collect()
}

/// `text` cut to at most `max` bytes on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// At most `max_chars` characters of `text`, the last one `…` when something was cut.
pub fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// Display cells `text` takes.
pub fn width(text: &str) -> usize {
    text.chars().map(|c| c.width().unwrap_or(0)).sum()
}

/// `text` (one escaped line) wrapped into rows of at most `width` cells, breaking after a space where one is
/// near, else anywhere. An empty line is one empty row.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut rows = Vec::new();
    let mut row = String::new();
    let mut row_width = 0;
    let mut last_space: Option<usize> = None;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if row_width + w > width {
            // Break at the last space if it leaves at least half the row; else break here.
            match last_space.filter(|at| *at * 2 >= row.len()) {
                Some(at) => {
                    let rest = row.split_off(at + 1);
                    rows.push(row.trim_end().to_owned());
                    row = rest;
                    row_width = self::width(&row);
                }
                None => {
                    rows.push(std::mem::take(&mut row));
                    row_width = 0;
                }
            }
            last_space = None;
        }
        if c == ' ' {
            last_space = Some(row.len());
        }
        row.push(c);
        row_width += w;
    }
    rows.push(row);
    rows
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn controls_are_shown_not_acted_on() {
        assert_eq!(one_line("a\u{1b}]2;pwned\u{7}\nb"), "a\\u{1b}]2;pwned\\u{7}\\u{a}b");
        assert_eq!(lines("x\ty\n\u{1b}[2J", 10), vec!["x    y".to_owned(), "\\u{1b}[2J".to_owned()]);
        assert_eq!(first_line("\n  first \u{202e}line\nsecond", 40), "first \\u{202e}line");
    }

    #[test]
    fn cuts_are_bounded_and_on_character_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(one_line(&"x".repeat(10_000)).len(), MAX_SHOWN_BYTES);
        assert_eq!(lines("1\n2\n3\n4", 2), vec!["3".to_owned(), "4".to_owned()]);
    }

    #[test]
    fn wrapping_breaks_at_spaces_and_counts_cells() {
        assert_eq!(wrap("the quick brown fox", 10), vec!["the quick", "brown fox"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("日本語です", 4), vec!["日本", "語で", "す"]);
        assert_eq!(wrap("", 5), vec![""]);
        assert!(wrap(&"word ".repeat(100), 7).iter().all(|r| width(r) <= 7));
    }
}
