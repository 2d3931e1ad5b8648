//! A Bash command line taken apart with a real shell parser (tree-sitter-bash, as Codex does), so that a permission
//! rule judges every simple command it runs: those joined by `&&`, `||`, `;` and `|`, those in subshells, `$(…)`,
//! backticks, process substitutions and function bodies, and what `bash -c`, `sh -c`, `eval` and wrappers such as
//! `env`, `sudo`, `nohup` or `timeout` run. Redirection targets are collected as paths.
//!
//! What the parser cannot read (a syntax error, a command whose name is computed at run time, a `bash -c` of a
//! computed string) is reported in [`Parsed::unreadable`]; the policy asks about it instead of guessing.

use tree_sitter::{Node, Parser};

/// Longest command line parsed (a longer one is unreadable).
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// How deep `bash -c "…"` / `eval` strings are parsed again.
const MAX_NESTING: usize = 4;

/// Most simple commands kept from one command line (more: unreadable).
const MAX_COMMANDS: usize = 1024;

/// Programs that run their arguments as a command line (`env FOO=1 rm …` runs `rm …`).
const WRAPPERS: &[&str] = &["env", "sudo", "nohup", "nice", "time", "command", "exec", "timeout", "stdbuf", "xargs"];

/// Shells whose `-c` argument is a command line.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh"];

/// One simple command: its words, with the forms under which rules may name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleCommand {
    /// The words (literal text where the parser could read it; a computed argument keeps its source text).
    pub words: Vec<String>,
    /// The command line as rules see it (words joined by one space), then the same with the program's basename
    /// (`/usr/bin/rm` → `rm`) and with wrappers taken off (`env X=1 rm -rf /` → `rm -rf /`).
    pub lines: Vec<String>,
    /// Under a wrapper, every later start of the words (`sudo -u x rm -rf /` → `x rm -rf /`, `rm -rf /`, …): what
    /// the wrapper may run, for deny and ask rules only (an allow rule must name one of `lines`).
    pub suspects: Vec<String>,
}

impl SimpleCommand {
    /// The command as written (words joined by one space).
    pub fn line(&self) -> &str {
        self.lines.first().map(String::as_str).unwrap_or("")
    }
}

/// A command line, taken apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Every simple command, in source order (nested ones included).
    pub commands: Vec<SimpleCommand>,
    /// Every pipeline: for each stage, the index in `commands` of its simple command (`None` for a compound stage).
    pub pipelines: Vec<Vec<Option<usize>>>,
    /// Targets of output redirections (`> f`, `>> f`, `&> f`, `>| f`), literal where readable.
    pub redirects: Vec<String>,
    /// Sources of input redirections (`< f`), read only.
    pub inputs: Vec<String>,
    /// Names of functions whose body calls the function itself (`:(){ :|:& };:`).
    pub recursive_functions: Vec<String>,
    /// Why (part of) the command line cannot be read, if it cannot.
    pub unreadable: Option<String>,
}

/// Take `text` apart. Never fails: what cannot be read is said in [`Parsed::unreadable`].
pub fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    parse_into(text, 0, &mut parsed);
    parsed
}

fn parse_into(text: &str, depth: usize, out: &mut Parsed) {
    if text.len() > MAX_COMMAND_BYTES {
        out.mark_unreadable(format!("the command line is longer than {MAX_COMMAND_BYTES} bytes"));
        return;
    }
    if text.contains('\0') {
        out.mark_unreadable("the command line contains a NUL byte".into());
        return;
    }
    let mut parser = Parser::new();
    if parser.set_language(&tree_sitter_bash::LANGUAGE.into()).is_err() {
        out.mark_unreadable("the shell parser could not be loaded".into());
        return;
    }
    let Some(tree) = parser.parse(text, None) else {
        out.mark_unreadable("the shell parser gave up on the command line".into());
        return;
    };
    let root = tree.root_node();
    if root.has_error() {
        out.mark_unreadable("the shell parser cannot read the command line (a syntax error)".into());
    }
    Walker { src: text.as_bytes(), depth, out }.walk(root);
}

impl Parsed {
    fn mark_unreadable(&mut self, why: String) {
        if self.unreadable.is_none() {
            self.unreadable = Some(why);
        }
    }
}

struct Walker<'a, 'o> {
    src: &'a [u8],
    depth: usize,
    out: &'o mut Parsed,
}

impl Walker<'_, '_> {
    fn text(&self, node: Node<'_>) -> String {
        node.utf8_text(self.src).map(str::to_owned).unwrap_or_default()
    }

    fn walk(&mut self, node: Node<'_>) {
        if node.is_error() || node.is_missing() {
            self.out.mark_unreadable("the shell parser cannot read part of the command line".into());
        }
        match node.kind() {
            "command" => {
                self.command(node);
                self.children(node);
            }
            "file_redirect" => {
                self.redirect(node);
                self.children(node);
            }
            "pipeline" => {
                let mut stages = Vec::new();
                let mut cursor = node.walk();
                let children: Vec<Node<'_>> = node.named_children(&mut cursor).collect();
                for child in children {
                    if child.kind() == "comment" {
                        continue;
                    }
                    let simple = match child.kind() {
                        "command" => Some(child),
                        "redirected_statement" => child.child_by_field_name("body").filter(|b| b.kind() == "command"),
                        _ => None,
                    };
                    let index = self.out.commands.len();
                    self.walk(child);
                    stages.push(simple.filter(|_| self.out.commands.len() > index).map(|_| index));
                }
                self.out.pipelines.push(stages);
            }
            "function_definition" => {
                let name = node.child_by_field_name("name").map(|n| self.text(n)).unwrap_or_default();
                let before = self.out.commands.len();
                self.children(node);
                let calls_itself =
                    self.out.commands[before..].iter().any(|c| c.words.first().is_some_and(|w| *w == name));
                if calls_itself && !name.is_empty() {
                    self.out.recursive_functions.push(name);
                }
            }
            _ => self.children(node),
        }
    }

    fn children(&mut self, node: Node<'_>) {
        let mut cursor = node.walk();
        let children: Vec<Node<'_>> = node.named_children(&mut cursor).collect();
        for child in children {
            self.walk(child);
        }
    }

    fn redirect(&mut self, node: Node<'_>) {
        let mut cursor = node.walk();
        let operator = node.children(&mut cursor).find(|c| !c.is_named()).map(|c| self.text(c)).unwrap_or_default();
        let mut cursor = node.walk();
        for dest in node.children_by_field_name("destination", &mut cursor) {
            let target = literal(dest, self.src).unwrap_or_else(|| self.text(dest));
            // `2>&1`, `>&-`: a file descriptor, not a path.
            let is_fd = (operator.ends_with('&') || operator == ">&" || operator == "<&")
                && (target == "-" || target.chars().all(|c| c.is_ascii_digit()));
            if is_fd || target.is_empty() {
                continue;
            }
            if operator == "<" {
                self.out.inputs.push(target);
            } else {
                self.out.redirects.push(target);
            }
        }
    }

    fn command(&mut self, node: Node<'_>) {
        if self.out.commands.len() >= MAX_COMMANDS {
            self.out.mark_unreadable(format!("the command line has more than {MAX_COMMANDS} simple commands"));
            return;
        }
        let Some(name) = node.child_by_field_name("name") else { return };
        let Some(program) = literal(name, self.src).or_else(|| computed_folder(&self.text(name))) else {
            let shown = self.text(name);
            self.out.mark_unreadable(format!("the name of the command `{shown}` is computed when it runs"));
            return;
        };
        let mut words = vec![program];
        let mut cursor = node.walk();
        for arg in node.children_by_field_name("argument", &mut cursor) {
            words.push(literal(arg, self.src).unwrap_or_else(|| self.text(arg)));
        }
        let mut cursor = node.walk();
        let literal_args: Vec<Option<String>> =
            node.children_by_field_name("argument", &mut cursor).map(|a| literal(a, self.src)).collect();
        self.nested(&words, &literal_args);
        let lines = forms(&words);
        let suspects = suspects(&words, &lines);
        self.out.commands.push(SimpleCommand { words, lines, suspects });
    }

    /// `bash -c STRING` and `eval …`: the string is a command line of its own.
    fn nested(&mut self, words: &[String], literal_args: &[Option<String>]) {
        let program = basename(&words[0]);
        let inner: Option<Option<String>> = if SHELLS.contains(&program) {
            literal_args
                .iter()
                .position(|a| a.as_deref() == Some("-c"))
                .map(|i| literal_args.get(i + 1).cloned().flatten())
        } else if program == "eval" {
            Some(literal_args.iter().cloned().collect::<Option<Vec<String>>>().map(|a| a.join(" ")))
        } else {
            None
        };
        match inner {
            None => {}
            Some(None) => self.out.mark_unreadable(format!("`{program}` runs a command line computed when it runs")),
            Some(Some(_)) if self.depth >= MAX_NESTING => {
                self.out.mark_unreadable(format!("command lines nested more than {MAX_NESTING} deep"))
            }
            Some(Some(text)) => parse_into(&text, self.depth + 1, self.out),
        }
    }
}

/// The forms of a command rules are matched against: as written, with the program's basename, without wrappers.
fn forms(words: &[String]) -> Vec<String> {
    let mut lines = vec![words.join(" ")];
    let mut push = |ws: &[String]| {
        let mut ws = ws.to_vec();
        if let Some(first) = ws.first_mut() {
            *first = basename(first).to_owned();
        }
        let line = ws.join(" ");
        if !line.is_empty() && !lines.contains(&line) {
            lines.push(line);
        }
    };
    push(words);
    let mut rest = words;
    for _ in 0..8 {
        let Some(program) = rest.first().map(|w| basename(w)) else { break };
        if !WRAPPERS.contains(&program) {
            break;
        }
        let mut i = 1;
        // Options, `VAR=value`, and `timeout`'s duration.
        while let Some(w) = rest.get(i) {
            let is_duration = program == "timeout" && w.chars().next().is_some_and(|c| c.is_ascii_digit());
            if w.starts_with('-') || (w.contains('=') && !w.starts_with('=')) || is_duration {
                i += 1;
            } else {
                break;
            }
        }
        rest = &rest[i.min(rest.len())..];
        if rest.is_empty() {
            break;
        }
        push(rest);
    }
    lines
}

/// Every later start of the words of a wrapped command (bounded), with the program's basename.
fn suspects(words: &[String], lines: &[String]) -> Vec<String> {
    if !words.first().is_some_and(|w| WRAPPERS.contains(&basename(w))) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for start in 1..words.len().min(32) {
        let mut ws = words[start..].to_vec();
        ws[0] = basename(&ws[0]).to_owned();
        let line = ws.join(" ");
        if !lines.contains(&line) && !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

/// A program named by a computed folder and a literal file name (`"$TMPDIR/attack"`, `$HOME/bin/tool`): rules
/// name programs by their basename, which is known. The name without quotes, or `None` when the file name itself is
/// computed.
fn computed_folder(text: &str) -> Option<String> {
    let unquoted = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    let (_, file) = unquoted.rsplit_once('/')?;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+');
    (!file.is_empty() && file.chars().all(plain) && !unquoted.contains(['`', '\'', '(', ' ']))
        .then(|| unquoted.to_owned())
}

/// The last path component of a program name.
pub fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// A word's value when the parser can know it without running anything.
fn literal(node: Node<'_>, src: &[u8]) -> Option<String> {
    let text = node.utf8_text(src).ok()?;
    match node.kind() {
        "word" | "number" => Some(unescape(text)),
        "command_name" => {
            let mut cursor = node.walk();
            let children: Vec<Node<'_>> = node.named_children(&mut cursor).collect();
            match children.as_slice() {
                [only] => literal(*only, src),
                _ => None,
            }
        }
        "raw_string" => Some(text.trim_start_matches('\'').trim_end_matches('\'').to_owned()),
        "string" => {
            let mut cursor = node.walk();
            let mut value = String::new();
            for child in node.named_children(&mut cursor) {
                if child.kind() != "string_content" {
                    return None;
                }
                value.push_str(&unescape_double(child.utf8_text(src).ok()?));
            }
            Some(value)
        }
        "concatenation" => {
            let mut cursor = node.walk();
            let mut value = String::new();
            for child in node.named_children(&mut cursor) {
                value.push_str(&literal(child, src)?);
            }
            Some(value)
        }
        _ => None,
    }
}

/// An unquoted word's value: a backslash quotes the next character.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next().filter(|n| *n != '\n') {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Inside double quotes a backslash quotes only `$`, `` ` ``, `"`, `\` and a newline.
fn unescape_double(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek().is_some_and(|n| matches!(n, '$' | '`' | '"' | '\\' | '\n')) {
            if let Some(next) = chars.next().filter(|n| *n != '\n') {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[path = "shell_tests.rs"]
mod tests;
