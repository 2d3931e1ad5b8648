//! How a command line or path is shown in a prompt or a reason, so that nothing in it can hide (red-team M2): runs of
//! blanks (spaces, tabs) are shown by their length, and a text too long for the prompt shows its head AND its tail
//! with the number of bytes left out between them. `task approve --always` is refused for a text not shown in full.

/// Longest text shown whole in a prompt or a reason (after blanks are compacted).
pub const MAX_SHOWN: usize = 2048;

/// Runs of blanks longer than this are shown as `⟨N blanks⟩`.
const LONGEST_RUN: usize = 3;

/// `text` as shown in a prompt.
pub fn shown(text: &str) -> String {
    let compact = compacted(text);
    if compact.len() <= MAX_SHOWN {
        return compact;
    }
    let half = MAX_SHOWN / 2;
    let mut head = half;
    while !compact.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = compact.len() - half;
    while !compact.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} ⟨… {} bytes not shown; the command is {} bytes …⟩ {}",
        &compact[..head],
        tail - head,
        text.len(),
        &compact[tail..]
    )
}

/// Whether a prompt shows `text` in full (every character of it, blanks by their count).
pub fn shown_in_full(text: &str) -> bool {
    compacted(text).len() <= MAX_SHOWN
}

/// Runs of more than [`LONGEST_RUN`] blanks, and every tab run, replaced by `⟨N blanks⟩`.
fn compacted(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4 * MAX_SHOWN));
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ' ' && c != '\t' {
            out.push(c);
            continue;
        }
        let mut run = String::from(c);
        while let Some(&n) = chars.peek().filter(|n| **n == ' ' || **n == '\t') {
            run.push(n);
            chars.next();
        }
        if run.len() > LONGEST_RUN || run.contains('\t') {
            out.push_str(&format!("⟨{} blanks⟩", run.len()));
        } else {
            out.push_str(&run);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_run_of_blanks_is_shown_by_its_length_and_the_tail_is_never_hidden() {
        let hidden = format!("echo DEPLOY ok{}; touch hidden-tail", " ".repeat(3000));
        let prompt = shown(&hidden);
        assert!(prompt.contains("⟨3000 blanks⟩; touch hidden-tail"), "{prompt}");
        assert!(shown_in_full(&hidden), "compacted, it fits");
        assert_eq!(shown("git status"), "git status");
        assert_eq!(shown("a\tb  c"), "a⟨1 blanks⟩b  c");
        // Too long even compacted: head and tail both shown, and --always is refused.
        let long = format!("echo {}; touch hidden-tail", "x".repeat(5000));
        let prompt = shown(&long);
        assert!(prompt.starts_with("echo xxx") && prompt.ends_with("; touch hidden-tail"), "{prompt}");
        assert!(prompt.contains("bytes not shown"), "{prompt}");
        assert!(prompt.len() < MAX_SHOWN + 100);
        assert!(!shown_in_full(&long));
        let wide = format!("{}{}", "é".repeat(3000), "ü".repeat(3000));
        assert!(shown(&wide).ends_with('ü'), "cut at character boundaries");
    }
}
