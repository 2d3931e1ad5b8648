//! The task model every process shares: ids, statuses, tasks and their events.
//!
//! `Task` serialises its status flat, as `"status": "Running"` plus `"status_detail": {...}`, so the CLI's `--json`
//! reads naturally and filters with a plain string comparison.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The longest task description accepted, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 64 * 1024;

/// Longest text (tool input, tool result) an event carries, in bytes; longer text is cut with a note.
pub const MAX_EVENT_TEXT: usize = 2048;

/// `text` cut to at most `max` bytes on a character boundary, with a note saying how much was left out.
pub fn cut_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} more bytes]", &text[..end], text.len() - end)
}

/// Prefix of every task id.
pub const TASK_ID_PREFIX: &str = "np-";

/// Number of hex digits after the prefix.
pub const TASK_ID_HEX_DIGITS: usize = 10;

/// A task id: `np-` followed by 10 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaskId(String);

impl TaskId {
    /// Build an id from 40 bits of randomness.
    pub fn from_bits(bits: u64) -> TaskId {
        TaskId(format!("{TASK_ID_PREFIX}{:010x}", bits & 0xff_ffff_ffff))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl FromStr for TaskId {
    type Err = String;

    fn from_str(s: &str) -> Result<TaskId, String> {
        let hex = s.strip_prefix(TASK_ID_PREFIX).ok_or_else(|| format!("task id {s:?} does not start with np-"))?;
        if hex.len() != TASK_ID_HEX_DIGITS || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("task id {s:?} is not np- followed by {TASK_ID_HEX_DIGITS} lowercase hex digits"));
        }
        Ok(TaskId(s.to_owned()))
    }
}

impl TryFrom<String> for TaskId {
    type Error = String;
    fn try_from(s: String) -> Result<TaskId, String> {
        s.parse()
    }
}

impl From<TaskId> for String {
    fn from(id: TaskId) -> String {
        id.0
    }
}

/// Task priority: 0 = critical … 4 = low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Priority(u8);

impl Priority {
    /// The most urgent priority.
    pub const CRITICAL: Priority = Priority(0);
    /// The default priority.
    pub const DEFAULT: Priority = Priority(2);
    /// The least urgent priority.
    pub const LOW: Priority = Priority(4);

    /// The number, 0..=4.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Priority {
        Priority::DEFAULT
    }
}

impl TryFrom<u8> for Priority {
    type Error = String;
    fn try_from(p: u8) -> Result<Priority, String> {
        if p <= Priority::LOW.0 { Ok(Priority(p)) } else { Err(format!("priority {p} is outside 0..4")) }
    }
}

impl From<Priority> for u8 {
    fn from(p: Priority) -> u8 {
        p.0
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0.to_string())
    }
}

/// The state of a task without its details: what `task list --status` filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting to be scheduled.
    Queued,
    /// A worker is running it.
    Running,
    /// It needs the user (a permission, a question).
    WaitingForUser,
    /// It cannot go on until something else happens.
    Blocked,
    /// Paused by the user.
    Paused,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled by the user.
    Cancelled,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 8] = [
        TaskState::Queued,
        TaskState::Running,
        TaskState::WaitingForUser,
        TaskState::Blocked,
        TaskState::Paused,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// The state's name as stored and printed.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Queued => "Queued",
            TaskState::Running => "Running",
            TaskState::WaitingForUser => "WaitingForUser",
            TaskState::Blocked => "Blocked",
            TaskState::Paused => "Paused",
            TaskState::Completed => "Completed",
            TaskState::Failed => "Failed",
            TaskState::Cancelled => "Cancelled",
        }
    }

    /// True once the task can no longer change on its own (Completed, Failed, Cancelled).
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Completed | TaskState::Failed | TaskState::Cancelled)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for TaskState {
    type Err = String;

    /// Case-insensitive; `waiting` and `waiting-for-user` both name [`TaskState::WaitingForUser`].
    fn from_str(s: &str) -> Result<TaskState, String> {
        let key: String = s.chars().filter(|c| !matches!(c, '-' | '_')).collect::<String>().to_ascii_lowercase();
        if key == "waiting" {
            return Ok(TaskState::WaitingForUser);
        }
        TaskState::ALL.into_iter().find(|st| st.name().to_ascii_lowercase() == key).ok_or_else(|| {
            format!(
                "unknown status {s:?}; expected one of: queued, running, waiting, blocked, paused, completed, \
                 failed, cancelled"
            )
        })
    }
}

/// What a running task is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunningPhase {
    /// Being set up (worktree, worker process).
    Initializing,
    /// Building the model's context.
    AssemblingContext,
    /// Waiting for the model's answer.
    LlmRequest,
    /// Waiting for the model, its request queued in the broker behind the rate limit.
    LlmQueued {
        /// How long and behind what, e.g. "queued for 3s behind 4 requests (rate limit of pool main)".
        detail: String,
    },
    /// Running a tool.
    ToolExecution {
        /// The tool's name.
        tool: String,
    },
    /// Handling the model's answer.
    Processing,
}

/// A task's status with its details (SPEC "Tasks": Queued, Running{phase}, WaitingForUser{prompt}, Blocked{on},
/// Paused, Completed, Failed{error, recoverable}, Cancelled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "status_detail")]
pub enum TaskStatus {
    /// Waiting to be scheduled.
    Queued,
    /// A worker is running it.
    Running {
        /// What it is doing.
        phase: RunningPhase,
    },
    /// It needs the user.
    WaitingForUser {
        /// What it asks.
        prompt: String,
    },
    /// It cannot go on until something else happens.
    Blocked {
        /// What it waits on, in words.
        on: String,
    },
    /// Paused by the user.
    Paused,
    /// Finished successfully.
    Completed {
        /// The task's own summary of what it did, if any.
        summary: Option<String>,
    },
    /// Finished with an error.
    Failed {
        /// What went wrong.
        error: String,
        /// Whether `task retry` may start it again.
        recoverable: bool,
    },
    /// Cancelled by the user.
    Cancelled {
        /// Why, if the user said.
        reason: Option<String>,
    },
}

impl TaskStatus {
    /// The state without details.
    pub fn state(&self) -> TaskState {
        match self {
            TaskStatus::Queued => TaskState::Queued,
            TaskStatus::Running { .. } => TaskState::Running,
            TaskStatus::WaitingForUser { .. } => TaskState::WaitingForUser,
            TaskStatus::Blocked { .. } => TaskState::Blocked,
            TaskStatus::Paused => TaskState::Paused,
            TaskStatus::Completed { .. } => TaskState::Completed,
            TaskStatus::Failed { .. } => TaskState::Failed,
            TaskStatus::Cancelled { .. } => TaskState::Cancelled,
        }
    }
}

/// A task as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Its id.
    pub id: TaskId,
    /// Its status, flattened into `status` and `status_detail`.
    #[serde(flatten)]
    pub status: TaskStatus,
    /// 0 = critical … 4 = low.
    pub priority: Priority,
    /// What the user asked for.
    pub description: String,
    /// The repository it works on (absolute path), if any.
    pub repo: Option<String>,
    /// The sandbox profile it runs under, if not the default.
    pub profile: Option<String>,
    /// The task that created it, for a sub-task.
    pub parent: Option<TaskId>,
    /// The commit its work starts from (the repository's HEAD, or `--base`), if it has a repository.
    pub base_commit: Option<String>,
    /// Its branch, `neuraphage/<id>`, once its worktree exists.
    pub branch: Option<String>,
    /// Its model tier (`router`, `worker`, `expert`); `None`: the default (`worker`). Escalation moves it.
    #[serde(default)]
    pub tier: Option<String>,
    /// Its persona (`senior`, `reviewer`, … or the user's own), chosen by `--persona`, the selection rules or the
    /// parent's `Task` call; `None`: none.
    #[serde(default)]
    pub persona: Option<String>,
    /// The Watcher leaves it alone (`task new --no-watch`).
    #[serde(default)]
    pub no_watch: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
}

/// A short reference to another task, as `task show` lists dependencies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRef {
    /// Its id.
    pub id: TaskId,
    /// Its state.
    pub status: TaskState,
    /// Its description.
    pub description: String,
}

/// What happened to a task (the `data` of an event row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum EventKind {
    /// The task was created.
    Created {
        /// Its priority at creation.
        priority: Priority,
    },
    /// The task now waits for another one.
    DependencyAdded {
        /// The task it waits for.
        on: TaskId,
    },
    /// A worker process started running the task.
    WorkerStarted {
        /// Its pid.
        pid: u32,
        /// Its worktree (or scratch folder).
        workdir: String,
    },
    /// What the worker's sandbox enforces (and, on an older kernel, what it could not).
    Sandboxed {
        /// The profile.
        profile: String,
        /// The kernel's Landlock ABI.
        kernel_abi: u8,
        /// Layers in force.
        enforced: Vec<String>,
        /// What this kernel could not enforce.
        missing: Vec<String>,
    },
    /// The task's network proxy allowed or refused a connection.
    ProxyDecision {
        /// The host asked for (as the task wrote it).
        host: String,
        /// The port asked for.
        port: u16,
        /// Whether the proxy connected it.
        allowed: bool,
        /// Why, in a few words (e.g. `listed`, `not in the profile's hosts`, `cannot connect: ...`).
        reason: String,
    },
    /// A checkpoint is on disk.
    Checkpoint {
        /// Its sequence number.
        seq: u64,
        /// Which point of the loop, e.g. `tool_started` (with the tool name where there is one).
        point: String,
        /// The conversation commit that holds it.
        commit: String,
    },
    /// The worker died before the task ended; a new one resumes it from the last checkpoint.
    WorkerLost {
        /// What happened.
        reason: String,
        /// Which restart this is (1 for the first).
        attempt: u32,
        /// Milliseconds until the new worker starts.
        retry_in_ms: u64,
    },
    /// The conversation repository's last commit could not be read (e.g. torn by a power loss) and HEAD was moved
    /// back to the newest readable one.
    ConversationRepaired {
        /// What was done.
        report: String,
    },
    /// The worker process ended.
    WorkerExited {
        /// How, in words (`exit status 0`, `signal 9`).
        status: String,
    },
    /// The task's work was committed to its branch.
    Committed {
        /// The branch.
        branch: String,
        /// The new commit.
        commit: String,
    },
    /// The task moved to a more capable model tier after failed model calls.
    Escalated {
        /// The tier it left.
        from: String,
        /// The tier it runs on now.
        to: String,
        /// The last failure.
        reason: String,
    },
    /// A key of the pool the task used was refused (401/403) and taken out of its pool.
    KeyRevoked {
        /// The pool.
        pool: String,
        /// The key's label (never the key).
        key: String,
        /// What the provider said.
        reason: String,
    },
    /// A snapshot of the task's worktree left something out or found git metadata the task made (a `.git` in a
    /// subfolder, a `.gitignore` too big to use); the commit went on without it.
    SnapshotNote {
        /// What, in words.
        note: String,
        /// The path in the worktree it is about (lossy UTF-8), if any.
        path: String,
    },
    /// The task reached its cap on events of one kind; later ones of that kind are only logged.
    EventsCapped {
        /// The kind (as stored, e.g. `proxy_decision`).
        capped: String,
        /// The cap, per task.
        cap: u64,
    },
    /// The task was paused by the supervisor (e.g. over its disk bound); `task retry` resumes it.
    PausedBySupervisor {
        /// Why.
        reason: String,
    },
    /// The task's status changed.
    StatusChanged {
        /// The old state.
        from: TaskState,
        /// The new status.
        to: TaskStatus,
    },
    /// The user sent the task a message (stored in its inbox before the reply).
    UserMessage {
        /// Its inbox id.
        id: u64,
        /// What the user wrote (cut to a few KiB, with a note).
        text: String,
        /// What became of it, in words ("next turn", "answer to the question", "follow-up: queued again", …).
        delivery: String,
    },
    /// Advice put into the task's next turn by Neuraphage itself, not by the user: a Watcher nudge, a learning
    /// relayed from another task. Framed in the conversation as advice; it never answers a question nor grants a
    /// permission, and never changes the task's status.
    Advice {
        /// Its inbox id.
        id: u64,
        /// Where it comes from: `watcher`, or `task <id>` for a relayed learning.
        from: String,
        /// The advice as the model sees it (cut to a few KiB).
        text: String,
    },
    /// The task created a sub-task (its `Task` tool), recorded on the parent.
    SubtaskCreated {
        /// The new child.
        child: TaskId,
        /// The child's depth (a top task is 1).
        depth: u32,
    },
    /// One of the task's sub-tasks ended, recorded on the parent.
    SubtaskEnded {
        /// The child.
        child: TaskId,
        /// How it ended, in words (cut to a few KiB).
        outcome: String,
    },
    /// Learnings of earlier tasks put in the task's system prompt (issue 17), so the user can see why it believed
    /// something.
    KnowledgeInjected {
        /// The learnings' ids, best first.
        ids: Vec<String>,
    },
    /// A learning was recorded from this task: by its `Learn` tool (`how`: `tool`) or by extraction (`keyword`,
    /// `llm`); `updated`: a near-identical one was updated instead of a new one added.
    KnowledgeRecorded {
        /// The learning's id.
        id: String,
        /// Its title (cut).
        title: String,
        /// How it was recorded.
        how: String,
        /// An existing learning was updated.
        updated: bool,
    },
    /// The Syncer relayed a learning from one running task to another (recorded on both).
    KnowledgeRelayed {
        /// The learning's id.
        learning: String,
        /// The task that recorded it.
        from: TaskId,
        /// The task it was relayed to.
        to: TaskId,
    },
    /// The task's plan changed (its `TodoWrite` call): the whole new list.
    PlanUpdated {
        /// The plan's items, in order.
        items: Vec<PlanItem>,
    },
    /// The worker reported something for the user to see (a skipped skill, a drift warning, the context it
    /// assembled).
    Notice {
        /// A short machine-readable kind, e.g. `skill_skipped`, `drift_warning`.
        notice: String,
        /// The message.
        message: String,
    },
    /// The task asked the user a question (the `AskUser` tool) and waits for the answer, its worker gone.
    QuestionAsked {
        /// The question (cut to a few KiB).
        question: String,
        /// The choices offered, if any.
        options: Vec<String>,
    },
    /// The user answered the task's question; the answer becomes the `AskUser` call's result.
    QuestionAnswered {
        /// The answer's inbox id.
        id: u64,
        /// The answer (cut to a few KiB).
        text: String,
    },
    /// A tool call waits for the user's answer (the task parks in WaitingForUser).
    PermissionRequested {
        /// The model's id of the call.
        tool_use_id: String,
        /// The tool.
        tool: String,
        /// The command line or path (bounded).
        subject: String,
        /// The rule or setting that asks.
        by: String,
        /// The question shown to the user.
        prompt: String,
    },
    /// A permission decision, with who or what made it.
    PermissionDecided {
        /// The model's id of the call.
        tool_use_id: String,
        /// The tool.
        tool: String,
        /// The command line or path (bounded).
        subject: String,
        /// Allowed or denied.
        allowed: bool,
        /// Who or what decided: a policy rule, a user rule, a saved rule, the mode, a runtime limit, `user`, `timeout`.
        by: String,
    },
    /// The model called a tool (from the `tool_started` checkpoint).
    ToolCall {
        /// The tool's name.
        tool: String,
        /// The call's id.
        tool_use_id: String,
        /// Its input as JSON text, cut to [`MAX_EVENT_TEXT`] bytes (with a note saying so).
        input: String,
    },
    /// A tool call's outcome (from the `tool_completed` checkpoint).
    ToolResult {
        /// The tool's name.
        tool: String,
        /// The call's id.
        tool_use_id: String,
        /// Whether it failed.
        is_error: bool,
        /// The start of its result, cut to [`MAX_EVENT_TEXT`] bytes (with a note saying so).
        result: String,
    },
    /// What one model response used and cost.
    Cost {
        /// The model that answered.
        model: String,
        /// Input tokens (normal rate).
        input_tokens: u64,
        /// Output tokens.
        output_tokens: u64,
        /// Tokens written to and read from the provider's cache.
        cache_tokens: u64,
        /// Its price, in 10^-9 USD, by the price table in force.
        cost_nano_usd: u64,
        /// False when the price table did not know the model (the cost is then 0).
        priced: bool,
    },
    /// The task took a persona (`task new --persona`, or the selection rules).
    PersonaSelected {
        /// Its key.
        persona: String,
        /// Why: `--persona`, `keyword 'review' in the description`, `default`.
        reason: String,
    },
    /// The Watcher flagged the task and acted on it.
    WatcherIntervened {
        /// The rule that flagged it (e.g. `same_failing_action`).
        rule: String,
        /// What was done: `continue`, `nudge`, `escalate`, `pause`, `abort`.
        recommendation: String,
        /// The judge's diagnosis, or the rule's finding when the task could not be judged.
        diagnosis: String,
        /// The judge's confidence in percent (0: unjudged).
        confidence: u8,
    },
    /// Whether the Watcher's last nudge helped: the pattern it flagged was gone at the next look.
    WatcherOutcome {
        /// The rule of that intervention.
        rule: String,
        /// Whether the pattern stopped.
        helped: bool,
    },
}

impl EventKind {
    /// The kind's name, as stored in the `events.kind` column.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Created { .. } => "created",
            EventKind::DependencyAdded { .. } => "dependency_added",
            EventKind::WorkerStarted { .. } => "worker_started",
            EventKind::Sandboxed { .. } => "sandboxed",
            EventKind::ProxyDecision { .. } => "proxy_decision",
            EventKind::Checkpoint { .. } => "checkpoint",
            EventKind::WorkerLost { .. } => "worker_lost",
            EventKind::ConversationRepaired { .. } => "conversation_repaired",
            EventKind::WorkerExited { .. } => "worker_exited",
            EventKind::Committed { .. } => "committed",
            EventKind::StatusChanged { .. } => "status_changed",
            EventKind::Escalated { .. } => "escalated",
            EventKind::KeyRevoked { .. } => "key_revoked",
            EventKind::SnapshotNote { .. } => "snapshot_note",
            EventKind::EventsCapped { .. } => "events_capped",
            EventKind::PausedBySupervisor { .. } => "paused_by_supervisor",
            EventKind::UserMessage { .. } => "user_message",
            EventKind::Advice { .. } => "advice",
            EventKind::SubtaskCreated { .. } => "subtask_created",
            EventKind::SubtaskEnded { .. } => "subtask_ended",
            EventKind::KnowledgeInjected { .. } => "knowledge_injected",
            EventKind::KnowledgeRecorded { .. } => "knowledge_recorded",
            EventKind::KnowledgeRelayed { .. } => "knowledge_relayed",
            EventKind::QuestionAsked { .. } => "question_asked",
            EventKind::Notice { .. } => "notice",
            EventKind::PlanUpdated { .. } => "plan_updated",
            EventKind::QuestionAnswered { .. } => "question_answered",
            EventKind::PermissionRequested { .. } => "permission_requested",
            EventKind::PermissionDecided { .. } => "permission_decided",
            EventKind::ToolCall { .. } => "tool_call",
            EventKind::ToolResult { .. } => "tool_result",
            EventKind::Cost { .. } => "cost",
            EventKind::PersonaSelected { .. } => "persona_selected",
            EventKind::WatcherIntervened { .. } => "watcher_intervened",
            EventKind::WatcherOutcome { .. } => "watcher_outcome",
        }
    }
}

/// One row of a task's append-only event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// Sequence number, increasing across all tasks.
    pub seq: u64,
    /// The task it is about.
    pub task: TaskId,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// A task with what surrounds it, as `task show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDetail {
    /// The task (flattened: its fields sit beside the lists below).
    #[serde(flatten)]
    pub task: Task,
    /// Tasks it waits for.
    pub blocked_by: Vec<TaskRef>,
    /// Tasks that wait for it.
    pub blocks: Vec<TaskRef>,
    /// Sub-tasks it created.
    pub children: Vec<TaskRef>,
    /// Its most recent events, oldest first.
    pub events: Vec<TaskEvent>,
    /// Tokens its model calls used and what they cost.
    #[serde(default)]
    pub cost: crate::cost::CostTotals,
    /// Its plan, as its latest `TodoWrite` set it (empty: none).
    #[serde(default)]
    pub plan: Vec<PlanItem>,
    /// What its model calls and those of all its sub-tasks, at every depth, cost (equal to `cost` without any).
    #[serde(default)]
    pub tree_cost: crate::cost::CostTotals,
}

/// Most items in a task's plan.
pub const MAX_PLAN_ITEMS: usize = 100;
/// Longest plan item, in characters.
pub const MAX_PLAN_ITEM_CHARS: usize = 500;
/// Most bytes of a plan's item texts together (a `plan_updated` event carries the whole plan each time: 100 items of
/// 500 four-byte characters made each one 200 KB).
pub const MAX_PLAN_BYTES: usize = 16 * 1024;

/// `plan` within the bounds ([`MAX_PLAN_ITEMS`] items of at most [`MAX_PLAN_ITEM_CHARS`] characters,
/// [`MAX_PLAN_BYTES`] in all): the items past a bound are left out, a long item's text cut. (The worker's `TodoWrite`
/// refuses a plan over them; whoever receives one bounds it again.)
pub fn bounded_plan(plan: &[PlanItem]) -> Vec<PlanItem> {
    let mut bytes = 0;
    let mut out = Vec::new();
    for item in plan.iter().take(MAX_PLAN_ITEMS) {
        let content: String = item.content.chars().take(MAX_PLAN_ITEM_CHARS).collect();
        bytes += content.len();
        if bytes > MAX_PLAN_BYTES {
            break;
        }
        out.push(PlanItem { content, status: item.status });
    }
    out
}

/// One item of a task's plan (the `TodoWrite` tool's list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    /// What is to be done.
    pub content: String,
    /// How far it is.
    pub status: PlanStatus,
}

/// The state of a [`PlanItem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Not started.
    Pending,
    /// Being worked on.
    InProgress,
    /// Done.
    Done,
}
