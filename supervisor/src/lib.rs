//! The Neuraphage supervisor: owns the task store and the control socket.
//!
//! Layout:
//! - [`home`]: prepares the data and runtime folders and holds the one-supervisor-per-home lock.
//! - [`store`]: the SQLite task store (tasks, dependency edges, append-only events).
//! - [`requests`]: validates control requests and answers them from the store.
//! - [`config`]: `neuraphage.yaml` (max-concurrent, keep-worktrees, max-iterations, prices); [`cost`]: the price table.
//! - [`workers`]: the scheduler and the registry of running tasks; [`runner`]: one task's worker session.
//! - [`cgroup`]: a task's cgroup (process and memory limits; every process killed at the task's end).
//! - [`private_repo`]: a task's private repository and how its commits reach the user's; [`snapshot`]: the
//!   worktree read by a sandboxed helper and checked; [`worktree_seal`]: no git metadata of the task's left for a
//!   person; [`task_commit`]: commits, diffs and the end of a task's worktree; [`worktree`]: branch names, bases and opening repositories (git2); [`conversation`]: the per-task conversation repository.
//! - [`broker_link`]: spawning the broker and handing it worker links; [`spawn`]: children with inherited fds.
//! - [`server`]: the control socket: peer checks, handshake, bounded connections, timeouts, shutdown.
//! - [`proxy`]: a task's HTTP CONNECT proxy, which lets it reach the hosts its profile lists and nothing else;
//!   [`proxy_names`]: its checks that a TLS server name or `Host` header names the host a connection was let
//!   through for; [`proxy_bridge`]: the unix sockets that lead from a task's network namespace to its proxy's port.
//! - [`event_bus`]: the live event bus (bounded per subscriber, told what it missed); [`event_stream`]: a
//!   subscription served on a control connection (backlog from the store, then the live tail); [`tool_events`]:
//!   tool-call, tool-result and cost events derived from checkpoints and usage reports.
//! - [`knowledge`]: the knowledge store (learning files, their FTS5 index, extraction, injection, the Syncer).
//! - [`personas`]: the personas in force and the choice of one for a new task; [`watcher`]: the loop that
//!   looks at every running task from outside and steps in when one is stuck.
//! - [`status_socket`]: `status.sock`, one JSON status line per change for shell bars and the TUI;
//!   [`notifications`]: desktop (D-Bus) and spoken notifications when a task waits, fails or completes, and mute;
//!   [`text_shown`]: task-written text made one bounded, escaped line.
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
pub mod crash_point;
pub mod disk;
pub mod error;
pub mod event_bus;
pub mod event_caps;
pub mod event_stream;
pub mod home;
pub mod inbox;
pub mod knowledge;
pub mod notifications;
pub mod notify;
pub mod permissions;
pub mod personas;
pub mod private_repo;
pub mod proxy;
pub mod proxy_bridge;
pub mod proxy_names;
pub mod requests;
pub mod runner;
pub mod server;
pub mod snapshot;
pub mod spawn;
pub mod status_socket;
pub mod store;
pub mod stuck;
pub mod subtasks;
pub mod task_commit;
pub mod task_context;
pub mod text_shown;
pub mod tool_events;
pub mod watcher;
pub mod workers;
pub mod worktree;
pub mod worktree_seal;

pub use error::{Result, SupervisorError};
