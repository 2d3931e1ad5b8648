//! Rule patterns: command patterns (`git push *`, `curl * | sh *`) matched against parsed command lines, and path
//! patterns (`/etc`, `~/projects`, `.github/workflows/**`) matched against normalised absolute paths.
//!
//! A command pattern is a glob over one simple command's line (words joined by one space): `*` is any text, `?` one
//! character, and a trailing ` *` also matches nothing (`git push *` names `git push` too). A pattern with `|` is a
//! pipeline pattern: its stages must match stages of one pipeline, in order of the command line, so `curl * | sh *`
//! names `cargo build && curl x | sh` by its pipeline, while `cargo *` names only `cargo build`.
//!
//! A path pattern without a glob character names the path and everything under it; one with a glob is matched by
//! globset (`*` stays within a component, `**` crosses them). Relative patterns and paths are taken from the task's
//! worktree, `~` is the user's home; `.` and `..` are resolved lexically (the supervisor never opens a task's files).
//!
//! Matching is textual: a symlink inside the worktree that points at a blocked path (`ln -s secretdir lnk`, then
//! `Read lnk/s.txt`) is not seen through; the sandbox, not these rules, bounds what a task can reach.
//!
//! A shell glob naming files ([`PathPattern::may_name_glob`]) is compared with a path pattern component by
//! component, conservatively: it is taken to name the pattern's path when it could expand to it or to a path under
//! it (a `**`, a `[…]` or `{…}` component, or a glob in the pattern itself, match any component).

use std::path::{Component, Path, PathBuf};

use super::shell::Parsed;

/// A command pattern: one glob per pipeline stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandPattern {
    /// As written in the configuration.
    pub text: String,
    stages: Vec<String>,
}

impl CommandPattern {
    /// A pattern from its text; `None` when it is empty or has an empty stage.
    pub fn new(text: &str) -> Option<CommandPattern> {
        let stages: Vec<String> = text.split('|').map(normalise_spaces).collect();
        if stages.iter().any(String::is_empty) {
            return None;
        }
        Some(CommandPattern { text: text.to_owned(), stages })
    }

    /// A pattern that names exactly this command line (saved from an answer): glob characters are taken literally.
    pub fn exact(line: &str) -> CommandPattern {
        CommandPattern { text: line.to_owned(), stages: vec![escape(&normalise_spaces(line))] }
    }

    /// Whether this is a pipeline pattern.
    pub fn is_pipeline(&self) -> bool {
        self.stages.len() > 1
    }

    /// The indices (in `parsed.commands`) of the simple commands this pattern names; with `suspects`, also by what
    /// a wrapper may run (for deny and ask rules).
    pub fn covers(&self, parsed: &Parsed, suspects: bool) -> Vec<usize> {
        let mut covered = Vec::new();
        let forms = |c: &super::shell::SimpleCommand| {
            c.lines.iter().chain(c.suspects.iter().filter(move |_| suspects)).cloned().collect::<Vec<String>>()
        };
        if let [single] = self.stages.as_slice() {
            for (i, c) in parsed.commands.iter().enumerate() {
                if forms(c).iter().any(|l| glob(single, l)) {
                    covered.push(i);
                }
            }
            return covered;
        }
        // The stages in order, not necessarily adjacent: `curl x | cat | sh` is named by `curl * | sh *`.
        for pipeline in &parsed.pipelines {
            let mut next = self.stages.iter();
            let mut want = next.next();
            let mut hit = Vec::new();
            for stage in pipeline {
                let Some(pattern) = want else { break };
                if let Some(i) = stage
                    && parsed.commands.get(*i).is_some_and(|c| forms(c).iter().any(|l| glob(pattern, l)))
                {
                    hit.push(*i);
                    want = next.next();
                }
            }
            if want.is_none() {
                covered.extend(hit);
            }
        }
        covered.sort_unstable();
        covered.dedup();
        covered
    }

    /// Whether the pattern names the whole command line as written (for saved rules of a compound command).
    pub fn matches_whole(&self, line: &str) -> bool {
        matches!(self.stages.as_slice(), [single] if glob(single, &normalise_spaces(line)))
    }
}

/// Runs of whitespace become one space; ends trimmed.
pub fn normalise_spaces(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `*` any text, `?` one character, `\x` a literal x; a trailing ` *` also matches the end of the text.
pub fn glob(pattern: &str, text: &str) -> bool {
    if let Some(head) = pattern.strip_suffix(" *")
        && !head.ends_with('\\')
        && glob_chars(&tokens(head), &text.chars().collect::<Vec<_>>())
    {
        return true;
    }
    glob_chars(&tokens(pattern), &text.chars().collect::<Vec<_>>())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Any,
    One,
    Lit(char),
}

fn tokens(pattern: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '*' => Token::Any,
            '?' => Token::One,
            '\\' => Token::Lit(chars.next().unwrap_or('\\')),
            c => Token::Lit(c),
        });
    }
    out
}

/// Wildcard matching with one backtrack point (linear in practice, O(n·m) at worst).
fn glob_chars(p: &[Token], t: &[char]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(Token::Any) => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(Token::One) => {
                pi += 1;
                ti += 1;
            }
            Some(Token::Lit(c)) if *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|t| *t == Token::Any)
}

/// Where relative paths and `~` point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathContext {
    /// The task's worktree (relative paths start here).
    pub workdir: PathBuf,
    /// The user's home (`~`).
    pub home: PathBuf,
}

impl PathContext {
    /// `path` made absolute and normalised lexically.
    pub fn absolute(&self, path: &str) -> PathBuf {
        let joined = if path == "~" || path == "$HOME" || path == "${HOME}" {
            self.home.clone()
        } else if let Some(rest) =
            path.strip_prefix("~/").or_else(|| path.strip_prefix("$HOME/")).or_else(|| path.strip_prefix("${HOME}/"))
        {
            self.home.join(rest)
        } else {
            self.workdir.join(path)
        };
        normalise(&joined)
    }
}

/// `.` and `..` resolved without looking at the filesystem.
pub fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// A path pattern, resolved against a [`PathContext`].
#[derive(Debug, Clone)]
pub struct PathPattern {
    /// As written.
    pub text: String,
    /// The pattern made absolute (glob characters kept).
    base: PathBuf,
    kind: PathKind,
}

#[derive(Debug, Clone)]
enum PathKind {
    Under(PathBuf),
    Glob(globset::GlobMatcher),
}

impl PathPattern {
    /// Resolve `text`; an error says why the glob is bad.
    pub fn new(text: &str, ctx: &PathContext) -> Result<PathPattern, String> {
        if text.trim().is_empty() {
            return Err("a path pattern must not be empty".into());
        }
        let absolute = ctx.absolute(text.trim_end_matches('/'));
        let kind = if text.contains(['*', '?', '[', '{']) {
            // Normalising would not touch glob characters, but keeps `a/../**` honest.
            let glob = globset::GlobBuilder::new(&absolute.to_string_lossy())
                .literal_separator(true)
                .build()
                .map_err(|e| format!("{text:?} is not a valid glob: {e}"))?;
            PathKind::Glob(glob.compile_matcher())
        } else {
            PathKind::Under(absolute.clone())
        };
        Ok(PathPattern { text: text.to_owned(), base: absolute, kind })
    }

    /// A path taken literally (saved from an answer: glob characters are not wildcards): it and what is under it.
    pub fn literal(text: &str, ctx: &PathContext) -> Option<PathPattern> {
        if text.trim().is_empty() {
            return None;
        }
        let absolute = ctx.absolute(text.trim_end_matches('/'));
        Some(PathPattern { text: text.to_owned(), base: absolute.clone(), kind: PathKind::Under(absolute) })
    }

    /// Whether the (absolute, normalised) path is named by this pattern.
    pub fn matches(&self, path: &Path) -> bool {
        match &self.kind {
            PathKind::Under(dir) => path.starts_with(dir),
            PathKind::Glob(m) => path.ancestors().any(|p| m.is_match(p)),
        }
    }

    /// Whether a shell glob (made absolute, like `/w/secret*/s.txt` or `/et?/x`) could name this pattern's path or
    /// a path under it; a glob that only names folders above it does not (like a plain path naming a parent).
    pub fn may_name_glob(&self, glob: &Path) -> bool {
        let target = names(&self.base);
        let words = names(glob);
        for (i, t) in target.iter().enumerate() {
            let Some(w) = words.get(i) else { return false };
            if w.contains("**") {
                return true;
            }
            if !component_may_match(w, t) {
                return false;
            }
        }
        true
    }

    /// Whether this pattern's path is `dir` or lies under it (a search of `dir` would reach it).
    pub fn is_under(&self, dir: &Path) -> bool {
        let target = names(&self.base);
        let prefix = names(dir);
        prefix.len() <= target.len() && prefix.iter().zip(&target).all(|(d, t)| component_may_match(d, t))
    }
}

/// Whether a word has shell glob characters.
pub fn has_glob(word: &str) -> bool {
    word.contains(['*', '?', '['])
}

fn names(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// Whether one component of a shell glob could expand to the component `target` (conservative).
fn component_may_match(word: &str, target: &str) -> bool {
    if word.contains(['[', '{']) || target.contains(['*', '?', '[', '{']) {
        return true;
    }
    glob_chars(&tokens(word), &target.chars().collect::<Vec<_>>())
}
