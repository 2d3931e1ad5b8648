//! Text that came from a model or a task, made visible and harmless before it reaches a terminal.
//!
//! A model chooses tool names, model names, descriptions, summaries, commit messages and file contents; a task's
//! patch carries whatever bytes it wrote. Printed raw, an escape sequence in any of them can move the cursor, clear
//! the screen, retitle the window, write to the clipboard (OSC 52) or hide a line; a bidi override can make a line
//! read differently from what it is. Every such character is shown as a Rust-style escape (`\u{1b}`) instead:
//!
//! - C0 controls U+0000–U+001F (but `\n` and `\t` in multi-line text, [`visible_lines`]), DEL U+007F and the C1
//!   controls U+0080–U+009F (a terminal may read U+009B as CSI);
//! - the bidi embeddings and overrides U+202A–U+202E and isolates U+2066–U+2069, the Arabic letter mark U+061C;
//! - the invisible U+200B–U+200F (zero-width space, joiners, LRM/RLM), the line and paragraph separators
//!   U+2028–U+2029 and the byte-order mark U+FEFF;
//! - every other format (Cf) or default-ignorable code point, which a terminal draws as nothing: the soft hyphen
//!   U+00AD, U+034F, U+0600–U+0605, U+06DD, U+070F, U+0890–U+0891, U+08E2, the Hangul fillers U+115F–U+1160,
//!   U+3164, U+FFA0, U+17B4–U+17B5, the Mongolian selectors and vowel separator U+180B–U+180F, word joiner and
//!   invisible operators U+2060–U+206F, variation selectors U+FE00–U+FE0F, U+FFF0–U+FFFB, U+110BD, U+110CD,
//!   U+13430–U+1343F, U+1BCA0–U+1BCA3, U+1D173–U+1D17A and the tags and supplementary selectors U+E0000–U+E0FFF
//!   (so an emoji's U+FE0F or U+200D shows as an escape too).
//!
//! `--json` output goes through [`json_safe`]: the same JSON value, with those characters as `\uXXXX` escapes
//! (a UTF-16 surrogate pair above U+FFFF).
//!
//! Everything else is printed as it is (other scripts, emoji). The escaped form cannot contain a character it
//! escapes, so escaping twice only adds backslashes' worth of text and never lets one through.

use std::fmt::Write as _;

/// Whether `c` is shown escaped. `\n` and `\t` are decided by the caller.
fn hidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}'
        | '\u{feff}'
        | '\u{ad}'
        | '\u{34f}'
        | '\u{600}'..='\u{605}'
        | '\u{6dd}'
        | '\u{70f}'
        | '\u{890}'..='\u{891}'
        | '\u{8e2}'
        | '\u{115f}'..='\u{1160}'
        | '\u{17b4}'..='\u{17b5}'
        | '\u{180b}'..='\u{180f}'
        | '\u{2060}'..='\u{206f}'
        | '\u{3164}'
        | '\u{fe00}'..='\u{fe0f}'
        | '\u{ffa0}'
        | '\u{fff0}'..='\u{fffb}'
        | '\u{110bd}'
        | '\u{110cd}'
        | '\u{13430}'..='\u{1343f}'
        | '\u{1bca0}'..='\u{1bca3}'
        | '\u{1d173}'..='\u{1d17a}'
        | '\u{e0000}'..='\u{e0fff}')
}

fn escape(text: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if hidden(c) && !(keep_lines && (c == '\n' || c == '\t')) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// One-line text (a name, a host, a reason on one line of a table): every character above escaped, newline and
/// tab included.
pub fn visible(text: &str) -> String {
    escape(text, false)
}

/// Multi-line text (a description, a diff, a log body): every character above escaped but `\n` and `\t`.
pub fn visible_lines(text: &str) -> String {
    escape(text, true)
}

/// JSON text (`--json`) with the characters above that are not C0 written as `\uXXXX` escapes: the same document
/// to a JSON reader, harmless on a terminal. serde already escapes C0 controls inside strings; a raw C0 left in
/// the text is the layout's own newline, and the others only occur inside strings, where an escape means the same.
pub fn json_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if hidden(c) && c > '\u{1f}' {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{:04x}", unit);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn terminal_controls_are_shown_escaped() {
        assert_eq!(visible("evil\u{1b}[2J\u{1b}]0;title\u{7}"), "evil\\u{1b}[2J\\u{1b}]0;title\\u{7}");
        assert_eq!(visible("a\u{9b}31mred\u{7f}\u{0}"), "a\\u{9b}31mred\\u{7f}\\u{0}");
        assert_eq!(visible("osc52\u{1b}]52;c;ZXZpbA==\u{1b}\\"), "osc52\\u{1b}]52;c;ZXZpbA==\\u{1b}\\");
        assert_eq!(visible("cr\roverwrite"), "cr\\u{d}overwrite");
    }

    #[test]
    fn newlines_and_tabs_are_kept_only_in_multi_line_text() {
        assert_eq!(visible("two\nlines\tand tab"), "two\\u{a}lines\\u{9}and tab");
        assert_eq!(visible_lines("two\nlines\tand tab\r\n"), "two\nlines\tand tab\\u{d}\n");
        assert_eq!(visible_lines("+added \u{1b}[8mhidden\n"), "+added \\u{1b}[8mhidden\n");
    }

    #[test]
    fn bidi_overrides_and_invisible_characters_are_shown_escaped() {
        assert_eq!(
            visible("admin\u{202e}txt.exe\u{202c} \u{2066}x\u{2069} \u{200b}\u{200d}\u{feff}\u{2028}\u{61c}"),
            "admin\\u{202e}txt.exe\\u{202c} \\u{2066}x\\u{2069} \\u{200b}\\u{200d}\\u{feff}\\u{2028}\\u{61c}"
        );
    }

    #[test]
    fn format_and_default_ignorable_characters_are_shown_escaped() {
        for (c, shown) in [
            ('\u{2060}', "\\u{2060}"),
            ('\u{2064}', "\\u{2064}"),
            ('\u{206f}', "\\u{206f}"),
            ('\u{e0041}', "\\u{e0041}"),
            ('\u{e007f}', "\\u{e007f}"),
            ('\u{e0001}', "\\u{e0001}"),
            ('\u{fe0f}', "\\u{fe0f}"),
            ('\u{fe00}', "\\u{fe00}"),
            ('\u{ad}', "\\u{ad}"),
            ('\u{180e}', "\\u{180e}"),
            ('\u{3164}', "\\u{3164}"),
            ('\u{e0100}', "\\u{e0100}"),
        ] {
            assert_eq!(visible(&format!("a{c}b")), format!("a{shown}b"));
            assert_eq!(visible_lines(&format!("a{c}b")), format!("a{shown}b"));
        }
        // The tag text "ADMIN" hidden after a word.
        assert_eq!(visible("ok\u{e0041}\u{e0044}"), "ok\\u{e0041}\\u{e0044}");
    }

    #[test]
    fn json_escapes_hidden_characters_above_the_bmp_as_surrogate_pairs() {
        let value = serde_json::json!({ "t": "x\u{2060}\u{e0041}\u{fe0f}y" });
        let safe = json_safe(&serde_json::to_string(&value).unwrap());
        assert_eq!(safe, "{\"t\":\"x\\u2060\\udb40\\udc41\\ufe0fy\"}");
        assert!(!safe.chars().any(hidden));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&safe).unwrap(), value);
    }

    #[test]
    fn json_keeps_its_value_and_loses_its_raw_controls() {
        let value = serde_json::json!({ "name": "a\u{1b}[2J\u{9b}\u{202e}\u{7f}b\n" });
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let safe = json_safe(&pretty);
        assert_eq!(safe, "{\n  \"name\": \"a\\u001b[2J\\u009b\\u202e\\u007fb\\n\"\n}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&safe).unwrap(), value);
    }

    #[test]
    fn other_text_is_left_alone() {
        let text = "héllo wörld — 日本語 🦀 ‐ \u{a0}nbsp \u{2010}";
        assert_eq!(visible(text), text);
        assert_eq!(visible_lines(text), text);
    }

    #[test]
    fn every_hidden_character_is_escaped_and_the_result_has_none() {
        for c in (0..=0x10ffff).filter_map(char::from_u32).filter(|c| hidden(*c)) {
            let shown = visible(&c.to_string());
            assert_eq!(shown, format!("\\u{{{:x}}}", u32::from(c)));
            assert!(!shown.chars().any(hidden));
        }
    }
}
