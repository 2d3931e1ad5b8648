//! The paths a Bash command line names, for the path rules: every argument word is a candidate path (relative to
//! the worktree), not only words with a `/` (`mkdir secretdir`, `cat .env`), plus redirection targets and `<`
//! inputs; each is marked written when the command may write it.
//!
//! Write detection is by program: the [`WRITERS`] always, and `sed -i`/`-Ei`/`--in-place`, `perl -i`,
//! `sort -o`/`--output`, `find -delete`/`-fprint`, `awk -i inplace` by their options. The words are those the
//! parser gives (`$'…'` decoded by [`super::shell`]); a word holding `$(…)` or a backquote is computed and skipped.

use super::shell::Parsed;

/// Programs whose path arguments are (or may be) written.
pub const WRITERS: &[&str] = &[
    "rm", "mv", "cp", "chmod", "chown", "chgrp", "touch", "tee", "ln", "mkdir", "rmdir", "truncate", "install", "dd",
    "shred", "unlink", "rsync", "curl", "wget", "tar", "unzip", "patch", "cpio", "ed", "ex", "vi", "vim", "split",
    "csplit", "mkfifo", "mknod", "setfacl", "chattr",
];

/// A path named by a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPath {
    /// As the parser gave it.
    pub word: String,
    /// Whether the command may write it.
    pub written: bool,
}

/// Short-option clusters of `word` (`-Ei` → `Ei`); `None` for long options and non-options.
fn cluster(word: &str) -> Option<&str> {
    word.strip_prefix('-').filter(|rest| !rest.starts_with('-') && !rest.is_empty())
}

/// Whether `program` with arguments `args` may write the files it names.
pub fn writes(program: &str, args: &[String]) -> bool {
    let short = |c: char| args.iter().any(|w| cluster(w).is_some_and(|k| k.contains(c)));
    let long = |name: &str| args.iter().any(|w| w == name || w.starts_with(&format!("{name}=")));
    WRITERS.contains(&program)
        || (program == "sed" && (short('i') || long("--in-place")))
        || (program == "perl" && short('i'))
        || (program == "sort" && (short('o') || long("--output")))
        || (program == "find" && args.iter().any(|w| w == "-delete" || w.starts_with("-fprint") || w == "-fls"))
        || (matches!(program, "awk" | "gawk") && args.iter().any(|w| w == "inplace" || w.ends_with("-i")))
}

/// A word still holding `$'…'` (the parser normally decodes it), read conservatively: the quotes dropped and
/// each backslash escape taken as a glob `*` (it could be any character but `/`).
fn ansi_c_guess(word: &str) -> Option<String> {
    if !word.contains("$'") {
        return None;
    }
    let mut out = String::with_capacity(word.len());
    let unquoted = word.replace("$'", "").replace('\'', "");
    let mut chars = unquoted.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            chars.next();
            while chars.next_if(char::is_ascii_alphanumeric).is_some() {}
            out.push('*');
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// The paths a command line names, each with whether it is written: output redirection targets (written), `<`
/// inputs, the program when it has a `/`, and every argument word that is not an option (the value of `--opt=…`,
/// `of=…`, `if=…` is taken), written when [`writes`] says so for the program or any of its forms.
pub fn command_paths(parsed: &Parsed) -> Vec<NamedPath> {
    let mut paths: Vec<NamedPath> =
        parsed.redirects.iter().map(|r| NamedPath { word: r.clone(), written: true }).collect();
    paths.extend(parsed.inputs.iter().map(|r| NamedPath { word: r.clone(), written: false }));
    for c in &parsed.commands {
        let mut written = false;
        for form in c.lines.iter().chain(&c.suspects) {
            let words: Vec<String> = form.split(' ').map(str::to_owned).collect();
            if let Some((program, args)) = words.split_first() {
                written |= writes(super::shell::basename(program), args);
            }
        }
        for (i, w) in c.words.iter().enumerate() {
            let value = match w.split_once('=') {
                Some((k, v)) if k.starts_with('-') || k == "of" || k == "if" => v,
                _ => w.as_str(),
            };
            let skipped = value.is_empty()
                || value.starts_with('-')
                || value.contains("$(")
                || value.contains('`')
                || (i == 0 && !value.contains('/'));
            if !skipped {
                paths.push(NamedPath { word: value.to_owned(), written });
            }
            // A value joined to a short option: `-o/etc/x`, `-C/etc`.
            if let Some(joined) = cluster(w).and_then(|k| k.get(1..)).filter(|v| !v.is_empty() && !v.contains("$(")) {
                paths.push(NamedPath { word: joined.to_owned(), written });
            }
        }
    }
    let guesses: Vec<NamedPath> =
        paths.iter().filter_map(|p| ansi_c_guess(&p.word).map(|word| NamedPath { word, written: p.written })).collect();
    paths.extend(guesses);
    paths
}

#[cfg(test)]
#[path = "paths_tests.rs"]
mod tests;
