//! Typed failures of a link. Each one closes the link it happened on and nothing else.

use std::io;

/// What went wrong on a link. None of these is ever a panic; the owner of the link closes it and carries on.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// The peer announced a frame longer than this link accepts (before any of its body was read).
    #[error("frame of {len} bytes is larger than this link's limit of {max} bytes")]
    Oversized {
        /// The length the peer announced.
        len: u64,
        /// The largest frame this link accepts.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("link closed in the middle of a frame ({buffered} bytes of an unfinished frame were received)")]
    Truncated {
        /// How many bytes of the unfinished frame had arrived.
        buffered: usize,
    },
    /// A well-formed MessagePack body named a message variant this build does not know (a newer peer?).
    #[error("unknown message: {detail}")]
    UnknownVariant {
        /// The decoder's description, naming the variant.
        detail: String,
    },
    /// The frame body is not a valid message of the expected type.
    #[error("malformed message: {detail}")]
    Malformed {
        /// What the decoder found wrong.
        detail: String,
    },
    /// A message could not be encoded (a bug on this side, reported rather than panicking).
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The two ends speak different protocol versions.
    #[error(
        "protocol mismatch: this {local_role} speaks protocol {ours}, the {peer_role} (pid {peer_pid}) speaks protocol {theirs}; run binaries from the same release"
    )]
    ProtocolMismatch {
        /// Our role.
        local_role: String,
        /// Our protocol version.
        ours: u32,
        /// The peer's role.
        peer_role: String,
        /// The peer's pid, as it announced it.
        peer_pid: u32,
        /// The peer's protocol version.
        theirs: u32,
    },
    /// The peer refused the link during the handshake.
    #[error("refused by the {peer_role}: {reason}")]
    Refused {
        /// Who refused.
        peer_role: String,
        /// Why.
        reason: String,
    },
    /// The peer closed the link where a message was expected.
    #[error("link closed by the peer")]
    Closed,
    /// The peer sent nothing for longer than the link allows.
    #[error("timed out after {secs:.1}s waiting for {what}")]
    TimedOut {
        /// What we were waiting for.
        what: &'static str,
        /// How long we waited.
        secs: f64,
    },
    /// The operating system reported an I/O error on the link.
    #[error("i/o error on link: {0}")]
    Io(#[from] io::Error),
}

/// Result of link operations.
pub type Result<T, E = IpcError> = std::result::Result<T, E>;
