//! The handshake every link opens with.
//!
//! The connecting side sends [`Hello`]; the accepting side answers [`HandshakeReply`]. Both types are frozen: every
//! future protocol version must still decode them, so a mismatch is always reported with both version numbers.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{IpcError, Result};
use crate::frame::Link;

/// The protocol version this build speaks. Bump it when a message changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;

/// Which kind of process is at an end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The `neuraphage` command-line client.
    Cli,
    /// The terminal UI.
    Tui,
    /// `neuraphage-supervisor`.
    Supervisor,
    /// `neuraphage-worker`, one per running task.
    Worker,
    /// `neuraphage-broker`.
    Broker,
    /// A benchmark or test client driving the socket directly.
    Tool,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Cli => "neuraphage CLI",
            Role::Tui => "neuraphage TUI",
            Role::Supervisor => "supervisor",
            Role::Worker => "worker",
            Role::Broker => "broker",
            Role::Tool => "tool",
        })
    }
}

/// The first frame on every link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// What the sender is.
    pub role: Role,
    /// The sender's process id, as it believes it to be (the supervisor trusts SO_PEERCRED, not this).
    pub pid: u32,
}

impl Hello {
    /// This process's hello in the given role.
    pub fn ours(role: Role) -> Hello {
        Hello { protocol: PROTOCOL_VERSION, role, pid: std::process::id() }
    }

    /// Err with both versions named when the peer speaks another protocol.
    pub fn check_peer(&self, local_role: Role) -> Result<()> {
        if self.protocol == PROTOCOL_VERSION {
            return Ok(());
        }
        Err(IpcError::ProtocolMismatch {
            local_role: local_role.to_string(),
            ours: PROTOCOL_VERSION,
            peer_role: self.role.to_string(),
            peer_pid: self.pid,
            theirs: self.protocol,
        })
    }
}

/// The accepting side's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandshakeReply {
    /// The link is open; `peer` is the acceptor's own hello.
    Accepted {
        /// The acceptor's hello.
        peer: Hello,
    },
    /// The link is refused and will be closed.
    Refused {
        /// The acceptor's hello (so a version mismatch can name both versions).
        peer: Hello,
        /// Why, in words for the user.
        reason: String,
    },
}

impl<S, In, Out> Link<S, In, Out>
where
    S: AsyncRead + AsyncWrite + Unpin,
    In: serde::de::DeserializeOwned,
    Out: Serialize,
{
    /// Open the link from the connecting side: send our hello, check the acceptor's answer.
    pub async fn connect_handshake(&mut self, role: Role) -> Result<Hello> {
        // If the acceptor refused us before reading our hello, sending fails, but its refusal is still there to read.
        let sent = self.send_as(&Hello::ours(role)).await;
        let reply = match self.expect_as::<HandshakeReply>().await {
            Ok(reply) => reply,
            Err(e) => return Err(sent.err().unwrap_or(e)),
        };
        match reply {
            HandshakeReply::Accepted { peer } => {
                peer.check_peer(role)?;
                Ok(peer)
            }
            HandshakeReply::Refused { peer, reason } => {
                peer.check_peer(role)?;
                Err(IpcError::Refused { peer_role: peer.role.to_string(), reason })
            }
        }
    }

    /// Open the link from the accepting side: read the peer's hello, refuse it on a version mismatch.
    pub async fn accept_handshake(&mut self, role: Role) -> Result<Hello> {
        let hello: Hello = self.expect_as().await?;
        if let Err(mismatch) = hello.check_peer(role) {
            let reply = HandshakeReply::Refused { peer: Hello::ours(role), reason: mismatch.to_string() };
            // Best effort: the peer may already be gone; the mismatch is what we report.
            let _ = self.send_as(&reply).await;
            return Err(mismatch);
        }
        self.send_as(&HandshakeReply::Accepted { peer: Hello::ours(role) }).await?;
        Ok(hello)
    }

    /// Refuse a link before reading anything from it (e.g. a peer of another uid).
    pub async fn refuse(&mut self, role: Role, reason: String) -> Result<()> {
        self.send_as(&HandshakeReply::Refused { peer: Hello::ours(role), reason }).await
    }
}
