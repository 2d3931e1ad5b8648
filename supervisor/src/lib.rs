//! The Neuraphage supervisor: owns the task store and the control socket.
//!
//! Layout:
//! - [`home`]: prepares the data and runtime folders and holds the one-supervisor-per-home lock.
//! - [`store`]: the SQLite task store (tasks, dependency edges, append-only events).
//! - [`requests`]: validates control requests and answers them from the store.
//! - [`server`]: the control socket: peer checks, handshake, bounded connections, timeouts, shutdown.
//! - [`error`]: the error type, [`SupervisorError`].
//!
//! Workers, the broker, worktrees and the scheduler come with later issues; `docs/ARCHITECTURE.md` has the map.
#![deny(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod error;
pub mod home;
pub mod requests;
pub mod server;
pub mod store;

pub use error::{Result, SupervisorError};
