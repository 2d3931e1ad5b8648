//! The worker's inherited links: adopt the two fds the supervisor named, close every other one, and die with the
//! supervisor.

use std::os::fd::{OwnedFd, RawFd};
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

/// Adopt the three inherited fds (supervisor link, broker link, handoff socket) and close every other fd above
/// stderr.
pub fn take(supervisor: RawFd, broker: RawFd, handoff: RawFd) -> anyhow::Result<(UnixStream, UnixStream, OwnedFd)> {
    let [s, b, h] = inherit::adopt([supervisor, broker, handoff]).map_err(anyhow::Error::msg)?;
    inherit::close_others(&[supervisor, broker, handoff]).map_err(anyhow::Error::msg)?;
    let (s, b) = (UnixStream::from(s), UnixStream::from(b));
    s.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    Ok((s, b, h))
}

/// New broker links the supervisor hands over after a broker restart, received on a thread of their own.
pub fn receive_relinks(handoff: OwnedFd) -> tokio::sync::mpsc::UnboundedReceiver<UnixStream> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(Some((_, fd))) = inherit::recv_fd(&handoff) {
            let stream = UnixStream::from(fd);
            if stream.set_nonblocking(true).is_err() || tx.send(stream).is_err() {
                break;
            }
        }
    });
    rx
}
