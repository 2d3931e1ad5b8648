//! Command lines inside a command: what `bash -c` (also `-ec`, behind wrappers), `eval`, `trap`, `su -c`, `watch`,
//! `find -exec`, `git -c alias.x=!…`, aliases and a shell's literal input run; git's global options; functions that
//! call themselves through others.

use super::{MAX_NESTING, SHELLS, WRAPPERS, Walker, basename, parse_into};

/// Where a shell takes its script from.
enum Script {
    /// `-c STRING` (`None`: computed).
    Command(Option<String>),
    /// Its standard input.
    Stdin,
    /// A file named literally.
    File,
    /// A computed file name or a process substitution.
    Computed,
}

/// Where `sh ARGS…` takes its script from (`-c` may be in a group of short options: `-ec`, `-lc`, `-c --`).
fn shell_script(args: &[Option<String>]) -> Script {
    let (mut c, mut stdin, mut i) = (false, false, 0);
    while let Some(a) = args.get(i) {
        match a.as_deref() {
            None => return if c { Script::Command(None) } else { Script::Computed },
            Some("--") => {
                i += 1;
                break;
            }
            Some("-o" | "+o" | "-O" | "+O" | "--rcfile" | "--init-file") => i += 2,
            Some(a) if a.starts_with("--") => i += 1,
            Some(a) if (a.starts_with('-') || a.starts_with('+')) && a.len() > 1 => {
                c |= a.starts_with('-') && a.contains('c');
                stdin |= a.starts_with('-') && a.contains('s');
                i += 1;
            }
            Some(_) => break,
        }
    }
    if c {
        return Script::Command(args.get(i).cloned().unwrap_or(Some(String::new())));
    }
    match args.get(i) {
        _ if stdin => Script::Stdin,
        None => Script::Stdin,
        Some(Some(f)) if f == "-" => Script::Stdin,
        Some(None) => Script::Computed,
        Some(Some(_)) => Script::File,
    }
}

/// The names of the functions that call themselves, directly or through others (`f(){ g|g& }; g(){ f|f& }`).
pub(super) fn recursive(functions: &[(String, Vec<String>)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (name, _) in functions {
        let mut seen: Vec<&str> = Vec::new();
        let mut todo: Vec<&str> = vec![name];
        let mut hit = false;
        while let Some(f) = todo.pop() {
            for (_, calls) in functions.iter().filter(|(n, _)| n == f) {
                for c in calls {
                    hit |= c == name;
                    if !seen.contains(&c.as_str()) && seen.len() < 256 {
                        seen.push(c);
                        todo.push(c);
                    }
                }
            }
        }
        if hit && !name.is_empty() && !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

impl Walker<'_, '_> {
    /// A command line inside a command: `bash -c STRING` (also behind wrappers), `eval`, `trap`, `su -c`, `watch`,
    /// `find -exec`, `git -c alias.x=!…`, aliases, and what a shell reads on its input. Whether a shell's script is
    /// computed.
    pub(super) fn nested(&mut self, words: &[String], lits: &[Option<String>], stdin: Option<Option<String>>) -> bool {
        let mut computed = false;
        if let Some((_, value)) = self.out.aliases.iter().find(|(n, _)| *n == words[0]).cloned() {
            let text = std::iter::once(value).chain(words[1..].iter().cloned()).collect::<Vec<_>>().join(" ");
            self.inner(Some(text), "an alias");
        }
        let starts = if WRAPPERS.contains(&basename(&words[0])) { words.len().min(32) } else { 1 };
        for s in 0..starts {
            let program = basename(&words[s]).to_owned();
            let args = &lits[s + 1..];
            let first_plain = || args.iter().find(|a| !a.as_deref().is_some_and(|a| a.starts_with('-'))).cloned();
            match program.as_str() {
                p if SHELLS.contains(&p) => match shell_script(args) {
                    Script::Command(c) => self.inner(c, p),
                    Script::Stdin => {
                        if let Some(input) = stdin.clone() {
                            self.inner(input, p)
                        }
                    }
                    Script::File => {}
                    Script::Computed => {
                        computed = true;
                        self.out.mark_unreadable(format!("`{p}` runs a script computed when it runs"));
                    }
                },
                "eval" => {
                    self.inner(args.iter().cloned().collect::<Option<Vec<String>>>().map(|a| a.join(" ")), "eval")
                }
                "source" | "." => match args.first() {
                    Some(Some(f)) if matches!(f.as_str(), "/dev/stdin" | "-" | "/proc/self/fd/0" | "/dev/fd/0") => {
                        self.inner(stdin.clone().unwrap_or(None), &program)
                    }
                    Some(None) => {
                        computed = true;
                        self.out.mark_unreadable(format!("`{program}` reads a script computed when it runs"));
                    }
                    _ => {}
                },
                "trap" if args.len() >= 2 => self.inner(first_plain().unwrap_or(None), "trap"),
                "watch" => {
                    let plain: Option<Vec<String>> = args
                        .iter()
                        .skip_while(|a| {
                            a.as_deref().is_some_and(|a| {
                                a.starts_with('-') || a.chars().all(|c| c.is_ascii_digit() || c == '.')
                            })
                        })
                        .cloned()
                        .collect();
                    self.inner(plain.map(|p| p.join(" ")), "watch");
                }
                "su" | "runuser" | "script" | "flock" => {
                    for (k, a) in args.iter().enumerate() {
                        match a.as_deref() {
                            Some(a)
                                if a == "--command"
                                    || (a.starts_with('-') && !a.starts_with("--") && a.ends_with('c')) =>
                            {
                                self.inner(args.get(k + 1).cloned().unwrap_or(None), &program)
                            }
                            Some(a) if a.starts_with("--command=") => {
                                self.inner(Some(a["--command=".len()..].to_owned()), &program)
                            }
                            _ => {}
                        }
                    }
                }
                "git" => {
                    for pair in args.windows(2) {
                        if pair[0].as_deref() != Some("-c") {
                            continue;
                        }
                        match &pair[1] {
                            Some(kv) => {
                                if let Some((key, value)) = kv.split_once('=')
                                    && key.to_ascii_lowercase().starts_with("alias.")
                                    && let Some(body) = value.trim_start().strip_prefix('!')
                                {
                                    self.inner(Some(body.to_owned()), "a git alias");
                                }
                            }
                            None => self.out.mark_unreadable("`git -c` sets a value computed when it runs".into()),
                        }
                    }
                }
                "find" => {
                    let mut i = s + 1;
                    while i < words.len() {
                        if matches!(words[i].as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
                            let start = i + 1;
                            let mut end = start;
                            while end < words.len() && words[end] != ";" && words[end] != "+" {
                                end += 1;
                            }
                            if end > start {
                                self.simple(words[start..end].to_vec(), lits[start..end].to_vec(), None);
                            }
                            i = end;
                        }
                        i += 1;
                    }
                }
                "alias" => {
                    for a in args {
                        match a {
                            Some(def) => {
                                if let Some((name, value)) = def.split_once('=')
                                    && self.out.aliases.len() < 64
                                {
                                    self.out.aliases.push((name.to_owned(), value.to_owned()));
                                }
                            }
                            None => {
                                self.out.mark_unreadable("an alias is defined as text computed when it runs".into())
                            }
                        }
                    }
                }
                "hash" => {
                    if let [Some(flag), Some(path), Some(name), ..] = args
                        && flag == "-p"
                        && self.out.aliases.len() < 64
                    {
                        self.out.aliases.push((name.clone(), path.clone()));
                    }
                }
                _ => {}
            }
        }
        computed
    }

    /// Parse a nested command line (`None`: computed, so unreadable).
    fn inner(&mut self, text: Option<String>, what: &str) {
        match text {
            None => self.out.mark_unreadable(format!("`{what}` runs a command line computed when it runs")),
            Some(_) if self.depth >= MAX_NESTING => {
                self.out.mark_unreadable(format!("command lines nested more than {MAX_NESTING} deep"))
            }
            Some(text) => parse_into(&text, self.depth + 1, self.out),
        }
    }
}

/// `git` without its global options (`git -C dir --no-pager -c k=v push` → `git push`), when it has any.
pub(super) fn git_plain(words: &[String]) -> Option<Vec<String>> {
    if words.first().map(|w| basename(w)) != Some("git") {
        return None;
    }
    let mut i = 1;
    while let Some(w) = words.get(i) {
        match w.as_str() {
            "-C" | "-c" | "--git-dir" | "--work-tree" | "--namespace" | "--exec-path" | "--config-env" => i += 2,
            w if w.starts_with('-') => i += 1,
            _ => break,
        }
    }
    (i > 1 && i < words.len()).then(|| std::iter::once("git".to_owned()).chain(words[i..].iter().cloned()).collect())
}
