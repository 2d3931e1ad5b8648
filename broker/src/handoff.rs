//! The broker's inherited sockets: adopting them, and receiving worker links (SCM_RIGHTS over SOCK_SEQPACKET, the
//! packet's data being the task id the supervisor vouches for).

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use anyhow::bail;
use neuraphage_ipc::TaskId;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use std::os::unix::fs::FileTypeExt;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use tokio::sync::mpsc;

/// Adopt the two inherited fds (both must be open sockets).
pub fn adopt(control: RawFd, handoff: RawFd) -> anyhow::Result<(UnixStream, OwnedFd)> {
    if control == handoff || control <= 2 || handoff <= 2 {
        bail!("bad fds {control} and {handoff}");
    }
    for fd in [control, handoff] {
        let meta = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .map_err(|e| anyhow::anyhow!("fd {fd} is not open: {e}"))?;
        if !meta.file_type().is_socket() {
            bail!("fd {fd} is not a socket");
        }
    }
    // SAFETY: both fds are open sockets (checked above), inherited from the supervisor for exactly this purpose and
    // owned by nothing else in this process; each is adopted once.
    #[allow(unsafe_code)]
    let (control, handoff) = unsafe { (OwnedFd::from_raw_fd(control), OwnedFd::from_raw_fd(handoff)) };
    for fd in [&control, &handoff] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    let control = UnixStream::from(control);
    control.set_nonblocking(true)?;
    Ok((control, handoff))
}

/// Receive worker links on a thread of their own; each arrives as (task, stream) on the returned channel. The
/// channel closes when the supervisor closes its end.
pub fn receive(handoff: OwnedFd) -> mpsc::UnboundedReceiver<(TaskId, UnixStream)> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        loop {
            match receive_one(&handoff) {
                Ok(Some(link)) => {
                    if tx.send(link).is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => tracing::error!(error = %e, "bad handoff; ignored"),
            }
        }
        tracing::info!("handoff socket closed");
    });
    rx
}

fn receive_one(handoff: &OwnedFd) -> anyhow::Result<Option<(TaskId, UnixStream)>> {
    let mut buf = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(handoff.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let len = msg.bytes;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            fds.extend(received);
        }
    }
    // SAFETY: the kernel just installed these fds in this process for us; nothing else owns them.
    #[allow(unsafe_code)]
    let owned: Vec<OwnedFd> = fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
    if len == 0 && owned.is_empty() {
        return Ok(None);
    }
    let task: TaskId = std::str::from_utf8(&buf[..len])?.parse().map_err(anyhow::Error::msg)?;
    let [fd]: [OwnedFd; 1] =
        owned.try_into().map_err(|v: Vec<OwnedFd>| anyhow::anyhow!("{} fds with {task}", v.len()))?;
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(true)?;
    Ok(Some((task, stream)))
}
