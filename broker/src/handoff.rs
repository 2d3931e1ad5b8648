//! The broker's inherited sockets: adopting them, and receiving worker links (SCM_RIGHTS over SOCK_SEQPACKET, the
//! packet's data being the [`LinkGrant`] the supervisor vouches for: task id, priority, model tier).

use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use neuraphage_ipc::TaskId;
use neuraphage_ipc::broker::LinkGrant;
use neuraphage_ipc::inherit;
use tokio::sync::mpsc;

/// Adopt the two inherited fds (both must be open sockets) and close every other fd above stderr.
pub fn adopt(control: RawFd, handoff: RawFd) -> anyhow::Result<(UnixStream, OwnedFd)> {
    let [control_fd, handoff_fd] = inherit::adopt([control, handoff]).map_err(anyhow::Error::msg)?;
    inherit::close_others(&[control, handoff]).map_err(anyhow::Error::msg)?;
    let control = UnixStream::from(control_fd);
    control.set_nonblocking(true)?;
    Ok((control, handoff_fd))
}

/// Receive worker links on a thread of their own; each arrives as (grant, stream) on the returned channel. The
/// channel closes when the supervisor closes its end.
pub fn receive(handoff: OwnedFd) -> mpsc::UnboundedReceiver<(LinkGrant, UnixStream)> {
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

fn receive_one(handoff: &OwnedFd) -> anyhow::Result<Option<(LinkGrant, UnixStream)>> {
    let Some((data, fd)) = inherit::recv_fd(handoff).map_err(anyhow::Error::msg)? else { return Ok(None) };
    let grant = match neuraphage_ipc::frame::decode::<LinkGrant>(&data) {
        Ok(grant) => grant,
        // A bare task id (an older supervisor): the default priority and tier.
        Err(_) => {
            let task: TaskId = std::str::from_utf8(&data)?.parse().map_err(anyhow::Error::msg)?;
            LinkGrant { task, priority: 2, tier: None, tree: None }
        }
    };
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(true)?;
    Ok(Some((grant, stream)))
}
