//! The broker link: supervisor ⇄ broker.
//!
//! The broker inherits two sockets: this framed link (fd given by [`ARG_CONTROL_FD`]) and a socket on which the
//! supervisor passes it, with SCM_RIGHTS, the broker end of each worker's link (fd given by [`ARG_HANDOFF_FD`]).
//! Each handoff carries the task id as its data, so the broker knows which task is on a link because the supervisor
//! said so, never because the worker claims it.

use serde::{Deserialize, Serialize};

use crate::llm::{ChatRequest, ChatResponse, LlmFailure, Usage};
use crate::lock::LockTableView;
use crate::task::TaskId;

/// Largest frame on the broker link.
pub const MAX_BROKER_FRAME: usize = 1024 * 1024;

/// Most pools one [`BrokerToSupervisor::Headroom`] lists.
pub const MAX_HEADROOM_POOLS: usize = 64;

/// Command-line flag naming the broker's control link fd.
pub const ARG_CONTROL_FD: &str = "--control-fd";
/// Command-line flag naming the fd-handoff socket.
pub const ARG_HANDOFF_FD: &str = "--handoff-fd";
/// Command-line flag: the broker was restarted, and holders have this many milliseconds to re-claim their locks
/// before other tasks may take them.
pub const ARG_LOCK_GRACE_MS: &str = "--lock-grace-ms";
/// The grace period the supervisor gives a restarted broker, in milliseconds.
pub const LOCK_RESTART_GRACE_MS: u64 = 10_000;

/// The names of the model tiers, cheapest first: a task escalates from one to the next.
pub const TIER_NAMES: [&str; 3] = ["router", "worker", "expert"];
/// The tier a task runs on unless it names one.
pub const DEFAULT_TIER: &str = "worker";

/// What the supervisor says about a worker link it hands the broker (the SCM_RIGHTS packet's data, MessagePack):
/// which task is on it, and the task's priority and model tier. The broker takes these from the supervisor only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkGrant {
    /// The task on the link.
    pub task: TaskId,
    /// Its priority, 0 (first) … 4.
    pub priority: u8,
    /// Its model tier (`router`, `worker`, `expert`); `None`: the default tier.
    pub tier: Option<String>,
    /// The top-level task of its tree (a sub-task's first ancestor without a parent); `None`: the task itself. The
    /// broker shares a key fairly between trees, so a task that makes sub-tasks does not multiply its share.
    #[serde(default)]
    pub tree: Option<TaskId>,
}

/// One model tier of `neuraphage.yaml`: which provider, model and key pool it uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelTier {
    /// `router`, `worker` or `expert`.
    pub name: String,
    /// `anthropic` or `openai` (the pool's provider must match).
    pub provider: String,
    /// The model.
    pub model: String,
    /// The key pool of `api-keys.yaml`.
    pub pool: String,
    /// The model's context window in tokens (`context-tokens`); `None`: the built-in table
    /// ([`crate::models::context_window`]).
    #[serde(default)]
    pub context_tokens: Option<u64>,
    /// Extended thinking's budget in tokens (`thinking: {budget-tokens: N}`); `None`: no thinking.
    #[serde(default)]
    pub thinking_budget: Option<u32>,
    /// Anthropic `cache_control` breakpoints on (`prompt-caching`, default true). OpenAI caches by itself.
    #[serde(default = "caching_on")]
    pub prompt_caching: bool,
}

fn caching_on() -> bool {
    true
}

/// The broker's share of `neuraphage.yaml`, sent at its start and at every reload.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BrokerSettings {
    /// The tiers configured (none: every task uses the first pool's default model).
    pub tiers: Vec<ModelTier>,
    /// Move a failing task to the next tier.
    pub auto_escalate: bool,
    /// Failed attempts on a tier before the task escalates.
    pub escalate_after_retries: u32,
}

/// Supervisor → broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorToBroker {
    /// Stop serving and exit.
    Shutdown,
    /// Send the lock table ([`BrokerToSupervisor::Locks`]).
    ListLocks {
        /// Echoed in the answer.
        id: u64,
    },
    /// (Re)configure: the tiers, and re-read `api-keys.yaml`. A configuration that does not load leaves the last
    /// good one in force; the answer is [`BrokerToSupervisor::Configured`].
    Configure(BrokerSettings),
    /// One model call made by the supervisor itself on a task's behalf (the Watcher's judgement, knowledge
    /// extraction, relay scoring): queued, limited, retried and priced as the task's own calls are (its usage comes
    /// back as [`BrokerToSupervisor::Usage`] for `grant.task`), never escalating it. Answered by
    /// [`BrokerToSupervisor::Completed`] with the same id; not streamed.
    Complete {
        /// Request id.
        id: u64,
        /// Whose call it is: its cost, priority and (unless `request.tier` names another) its tier.
        grant: LinkGrant,
        /// The request (`request.tier`, e.g. `router`, picks the tier).
        request: Box<ChatRequest>,
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
    /// The answer to [`SupervisorToBroker::Configure`].
    Configured {
        /// The pools in force, as "pool: anthropic claude-… at https://… (2 keys)" (no key material).
        providers: Vec<String>,
        /// Why the new configuration was refused (the last good one stays), naming file and place.
        error: Option<String>,
    },
    /// A task's model request waits in the rate-limit queue (`detail`, e.g. "queued for 3s behind 4 requests"), or
    /// with `None`, no longer does.
    Queued {
        /// The task.
        task: TaskId,
        /// What it waits for, in words; `None` once it was sent.
        detail: Option<String>,
    },
    /// A task moved to a more capable model tier after failed attempts.
    Escalated {
        /// The task.
        task: TaskId,
        /// The tier it left.
        from: String,
        /// The tier it runs on now.
        to: String,
        /// The last failure.
        reason: String,
    },
    /// A key answered 401/403 and was taken out of its pool.
    KeyRevoked {
        /// The task whose call found it out.
        task: TaskId,
        /// The pool.
        pool: String,
        /// The key's label (never the key).
        key: String,
        /// What the provider said.
        reason: String,
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
    /// Each key pool's rate-limit headroom, sent when it changed (at most twice a second), for the status socket.
    Headroom {
        /// The pools, by name (at most [`MAX_HEADROOM_POOLS`]).
        pools: Vec<crate::status::PoolHeadroom>,
    },
    /// Answer to [`SupervisorToBroker::ListLocks`].
    Locks {
        /// The request.
        id: u64,
        /// The table.
        table: LockTableView,
    },
    /// The answer to [`SupervisorToBroker::Complete`] with the same id.
    Completed {
        /// The request's id.
        id: u64,
        /// The response, or why there is none.
        result: Result<Box<ChatResponse>, LlmFailure>,
    },
}
