//! The outer boundary: a worker runs inside namespaces made by bubblewrap (`bwrap`), around the Landlock and seccomp
//! layers it applies to itself. Landlock does not mediate chmod/chown/utime/xattrs, inotify, other processes'
//! limits and priorities, System V IPC or every socket protocol; the namespaces do:
//!
//! - mount: a fresh root where only the plan's rules exist, each bound at its own path (`--bind` for read-write,
//!   `--ro-bind` for read and read-exec), mounted in order of depth so a read rule inside a read-write folder lies
//!   read-only on top of it; a private `/proc` and a minimal `/dev`. The user's home, `$NEURAPHAGE_HOME`, other
//!   tasks and the runtime sockets are absent: metadata changes outside the task's own folders fail with `EROFS` or
//!   `ENOENT`, and inotify sees nothing else;
//! - pid: no other process is visible or signalable; bubblewrap's init is pid 1 and everything dies with it;
//! - ipc: System V IPC of its own, gone when the task ends;
//! - net: only a loopback; the task reaches its proxy (and the profile's `tcp-connect` ports on the host's
//!   127.0.0.1) through unix sockets bound into the sandbox, which the worker bridges to TCP ports on that loopback
//!   ([`Bridge`]);
//! - uts and (where the kernel has it) cgroup; a user namespace when not run as root.
//!
//! Bubblewrap is the field's standard for this (Flatpak, Codex and Claude Code use it): it makes the mount layout,
//! runs a reaper as pid 1, and with `--die-with-parent` ties the sandbox's life to the worker's parent.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::FsAccess;
use crate::plan::SandboxPlan;

/// The bubblewrap binary, looked up on `PATH`.
pub const BWRAP: &str = "bwrap";

/// What a worker is told to do about namespaces (the plan's `namespaces` section; absent in older plans, which then
/// run without them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Namespaces {
    /// Run the worker inside bubblewrap's namespaces.
    #[serde(default)]
    pub enabled: bool,
    /// Refuse the task when they cannot be made (bubblewrap missing, user namespaces not allowed).
    #[serde(default)]
    pub required: bool,
    /// TCP ports inside the task's network namespace that lead, through a unix socket, to the same port on the
    /// host's 127.0.0.1 (its proxy, the profile's `tcp-connect` ports).
    #[serde(default)]
    pub bridges: Vec<Bridge>,
}

/// One way out of the network namespace: the worker listens on `127.0.0.1:port` inside and forwards each connection
/// to `socket` (bound into the sandbox at its own path), whose other end the supervisor forwards to the same port on
/// the host's 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Bridge {
    /// The TCP port, inside and on the host.
    pub port: u16,
    /// The unix socket the supervisor listens on.
    pub socket: PathBuf,
}

/// Devices bubblewrap's `--dev` makes; a rule naming one of them needs no bind.
const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "console"];

/// Where bubblewrap is, or why it cannot make this process's namespaces (the task is then refused, or run without
/// them if its profile allows).
pub fn find_bwrap() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).map(|d| d.join(BWRAP)).find(|p| p.is_file());
    let Some(bwrap) = found else {
        return Err(format!(
            "bubblewrap ({BWRAP}) is not on PATH; install it (Debian and Ubuntu: apt install bubblewrap; \
             Fedora: dnf install bubblewrap; Arch: pacman -S bubblewrap)"
        ));
    };
    if !nix::unistd::geteuid().is_root() {
        let read = |f: &str| std::fs::read_to_string(f).ok().map(|s| s.trim().to_owned());
        if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
            return Err("user namespaces are disabled (sysctl user.max_user_namespaces = 0); bubblewrap cannot make \
                        the task's namespaces"
                .into());
        }
        if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
            return Err(
                "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone = 0)".into()
            );
        }
        if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
            return Err("AppArmor restricts unprivileged user namespaces \
                        (kernel.apparmor_restrict_unprivileged_userns = 1); allow bwrap with an AppArmor profile"
                .into());
        }
    }
    Ok(bwrap)
}

/// What the sandbox needs beside the plan's rules.
#[derive(Debug, Clone)]
pub struct Inside<'a> {
    /// The worker binary (bound read-only at its own path).
    pub worker: &'a Path,
    /// The plan file (bound read-only at its own path).
    pub plan_file: &'a Path,
    /// The working folder inside.
    pub cwd: &'a Path,
    /// Whether this process is root (no user namespace then: bubblewrap runs privileged).
    pub root: bool,
}

/// Bubblewrap's arguments (before `--` and the command) for `plan`.
pub fn bwrap_args(plan: &SandboxPlan, inside: &Inside<'_>) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup-try",
        "--hostname",
        "neuraphage-task",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    if !inside.root {
        args.push("--unshare-user".into());
    }
    let mut binds: Vec<(&'static str, PathBuf)> = Vec::new();
    for rule in &plan.fs {
        let path = &rule.path;
        if path.starts_with("/proc") {
            continue;
        }
        if let Ok(dev) = path.strip_prefix("/dev") {
            let first = dev.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
            if first.is_none_or(|f| DEV_NODES.contains(&f.as_str())) {
                continue;
            }
            binds.push(("--dev-bind", path.clone()));
            continue;
        }
        let how = if rule.access == FsAccess::ReadWrite { "--bind" } else { "--ro-bind" };
        binds.push((how, path.clone()));
    }
    binds.push(("--ro-bind", inside.worker.to_path_buf()));
    binds.push(("--ro-bind", inside.plan_file.to_path_buf()));
    for bridge in &plan.namespaces.bridges {
        binds.push(("--bind", bridge.socket.clone()));
    }
    // Parents before what lies inside them; a read rule inside a read-write folder is mounted read-only on top.
    binds.sort_by_key(|(_, p)| p.components().count());
    for (link, target) in root_symlinks(&binds) {
        args.extend(["--symlink".into(), target.into_os_string(), link.into_os_string()]);
    }
    for (how, path) in binds {
        args.extend([how.into(), path.clone().into_os_string(), path.into_os_string()]);
    }
    args.extend(["--chdir".into(), inside.cwd.as_os_str().to_owned()]);
    args
}

/// The host's top-level symlinks (`/bin -> usr/bin`, `/lib64 -> usr/lib64` on a merged-/usr system) whose target
/// is bound: the plan's rules are resolved paths, but programs name `/lib64/ld-linux-x86-64.so.2` and `/bin/sh`.
fn root_symlinks(binds: &[(&str, PathBuf)]) -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/") else { return Vec::new() };
    let mut links = Vec::new();
    for entry in entries.flatten() {
        let link = entry.path();
        let Ok(target) = std::fs::read_link(&link) else { continue };
        let Ok(real) = std::fs::canonicalize(&link) else { continue };
        if binds.iter().any(|(_, p)| real.starts_with(p)) && !binds.iter().any(|(_, p)| p == &link) {
            links.push((link, target));
        }
    }
    links.sort();
    links
}

/// This process's namespaces, as `kind:inode` pairs (`mnt:4026531841,pid:…`): stage 1 passes them to stage 2, which
/// checks that each of its own differs.
pub fn current_ids() -> String {
    NS_KINDS
        .iter()
        .map(|kind| {
            let id = std::fs::read_link(format!("/proc/self/ns/{kind}"))
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            let inode = id.trim_end_matches(']').rsplit('[').next().unwrap_or("").to_owned();
            format!("{kind}:{inode}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The namespaces a sandbox must not share with the process that started it.
pub const NS_KINDS: &[&str] = &["mnt", "pid", "net", "ipc", "uts"];

/// Check that this process is in new namespaces of every kind in [`NS_KINDS`], compared with `outer` (what
/// [`current_ids`] gave outside). The kinds it shares, if any.
pub fn shared_with(outer: &str) -> Vec<String> {
    let now = current_ids();
    let mine: Vec<&str> = now.split(',').collect();
    outer
        .split(',')
        .filter(|pair| pair.split_once(':').is_none_or(|(_, inode)| inode.is_empty()) || mine.contains(pair))
        .map(|pair| pair.split(':').next().unwrap_or(pair).to_owned())
        .chain(mine.iter().filter(|p| p.ends_with(':')).map(|p| p.trim_end_matches(':').to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FsRule;

    fn plan(rules: &[(&str, FsAccess)]) -> SandboxPlan {
        SandboxPlan {
            fs: rules.iter().map(|(p, a)| FsRule { path: PathBuf::from(p), access: *a }).collect(),
            ..Default::default()
        }
    }

    fn binds(args: &[OsString]) -> Vec<(String, String)> {
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < args.len() {
            if ["--bind", "--ro-bind", "--dev-bind"].contains(&args[i].as_str()) {
                assert_eq!(args[i + 1], args[i + 2], "bound at its own path");
                out.push((args[i].clone(), args[i + 1].clone()));
                i += 3;
            } else {
                i += 1;
            }
        }
        out
    }

    #[test]
    fn rules_are_bound_at_their_path_parents_first_with_proc_and_dev_made_fresh() {
        let p = plan(&[
            ("/w/task/worktree/.git", FsAccess::Read),
            ("/usr", FsAccess::ReadExec),
            ("/w/task/worktree", FsAccess::ReadWrite),
            ("/proc", FsAccess::Read),
            ("/dev/null", FsAccess::ReadWrite),
            ("/dev/kvm", FsAccess::ReadWrite),
        ]);
        let inside = Inside {
            worker: Path::new("/opt/np/worker"),
            plan_file: Path::new("/w/task/sandbox.json"),
            cwd: Path::new("/w/task/worktree"),
            root: true,
        };
        let args = bwrap_args(&p, &inside);
        let text: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        for flag in ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--die-with-parent"] {
            assert!(text.contains(&flag.to_owned()), "{flag}: {text:?}");
        }
        assert!(!text.contains(&"--unshare-user".to_owned()), "root needs no user namespace");
        assert!(text.windows(2).any(|w| w == ["--proc", "/proc"]) && text.windows(2).any(|w| w == ["--dev", "/dev"]));
        let b = binds(&args);
        let pos = |path: &str| b.iter().position(|(_, p)| p == path).unwrap_or_else(|| panic!("{path}: {b:?}"));
        assert!(pos("/w/task/worktree") < pos("/w/task/worktree/.git"), "the guard lies on top: {b:?}");
        assert_eq!(b[pos("/w/task/worktree")].0, "--bind");
        assert_eq!(b[pos("/w/task/worktree/.git")].0, "--ro-bind");
        assert_eq!(b[pos("/usr")].0, "--ro-bind");
        assert_eq!(b[pos("/dev/kvm")].0, "--dev-bind");
        assert_eq!(b[pos("/opt/np/worker")].0, "--ro-bind");
        assert!(!b.iter().any(|(_, p)| p == "/proc" || p == "/dev/null"), "{b:?}");
        assert!(text.windows(2).any(|w| w == ["--chdir", "/w/task/worktree"]));
        let user = bwrap_args(&p, &Inside { root: false, ..inside });
        assert!(user.contains(&OsString::from("--unshare-user")));
    }

    #[test]
    fn a_process_shares_every_namespace_with_itself() {
        let ids = current_ids();
        assert_eq!(shared_with(&ids), NS_KINDS.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert!(shared_with("mnt:1,pid:2,net:3,ipc:4,uts:5").is_empty(), "{ids}");
        assert_eq!(shared_with("mnt:,pid:2"), vec!["mnt".to_owned()]);
    }
}
