//! The supervisor's side of the broker: spawn it, hand it each worker's link, collect what it reports.
//!
//! The broker gets two inherited sockets: the framed broker link and a SOCK_SEQPACKET socket over which each
//! worker's broker end travels with SCM_RIGHTS, its packet's data being the task id. The supervisor, not the worker,
//! says which task is on a link.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use neuraphage_ipc::broker::{
    ARG_CONTROL_FD, ARG_HANDOFF_FD, BrokerToSupervisor, MAX_BROKER_FRAME, SupervisorToBroker,
};
use neuraphage_ipc::{Link, Role, TaskId};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::net::UnixStream;

use crate::spawn::{fd_arg, seqpacket_pair, sibling_binary, spawn_with_fds, stream_pair};

/// Name of the broker binary.
pub const BROKER_BIN: &str = "neuraphage-broker";

/// A running broker.
pub struct Broker {
    handoff: Mutex<OwnedFd>,
    /// The broker's pid.
    pub pid: u32,
}

/// What the broker sends up, for the supervisor to act on.
pub type BrokerLink = Link<UnixStream, BrokerToSupervisor, SupervisorToBroker>;

impl Broker {
    /// Spawn the broker (its stderr to `log`), complete the handshake on its link, and return it with the link.
    pub async fn spawn(
        home: &std::path::Path,
        log: std::fs::File,
    ) -> Result<(Broker, BrokerLink, tokio::process::Child), String> {
        let binary = sibling_binary(BROKER_BIN)?;
        let (ours, theirs) = stream_pair().map_err(|e| format!("socketpair: {e}"))?;
        let (handoff, handoff_child) = seqpacket_pair().map_err(|e| format!("socketpair: {e}"))?;
        let mut cmd = tokio::process::Command::new(&binary);
        cmd.arg(ARG_CONTROL_FD)
            .arg(fd_arg(&theirs))
            .arg(ARG_HANDOFF_FD)
            .arg(fd_arg(&handoff_child))
            .arg("--home")
            .arg(home)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        let child = spawn_with_fds(&mut cmd, &[&theirs, &handoff_child])
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        drop((theirs, handoff_child));
        let pid = child.id().unwrap_or(0);
        let stream = UnixStream::from_std(ours).map_err(|e| e.to_string())?;
        let mut link: BrokerLink = Link::new(stream, MAX_BROKER_FRAME);
        let hello = tokio::time::timeout(std::time::Duration::from_secs(10), link.accept_handshake(Role::Supervisor))
            .await
            .map_err(|_| "the broker did not say hello within 10 s".to_owned())?
            .map_err(|e| format!("broker handshake: {e}"))?;
        tracing::info!(pid, hello_pid = hello.pid, "broker started");
        Ok((Broker { handoff: Mutex::new(handoff), pid }, link, child))
    }

    /// Hand the broker the broker end of `task`'s worker link.
    pub fn hand_over(&self, task: &TaskId, link: OwnedFd) -> Result<(), String> {
        let handoff = self.handoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fds = [link.as_raw_fd()];
        let data = [IoSlice::new(task.as_str().as_bytes())];
        sendmsg::<()>(handoff.as_raw_fd(), &data, &[ControlMessage::ScmRights(&fds)], MsgFlags::MSG_NOSIGNAL, None)
            .map_err(|e| format!("cannot hand the broker {task}'s link: {e}"))?;
        Ok(())
    }
}
