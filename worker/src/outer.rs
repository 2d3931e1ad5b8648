//! The worker's two stages around the outer boundary (bubblewrap's namespaces, see
//! [`neuraphage_sandbox_profiles::namespaces`]).
//!
//! Stage 1 is the process the supervisor (or `neuraphage sandbox check`) started: it ties its life to its parent's
//! (PDEATHSIG, kept across the exec), takes a session of its own (the supervisor ends the task's session with it),
//! joins the task's cgroups (out of reach once inside), then execs bubblewrap running this same worker with all of
//! its arguments plus `--inside IDS`, the inherited link fds left as they are. Every mode of the worker goes through
//! it. Stage 2 (`--inside`) checks that it is in new namespaces of every kind (IDS are stage 1's) and goes on to
//! apply rlimits, Landlock, privileges and seccomp as before.
//!
//! Where the namespaces cannot be made (no bubblewrap, no user namespaces), a profile that requires them has the
//! task refused with the reason; one that does not runs without them, and the report says they are missing.

use std::os::unix::process::CommandExt;
use std::path::Path;

use neuraphage_sandbox_profiles::namespaces;
use neuraphage_sandbox_profiles::plan::SandboxPlan;

/// The argument stage 1 adds for stage 2, followed by its namespaces' ids.
pub const ARG_INSIDE: &str = "--inside";

/// What the outer boundary is for this worker, for its sandbox report.
#[derive(Debug, Default)]
pub struct Outer {
    /// Stage 2: inside the namespaces.
    pub inside: bool,
    /// What is in force.
    pub enforced: Vec<String>,
    /// What is not.
    pub missing: Vec<String>,
    /// Why the task must not run.
    pub refused: Option<String>,
}

impl Outer {
    /// Fit the plan to where the worker stands: without a mount namespace every unix socket of the machine would be
    /// in reach, so unix stream sockets (only there for the bridges) stay refused.
    pub fn adjust(&self, plan: &mut SandboxPlan) {
        if !self.inside {
            plan.seccomp.unix_stream_sockets = false;
            plan.namespaces.bridges.clear();
        }
    }
}

/// Stage 1 (`inside` is `None`): returns only where the worker runs without namespaces (or must refuse the task);
/// otherwise it becomes bubblewrap. Stage 2: checks the namespaces it is in.
pub fn enter(inside: Option<&str>, plan_file: &Path) -> anyhow::Result<Outer> {
    let plan = SandboxPlan::load(plan_file);
    if let Some(outer_ids) = inside {
        return Ok(stage2(outer_ids, plan.ok().as_ref()));
    }
    crate::links::die_with_parent()?;
    // A session of its own: every process the task starts stays in it (the supervisor ends them all with it, and
    // refuses control-socket clients from it). Bubblewrap and stage 2 stay in it.
    nix::unistd::setsid()?;
    let mut outer = Outer::default();
    // An unreadable plan is reported by the caller, which loads it again.
    let Ok(plan) = plan else { return Ok(outer) };
    match neuraphage_sandbox_profiles::limits::join_cgroups(&plan.cgroups) {
        Ok(report) => outer.enforced.extend(report.enforced),
        Err(e) => {
            outer.refused = Some(e.to_string());
            return Ok(outer);
        }
    }
    if !plan.namespaces.enabled {
        outer.missing.push("namespaces: the profile does not ask for them ([namespaces] enabled = false)".into());
        return Ok(outer);
    }
    let why = match namespaces::find_bwrap() {
        Ok(bwrap) => exec_bwrap(&bwrap, &plan, plan_file),
        Err(why) => why,
    };
    if plan.namespaces.required {
        outer.refused = Some(format!("the profile requires namespaces and they cannot be made: {why}"));
    } else {
        outer.missing.push(format!("namespaces (mount, pid, ipc, network): {why}"));
    }
    Ok(outer)
}

/// Become bubblewrap running this worker inside; returns only on failure, with the reason.
fn exec_bwrap(bwrap: &Path, plan: &SandboxPlan, plan_file: &Path) -> String {
    let (worker, cwd) = match (std::env::current_exe(), std::env::current_dir()) {
        (Ok(w), Ok(c)) => (w, c),
        (Err(e), _) | (_, Err(e)) => return format!("cannot find the worker binary or the working folder: {e}"),
    };
    let plan_file = std::fs::canonicalize(plan_file).unwrap_or_else(|_| plan_file.to_path_buf());
    let root = nix::unistd::geteuid().is_root();
    let inside = namespaces::Inside { worker: &worker, plan_file: &plan_file, cwd: &cwd, root };
    let mut cmd = std::process::Command::new(bwrap);
    cmd.args(namespaces::bwrap_args(plan, &inside)).arg("--").arg(&worker);
    cmd.args(std::env::args_os().skip(1)).arg(ARG_INSIDE).arg(namespaces::current_ids());
    let e = cmd.exec();
    format!("cannot run {}: {e}", bwrap.display())
}

fn stage2(outer_ids: &str, plan: Option<&SandboxPlan>) -> Outer {
    let mut outer = Outer { inside: true, ..Outer::default() };
    let shared = namespaces::shared_with(outer_ids);
    if !shared.is_empty() {
        outer.refused = Some(format!("inside bubblewrap, but sharing namespaces with outside: {}", shared.join(", ")));
        return outer;
    }
    if let Some(plan) = plan {
        outer.enforced.extend(plan.cgroups.iter().map(|dir| format!("cgroup {}", dir.display())));
    }
    let ports: Vec<u16> = plan.map(|p| p.namespaces.bridges.iter().map(|b| b.port).collect()).unwrap_or_default();
    outer.enforced.push(format!(
        "namespaces (bubblewrap): mount (only the profile's folders; the task's own writable), pid, ipc, uts, \
         network (loopback only{})",
        if ports.is_empty() { String::new() } else { format!("; ports {ports:?} lead to the host's 127.0.0.1") }
    ));
    let uid = nix::unistd::getuid();
    outer.missing.push(if uid.is_root() {
        "a uid of its own: the task runs as root, the supervisor's uid (files outside its folders are read-only or \
         absent, not foreign)"
            .into()
    } else {
        format!("a uid of its own: the task runs as uid {uid}, the user's (files outside its folders are read-only or absent)")
    });
    outer
}

/// For `--check`, after the sandbox is applied: try what the namespaces stop and Landlock does not (a metadata
/// change outside the task's folders, seeing another process, a network interface beyond loopback). A mode set to
/// the mode it already has, so that the probe changes nothing even where it succeeds.
pub fn probe(outer: &Outer) -> serde_json::Value {
    let exe = std::env::current_exe().unwrap_or_default();
    let chmod = std::fs::metadata(&exe).and_then(|m| std::fs::set_permissions(&exe, m.permissions()));
    let chmod_refused = chmod.as_ref().is_err_and(|e| e.raw_os_error() == Some(nix::libc::EROFS));
    let processes = std::fs::read_dir("/proc")
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok()).count())
        .unwrap_or(0);
    let interfaces = std::fs::read_to_string("/proc/net/dev")
        .map(|t| t.lines().skip(2).filter_map(|l| l.split(':').next()).map(|n| n.trim().to_owned()).collect::<Vec<_>>())
        .unwrap_or_default();
    let only_lo = interfaces.iter().all(|i| i == "lo");
    let enforced = outer.inside && chmod_refused && only_lo && processes <= 3;
    let chmod = match chmod {
        Ok(()) => "allowed".to_owned(),
        Err(e) => e.to_string(),
    };
    serde_json::json!({
        "layer": "namespaces",
        "enforced": enforced,
        "detail": format!(
            "chmod of the worker binary: {chmod}; processes visible: {processes}; network interfaces: {}{}",
            interfaces.join(" "),
            outer.missing.iter().find(|m| m.starts_with("namespaces")).map(|m| format!("; {m}")).unwrap_or_default()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_the_namespaces_the_plan_loses_its_unix_sockets_and_bridges() {
        let mut plan = SandboxPlan::default();
        plan.seccomp.unix_stream_sockets = true;
        plan.namespaces.bridges.push(namespaces::Bridge { port: 1, socket: "/s".into() });
        let inside = Outer { inside: true, ..Outer::default() };
        let mut kept = plan.clone();
        inside.adjust(&mut kept);
        assert_eq!(kept, plan);
        Outer::default().adjust(&mut plan);
        assert!(!plan.seccomp.unix_stream_sockets && plan.namespaces.bridges.is_empty());
    }
}
