//! The worker's inherited links: adopt the two fds the supervisor named, close every other one, and die with the
//! supervisor.

use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;

use anyhow::{Context, bail};
use neuraphage_ipc::inherit;

/// Ask the kernel to kill this process when the supervisor dies, and check it has not died already.
pub fn die_with_parent() -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).context("PR_SET_PDEATHSIG")?;
    if nix::unistd::getppid().as_raw() == 1 {
        bail!("the supervisor is already gone");
    }
    Ok(())
}

/// Adopt the two link fds and close every other fd above stderr.
pub fn take(supervisor: RawFd, broker: RawFd) -> anyhow::Result<(UnixStream, UnixStream)> {
    let [s, b] = inherit::adopt([supervisor, broker]).map_err(anyhow::Error::msg)?;
    inherit::close_others(&[supervisor, broker]).map_err(anyhow::Error::msg)?;
    let (s, b) = (UnixStream::from(s), UnixStream::from(b));
    s.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    Ok((s, b))
}
