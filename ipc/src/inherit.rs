//! Adopting the link sockets a child process (worker, broker) inherits from the supervisor. Their fd numbers come on
//! the child's command line ([`crate::worker::ARG_SUPERVISOR_FD`], [`crate::broker::ARG_CONTROL_FD`], …).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// Take ownership of inherited sockets: each must be a distinct, open socket above stderr. Each is made
/// close-on-exec, so nothing this process starts (a tool's child) inherits a link.
pub fn adopt<const N: usize>(fds: [RawFd; N]) -> Result<[OwnedFd; N], String> {
    for (i, fd) in fds.iter().enumerate() {
        if *fd <= 2 || fds[..i].contains(fd) {
            return Err(format!("bad inherited fds {fds:?}"));
        }
        let meta = std::fs::metadata(format!("/proc/self/fd/{fd}")).map_err(|e| format!("fd {fd} is not open: {e}"))?;
        if !meta.file_type().is_socket() {
            return Err(format!("fd {fd} is not a socket"));
        }
    }
    // SAFETY: every fd is an open socket (checked above) that this process inherited for exactly this purpose and
    // that nothing else in the process owns; the numbers are distinct, so each is adopted once.
    #[allow(unsafe_code)]
    let owned = fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    for fd in &owned {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| format!("FD_CLOEXEC on a link: {e}"))?;
    }
    Ok(owned)
}

/// Close every fd above stderr except `keep`, so nothing else the parent had open leaks into this process.
pub fn close_others(keep: &[RawFd]) -> Result<(), String> {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("/proc/self/fd: {e}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
        // The listing's own fd is closed by now; EBADF for it is expected.
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

/// Send `fd` over a SOCK_SEQPACKET socket with SCM_RIGHTS, with `data` as the packet (it says what the fd is).
pub fn send_fd(socket: &OwnedFd, data: &[u8], fd: OwnedFd) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(data)];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(socket.as_raw_fd(), &iov, &cmsg, nix::sys::socket::MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|e| format!("cannot pass a link: {e}"))?;
    Ok(())
}

/// Receive one packet sent by [`send_fd`]: its data and the fd it carried. `Ok(None)` when the peer closed.
/// A packet with no fd, or more than one, is an error.
pub fn recv_fd(socket: &OwnedFd) -> Result<Option<(Vec<u8>, OwnedFd)>, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| format!("receiving a link: {e}"))?;
    let len = msg.bytes;
    let mut raw = Vec::new();
    for cmsg in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            raw.extend(fds);
        }
    }
    // SAFETY: the kernel has just installed these fds in this process for this message; nothing else owns them.
    #[allow(unsafe_code)]
    let mut owned: Vec<OwnedFd> = raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
    if len == 0 && owned.is_empty() {
        return Ok(None);
    }
    if owned.len() != 1 {
        return Err(format!("a handoff carried {} fds, not 1", owned.len()));
    }
    let fd = owned.remove(0);
    Ok(Some((buf[..len].to_vec(), fd)))
}
