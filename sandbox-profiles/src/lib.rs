//! Sandbox profiles and the sandbox a worker applies to itself, right after exec, while it is still single-threaded.
//!
//! [`profile`]: profiles are TOML data (shipped `default`, `untrusted`, `networked`; the user's own in
//! `$NEURAPHAGE_HOME/profiles/`), checked and resolved by the supervisor into a [`plan::SandboxPlan`] that the worker
//! applies: resource limits ([`limits`]), a Landlock ruleset ([`FsPolicy`]: filesystem rules, TCP ports, scopes),
//! no_new_privs, no capabilities and locked securebits ([`drop_privileges`]) and a seccomp filter ([`seccomp`]). It
//! fails closed: below the profile's minimum Landlock ABI the task is refused; above it, what the kernel cannot
//! enforce is reported.
//! [`namespaces`]: the outer boundary, bubblewrap's namespaces around all of that (mount, pid, ipc, net, uts).
//! [`hosts`]: the `[network] hosts` allowlist the supervisor's per-task CONNECT proxy enforces.
#![deny(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod hosts;
pub mod limits;
pub mod namespaces;
pub mod plan;
pub mod privileges;
pub mod profile;
pub mod seccomp;
pub mod syscalls;

pub use privileges::{drop_privileges, set_dumpable_off};

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};
use serde::{Deserialize, Serialize};

/// The highest Landlock ABI whose rights this build asks for (6: scopes; the kernel here has 7, whose additions are
/// about audit logging, not access).
pub const MAX_KNOWN_LANDLOCK_ABI: u8 = 6;

/// Test hook: a number here lowers the Landlock ABI the worker believes the kernel has, to exercise the
/// older-kernel paths on a new kernel. It can only take protection away from the worker that reads it, never add
/// access: tests use it to prove that a profile's minimum refuses the task. Only in debug builds: a release build
/// has neither the constant nor the code that reads it.
#[cfg(debug_assertions)]
pub const ENV_TEST_LANDLOCK_ABI: &str = "NEURAPHAGE_TEST_LANDLOCK_ABI";

/// What a rule allows beneath its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsAccess {
    /// Read files and list folders.
    Read,
    /// Read and execute.
    ReadExec,
    /// Everything: read, write, create, remove, rename, truncate, execute.
    ReadWrite,
}

/// One filesystem rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsRule {
    /// The file or folder (and everything beneath it).
    pub path: PathBuf,
    /// What it allows.
    pub access: FsAccess,
}

/// The Landlock ruleset of a task: the filesystem it may touch and the TCP ports it may use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FsPolicy {
    /// The rules; anything not beneath one of them is out of reach.
    pub rules: Vec<FsRule>,
    /// TCP ports it may connect to (every other connect is refused).
    pub tcp_connect: Vec<u16>,
    /// TCP ports it may bind (every other bind is refused).
    pub tcp_bind: Vec<u16>,
}

/// Why the sandbox could not be applied. The worker refuses to run the task on any of these.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A rule's path could not be opened.
    #[error("sandbox rule for {path}: {reason}")]
    Rule {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Landlock refused the ruleset.
    #[error("landlock: {0}")]
    Landlock(String),
    /// The seccomp filter could not be built or installed.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// A capability could not be dropped.
    #[error("capabilities: {0}")]
    Capabilities(String),
    /// The sandbox plan could not be read.
    #[error("sandbox plan {0}")]
    Plan(String),
    /// A resource limit could not be set.
    #[error("resource limit {0}")]
    Limit(String),
    /// The kernel enforced only part of the ruleset.
    #[error("the kernel enforces this sandbox only partly ({0}); refusing to run the task")]
    NotFullyEnforced(String),
}

/// The folders of a task, from which its policy is made.
#[derive(Debug, Clone)]
pub struct TaskFolders {
    /// The worktree (or the scratch folder for a task without a repository).
    pub workdir: PathBuf,
    /// The task's scratch folder (`$HOME` and `$TMPDIR` of the task).
    pub tmp: PathBuf,
    /// Where large tool outputs go.
    pub outputs: PathBuf,
    /// The task's private repository (read-only: only the supervisor writes it), if the task has a repository.
    pub git_dir: Option<PathBuf>,
    /// The worktree's `.git` note file the supervisor wrote (read-only).
    pub worktree_gitfile: Option<PathBuf>,
}

impl FsPolicy {
    /// Restrict this thread (and every process it starts) to the policy, and set no_new_privs. Call it before any
    /// other thread exists. Every right of the kernel's Landlock ABI (up to [`MAX_KNOWN_LANDLOCK_ABI`]) is handled
    /// and must be enforced in full; below `min_abi` nothing is applied and the task is refused. What an older kernel
    /// cannot enforce is in the returned report.
    pub fn apply(&self, min_abi: u8) -> Result<plan::Enforcement, SandboxError> {
        let kernel = kernel_landlock_abi();
        let mut report = plan::Enforcement { kernel_abi: kernel, ..Default::default() };
        if kernel < min_abi {
            return Err(SandboxError::NotFullyEnforced(format!(
                "this kernel offers Landlock ABI {kernel}; the profile demands at least {min_abi}"
            )));
        }
        let used = kernel.min(MAX_KNOWN_LANDLOCK_ABI);
        report.missing = missing_below(used);
        if used == 0 {
            // No Landlock at all: no_new_privs still stops setuid and file capabilities.
            nix::sys::prctl::set_no_new_privs().map_err(|e| SandboxError::Landlock(format!("no_new_privs: {e}")))?;
            return Ok(report);
        }
        let abi = ABI::from(i32::from(used));
        let landlock = |e: landlock::RulesetError| SandboxError::Landlock(e.to_string());
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .map_err(landlock)?;
        if used >= 4 {
            ruleset = ruleset.handle_access(AccessNet::from_all(abi)).map_err(landlock)?;
        }
        if used >= 6 {
            ruleset = ruleset.scope(Scope::from_all(abi)).map_err(landlock)?;
        }
        let mut ruleset = ruleset.create().map_err(landlock)?;
        for rule in &self.rules {
            let access = match rule.access {
                FsAccess::Read => AccessFs::from_read(abi) & !AccessFs::Execute,
                FsAccess::ReadExec => AccessFs::from_read(abi),
                FsAccess::ReadWrite => AccessFs::from_all(abi),
            };
            let fd = open_rule_path(&rule.path)?;
            let is_dir = nix::sys::stat::fstat(&fd)
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .map_err(|e| SandboxError::Rule { path: rule.path.clone(), reason: e.to_string() })?;
            let access = if is_dir { access } else { access & AccessFs::from_file(abi) };
            ruleset = ruleset.add_rule(PathBeneath::new(fd, access)).map_err(landlock)?;
        }
        if used >= 4 {
            for &port in &self.tcp_connect {
                ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::ConnectTcp)).map_err(landlock)?;
            }
            for &port in &self.tcp_bind {
                ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::BindTcp)).map_err(landlock)?;
            }
        }
        let status = ruleset.restrict_self().map_err(landlock)?;
        match status.ruleset {
            RulesetStatus::FullyEnforced if status.no_new_privs => {}
            RulesetStatus::FullyEnforced => {
                return Err(SandboxError::NotFullyEnforced("no_new_privs is not set".into()));
            }
            other => return Err(SandboxError::NotFullyEnforced(format!("{other:?}"))),
        }
        report.enforced.push(format!("landlock filesystem (ABI {used}): {} rules", self.rules.len()));
        if used >= 4 {
            let ports = |p: &[u16]| if p.is_empty() { "none".to_owned() } else { format!("{p:?}") };
            report.enforced.push(format!(
                "landlock network: TCP connect to {}, bind on {}; nothing else",
                ports(&self.tcp_connect),
                ports(&self.tcp_bind)
            ));
        }
        if used >= 6 {
            report.enforced.push("landlock scopes: abstract unix sockets and signals stay inside the task".into());
        }
        Ok(report)
    }
}

/// Open a rule's path for Landlock with no symlink allowed anywhere on the way (the supervisor resolved the path
/// already): a folder swapped for a symlink since then fails the rule instead of widening it.
fn open_rule_path(path: &Path) -> Result<std::os::fd::OwnedFd, SandboxError> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    nix::fcntl::openat2(nix::fcntl::AT_FDCWD, path, how)
        .map_err(|e| SandboxError::Rule { path: path.to_path_buf(), reason: format!("{e} (opened with no symlinks)") })
}

/// The Landlock ABI of the running kernel (0: none), lowered by `ENV_TEST_LANDLOCK_ABI` when set (debug builds).
pub fn kernel_landlock_abi() -> u8 {
    // LANDLOCK_CREATE_RULESET_VERSION: with no attributes, the call returns the ABI version.
    const VERSION: libc::c_uint = 1;
    #[allow(unsafe_code)]
    // SAFETY: landlock_create_ruleset with a null attribute pointer, size 0 and the VERSION flag only returns a
    // number (or -1); it reads and writes no memory of ours.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, VERSION) };
    let kernel = u8::try_from(v.max(0)).unwrap_or(u8::MAX);
    #[cfg(debug_assertions)]
    let kernel = {
        let cap = std::env::var(ENV_TEST_LANDLOCK_ABI).ok().and_then(|v| v.parse::<u8>().ok()).unwrap_or(u8::MAX);
        kernel.min(cap)
    };
    kernel
}

/// What Landlock below ABI `abi` cannot enforce.
pub fn missing_below(abi: u8) -> Vec<String> {
    [
        (1, "landlock filesystem rules (no Landlock in this kernel)"),
        (2, "landlock refer: moving or linking files across folders"),
        (3, "landlock truncate"),
        (4, "landlock TCP bind/connect rules (seccomp still refuses network sockets unless the profile allows them)"),
        (5, "landlock ioctl on devices"),
        (6, "landlock scopes: abstract unix sockets and signals outside the task"),
    ]
    .iter()
    .filter(|(needs, _)| abi < *needs)
    .map(|(_, what)| (*what).to_owned())
    .collect()
}
