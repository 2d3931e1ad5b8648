//! Task- and model-written text made safe to show outside a terminal the supervisor controls: in a status line, a
//! desktop notification, a speech command's argument. One line, bounded in characters, every control, bidi and
//! invisible format character shown as `\u{..}` so nothing in it can move a cursor, reorder text or hide.

/// `text` on one line (blanks runs kept, line breaks and tabs as spaces), at most `max_chars` characters (then `…`),
/// with control, bidi and format characters escaped.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 4) + 4);
    for (shown, c) in text.chars().enumerate() {
        if shown >= max_chars {
            out.push('…');
            return out;
        }
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if hidden(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Characters that must not reach a terminal or a notification as themselves.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c as u32,
            0x00AD | 0x061C | 0x180E | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0xFEFF
            | 0xFFF9..=0xFFFB | 0xE0000..=0xE007F)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_bidi_and_length_are_tamed() {
        assert_eq!(one_line("rm -rf /\n\tok", 100), "rm -rf /  ok");
        assert_eq!(one_line("a\u{1b}]2;pwned\u{7}b", 100), "a\\u{1b}]2;pwned\\u{7}b");
        assert_eq!(one_line("x\u{202e}y\u{200b}", 100), "x\\u{202e}y\\u{200b}");
        assert_eq!(one_line("abcdef", 3), "abc…");
        assert_eq!(one_line("ééé", 3), "ééé");
    }
}
