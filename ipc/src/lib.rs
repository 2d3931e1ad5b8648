//! The contract between Neuraphage processes: every wire message and the codec that frames it.
//!
//! Layout:
//! - [`frame`]: the frame codec (4-byte big-endian length + MessagePack body with named fields) and [`Link`], a typed,
//!   bounded, full-duplex link over any byte stream (Unix socket, socketpair).
//! - [`hello`]: the `Hello { protocol, role, pid }` handshake every link opens with.
//! - [`control`]: the control link (CLI/TUI ⇄ supervisor): [`ControlRequest`], [`ControlReply`], request ids.
//! - [`worker`]: the worker links (supervisor ⇄ worker, worker ⇄ broker): start, checkpoints and acks, model calls.
//! - [`broker`]: the broker link (supervisor ⇄ broker) and how worker links are handed to the broker.
//! - [`lock`]: the lock table's resource names, answers and listing; [`cost`]: token and cost totals.
//! - [`llm`]: the provider-neutral conversation: messages, tools, requests, responses, stream deltas, failures.
//! - [`task`]: the task model shared by every process: [`TaskId`], [`TaskStatus`], [`Task`], [`TaskEvent`].
//! - [`events`]: the event stream a subscriber receives (stored events, live deltas, what it missed).
//! - [`snapshot`]: the stream of a worktree's files that the sandboxed snapshot helper writes for a commit.
//! - [`inherit`]: adopting the link sockets a worker or the broker inherits.
//! - [`personas`]: the personas listing and the Watcher's log.
//! - [`paths`]: the environment variables that place the data and runtime folders, and the control socket.
//! - [`error`]: [`IpcError`], the typed failures of a link.
//!
//! Supervisor, worker, broker and CLI depend on this crate and never on each other; a message type that crosses a
//! process boundary lives here and nowhere else.
#![deny(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod broker;
pub mod control;
pub mod cost;
pub mod error;
pub mod events;
pub mod frame;
pub mod hello;
pub mod inherit;
pub mod knowledge;
pub mod llm;
pub mod lock;
pub mod models;
pub mod paths;
pub mod permission;
pub mod personas;
pub mod snapshot;
pub mod status;
pub mod task;
pub mod waiting;
pub mod worker;

pub use control::{
    ControlError, ControlReply, ControlRequest, DaemonStatus, ErrorCode, NewTask, ReplyFrame, RequestFrame, RequestId,
};
pub use error::{IpcError, Result};
pub use frame::{FrameCodec, Link};
pub use hello::{HandshakeReply, Hello, PROTOCOL_VERSION, Role};
pub use task::{
    EventKind, MAX_DESCRIPTION_BYTES, Priority, RunningPhase, Task, TaskDetail, TaskEvent, TaskId, TaskRef, TaskState,
    TaskStatus,
};
