//! The Neuraphage supervisor: owns the task store and the control socket.
//!
//! Layout:
//! - [`home`]: prepares the data and runtime folders and holds the one-supervisor-per-home lock.
//! - [`store`]: the SQLite task store (tasks, dependency edges, append-only events).
//! - [`requests`]: validates control requests and answers them from the store.
//! - [`config`]: `neuraphage.yaml` (max-concurrent, keep-worktrees, max-iterations, prices); [`cost`]: the price table.
//! - [`workers`]: the scheduler and the registry of running tasks; [`runner`]: one task's worker session.
//! - [`cgroup`]: a task's cgroup (process and memory limits; every process killed at the task's end).
//! - [`worktree`]: task worktrees and branches (git2); [`conversation`]: the per-task conversation repository.
//! - [`broker_link`]: spawning the broker and handing it worker links; [`spawn`]: children with inherited fds.
//! - [`server`]: the control socket: peer checks, handshake, bounded connections, timeouts, shutdown.
//! - [`proxy`]: a task's HTTP CONNECT proxy, which lets it reach the hosts its profile lists and nothing else.
//!   [`proxy_names`]: its checks that a TLS server name or `Host` header names the host a connection was let through for.
//! - [`notify`]: systemd's service notifications (readiness, stopping, watchdog pings); no-ops outside systemd.
//! - [`error`]: the error type, [`SupervisorError`].
//!
//! `docs/ARCHITECTURE.md` has the map.
#![deny(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod broker_link;
pub mod cgroup;
pub mod config;
pub mod conversation;
pub mod cost;
pub mod error;
pub mod home;
pub mod notify;
pub mod proxy;
pub mod proxy_names;
pub mod requests;
pub mod runner;
pub mod server;
pub mod spawn;
pub mod store;
pub mod workers;
pub mod worktree;

pub use error::{Result, SupervisorError};
