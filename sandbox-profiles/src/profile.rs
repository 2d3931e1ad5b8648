//! Sandbox profiles as data: TOML files shipped in `sandbox-profiles/profiles/` and overridable in
//! `$NEURAPHAGE_HOME/profiles/NAME.toml`, parsed, checked and turned into a task's [`SandboxPlan`].
//!
//! A profile is refused — with its file, line and reason — when it is malformed, names an unknown key or syscall, or
//! has a rule that would open the user's home, the Neuraphage home, the task's own repository checkout, or a folder of
//! secrets in the home.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::limits::Limits;
use crate::plan::SandboxPlan;
use crate::seccomp::SeccompRules;
use crate::{FsAccess, FsRule, TaskFolders};

/// The profile a task runs under when it names none.
pub const DEFAULT_PROFILE: &str = "default";

/// The profiles shipped with Neuraphage: name and text.
pub const SHIPPED: &[(&str, &str)] = &[
    ("default", include_str!("../profiles/default.toml")),
    ("untrusted", include_str!("../profiles/untrusted.toml")),
    ("networked", include_str!("../profiles/networked.toml")),
];

/// Folder of the user's own profiles, inside the Neuraphage home.
pub const USER_PROFILES_DIR: &str = "profiles";

/// Largest profile file read.
const MAX_PROFILE_BYTES: u64 = 256 * 1024;

/// Folders in a home that hold credentials: no rule may open them or anything beneath them.
const SECRET_HOME_DIRS: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".config",
    ".docker",
    ".kube",
    ".netrc",
    ".git-credentials",
    ".password-store",
    ".local/share/keyrings",
];

/// Why a profile was refused: the file, the line (when known) and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {reason}", file, line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ProfileError {
    /// The profile's file (`<shipped>/NAME.toml` for a shipped one).
    pub file: String,
    /// The 1-based line, when the error has one.
    pub line: Option<usize>,
    /// What was wrong.
    pub reason: String,
}

/// A parsed profile, as its file says it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Document {
    #[serde(default)]
    description: String,
    #[serde(default)]
    min_landlock_abi: u8,
    #[serde(default)]
    filesystem: Filesystem,
    #[serde(default)]
    network: Network,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    syscalls: Syscalls,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    namespaces: NamespacesDoc,
}

/// The `[namespaces]` table of a profile: the outer boundary (bubblewrap).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct NamespacesDoc {
    /// Run the task's worker inside namespaces where bubblewrap can make them (default: yes).
    #[serde(default = "yes")]
    enabled: bool,
    /// Refuse the task where they cannot be made (default: no, the Sandboxed event says they are missing).
    #[serde(default)]
    required: bool,
}

impl Default for NamespacesDoc {
    fn default() -> Self {
        NamespacesDoc { enabled: true, required: false }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Filesystem {
    #[serde(default)]
    read: Vec<Spanned<String>>,
    #[serde(default)]
    read_exec: Vec<Spanned<String>>,
    #[serde(default)]
    read_write: Vec<Spanned<String>>,
}

/// The `[network]` table of a profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Network {
    /// TCP ports the task may connect to (on any address).
    #[serde(default)]
    pub tcp_connect: Vec<u16>,
    /// TCP ports the task may listen on.
    #[serde(default)]
    pub tcp_bind: Vec<u16>,
    /// Hosts the task may reach through Neuraphage's HTTP CONNECT proxy: `host` (ports 443 and 80) or `host:port`
    /// (see [`crate::hosts`]).
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Syscalls {
    #[serde(default)]
    deny: Vec<Spanned<String>>,
}

/// A checked profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Its name.
    pub name: String,
    /// Where it came from.
    pub file: String,
    /// What it is for, in a line.
    pub description: String,
    text: String,
    doc: Document,
}

/// What a profile's rules are checked against.
#[derive(Debug, Clone)]
pub struct Context {
    /// The user's home (`$HOME` of the supervisor), if known.
    pub user_home: Option<PathBuf>,
    /// `$NEURAPHAGE_HOME`.
    pub neuraphage_home: PathBuf,
    /// The task's repository checkout, if it has one.
    pub repo: Option<PathBuf>,
}

impl Context {
    /// The context of this process: the user's home is `$HOME` (none if unset or empty).
    pub fn of_this_process(neuraphage_home: &Path, repo: Option<&Path>) -> Context {
        Context {
            user_home: std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from),
            neuraphage_home: neuraphage_home.to_path_buf(),
            repo: repo.map(Path::to_path_buf),
        }
    }
}

/// Find profile `name`: `home/profiles/NAME.toml` first, then the shipped ones. Parses and checks it.
pub fn load(name: &str, ctx: &Context) -> Result<Profile, ProfileError> {
    let user_file = ctx.neuraphage_home.join(USER_PROFILES_DIR).join(format!("{name}.toml"));
    let (file, text) = match std::fs::symlink_metadata(&user_file) {
        Ok(meta) => {
            let file = user_file.display().to_string();
            let refuse = |reason: String| ProfileError { file: file.clone(), line: None, reason };
            if !meta.is_file() {
                return Err(refuse("not a regular file".into()));
            }
            if meta.len() > MAX_PROFILE_BYTES {
                return Err(refuse(format!("{} bytes; a profile is at most {MAX_PROFILE_BYTES}", meta.len())));
            }
            let text = std::fs::read_to_string(&user_file).map_err(|e| refuse(e.to_string()))?;
            (file, text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match SHIPPED.iter().find(|(n, _)| *n == name) {
            Some((_, text)) => (format!("<shipped>/{name}.toml"), (*text).to_owned()),
            None => {
                return Err(ProfileError {
                    file: user_file.display().to_string(),
                    line: None,
                    reason: format!("no profile {name:?}; available: {}", available(&ctx.neuraphage_home).join(", ")),
                });
            }
        },
        Err(e) => {
            return Err(ProfileError { file: user_file.display().to_string(), line: None, reason: e.to_string() });
        }
    };
    Profile::parse(name, &file, &text, ctx)
}

/// The names of every profile a task may name: the shipped ones and the user's.
pub fn available(neuraphage_home: &Path) -> Vec<String> {
    let mut names: Vec<String> = SHIPPED.iter().map(|(n, _)| (*n).to_owned()).collect();
    if let Ok(dir) = std::fs::read_dir(neuraphage_home.join(USER_PROFILES_DIR)) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".toml") {
                names.push(stem.to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

impl Profile {
    /// Parse and check a profile's text.
    pub fn parse(name: &str, file: &str, text: &str, ctx: &Context) -> Result<Profile, ProfileError> {
        let doc: Document = toml::from_str(text).map_err(|e| ProfileError {
            file: file.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)),
            reason: e.message().to_owned(),
        })?;
        let profile = Profile {
            name: name.to_owned(),
            file: file.to_owned(),
            description: doc.description.clone(),
            text: text.to_owned(),
            doc,
        };
        profile.check(ctx)?;
        Ok(profile)
    }

    fn refuse(&self, span: Option<Range<usize>>, reason: impl Into<String>) -> ProfileError {
        ProfileError {
            file: self.file.clone(),
            line: span.map(|s| line_of(&self.text, s.start)),
            reason: reason.into(),
        }
    }

    /// The rule paths with their access, as written.
    fn rules(&self) -> impl Iterator<Item = (&Spanned<String>, FsAccess)> {
        let fs = &self.doc.filesystem;
        (fs.read.iter().map(|p| (p, FsAccess::Read)))
            .chain(fs.read_exec.iter().map(|p| (p, FsAccess::ReadExec)))
            .chain(fs.read_write.iter().map(|p| (p, FsAccess::ReadWrite)))
    }

    fn check(&self, ctx: &Context) -> Result<(), ProfileError> {
        let abi = self.doc.min_landlock_abi;
        if abi > crate::MAX_KNOWN_LANDLOCK_ABI {
            return Err(self.refuse(
                None,
                format!(
                    "min-landlock-abi = {abi}: this build knows Landlock ABIs up to {}",
                    crate::MAX_KNOWN_LANDLOCK_ABI
                ),
            ));
        }
        for (path, _) in self.rules() {
            self.check_rule(path, ctx)?;
        }
        for syscall in &self.doc.syscalls.deny {
            if crate::seccomp::syscall_number(syscall.get_ref()).is_none() {
                return Err(self.refuse(Some(syscall.span()), format!("unknown system call {:?}", syscall.get_ref())));
            }
            if ESSENTIAL_SYSCALLS.contains(&syscall.get_ref().as_str()) {
                return Err(self.refuse(
                    Some(syscall.span()),
                    format!("{} is needed by the worker itself; denying it would stop every task", syscall.get_ref()),
                ));
            }
        }
        if self.doc.namespaces.required && !self.doc.namespaces.enabled {
            return Err(self.refuse(None, "[namespaces] required = true with enabled = false"));
        }
        for host in &self.doc.network.hosts {
            if crate::hosts::HostRule::parse(host).is_none() {
                return Err(self.refuse(None, format!("[network] hosts: {host:?} is not a host name or host:port")));
            }
        }
        for (port, what) in self
            .doc
            .network
            .tcp_connect
            .iter()
            .map(|p| (p, "tcp-connect"))
            .chain(self.doc.network.tcp_bind.iter().map(|p| (p, "tcp-bind")))
        {
            if *port == 0 {
                return Err(self.refuse(None, format!("[network] {what}: port 0 is not a port")));
            }
        }
        for key in self.doc.env.keys() {
            let k = key.get_ref();
            let valid = !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(self.refuse(Some(key.span()), format!("[env] {k:?} is not an environment variable name")));
            }
            if k.starts_with("NEURAPHAGE_") || PROTECTED_ENV.contains(&k.as_str()) {
                return Err(self
                    .refuse(Some(key.span()), format!("[env] {k} is set by Neuraphage; a profile may not change it")));
            }
        }
        Ok(())
    }

    /// A rule's path must be absolute (or start with a placeholder), have no `..`, and not open the user's home, the
    /// Neuraphage home, the task's repository, or a secrets folder.
    fn check_rule(&self, path: &Spanned<String>, ctx: &Context) -> Result<(), ProfileError> {
        let raw = path.get_ref();
        let refuse = |reason: String| self.refuse(Some(path.span()), format!("rule {raw:?}: {reason}"));
        if raw.starts_with("{worktree}") || raw.starts_with("{task_tmp}") {
            let rest = raw.trim_start_matches("{worktree}").trim_start_matches("{task_tmp}");
            if !rest.is_empty() {
                return Err(refuse(
                    "{worktree} and {task_tmp} stand alone (they already give everything beneath)".into(),
                ));
            }
            return Ok(());
        }
        let rest = raw.strip_prefix("{home}");
        if rest.unwrap_or(raw).contains('{') {
            return Err(refuse("unknown placeholder (known: {worktree}, {task_tmp}, {home}, at the start)".into()));
        }
        let expanded = match rest {
            Some(rest) => {
                let Some(home) = &ctx.user_home else {
                    return Err(refuse("{home}: the supervisor has no $HOME".into()));
                };
                let rest = rest.trim_start_matches('/');
                if rest.is_empty() { home.clone() } else { home.join(rest) }
            }
            None => PathBuf::from(raw),
        };
        if !expanded.is_absolute() {
            return Err(refuse("a rule's path is absolute or starts with a placeholder".into()));
        }
        if expanded.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(refuse("'..' is not allowed in a rule".into()));
        }
        // Judge where the path really leads (a symlink to the home is the home).
        let real = std::fs::canonicalize(&expanded).unwrap_or_else(|_| expanded.clone());
        for p in [&expanded, &real] {
            if let Some(reason) = forbidden(p, ctx) {
                return Err(refuse(reason));
            }
        }
        Ok(())
    }

    /// The plan a worker of this profile applies, for a task with these folders. Paths are resolved here (symlinks
    /// followed, then never again: the worker opens each with no symlink allowed on the way).
    pub fn plan(&self, folders: &TaskFolders, ctx: &Context) -> Result<SandboxPlan, ProfileError> {
        let mut fs = Vec::new();
        let mut skipped = Vec::new();
        for (raw, access) in self.rules() {
            let path = match raw.get_ref().as_str() {
                "{worktree}" => folders.workdir.clone(),
                "{task_tmp}" => folders.tmp.clone(),
                other => match other.strip_prefix("{home}") {
                    Some(rest) => ctx.user_home.clone().unwrap_or_default().join(rest.trim_start_matches('/')),
                    None => PathBuf::from(other),
                },
            };
            match std::fs::canonicalize(&path) {
                Ok(real) => {
                    if let Some(reason) = forbidden(&real, ctx).filter(|_| !is_task_folder(&real, folders)) {
                        return Err(self.refuse(Some(raw.span()), format!("rule {:?}: {reason}", raw.get_ref())));
                    }
                    fs.push(FsRule { path: real, access });
                }
                Err(_) => skipped.push(path.display().to_string()),
            }
        }
        // A task's own plumbing, whatever the profile says.
        let mut own = vec![(folders.outputs.clone(), FsAccess::ReadWrite)];
        if let Some(git) = &folders.git_dir {
            own.push((git.clone(), FsAccess::Read));
        }
        if let Some(note) = &folders.worktree_gitfile {
            own.push((note.clone(), FsAccess::Read));
        }
        for (path, access) in own {
            let real = std::fs::canonicalize(&path)
                .map_err(|e| self.refuse(None, format!("the task's folder {}: {e}", path.display())))?;
            fs.push(FsRule { path: real, access });
        }
        let net = &self.doc.network;
        Ok(SandboxPlan {
            profile: self.name.clone(),
            min_landlock_abi: self.doc.min_landlock_abi,
            fs,
            skipped,
            tcp_connect: net.tcp_connect.clone(),
            tcp_bind: net.tcp_bind.clone(),
            seccomp: SeccompRules {
                inet_stream_sockets: !net.tcp_connect.is_empty() || !net.tcp_bind.is_empty() || !net.hosts.is_empty(),
                unix_stream_sockets: false,
                listen_sockets: !net.tcp_bind.is_empty(),
                extra_denied: self.doc.syscalls.deny.iter().map(|s| s.get_ref().clone()).collect(),
            },
            limits: self.doc.limits.clone(),
            cgroups: Vec::new(),
            namespaces: crate::namespaces::Namespaces {
                enabled: self.doc.namespaces.enabled,
                required: self.doc.namespaces.required,
                bridges: Vec::new(),
            },
        })
    }

    /// The profile's `[network]` table.
    pub fn network(&self) -> &Network {
        &self.doc.network
    }

    /// Extra environment for the task's processes.
    pub fn env(&self) -> impl Iterator<Item = (&str, &str)> {
        self.doc.env.iter().map(|(k, v)| (k.get_ref().as_str(), v.as_str()))
    }

    /// The profile's resource limits.
    pub fn limits(&self) -> &Limits {
        &self.doc.limits
    }

    /// The lowest Landlock ABI the profile accepts (0: any).
    pub fn min_landlock_abi(&self) -> u8 {
        self.doc.min_landlock_abi
    }
}

/// System calls the worker and its tools cannot run without; a profile may not deny them.
const ESSENTIAL_SYSCALLS: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "openat",
    "open",
    "close",
    "fstat",
    "newfstatat",
    "statx",
    "lseek",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "brk",
    "madvise",
    "exit",
    "exit_group",
    "execve",
    "clone",
    "wait4",
    "futex",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "eventfd2",
    "sendmsg",
    "recvmsg",
    "sendto",
    "recvfrom",
    "poll",
    "ppoll",
    "pipe2",
    "dup2",
    "dup3",
    "fcntl",
    "getrandom",
    "sched_yield",
    "getpid",
    "gettid",
    "set_robust_list",
    "rseq",
    "prlimit64",
    "ioctl",
];

/// Variables Neuraphage sets for a task, which a profile may not replace.
const PROTECTED_ENV: &[&str] =
    &["PATH", "HOME", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"];

fn is_task_folder(path: &Path, folders: &TaskFolders) -> bool {
    [&folders.workdir, &folders.tmp].iter().any(|f| std::fs::canonicalize(f).is_ok_and(|f| path.starts_with(f)))
}

/// Why a rule on `path` would open something no task may have, if it would.
fn forbidden(path: &Path, ctx: &Context) -> Option<String> {
    let opens = |target: &Path| target.starts_with(path);
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if let Some(home) = &ctx.user_home {
        for home in [home.clone(), canon(home)] {
            if opens(&home) {
                return Some(format!("it would open the user's home {}", home.display()));
            }
            for secret in SECRET_HOME_DIRS {
                let s = home.join(secret);
                if opens(&s) || path.starts_with(&s) {
                    return Some(format!("it would open {}, which holds credentials", s.display()));
                }
            }
        }
    }
    for nh in [ctx.neuraphage_home.clone(), canon(&ctx.neuraphage_home)] {
        if opens(&nh) || path.starts_with(&nh) {
            return Some(format!(
                "it would open the Neuraphage home {} (the store, every task, api-keys.yaml)",
                nh.display()
            ));
        }
    }
    if let Some(repo) = &ctx.repo {
        for repo in [repo.clone(), canon(repo)] {
            if opens(&repo) || path.starts_with(&repo) {
                return Some(format!("it would open the user's checkout {}", repo.display()));
            }
        }
    }
    None
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
