//! The broker link: supervisor ⇄ broker.
//!
//! The broker inherits two sockets: this framed link (fd given by [`ARG_CONTROL_FD`]) and a socket on which the
//! supervisor passes it, with SCM_RIGHTS, the broker end of each worker's link (fd given by [`ARG_HANDOFF_FD`]).
//! Each handoff carries the task id as its data, so the broker knows which task is on a link because the supervisor
//! said so, never because the worker claims it.

use serde::{Deserialize, Serialize};

use crate::llm::Usage;
use crate::lock::LockTableView;
use crate::task::TaskId;

/// Largest frame on the broker link.
pub const MAX_BROKER_FRAME: usize = 1024 * 1024;

/// Command-line flag naming the broker's control link fd.
pub const ARG_CONTROL_FD: &str = "--control-fd";
/// Command-line flag naming the fd-handoff socket.
pub const ARG_HANDOFF_FD: &str = "--handoff-fd";
/// Command-line flag: the broker was restarted, and holders have this many milliseconds to re-claim their locks
/// before other tasks may take them.
pub const ARG_LOCK_GRACE_MS: &str = "--lock-grace-ms";
/// The grace period the supervisor gives a restarted broker, in milliseconds.
pub const LOCK_RESTART_GRACE_MS: u64 = 10_000;

/// Supervisor → broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorToBroker {
    /// Stop serving and exit.
    Shutdown,
    /// Send the lock table ([`BrokerToSupervisor::Locks`]).
    ListLocks {
        /// Echoed in the answer.
        id: u64,
    },
}

/// Broker → supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerToSupervisor {
    /// The broker is serving; what it can reach (no key material).
    Ready {
        /// Providers with a key, as "anthropic (claude-…) at https://…".
        providers: Vec<String>,
        /// Configuration it could not use, and why (for the supervisor's log).
        warnings: Vec<String>,
    },
    /// A task's model call finished; what it used.
    Usage {
        /// The task.
        task: TaskId,
        /// The model that answered.
        model: String,
        /// Its usage.
        usage: Usage,
    },
    /// Answer to [`SupervisorToBroker::ListLocks`].
    Locks {
        /// The request.
        id: u64,
        /// The table.
        table: LockTableView,
    },
}
