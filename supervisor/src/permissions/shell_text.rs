//! Text-level readings of a command line that come before or instead of the parser: line continuations joined,
//! `$'…'` decoded, brace expansion (first level), and a conservative raw reading of a line the parser cannot read
//! (split on `;`, `&`, `|`, newlines and parentheses) so that blocked-command rules still apply to it.

/// `\` + newline outside single quotes removed, as bash does before it splits words (`tou\<NL>ch` is `touch`).
pub fn join_continuations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut single, mut double) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if !single => match chars.next() {
                Some('\n') => {}
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '\'' if !double => {
                single = !single;
                out.push(c);
            }
            '"' if !single => {
                double = !double;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The value of an ANSI-C quoted string (`$'…'`, with its quotes).
pub fn ansi_c(text: &str) -> String {
    let inner = text.strip_prefix("$'").and_then(|t| t.strip_suffix('\'')).unwrap_or(text);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            out.push('\\');
            break;
        };
        let mut number = |radix: u32, max: usize, first: Option<char>| {
            let mut digits: String = first.into_iter().collect();
            while digits.len() < max && chars.peek().is_some_and(|d| d.is_digit(radix)) {
                digits.extend(chars.next());
            }
            u32::from_str_radix(&digits, radix).ok().and_then(char::from_u32)
        };
        let decoded = match e {
            'n' => Some('\n'),
            't' => Some('\t'),
            'r' => Some('\r'),
            'a' => Some('\x07'),
            'b' => Some('\x08'),
            'e' | 'E' => Some('\x1b'),
            'f' => Some('\x0c'),
            'v' => Some('\x0b'),
            '\\' | '\'' | '"' | '?' => Some(e),
            'x' => number(16, 2, None),
            'u' => number(16, 4, None),
            'U' => number(16, 8, None),
            '0'..='7' => number(8, 3, Some(e)),
            _ => None,
        };
        match decoded {
            Some(d) => out.push(d),
            None => {
                out.push('\\');
                out.push(e);
            }
        }
    }
    out
}

/// A word with its first `{a,b,…}` expanded (`{rm,-rf,/}` → `rm`, `-rf`, `/`; `x{1,2}y` → `x1y`, `x2y`); a word
/// without one is itself.
pub fn expand_braces(word: &str) -> Vec<String> {
    let bytes = word.as_bytes();
    let Some(open) = word.find('{') else { return vec![word.to_owned()] };
    let (mut depth, mut commas, mut close) = (0usize, Vec::new(), None);
    for (i, b) in bytes.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            b',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let Some(close) = close else { return vec![word.to_owned()] };
    if commas.is_empty() {
        return vec![word.to_owned()];
    }
    let (head, tail) = (&word[..open], &word[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(&commas);
    bounds.push(close);
    bounds.windows(2).take(64).map(|w| format!("{head}{}{tail}", &word[w[0] + 1..w[1]])).collect()
}

/// A line the parser cannot read, read conservatively: continuations joined, split into commands on `;`, `&`,
/// `|`, newlines, parentheses and backquotes, quotes dropped, braces expanded. Each command's words; the commands
/// in source order (one pipeline, so pipeline rules apply across them).
pub fn raw_commands(text: &str) -> Vec<Vec<String>> {
    let joined = join_continuations(text);
    let mut out = Vec::new();
    for segment in joined.split([';', '&', '|', '\n', '(', ')', '`']) {
        let mut words = Vec::new();
        for w in segment.split_whitespace() {
            let w = w.strip_prefix('$').filter(|r| r.starts_with('\'')).unwrap_or(w);
            let plain: String = w.chars().filter(|c| !matches!(c, '\'' | '"' | '\\')).collect();
            for e in expand_braces(&plain) {
                words.extend(e.split_whitespace().map(str::to_owned));
            }
        }
        // `{ cmd; }` groups: the brace is punctuation here.
        while words.first().is_some_and(|w| w == "{" || w == "}" || w == "!") {
            words.remove(0);
        }
        if !words.is_empty() && out.len() < 1024 {
            out.push(words);
        }
    }
    out
}
