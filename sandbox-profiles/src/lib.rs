//! The sandbox a worker applies to itself, right after exec, while it is still single-threaded.
//!
//! Today: a Landlock ruleset ([`FsPolicy`]) — the task's worktree, scratch and outputs folders read-write, the
//! repository's shared `.git` read-only with the task's own worktree admin folder read-write, system folders
//! read-and-execute, nothing else; no TCP bind or connect; no abstract unix sockets or signals outside the task —
//! plus no_new_privs, no capabilities ([`drop_privileges`]) and a seccomp deny list ([`seccomp`]). [`FsPolicy::apply`] fails closed: a kernel that
//! cannot fully enforce the ruleset is an error, never a silent downgrade.
//!
//! **Not built yet** (the sandbox issue): profiles as TOML data (`default`, `untrusted`, `networked`) with
//! per-user and per-task overrides, ports and hosts a profile may allow (through a proxy), resource limits and
//! cgroups, reporting on older kernels, `neuraphage sandbox check`. `task new --profile NAME` only records the name.
#![deny(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod seccomp;

use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};

/// The Landlock ABI this build asks for filesystem rights (the kernel here has 7; 5 adds ioctl on devices).
pub const LANDLOCK_ABI: ABI = ABI::V5;

/// The Landlock ABI of the TCP rights (4) and the scopes (6: abstract unix sockets, signals) demanded.
pub const LANDLOCK_SCOPE_ABI: ABI = ABI::V6;

/// System folders a task may read and execute from, when they exist.
pub const SYSTEM_READ_EXEC: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/etc", "/opt"];

/// System files and folders a task may only read.
pub const SYSTEM_READ: &[&str] = &["/proc", "/sys/devices/system/cpu", "/dev/urandom", "/dev/random", "/dev/zero"];

/// Device files a task may write (and read).
pub const DEVICE_READ_WRITE: &[&str] = &["/dev/null", "/dev/tty"];

/// What a rule allows beneath its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsAccess {
    /// Read files and list folders.
    Read,
    /// Read and execute.
    ReadExec,
    /// Everything: read, write, create, remove, rename, truncate, execute.
    ReadWrite,
}

/// One filesystem rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsRule {
    /// The file or folder (and everything beneath it).
    pub path: PathBuf,
    /// What it allows.
    pub access: FsAccess,
}

/// The filesystem a task may touch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FsPolicy {
    /// The rules; anything not beneath one of them is out of reach.
    pub rules: Vec<FsRule>,
}

/// Drop every capability (bounding set first, then ambient, inheritable, effective, permitted) and make this
/// process non-dumpable, so nothing it starts can regain root's powers or attach to it (ptrace, `pidfd_getfd`,
/// `/proc/<pid>/mem`). Call after [`FsPolicy::apply`].
pub fn drop_privileges() -> Result<(), SandboxError> {
    use caps::CapSet;
    let cap = |e: caps::errors::CapsError| SandboxError::Capabilities(e.to_string());
    // Emptying the bounding set needs CAP_SETPCAP. Without it (an ordinary user), nothing is left to regain: an
    // unprivileged user's execve grants no capabilities, and no_new_privs stops setuid and file capabilities.
    // Root without CAP_SETPCAP could regain root's on execve, so that case fails closed.
    if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).map_err(cap)? {
        for c in caps::all() {
            caps::drop(None, CapSet::Bounding, c).map_err(cap)?;
        }
    } else if nix::unistd::geteuid().is_root() {
        return Err(SandboxError::Capabilities(
            "running as root without CAP_SETPCAP: cannot empty the bounding set".into(),
        ));
    }
    for set in [CapSet::Ambient, CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).map_err(cap)?;
    }
    let checked: &[CapSet] = if nix::unistd::geteuid().is_root() {
        &[CapSet::Bounding, CapSet::Effective, CapSet::Permitted]
    } else {
        &[CapSet::Effective, CapSet::Permitted]
    };
    for &set in checked {
        let left = caps::read(None, set).map_err(cap)?;
        if !left.is_empty() {
            return Err(SandboxError::Capabilities(format!("{set:?} still holds {left:?}")));
        }
    }
    set_dumpable_off()
}

/// Make this process non-dumpable: same-uid processes can no longer read its `/proc/<pid>/environ` or `mem`, or
/// attach to it, without CAP_SYS_PTRACE. (The supervisor and the broker do this too.)
pub fn set_dumpable_off() -> Result<(), SandboxError> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| SandboxError::Capabilities(format!("PR_SET_DUMPABLE: {e}")))
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
    /// The repository's shared git folder (read-only), if the task has a repository.
    pub git_dir: Option<PathBuf>,
    /// The task's own worktree admin folder inside it (read-write).
    pub git_admin_dir: Option<PathBuf>,
}

impl FsPolicy {
    /// The policy of a task: its folders read-write, its repository's git folder read-only, system folders
    /// read-execute, nothing else.
    pub fn for_task(folders: &TaskFolders) -> FsPolicy {
        let mut rules = Vec::new();
        let mut add = |path: &Path, access| rules.push(FsRule { path: path.to_path_buf(), access });
        for p in SYSTEM_READ_EXEC.iter().map(Path::new).filter(|p| p.exists()) {
            add(p, FsAccess::ReadExec);
        }
        for p in SYSTEM_READ.iter().map(Path::new).filter(|p| p.exists()) {
            add(p, FsAccess::Read);
        }
        for p in DEVICE_READ_WRITE.iter().map(Path::new).filter(|p| p.exists()) {
            add(p, FsAccess::ReadWrite);
        }
        if let Some(git) = &folders.git_dir {
            add(git, FsAccess::Read);
        }
        if let Some(admin) = &folders.git_admin_dir {
            add(admin, FsAccess::ReadWrite);
        }
        for p in [&folders.workdir, &folders.tmp, &folders.outputs] {
            add(p, FsAccess::ReadWrite);
        }
        FsPolicy { rules }
    }

    /// Restrict this thread (and every process it starts) to the policy, and set no_new_privs. Call it before any
    /// other thread exists. Fails unless the kernel enforces the whole ruleset.
    pub fn apply(&self) -> Result<(), SandboxError> {
        let abi = LANDLOCK_ABI;
        let landlock = |e: landlock::RulesetError| SandboxError::Landlock(e.to_string());
        // No TCP bind or connect at all (no rule allows a port), no abstract unix socket and no signal outside the
        // task's own Landlock domain.
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .map_err(landlock)?
            .handle_access(AccessNet::from_all(LANDLOCK_SCOPE_ABI))
            .map_err(landlock)?
            .scope(Scope::from_all(LANDLOCK_SCOPE_ABI))
            .map_err(landlock)?
            .create()
            .map_err(landlock)?;
        for rule in &self.rules {
            let access = match rule.access {
                FsAccess::Read => AccessFs::from_read(abi) & !AccessFs::Execute,
                FsAccess::ReadExec => AccessFs::from_read(abi),
                FsAccess::ReadWrite => AccessFs::from_all(abi),
            };
            // PathFd opens with O_PATH | O_CLOEXEC; a file gets only the rights that apply to files.
            let fd = PathFd::new(&rule.path)
                .map_err(|e| SandboxError::Rule { path: rule.path.clone(), reason: e.to_string() })?;
            let is_dir = rule.path.is_dir();
            let access = if is_dir { access } else { access & AccessFs::from_file(abi) };
            ruleset = ruleset.add_rule(PathBeneath::new(fd, access)).map_err(landlock)?;
        }
        let status = ruleset.restrict_self().map_err(landlock)?;
        match status.ruleset {
            RulesetStatus::FullyEnforced if status.no_new_privs => Ok(()),
            RulesetStatus::FullyEnforced => Err(SandboxError::NotFullyEnforced("no_new_privs is not set".into())),
            other => Err(SandboxError::NotFullyEnforced(format!("{other:?}"))),
        }
    }
}
