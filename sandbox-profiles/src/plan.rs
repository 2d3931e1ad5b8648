//! A task's sandbox, resolved: what the supervisor hands a worker (as `tasks/<id>/sandbox.json`) and what the worker
//! applies to itself, in order, while still single-threaded.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limits::Limits;
use crate::seccomp::SeccompRules;
use crate::{FsPolicy, FsRule, SandboxError};

/// Largest plan file a worker reads.
const MAX_PLAN_BYTES: u64 = 4 * 1024 * 1024;

/// Everything a worker applies. Paths are absolute and already resolved (no symlink may appear on the way when the
/// worker opens them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SandboxPlan {
    /// The profile's name.
    pub profile: String,
    /// The lowest Landlock ABI the profile accepts (0: any); below it the task is refused.
    pub min_landlock_abi: u8,
    /// Filesystem rules.
    pub fs: Vec<FsRule>,
    /// Profile paths that did not exist when the plan was made (no rule for them).
    #[serde(default)]
    pub skipped: Vec<String>,
    /// TCP ports the task may connect to.
    pub tcp_connect: Vec<u16>,
    /// TCP ports the task may bind.
    pub tcp_bind: Vec<u16>,
    /// The seccomp filter's choices.
    pub seccomp: SeccompRules,
    /// Resource limits.
    pub limits: Limits,
    /// Cgroup folders (one per controller hierarchy) the worker moves itself into before anything else.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// The outer boundary: bubblewrap's namespaces around the worker (see [`crate::namespaces`]).
    #[serde(default)]
    pub namespaces: crate::namespaces::Namespaces,
}

/// What a worker could enforce, layer by layer, on this kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    /// The kernel's Landlock ABI (0: none).
    pub kernel_abi: u8,
    /// Layers fully in force.
    pub enforced: Vec<String>,
    /// Layers (or parts) this kernel could not enforce.
    pub missing: Vec<String>,
}

impl SandboxPlan {
    /// Read a plan the supervisor wrote.
    pub fn load(path: &Path) -> Result<SandboxPlan, SandboxError> {
        let bad = |reason: String| SandboxError::Plan(format!("{}: {reason}", path.display()));
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if meta.len() > MAX_PLAN_BYTES {
            return Err(bad(format!("{} bytes, more than {MAX_PLAN_BYTES}", meta.len())));
        }
        let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))
    }

    /// Write the plan for a worker (the supervisor's side).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    /// The Landlock part of the plan.
    pub fn fs_policy(&self) -> FsPolicy {
        FsPolicy { rules: self.fs.clone(), tcp_connect: self.tcp_connect.clone(), tcp_bind: self.tcp_bind.clone() }
    }

    /// Apply the whole plan to this process, which must still be single-threaded: resource limits, Landlock
    /// (filesystem, network, scopes) with no_new_privs, capabilities and securebits, seccomp. Fails closed: whatever
    /// it cannot enforce that the profile demands is an error. The task's cgroups are joined before, outside the
    /// namespaces (the worker's first stage: [`crate::limits::join_cgroups`]).
    pub fn apply(&self) -> Result<Enforcement, SandboxError> {
        let mut report = crate::limits::apply_rlimits(&self.limits)?;
        let landlock = self.fs_policy().apply(self.min_landlock_abi)?;
        report.kernel_abi = landlock.kernel_abi;
        report.enforced.extend(landlock.enforced);
        report.missing.extend(landlock.missing);
        crate::drop_privileges()?;
        report
            .enforced
            .push("capabilities: none, securebits locked; no_new_privs; non-dumpable; inherited keyring left".into());
        crate::seccomp::apply(&self.seccomp)?;
        report.enforced.push(self.seccomp.summary());
        Ok(report)
    }
}
