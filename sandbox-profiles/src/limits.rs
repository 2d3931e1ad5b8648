//! Resource limits of a task (the `[limits]` table of a profile): memory, processes, open files, file size, CPU time,
//! disk.
//!
//! The worker sets the per-process ones on itself as rlimits before any task code runs; the supervisor puts the task in
//! a cgroup of its own where it may, because `RLIMIT_NPROC` does not bind uid 0 and rlimits are per process.

use serde::{Deserialize, Serialize};

use crate::SandboxError;

/// A task's resource limits. `None`: no limit of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Limits {
    /// Memory of the whole task (cgroup), and the data segment of each process, in MiB.
    pub memory_mb: Option<u64>,
    /// Processes (and threads) the task may have at once.
    pub processes: Option<u64>,
    /// Open files per process.
    pub open_files: Option<u64>,
    /// Largest file a process may write, in MiB.
    pub file_size_mb: Option<u64>,
    /// CPU seconds per process.
    pub cpu_seconds: Option<u64>,
    /// Disk the task's folders may take (`tasks/<id>`: worktree, tmp, outputs, conversation), in MiB. Measured by the
    /// supervisor while the task runs; a task over it is paused.
    #[serde(default)]
    pub disk_mb: Option<u64>,
}

/// Set the per-process limits on this process (inherited by everything it starts). Memory is `RLIMIT_DATA` (heap
/// and private writable mappings; `RLIMIT_AS` would break runtimes that reserve large address ranges). The process
/// count is not an rlimit: `RLIMIT_NPROC` counts every process of the uid (the user's own too) and does not bind
/// root, so the task's cgroup carries it.
pub fn apply_rlimits(limits: &Limits) -> Result<crate::plan::Enforcement, SandboxError> {
    use nix::sys::resource::{Resource, setrlimit};
    const MIB: u64 = 1024 * 1024;
    let mut report = crate::plan::Enforcement::default();
    let mut set = |resource: Resource, name: &str, value: Option<u64>| -> Result<(), SandboxError> {
        if let Some(v) = value {
            setrlimit(resource, v, v).map_err(|e| SandboxError::Limit(format!("{name} = {v}: {e}")))?;
            report.enforced.push(format!("rlimit {name} = {v}"));
        }
        Ok(())
    };
    set(Resource::RLIMIT_DATA, "data (bytes)", limits.memory_mb.map(|m| m.saturating_mul(MIB)))?;
    set(Resource::RLIMIT_NOFILE, "open files", limits.open_files)?;
    set(Resource::RLIMIT_FSIZE, "file size (bytes)", limits.file_size_mb.map(|m| m.saturating_mul(MIB)))?;
    set(Resource::RLIMIT_CPU, "cpu seconds", limits.cpu_seconds)?;
    Ok(report)
}

/// Move this process into each of `cgroups` (the task's cgroup folders, one per hierarchy, made by the supervisor),
/// so that everything it starts counts against the task's process and memory limits and dies with the task. It
/// must come first: once Landlock is in force the cgroup files are out of reach. A folder that cannot be joined is
/// an error (the supervisor made it for this worker; a task outside its cgroup is not what the plan says).
pub fn join_cgroups(cgroups: &[std::path::PathBuf]) -> Result<crate::plan::Enforcement, SandboxError> {
    let mut report = crate::plan::Enforcement::default();
    for dir in cgroups {
        // "0": the writing process (its whole thread group; the worker is single-threaded here).
        std::fs::write(dir.join("cgroup.procs"), "0")
            .map_err(|e| SandboxError::Limit(format!("cannot join the cgroup {}: {e}", dir.display())))?;
        report.enforced.push(format!("cgroup {}", dir.display()));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joining_writes_this_process_to_each_cgroup_and_a_missing_one_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("pids"), tmp.path().join("memory"));
        for dir in [&a, &b] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        }
        let report = join_cgroups(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(report.enforced.len(), 2);
        assert_eq!(std::fs::read_to_string(a.join("cgroup.procs")).unwrap(), "0");
        let missing = tmp.path().join("gone");
        let err = join_cgroups(&[a, missing.clone()]).unwrap_err().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }
}
