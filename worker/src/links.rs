//! The worker's inherited links: adopt the two fds the supervisor named, close every other one, and die with the
//! supervisor.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use std::os::unix::fs::FileTypeExt;

use anyhow::{Context, bail};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// Ask the kernel to kill this process when the supervisor dies, and check it has not died already.
pub fn die_with_parent() -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).context("PR_SET_PDEATHSIG")?;
    if nix::unistd::getppid().as_raw() == 1 {
        bail!("the supervisor is already gone");
    }
    Ok(())
}

/// Adopt the two link fds (they must be open sockets) and close every other fd above stderr.
pub fn take(supervisor: RawFd, broker: RawFd) -> anyhow::Result<(UnixStream, UnixStream)> {
    if supervisor == broker || supervisor <= 2 || broker <= 2 {
        bail!("bad link fds {supervisor} and {broker}");
    }
    for fd in [supervisor, broker] {
        let meta =
            std::fs::metadata(format!("/proc/self/fd/{fd}")).with_context(|| format!("link fd {fd} is not open"))?;
        if !meta.file_type().is_socket() {
            bail!("link fd {fd} is not a socket");
        }
    }
    close_others(&[supervisor, broker])?;
    // SAFETY: both fds are open sockets (checked above) that this process inherited for exactly this purpose; nothing
    // else in the process owns them, and each is adopted once.
    #[allow(unsafe_code)]
    let (s, b) = unsafe { (OwnedFd::from_raw_fd(supervisor), OwnedFd::from_raw_fd(broker)) };
    // Inherited without close-on-exec: set it, so no tool's child (a Bash command) inherits the links.
    for fd in [&s, &b] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).context("FD_CLOEXEC on a link")?;
    }
    let (s, b) = (UnixStream::from(s), UnixStream::from(b));
    s.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    Ok((s, b))
}

/// Close every fd above stderr except `keep` (nothing else may leak in from the parent).
fn close_others(keep: &[RawFd]) -> anyhow::Result<()> {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .context("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
        // The read_dir's own fd is already closed by now; EBADF for it is expected.
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}
