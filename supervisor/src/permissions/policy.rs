//! The permission decision for one tool call, as a pure function of the rules, the saved answers, the mode and the
//! call: policy deny → user rules (saved answers first) → the mode. (Runtime limits, which need counts, are applied
//! by [`super::gate`] to what this allows.)
//!
//! A Bash command is judged by each simple command it runs ([`super::shell`]): one blocked simple command or path
//! refuses the whole line; one that asks makes the line ask; the line is allowed by rules only when every simple
//! command is. Read, Glob and Grep change nothing: they obey the path rules but not `permission-mode: ask`.

use std::path::PathBuf;

use super::paths::command_paths;
use super::pattern::{CommandPattern, PathContext, PathPattern, has_glob};
use super::settings::{BUILTIN_BLOCKED_COMMANDS, BUILTIN_BLOCKED_PATHS, Mode, Security};
use super::shell::{self, Parsed};

/// Longest command or path quoted in a prompt or a reason.
pub const MAX_QUOTED: usize = 2048;

/// What the rules say about one call, and which rule or setting said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run it.
    Allow {
        /// The rule or setting that allowed it.
        by: String,
    },
    /// Refuse it; nothing runs and the model is told `reason`.
    Deny {
        /// The rule or setting.
        by: String,
        /// What the model is told.
        reason: String,
    },
    /// Ask the user.
    Ask {
        /// The rule or setting that asks.
        by: String,
        /// The question, naming the tool and the exact command or path.
        prompt: String,
    },
}

/// A rule saved from an answer (`--always` / `--never`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    /// Its number (`permissions rm N`).
    pub id: i64,
    /// `--always` (true) or `--never`.
    pub allow: bool,
    /// A command line (exact) or, for path tools, a path.
    pub command: bool,
    /// The command line or path.
    pub pattern: String,
    /// For a path: saved from a write (Write, Edit), or from a read (Read, Glob, Grep). An `always` matches calls of
    /// its own kind only; a `never` saved from a read also refuses writes.
    pub write: bool,
}

/// The rules compiled for one task (paths resolve against its worktree).
#[derive(Debug, Clone)]
pub struct Rules {
    mode: Mode,
    builtin_shapes: bool,
    blocked_commands: Vec<CommandPattern>,
    /// With `true`: a built-in path, blocked for writes only (Write, Edit, redirections, the arguments of commands
    /// that change files); `ls /usr/bin` or `cat /proc/cpuinfo` still run, the sandbox bounding reads.
    blocked_paths: Vec<(PathPattern, bool)>,
    allowed_commands: Vec<CommandPattern>,
    ask_commands: Vec<CommandPattern>,
    allowed_paths: Vec<PathPattern>,
    ask_paths: Vec<PathPattern>,
    saved: Vec<(SavedRule, Option<PathPattern>)>,
    ctx: PathContext,
}

/// What a call touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A Bash command line.
    Command(String),
    /// A path a tool writes (`write`) or reads.
    Path {
        /// As the model gave it.
        path: String,
        /// Write or Edit.
        write: bool,
    },
    /// A tool the permission layers do not guard (Commit, Lock, …) or a call without its argument.
    Unguarded,
}

/// The subject of a call of `tool` with `input`.
pub fn subject(tool: &str, input: &serde_json::Value) -> Subject {
    let field = |k: &str| input.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    match tool {
        "Bash" => field("command").map(Subject::Command).unwrap_or(Subject::Unguarded),
        "Write" | "Edit" => {
            field("file_path").map(|path| Subject::Path { path, write: true }).unwrap_or(Subject::Unguarded)
        }
        "Read" => field("file_path").map(|path| Subject::Path { path, write: false }).unwrap_or(Subject::Unguarded),
        // Without a path they search the worktree. Glob is judged by its pattern taken from that folder.
        "Grep" => Subject::Path { path: field("path").unwrap_or_else(|| ".".into()), write: false },
        "Glob" => {
            let folder = field("path").filter(|p| !p.trim().is_empty()).unwrap_or_else(|| ".".into());
            match field("pattern") {
                Some(pattern) if pattern.starts_with('/') => Subject::Path { path: pattern, write: false },
                Some(pattern) => {
                    Subject::Path { path: format!("{}/{pattern}", folder.trim_end_matches('/')), write: false }
                }
                None => Subject::Path { path: folder, write: false },
            }
        }
        // Bookkeeping and text the worker already holds: they touch no file and run no command, so they never ask.
        "TodoWrite" | "Skill" | "Task" | "TaskResult" | "Learn" => Subject::Unguarded,
        _ => Subject::Unguarded,
    }
}

fn quoted(text: &str) -> String {
    super::display::shown(text)
}

impl Rules {
    /// Compile the settings and saved rules for a task whose paths start at `ctx.workdir`. Patterns were checked
    /// when the file was read; one that fails here (impossible) is left out.
    pub fn new(security: &Security, saved: &[SavedRule], ctx: PathContext) -> Rules {
        let commands = |list: &[String]| list.iter().filter_map(|p| CommandPattern::new(p)).collect::<Vec<_>>();
        let paths = |list: &[String]| list.iter().filter_map(|p| PathPattern::new(p, &ctx).ok()).collect::<Vec<_>>();
        let builtin = security.policy.builtin_rules;
        let mut blocked_commands = commands(&security.policy.blocked_commands);
        let mut blocked_paths: Vec<(PathPattern, bool)> =
            paths(&security.policy.blocked_paths).into_iter().map(|p| (p, false)).collect();
        if builtin {
            blocked_commands.extend(BUILTIN_BLOCKED_COMMANDS.iter().filter_map(|p| CommandPattern::new(p)));
            blocked_paths
                .extend(BUILTIN_BLOCKED_PATHS.iter().filter_map(|p| PathPattern::new(p, &ctx).ok()).map(|p| (p, true)));
        }
        let saved = saved
            .iter()
            .map(|r| (r.clone(), if r.command { None } else { PathPattern::literal(&r.pattern, &ctx) }))
            .collect();
        Rules {
            mode: security.permission_mode,
            builtin_shapes: builtin,
            blocked_commands,
            blocked_paths,
            allowed_commands: commands(&security.permissions.allowed_commands),
            ask_commands: commands(&security.permissions.ask_commands),
            allowed_paths: paths(&security.permissions.allowed_paths),
            ask_paths: paths(&security.permissions.ask_paths),
            saved,
            ctx,
        }
    }

    /// Judge one call.
    pub fn judge(&self, tool: &str, subject: &Subject) -> Verdict {
        match subject {
            Subject::Unguarded => Verdict::Allow { by: format!("{tool} is not guarded by permission rules") },
            Subject::Command(line) => self.command(tool, line),
            Subject::Path { path, write } => self.path(tool, path, *write),
        }
    }

    /// Turn an ask into the mode's answer (deny mode refuses what would ask).
    fn ask(&self, tool: &str, what: &str, by: String) -> Verdict {
        if self.mode == Mode::Deny {
            let reason = format!(
                "{tool} `{}` was refused: it would need the user's approval ({by}), and permission-mode is deny",
                quoted(what)
            );
            return Verdict::Deny { by: format!("permission-mode deny ({by})"), reason };
        }
        let prompt = format!("Allow {tool}: `{}`? (asked by {by})", quoted(what));
        Verdict::Ask { by, prompt }
    }

    fn deny(tool: &str, what: &str, by: String, detail: &str) -> Verdict {
        let reason = format!("{tool} `{}` was refused by {by}{detail}; nothing ran", quoted(what));
        Verdict::Deny { by, reason }
    }

    fn saved_command(&self, line: &str) -> Option<&SavedRule> {
        // A --never beats an --always for the same line.
        let hits = self.saved.iter().filter(|(r, _)| r.command && same_line(&r.pattern, line));
        let mut best: Option<&SavedRule> = None;
        for (r, _) in hits {
            if best.is_none_or(|b| b.allow && !r.allow) {
                best = Some(r);
            }
        }
        best
    }

    fn command(&self, tool: &str, line: &str) -> Verdict {
        // A line too long to check is refused in every mode: no rule could be applied to it.
        if line.len() > shell::MAX_COMMAND_BYTES {
            let by = format!("the size cap ({} bytes)", shell::MAX_COMMAND_BYTES);
            return Rules::deny(tool, line, by, ": the command line is too long to check");
        }
        let parsed = shell::parse(line);
        // 1. Policy.
        if let Some((by, detail)) = self.blocked(&parsed) {
            return Rules::deny(tool, line, by, &detail);
        }
        // What the parser cannot read is still held against the policy, read conservatively as raw text.
        if parsed.unreadable.is_some()
            && let Some((by, detail)) = self.blocked(&raw_parsed(line))
        {
            return Rules::deny(tool, line, by, &format!("{detail}, read without the parser"));
        }
        // 2. User rules: an answer saved for this exact line first.
        if let Some(rule) = self.saved_command(line) {
            let by = format!("saved rule #{} ({})", rule.id, if rule.allow { "always" } else { "never" });
            return if rule.allow { Verdict::Allow { by } } else { Rules::deny(tool, line, by, "") };
        }
        // What the parser cannot read asks (deny mode: refused) — except in auto mode when the user has no ask rule
        // it could hide from: then, like anything no rule names, it runs, the sandbox being the boundary.
        let mut unread = None;
        if let Some(why) = &parsed.unreadable {
            let by = format!("the shell parser: {why}");
            if self.mode != Mode::Auto || !self.ask_commands.is_empty() || !self.ask_paths.is_empty() {
                return self.ask(tool, line, by);
            }
            unread = Some(by);
        }
        let mut states: Vec<State> = vec![State::Unnamed; parsed.commands.len()];
        for p in &self.allowed_commands {
            for i in p.covers(&parsed, false) {
                states[i] = states[i].max(State::Allowed(format!("allowed-commands {:?}", p.text)));
            }
        }
        for p in &self.ask_commands {
            for i in p.covers(&parsed, true) {
                states[i] = states[i].max(State::Ask(format!("ask-commands {:?}", p.text)));
            }
        }
        // Saved answers for one simple command beat the configured lists.
        for (i, c) in parsed.commands.iter().enumerate() {
            if let Some(rule) = self.saved_command(c.line()) {
                let by = format!("saved rule #{} ({})", rule.id, if rule.allow { "always" } else { "never" });
                states[i] = if rule.allow { State::Allowed(by) } else { State::Never(by) };
            }
        }
        if let Some(State::Never(by)) = states.iter().find(|s| matches!(s, State::Never(_))) {
            return Rules::deny(tool, line, by.clone(), "");
        }
        for named in command_paths(&parsed) {
            if let Some(p) = self.ask_paths.iter().find(|p| self.names(p, &named.word)) {
                let path = quoted(&named.word);
                return self.ask(tool, line, format!("ask-paths {:?} (the command names {path})", p.text));
            }
        }
        if let Some(State::Ask(by)) = states.iter().find(|s| matches!(s, State::Ask(_))) {
            return self.ask(tool, line, by.clone());
        }
        if unread.is_none() && states.iter().all(|s| matches!(s, State::Allowed(_))) {
            let by = match states.first() {
                Some(State::Allowed(by)) => by.clone(),
                _ => "nothing to run".to_owned(),
            };
            return Verdict::Allow { by };
        }
        match self.mode {
            Mode::Auto => match unread {
                Some(note) => Verdict::Allow { by: format!("permission-mode auto ({note})") },
                None => Verdict::Allow { by: "permission-mode auto".into() },
            },
            Mode::Ask | Mode::Deny => {
                let unnamed: Vec<&str> = parsed
                    .commands
                    .iter()
                    .zip(&states)
                    .filter(|(_, s)| matches!(s, State::Unnamed))
                    .map(|(c, _)| c.line())
                    .collect();
                self.ask(
                    tool,
                    line,
                    format!("permission-mode {}: no rule allows `{}`", self.mode.name(), quoted(&unnamed.join("`, `"))),
                )
            }
        }
    }

    /// The policy rule a command line breaks, with the part that breaks it.
    fn blocked(&self, parsed: &Parsed) -> Option<(String, String)> {
        for p in &self.blocked_commands {
            if let Some(&i) = p.covers(parsed, true).first() {
                let part = parsed.commands.get(i).map(|c| c.line()).unwrap_or_default();
                return Some((
                    format!("the policy rule blocked-commands {:?}", p.text),
                    format!(" (in `{}`)", quoted(part)),
                ));
            }
        }
        if self.builtin_shapes {
            if let Some(name) = parsed.recursive_functions.first() {
                return Some((
                    "the built-in policy rule against fork bombs".into(),
                    format!(" (function `{name}` calls itself)"),
                ));
            }
            for c in &parsed.commands {
                if Rules::is_world_writable_chmod(c) {
                    return Some((
                        "the built-in policy rule against chmod 777".into(),
                        format!(" (in `{}`)", quoted(c.line())),
                    ));
                }
                if self.is_recursive_rm_of_root_or_home(c) {
                    return Some((
                        "the built-in policy rule against a recursive rm of / or ~".into(),
                        format!(" (in `{}`)", quoted(c.line())),
                    ));
                }
            }
        }
        for named in command_paths(parsed) {
            if let Some((p, _)) = self
                .blocked_paths
                .iter()
                .find(|(p, writes_only)| (named.written || !writes_only) && self.names(p, &named.word))
            {
                return Some((
                    format!("the policy rule blocked-paths {:?}", p.text),
                    format!(" (the command names {})", quoted(&named.word)),
                ));
            }
        }
        None
    }

    /// `chmod` making something writable by everyone (`777`, `0777`, `a+rwx`, with any options).
    fn is_world_writable_chmod(c: &shell::SimpleCommand) -> bool {
        c.lines.iter().chain(&c.suspects).any(|line| {
            let mut words = line.split(' ');
            words.next() == Some("chmod")
                && words.any(|w| {
                    matches!(w.trim_start_matches('0'), "777" | "1777" | "2777" | "4777")
                        || matches!(w, "a+rwx" | "a=rwx" | "ugo+rwx" | "ugo=rwx" | "o+w" | "a+w" | "o+rwx" | "+rwx")
                })
        })
    }

    /// Whether a word of a command line names `p`'s path or a path under it (a glob: could name).
    fn names(&self, p: &PathPattern, word: &str) -> bool {
        let abs = self.ctx.absolute(word);
        p.matches(&abs) || (has_glob(word) && p.may_name_glob(&abs))
    }

    /// For Glob and Grep: a blocked path the search would reach (Glob: its pattern, a glob; Grep: its folder and
    /// everything under it).
    fn search_reaches(&self, tool: &str, path: &str, abs: &std::path::Path) -> Option<&PathPattern> {
        let readable = self.blocked_paths.iter().filter(|(_, writes_only)| !writes_only).map(|(p, _)| p);
        match tool {
            "Glob" => readable.into_iter().find(|p| self.names(p, path)),
            "Grep" => readable.into_iter().find(|p| p.is_under(abs) || (has_glob(path) && p.may_name_glob(abs))),
            _ => None,
        }
    }

    fn is_recursive_rm_of_root_or_home(&self, c: &shell::SimpleCommand) -> bool {
        c.lines.iter().chain(&c.suspects).any(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            if words.first() != Some(&"rm") {
                return false;
            }
            let recursive = words[1..]
                .iter()
                .any(|w| *w == "--recursive" || (w.starts_with('-') && !w.starts_with("--") && w.contains(['r', 'R'])));
            recursive
                && words[1..].iter().filter(|w| !w.starts_with('-')).any(|w| {
                    let target = w.trim_matches('"').trim_end_matches('*');
                    // `~user`, `~+`, `~-` may be anywhere: taken as the home, so `~root/..` is its parent.
                    let target = match target.strip_prefix('~') {
                        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {
                            format!("~{}", rest.find('/').map(|i| &rest[i..]).unwrap_or(""))
                        }
                        _ => target.to_owned(),
                    };
                    let abs = self.ctx.absolute(if target.is_empty() { "/" } else { &target });
                    // The root, the home, or a folder holding the home.
                    self.ctx.home.starts_with(&abs)
                })
        })
    }

    fn path(&self, tool: &str, path: &str, write: bool) -> Verdict {
        let abs: PathBuf = self.ctx.absolute(path);
        if let Some((p, _)) =
            self.blocked_paths.iter().find(|(p, writes_only)| (write || !writes_only) && p.matches(&abs))
        {
            return Rules::deny(tool, path, format!("the policy rule blocked-paths {:?}", p.text), "");
        }
        if let Some(p) = self.search_reaches(tool, path, &abs) {
            let why = " (the search would reach it; search a folder that does not hold it)";
            return Rules::deny(tool, path, format!("the policy rule blocked-paths {:?}", p.text), why);
        }
        // A saved path names the path and what is under it, for calls of the kind it was saved from.
        let saved = self.saved.iter().filter(|(r, p)| {
            !r.command && (r.write == write || (!r.allow && write)) && p.as_ref().is_some_and(|p| p.matches(&abs))
        });
        let mut best: Option<&SavedRule> = None;
        for (r, _) in saved {
            if best.is_none_or(|b| b.allow && !r.allow) {
                best = Some(r);
            }
        }
        if let Some(rule) = best {
            let by = format!("saved rule #{} ({})", rule.id, if rule.allow { "always" } else { "never" });
            return if rule.allow { Verdict::Allow { by } } else { Rules::deny(tool, path, by, "") };
        }
        if let Some(p) = self.ask_paths.iter().find(|p| p.matches(&abs)) {
            return self.ask(tool, path, format!("ask-paths {:?}", p.text));
        }
        if let Some(p) = self.allowed_paths.iter().find(|p| p.matches(&abs)) {
            return Verdict::Allow { by: format!("allowed-paths {:?}", p.text) };
        }
        match (self.mode, write) {
            (Mode::Auto, _) | (_, false) => Verdict::Allow { by: format!("permission-mode {}", self.mode.name()) },
            (Mode::Ask | Mode::Deny, true) => {
                self.ask(tool, path, format!("permission-mode {}: no rule allows this path", self.mode.name()))
            }
        }
    }
}

/// Whether a saved command line names `line`: equal once each line's runs of spaces and tabs are one space and its
/// ends are trimmed. A newline (which separates commands) never matches a space.
fn same_line(saved: &str, line: &str) -> bool {
    let norm = |t: &str| {
        t.split('\n')
            .map(|l| l.split([' ', '\t']).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
    };
    norm(saved) == norm(line)
}

/// A line the parser cannot read, as [`shell::raw_commands`] reads it (all its commands one pipeline).
fn raw_parsed(line: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for words in shell::raw_commands(line) {
        let lines = {
            let mut lines = vec![words.join(" ")];
            let mut base = words.clone();
            if let Some(first) = base.first_mut() {
                *first = shell::basename(first).to_owned();
            }
            lines.push(base.join(" "));
            lines
        };
        let suspects: Vec<String> = (1..words.len().min(32)).map(|s| words[s..].join(" ")).collect();
        parsed.commands.push(shell::SimpleCommand { words, lines, suspects });
    }
    parsed.pipelines.push((0..parsed.commands.len()).map(Some).collect());
    parsed
}

/// A simple command's standing under the user rules, weakest first.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Unnamed,
    Allowed(String),
    Ask(String),
    Never(String),
}

impl State {
    /// The stronger of two (an earlier rule of the same strength keeps its name).
    fn max(&self, other: State) -> State {
        if std::mem::discriminant(self) == std::mem::discriminant(&other) || self.rank() > other.rank() {
            self.clone()
        } else {
            other
        }
    }

    fn rank(&self) -> u8 {
        match self {
            State::Unnamed => 0,
            State::Allowed(_) => 1,
            State::Ask(_) => 2,
            State::Never(_) => 3,
        }
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "policy_shell_tests.rs"]
mod shell_reading_tests;
