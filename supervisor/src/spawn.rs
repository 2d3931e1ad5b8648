//! Starting child processes (broker, workers) with inherited socketpairs and nothing else.
//!
//! Every fd this process opens is close-on-exec. To hand a child its link, [`spawn_with_fds`] clears the flag on the
//! child's ends only for the instant of the spawn, under a lock, so no other child (spawned at the same time) can
//! inherit them. `Command` keeps using posix_spawn (no `pre_exec` hook); the child learns its fd numbers from its
//! command line and closes every other fd itself.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// A stream socketpair: our end as a (non-blocking) std stream, the child's end as an fd to hand over.
pub fn stream_pair() -> std::io::Result<(UnixStream, OwnedFd)> {
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?;
    let ours = UnixStream::from(ours);
    ours.set_nonblocking(true)?;
    Ok((ours, theirs))
}

/// A datagram-boundary socketpair (SOCK_SEQPACKET), blocking, both ends close-on-exec.
pub fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?)
}

/// Spawn `cmd` so that it inherits exactly `fds` (beside stdin, stdout, stderr).
pub fn spawn_with_fds(cmd: &mut tokio::process::Command, fds: &[&OwnedFd]) -> std::io::Result<tokio::process::Child> {
    let _guard = SPAWN_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for fd in fds {
        fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
    }
    let spawned = cmd.spawn();
    for fd in fds {
        // Our copy is closed by the caller soon; keep it out of any other child meanwhile.
        let _ = fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
    spawned
}

/// A process's parent pid and session id, from `/proc/<pid>/stat`.
pub fn parent_and_session(pid: u32) -> Option<(u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp session ..."; comm may hold spaces and parentheses.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let ppid = fields.nth(1)?.parse().ok()?;
    let session = fields.nth(1)?.parse().ok()?;
    Some((ppid, session))
}

/// SIGKILL every process in the session `sid` (a worker's: what its task started and left behind).
pub fn kill_session(sid: u32) -> usize {
    let mut killed = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        if parent_and_session(pid).is_some_and(|(_, s)| s == sid)
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

/// The fd number to put on a child's command line.
pub fn fd_arg(fd: &OwnedFd) -> String {
    fd.as_raw_fd().to_string()
}

/// A sibling binary of this executable (`neuraphage-worker`, `neuraphage-broker`), else one on `PATH`.
pub fn sibling_binary(name: &str) -> Result<PathBuf, String> {
    if let Some(beside) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join(name)))
        && beside.is_file()
    {
        return Ok(beside);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p: &PathBuf| p.is_file())
        .ok_or_else(|| format!("cannot find {name} beside {} or on PATH", exe_dir().display()))
}

fn exe_dir() -> PathBuf {
    std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)).unwrap_or_default()
}
