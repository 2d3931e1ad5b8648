//! The broker's inherited sockets: adopting them, and receiving worker links (SCM_RIGHTS over SOCK_SEQPACKET, the
//! packet's data being the task id the supervisor vouches for).

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use neuraphage_ipc::TaskId;
use neuraphage_ipc::inherit;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use tokio::sync::mpsc;

/// Adopt the two inherited fds (both must be open sockets) and close every other fd above stderr.
pub fn adopt(control: RawFd, handoff: RawFd) -> anyhow::Result<(UnixStream, OwnedFd)> {
    let [control_fd, handoff_fd] = inherit::adopt([control, handoff]).map_err(anyhow::Error::msg)?;
    inherit::close_others(&[control, handoff]).map_err(anyhow::Error::msg)?;
    let control = UnixStream::from(control_fd);
    control.set_nonblocking(true)?;
    Ok((control, handoff_fd))
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
