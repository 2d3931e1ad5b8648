//! The control link: CLI / TUI ⇄ supervisor, over `control.sock`.
//!
//! After the handshake the client sends [`RequestFrame`]s and the supervisor answers each with a [`ReplyFrame`]
//! carrying the same [`RequestId`]. Replies to mutating requests are sent only after the change is committed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cost::{CostGrouping, CostLine, CostTotals};
use crate::lock::LockTableView;
use crate::task::{Priority, Task, TaskDetail, TaskId, TaskState};

/// Largest request frame the supervisor accepts from a client.
pub const MAX_REQUEST_FRAME: usize = 1024 * 1024;

/// Largest reply frame a client accepts from the supervisor.
pub const MAX_REPLY_FRAME: usize = 64 * 1024 * 1024;
/// The most patch bytes a [`ControlReply::Diff`] carries (the rest is counted, not kept): well inside a reply frame.
pub const MAX_DIFF_BYTES: u64 = 32 * 1024 * 1024;
/// How the last line of a patch cut at its bound begins (it goes on to count what was left out).
pub const DIFF_CUT_NOTE: &str = "[neuraphage: the diff is cut here:";

/// Chosen by the client, echoed in the reply.
pub type RequestId = u64;

/// A request with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Echoed in the reply.
    pub id: RequestId,
    /// What is asked.
    pub request: ControlRequest,
}

/// A reply with the id of the request it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyFrame {
    /// The request's id.
    pub id: RequestId,
    /// The answer.
    pub reply: ControlReply,
}

/// What a client may ask the supervisor. Task ids are given as the user typed them (any unique prefix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlRequest {
    /// The daemon's pid, uptime, home and task counts.
    DaemonStatus,
    /// The knowledge store (issue 17).
    Knowledge(crate::knowledge::KnowledgeRequest),
    /// Stop gracefully.
    Shutdown,
    /// Create a task.
    CreateTask(NewTask),
    /// List tasks, optionally of one state, a page at a time.
    ListTasks {
        /// Only tasks in this state.
        state: Option<TaskState>,
        /// Skip this many tasks (the `next` of the previous page).
        offset: u64,
    },
    /// One task with its dependencies and recent events.
    ShowTask {
        /// The task id or a unique prefix.
        task: String,
    },
    /// Make `task` wait for `on`.
    AddDependency {
        /// The task that waits (id or prefix).
        task: String,
        /// The task it waits for (id or prefix).
        on: String,
    },
    /// The task's changes against its base commit, as a patch, cut at `max_bytes` (never more than
    /// [`MAX_DIFF_BYTES`]) with a last line saying how much was left out.
    TaskDiff {
        /// The task id or a unique prefix.
        task: String,
        /// The most patch bytes wanted (the TUI asks for what it shows); `None`: up to [`MAX_DIFF_BYTES`].
        #[serde(default)]
        max_bytes: Option<u64>,
    },
    /// The task's conversation with the model.
    TaskLog {
        /// The task id or a unique prefix.
        task: String,
    },
    /// Queue a Failed task again; it resumes from its conversation.
    RetryTask {
        /// The task id or a unique prefix.
        task: String,
    },
    /// Read `neuraphage.yaml` again and have the broker apply its model tiers and re-read `api-keys.yaml` (as
    /// SIGHUP does). A configuration that does not load changes nothing.
    ReloadConfig,
    /// Cancel a task.
    KillTask {
        /// The task id or a unique prefix.
        task: String,
        /// Why, if the user said.
        reason: Option<String>,
    },
    /// The lock table: who holds what, who waits.
    ListLocks,
    /// Tokens and cost of every model call so far, grouped.
    Cost {
        /// One line per task, model or day.
        by: CostGrouping,
    },
    /// Give the task a user message (persisted before the reply): a running task gets it at its next model turn, a
    /// task waiting on a question takes it as the answer, a finished one is resumed as a follow-up. `/pause`,
    /// `/cancel` and `/retry` act instead. Answered by [`ControlReply::Sent`].
    SendMessage {
        /// The task id or a unique prefix.
        task: String,
        /// The message (at most [`crate::waiting::MAX_MESSAGE_BYTES`]).
        text: String,
    },
    /// Answer the task's pending `AskUser` question (refused when none is pending). Answered by
    /// [`ControlReply::Sent`].
    AnswerQuestion {
        /// The task id or a unique prefix.
        task: String,
        /// The answer (at most [`crate::waiting::MAX_MESSAGE_BYTES`]).
        text: String,
    },
    /// Pause a task: a running one at its next checkpoint, a queued or waiting one at once.
    PauseTask {
        /// The task id or a unique prefix.
        task: String,
    },
    /// Queue a Paused task again.
    ResumeTask {
        /// The task id or a unique prefix.
        task: String,
    },
    /// The tasks waiting on the user, oldest wait first.
    ListWaiting,
    /// Answer the task's pending permission request: allow it (`--always` also saves a rule), or deny it (`--never`
    /// saves a rule). Answered with [`ControlReply::PermissionDecided`].
    DecidePermission {
        /// The task id or a unique prefix.
        task: String,
        /// Allow (approve) or deny.
        allow: bool,
        /// Save a rule from this answer (`--always` / `--never`).
        save: bool,
        /// Why (deny), if the user said; the model is told.
        reason: Option<String>,
        /// The number of the request answered (`request #N` in its prompt); without it, the one waiting.
        #[serde(default)]
        request: Option<i64>,
    },
    /// The rules saved from answers.
    ListPermissionRules,
    /// Remove a saved rule.
    RemovePermissionRule {
        /// Its number.
        id: i64,
    },
    /// Turn this connection into an event stream: every reply after this is a [`ControlReply::Stream`] with this
    /// request's id, until the stream ends or the client closes.
    Subscribe(crate::events::Subscribe),
    /// The personas in force (built in and `personas.yaml`); answered with [`ControlReply::Personas`].
    ListPersonas,
    /// The Watcher's interventions across tasks, newest first; answered with [`ControlReply::WatcherLog`].
    WatcherLog {
        /// At most this many (0: the default, 100).
        #[serde(default)]
        limit: u32,
    },
    /// Mute (`true`) or unmute notifications (`neuraphage notify mute|unmute`); persisted before the reply, so it
    /// survives a restart. Answered with [`ControlReply::Muted`].
    SetMuted {
        /// Muted from now on.
        muted: bool,
    },
}

/// A task to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    /// What to do (1 byte to 64 KiB).
    pub description: String,
    /// Absolute path of a git repository to work on.
    pub repo: Option<String>,
    /// 0..=4; the supervisor checks it (this is a plain number on the wire so a bad one gets a clear refusal).
    pub priority: u8,
    /// Tasks that must complete first (ids or prefixes).
    pub after: Vec<String>,
    /// Sandbox profile name.
    pub profile: Option<String>,
    /// The commit, branch or tag the task's branch starts from (default: the repository's HEAD).
    pub base: Option<String>,
    /// The model tier (`router`, `worker`, `expert`); `None`: `worker`.
    #[serde(default)]
    pub tier: Option<String>,
    /// The persona to take (`None`: the selection rules choose).
    #[serde(default)]
    pub persona: Option<String>,
    /// Keep the Watcher off this task.
    #[serde(default)]
    pub no_watch: bool,
}

/// The supervisor's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlReply {
    /// Answer to [`ControlRequest::DaemonStatus`].
    Status(DaemonStatus),
    /// Answer to [`ControlRequest::Knowledge`].
    Knowledge(crate::knowledge::KnowledgeReply),
    /// One task (created or changed).
    Task(Task),
    /// Answer to [`ControlRequest::ListTasks`]: one page.
    Tasks {
        /// The tasks of this page, in schedule order.
        tasks: Vec<Task>,
        /// The offset of the next page, if there is one.
        next: Option<u64>,
    },
    /// Answer to [`ControlRequest::ShowTask`].
    Detail(Box<TaskDetail>),
    /// Answer to [`ControlRequest::AddDependency`]; `added` is false when the edge already existed.
    DependencyAdded {
        /// The waiting task.
        task: TaskId,
        /// The task it waits for.
        on: TaskId,
        /// Whether a new edge was stored.
        added: bool,
    },
    /// Answer to [`ControlRequest::TaskDiff`].
    Diff {
        /// The task.
        task: TaskId,
        /// The commit the diff is against (none for a task without a repository).
        base_commit: Option<String>,
        /// The patch (empty when nothing changed).
        patch: String,
    },
    /// Answer to [`ControlRequest::TaskLog`].
    Log {
        /// The task.
        task: TaskId,
        /// The conversation, oldest first (empty before the task has run).
        messages: Vec<crate::llm::Message>,
    },
    /// Answer to [`ControlRequest::Shutdown`]: the supervisor stops after sending this.
    ShuttingDown {
        /// The supervisor's pid, to wait on.
        pid: u32,
    },
    /// Answer to [`ControlRequest::ListLocks`].
    Locks(LockTableView),
    /// Answer to [`ControlRequest::Cost`].
    Cost {
        /// The grouping asked for.
        by: CostGrouping,
        /// One line per group, largest cost first.
        lines: Vec<CostLine>,
        /// Everything.
        total: CostTotals,
    },
    /// Answer to [`ControlRequest::ReloadConfig`]: what is in force now.
    Reloaded {
        /// The broker's pools (no key material).
        providers: Vec<String>,
    },
    /// The request was refused or failed; nothing was changed.
    Error(ControlError),
    /// Answer to [`ControlRequest::SendMessage`] and [`ControlRequest::AnswerQuestion`]: the message is stored.
    Sent {
        /// The task.
        task: TaskId,
        /// What became of it, in words ("next turn", "answer to the question", "follow-up: queued again", …).
        delivery: String,
    },
    /// Answer to [`ControlRequest::ListWaiting`].
    Waiting {
        /// Oldest wait first.
        tasks: Vec<crate::waiting::WaitingTask>,
    },
    /// Answer to [`ControlRequest::DecidePermission`].
    PermissionDecided(crate::permission::PermissionDecision),
    /// Answer to [`ControlRequest::ListPermissionRules`].
    PermissionRules(Vec<crate::permission::PermissionRule>),
    /// Answer to [`ControlRequest::SetMuted`]: notifications are muted now, or not.
    Muted {
        /// The state in force (stored).
        muted: bool,
    },
    /// Answer to [`ControlRequest::RemovePermissionRule`].
    PermissionRuleRemoved {
        /// The rule removed.
        id: i64,
    },
    /// One item of the stream [`ControlRequest::Subscribe`] asked for.
    Stream(crate::events::StreamItem),
    /// Answer to [`ControlRequest::ListPersonas`].
    Personas(Vec<crate::personas::PersonaInfo>),
    /// Answer to [`ControlRequest::WatcherLog`], newest first.
    WatcherLog(Vec<crate::personas::WatcherEntry>),
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlError {
    /// The class of failure.
    pub code: ErrorCode,
    /// What was wrong, where, and what to do, for the user.
    pub message: String,
    /// For an ambiguous prefix: the ids it matches.
    pub candidates: Vec<TaskId>,
}

impl ControlError {
    /// A refusal with no candidates.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ControlError {
        ControlError { code, message: message.into(), candidates: Vec::new() }
    }
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Classes of refusal, so clients can react without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// An argument is out of range or malformed.
    InvalidArgument,
    /// No task matches the id.
    NotFound,
    /// The prefix matches several tasks (see `candidates`).
    Ambiguous,
    /// The dependency would close a cycle.
    Cycle,
    /// The task's state does not allow it.
    Conflict,
    /// The supervisor is stopping.
    ShuttingDown,
    /// Something failed inside the supervisor (storage, I/O); nothing was changed.
    Internal,
    /// A process the supervisor asked did not answer in time (e.g. the broker, restarting).
    Unavailable,
    /// A code from a newer supervisor.
    #[serde(other)]
    Unknown,
}

/// Answer to [`ControlRequest::DaemonStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// The supervisor's pid.
    pub pid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Seconds since it started.
    pub uptime_secs: u64,
    /// `$NEURAPHAGE_HOME`.
    pub home: String,
    /// The control socket's path.
    pub control_socket: String,
    /// The protocol it speaks.
    pub protocol: u32,
    /// Its version (the crate version).
    pub version: String,
    /// Number of tasks in each state (every state is present, zeros included).
    pub tasks: BTreeMap<TaskState, u64>,
}

impl NewTask {
    /// A task with the default priority and nothing else set.
    pub fn described(description: impl Into<String>) -> NewTask {
        NewTask {
            description: description.into(),
            repo: None,
            priority: Priority::DEFAULT.get(),
            after: Vec::new(),
            profile: None,
            base: None,
            tier: None,
            persona: None,
            no_watch: false,
        }
    }
}
