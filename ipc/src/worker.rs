//! The worker links: supervisor ⇄ worker (one per running task) and worker ⇄ broker.
//!
//! Both are socketpairs the worker inherits at spawn; their fd numbers are given on its command line. Each opens with
//! the [`crate::hello`] handshake, the worker connecting.

use serde::{Deserialize, Serialize};

use crate::llm::{ChatRequest, ChatResponse, LlmFailure, Message, StreamDelta};
use crate::lock::LockOutcome;
use crate::task::TaskId;

/// Largest frame on a worker link (a checkpoint carries the whole conversation).
pub const MAX_WORKER_FRAME: usize = 64 * 1024 * 1024;

/// Command-line flag naming the supervisor link's fd.
pub const ARG_SUPERVISOR_FD: &str = "--supervisor-fd";
/// Command-line flag naming the broker link's fd.
pub const ARG_BROKER_FD: &str = "--broker-fd";
/// Command-line flag naming the socket on which a worker receives a new broker link after a broker restart
/// (SOCK_SEQPACKET, SCM_RIGHTS).
pub const ARG_HANDOFF_FD: &str = "--handoff-fd";

/// Test hook: a worker whose environment names a checkpoint kind here (e.g. `tool_started`) pauses for a while
/// right after that checkpoint is acknowledged, once per task, so a test can kill a process at exactly that point
/// of the checkpoint table. The supervisor passes it through to workers; nothing else reads it. Only in debug
/// builds: a release build has neither the constant nor the code that reads it.
#[cfg(debug_assertions)]
pub const ENV_TEST_PAUSE_AFTER: &str = "NEURAPHAGE_TEST_PAUSE_AFTER";

/// Supervisor → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupervisorToWorker {
    /// Run this task (sent once, right after the handshake).
    Start(Box<WorkerStart>),
    /// The checkpoint with this sequence number is on disk.
    Ack {
        /// The checkpoint's sequence number.
        seq: u64,
    },
    /// Stop now; the task was cancelled.
    Cancel {
        /// Why.
        reason: String,
    },
    /// The answer to `WorkerToSupervisor::Commit`.
    Committed {
        /// The request's id.
        id: u64,
        /// What happened.
        result: CommitResult,
    },
    /// The answer to `WorkerToSupervisor::Permission` with the same id.
    Permission {
        /// The request's id.
        id: u64,
        /// Run, refuse, or park the task to ask the user.
        answer: crate::permission::PermissionAnswer,
    },
    /// The answer to `WorkerToSupervisor::Subtask` with the same id.
    Subtask {
        /// The request's id.
        id: u64,
        /// What became of it.
        result: SubtaskAnswer,
    },
    /// A message the user sent while the task runs (stored in the supervisor's inbox first). The worker adds it to
    /// the conversation at its next model turn; the checkpoint that carries it names its id in `delivered`. May come
    /// at any time.
    UserMessage {
        /// Its inbox id.
        id: u64,
        /// What the user wrote.
        text: String,
    },
    /// The answer to `WorkerToSupervisor::Learn` with the same id, sent once the learning's file is written.
    Learned {
        /// The request's id.
        id: u64,
        /// What happened.
        result: crate::knowledge::LearnResult,
    },
}

/// User input not yet in the conversation, given to a starting worker (see [`WorkerStart::inbox`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInput {
    /// Its inbox id (named in the `delivered` of the checkpoint that carries it).
    pub id: u64,
    /// What the user wrote.
    pub text: String,
    /// For an answer to an `AskUser` call: that call's id (its tool result is the text).
    #[serde(default)]
    pub answers: Option<String>,
}

/// Everything a worker needs to run its task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStart {
    /// The task.
    pub task: TaskId,
    /// What the user asked for.
    pub description: String,
    /// The worktree (also the worker's cwd), or the task's scratch folder when it has no repository.
    pub workdir: String,
    /// Where large tool outputs are saved.
    pub outputs_dir: String,
    /// The task's scratch folder.
    pub tmp_dir: String,
    /// The task's branch, if it has a repository.
    pub branch: Option<String>,
    /// The loop stops (and the task fails) after this many model turns.
    pub max_iterations: u32,
    /// The conversation to resume from (empty for a new task).
    pub messages: Vec<Message>,
    /// Sequence number of the last checkpoint on disk (0 for a new task).
    pub last_seq: u64,
    /// The last checkpoint's kind, when resuming: after `tool_started` that tool's outcome is unknown, while the
    /// calls after it never started.
    pub resume_point: Option<CheckpointKind>,
    /// Send [`WorkerToSupervisor::Heartbeat`] at least this often (milliseconds) while no other frame goes out; the
    /// supervisor counts a worker that sends nothing for much longer as stuck. 0: [`DEFAULT_HEARTBEAT_MS`].
    #[serde(default)]
    pub heartbeat_ms: u64,
    /// User messages and answers stored for the task and not yet in its conversation, oldest first.
    #[serde(default)]
    pub inbox: Vec<UserInput>,
    /// The commit the task's branch was made from.
    #[serde(default)]
    pub base_commit: Option<String>,
    /// The task that created this one, if any.
    #[serde(default)]
    pub parent: Option<TaskId>,
    /// The model its tier names (for the prompt and the context window); `None`: no tier configured.
    #[serde(default)]
    pub model: Option<String>,
    /// Its tier (`router`, `worker`, `expert`); `None`: the default.
    #[serde(default)]
    pub tier: Option<String>,
    /// The user's own instructions (`$NEURAPHAGE_HOME/AGENTS.md`), already capped; `None`: no such file.
    #[serde(default)]
    pub user_instructions: Option<String>,
    /// The user's skills (`$NEURAPHAGE_HOME/skills/*/SKILL.md`) as raw files; the worker parses them as it parses the
    /// repository's own, and reports the malformed ones.
    #[serde(default)]
    pub home_skills: Vec<SkillFile>,
    /// The model's context window in tokens (the tier's `context-tokens`, else the built-in table); 0: unknown,
    /// use [`crate::models::context_window`] of `model`.
    #[serde(default)]
    pub context_tokens: u64,
    /// Compact when the next request would pass this percentage of the window (0: the default, 80).
    #[serde(default)]
    pub compact_at_percent: u8,
    /// The drift guard's limits besides `max_iterations`.
    #[serde(default)]
    pub drift: DriftLimits,
    /// The task branch's state, computed by the supervisor from the task's private repository (the worker cannot
    /// run git in its worktree): its last commits (short id and escaped subject) and the files it changed against
    /// its base; bounded (4 KiB). `None`: no repository.
    #[serde(default)]
    pub git_summary: Option<String>,
    /// The last checkpoint's [`Checkpoint::iteration`] (model turns counted by the drift guard since the task
    /// started or the user last spoke), so a worker resumed after a crash goes on counting; 0 for a new task.
    #[serde(default)]
    pub iteration: u32,
    /// Learnings of earlier tasks relevant to this one (issue 17), already framed and capped by the supervisor, for
    /// the system prompt; `None`: none.
    #[serde(default)]
    pub knowledge: Option<String>,
    /// The task's persona's system prompt (added to the system prompt); `None`: no persona.
    #[serde(default)]
    pub persona_prompt: Option<String>,
    /// The tools the task's persona may use (others are not offered and are refused); `None`: all.
    #[serde(default)]
    pub allowed_tools: Option<Vec<String>>,
}

/// One `SKILL.md`, as read from disk: YAML front matter (`name`, `description`) then the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillFile {
    /// Where it was read (for messages), e.g. `~/.neuraphage/skills/deploy/SKILL.md`.
    pub path: String,
    /// Its text (capped by the reader).
    pub text: String,
}

/// The drift guard's limits (`reference/neuraphage-agentic-loop.md`, "Drift Detection"). A task that trips one
/// waits for the user with the reason; it is not failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftLimits {
    /// Tool failures in a row (a command exiting non-zero counts) before the task waits.
    pub max_consecutive_failures: u32,
    /// Seconds with no file changed and no new tool result before the task waits.
    pub no_progress_secs: u64,
    /// Tokens in one iteration above which a warning event is recorded.
    pub iteration_tokens_warning: u64,
}

impl WorkerStart {
    /// The fields added after the first release, at their defaults (for `..WorkerStart::defaults()` in a literal
    /// that sets the rest).
    pub fn defaults() -> WorkerStart {
        WorkerStart {
            task: TaskId::from_bits(0),
            description: String::new(),
            workdir: String::new(),
            outputs_dir: String::new(),
            tmp_dir: String::new(),
            branch: None,
            max_iterations: 200,
            messages: Vec::new(),
            last_seq: 0,
            resume_point: None,
            heartbeat_ms: 0,
            inbox: Vec::new(),
            base_commit: None,
            parent: None,
            model: None,
            tier: None,
            user_instructions: None,
            home_skills: Vec::new(),
            context_tokens: 0,
            compact_at_percent: 0,
            drift: DriftLimits::default(),
            git_summary: None,
            iteration: 0,
            knowledge: None,
            persona_prompt: None,
            allowed_tools: None,
        }
    }
}

impl Default for DriftLimits {
    fn default() -> DriftLimits {
        DriftLimits { max_consecutive_failures: 10, no_progress_secs: 600, iteration_tokens_warning: 100_000 }
    }
}

/// How often a worker sends a heartbeat when its `Start` does not say.
pub const DEFAULT_HEARTBEAT_MS: u64 = 5_000;

/// Worker → supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerToSupervisor {
    /// Persist this, then acknowledge with [`SupervisorToWorker::Ack`]; the worker waits for the ack.
    Checkpoint(Box<Checkpoint>),
    /// A piece of a streaming response, for live display (not acknowledged).
    Stream {
        /// The delta.
        delta: StreamDelta,
    },
    /// The worker needs the model's answer and is waiting on the broker (for status display).
    Waiting {
        /// What it waits for, in words.
        on: String,
    },
    /// Sent once, right after the handshake: what the worker's sandbox enforces, made before any task code ran.
    /// With `refused` set, the worker could not enforce its profile and stops without running the task.
    Sandbox(SandboxReport),
    /// The worker's runtime is alive (sent every [`WorkerStart::heartbeat_ms`] while nothing else is); not answered.
    Heartbeat,
    /// Commit the worktree to the task's branch (the `Commit` tool). Answered by `Committed` with the same id.
    Commit {
        /// Request id.
        id: u64,
        /// The commit message.
        message: String,
    },
    /// May this tool call run? Sent before its `ToolStarted` checkpoint; answered by `Permission` with the same id.
    /// A resumed worker asks again for the same `tool_use_id` and gets the stored answer.
    Permission {
        /// Request id.
        id: u64,
        /// The model's id of the call.
        tool_use_id: String,
        /// The tool.
        tool: String,
        /// Its input, as the model gave it.
        input: serde_json::Value,
    },
    /// The `Task` or `TaskResult` tool: create a sub-task, or ask how one stands. Answered by `Subtask` with the
    /// same id. The supervisor creates at most one child per `tool_use_id`, so a resumed worker asking again gets
    /// the same child.
    Subtask {
        /// Request id.
        id: u64,
        /// The model's id of the call.
        tool_use_id: String,
        /// What is asked.
        request: SubtaskRequest,
    },
    /// Something the user should be able to see, recorded as a task event (`notice`): a skipped malformed skill, a
    /// drift warning, what context was assembled. Not acknowledged; capped per task by the supervisor.
    Notice {
        /// A short machine-readable kind, e.g. `skill_skipped`, `drift_warning`, `context`.
        kind: String,
        /// The message (the supervisor cuts it to 2 KiB).
        message: String,
    },
    /// Record a learning (the `Learn` tool). Answered by `Learned` with the same id once its file is written.
    Learn {
        /// Request id.
        id: u64,
        /// The learning.
        learning: crate::knowledge::NewLearning,
    },
}

/// What a worker's sandbox enforces on this kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// The profile's name.
    pub profile: String,
    /// The kernel's Landlock ABI (0: none).
    pub kernel_abi: u8,
    /// Layers in force.
    pub enforced: Vec<String>,
    /// What this kernel could not enforce.
    pub missing: Vec<String>,
    /// Why the worker refuses to run the task, if it does.
    pub refused: Option<String>,
}

/// How a `Commit` request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CommitResult {
    /// A commit was made on the branch.
    Committed {
        /// The branch.
        branch: String,
        /// The new commit's id.
        commit: String,
    },
    /// Nothing had changed since the last commit.
    NothingToCommit,
    /// The commit failed.
    Failed {
        /// Why.
        error: String,
    },
}

/// A checkpoint: where the loop is, and the conversation at that point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Increases by one with every checkpoint of the task.
    pub seq: u64,
    /// Which point of the loop.
    pub kind: CheckpointKind,
    /// The model turns counted by the drift guard (`max_iterations`): since the task started, or since the user
    /// last spoke (a message delivered, or a retry), so a task that waited on the drift guard gets a new budget.
    pub iteration: u32,
    /// The whole conversation at this point.
    pub messages: Vec<Message>,
    /// Inbox ids of user input this checkpoint's conversation holds for the first time (marked delivered with it).
    #[serde(default)]
    pub delivered: Vec<u64>,
    /// The task's plan as its latest `TodoWrite` set it, carried by that call's `tool_completed` checkpoint and
    /// stored with the task in the same transaction; `None`: unchanged.
    #[serde(default)]
    pub plan: Option<Vec<crate::task::PlanItem>>,
}

/// The points of the checkpoint table (`reference/neuraphage-agentic-loop.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CheckpointKind {
    /// A model request is about to be sent (on recovery: send it again).
    RequestSent,
    /// The model's answer is in the conversation.
    ResponseReceived {
        /// Tokens it used.
        usage: crate::llm::Usage,
        /// The model that answered.
        model: String,
        /// Why it stopped (`None` from a worker older than this field). A `max_tokens` or `pause_turn` answer is
        /// continued at once: the Watcher counts it as part of one turn, not as the model talking to itself.
        #[serde(default)]
        stop_reason: Option<crate::llm::StopReason>,
    },
    /// A tool is about to run.
    ToolStarted {
        /// The tool's name.
        tool: String,
        /// The call's id.
        tool_use_id: String,
    },
    /// A tool finished; its result is in the conversation.
    ToolCompleted {
        /// The tool's name.
        tool: String,
        /// The call's id.
        tool_use_id: String,
        /// Whether it failed.
        is_error: bool,
    },
    /// The task ended.
    TaskEnded {
        /// How.
        outcome: TaskOutcome,
    },
    /// The conversation was compacted: older turns replaced by a summary (the full history stays in the conversation
    /// repository's git log).
    Compacted {
        /// Messages replaced by the summary.
        removed: u32,
        /// Estimated tokens of the conversation before.
        before_tokens: u64,
        /// Estimated tokens after.
        after_tokens: u64,
    },
}

impl CheckpointKind {
    /// The kind's name as stored.
    pub fn name(&self) -> &'static str {
        match self {
            CheckpointKind::RequestSent => "request_sent",
            CheckpointKind::ResponseReceived { .. } => "response_received",
            CheckpointKind::ToolStarted { .. } => "tool_started",
            CheckpointKind::ToolCompleted { .. } => "tool_completed",
            CheckpointKind::TaskEnded { .. } => "task_ended",
            CheckpointKind::Compacted { .. } => "compacted",
        }
    }
}

/// How a task ended, as its worker saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TaskOutcome {
    /// The model finished its work.
    Completed {
        /// The model's last words.
        summary: String,
    },
    /// The task could not finish.
    Failed {
        /// Why.
        error: String,
        /// Whether a retry may succeed.
        recoverable: bool,
    },
    /// The task cannot go on until the user acts (e.g. the provider's spend limit is reached); `task retry`
    /// resumes it from its conversation.
    NeedsUser {
        /// What the user must do, and why.
        reason: String,
    },
}

/// Worker → broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerToBroker {
    /// Run one model turn.
    Complete {
        /// Echoed in every answer to it.
        id: u64,
        /// The request.
        request: Box<ChatRequest>,
    },
    /// Acquire every one of `resources` (all or none), waiting at most `wait_ms` (the broker caps it). Answered with
    /// [`BrokerToWorker::Lock`].
    Lock {
        /// Echoed in the answer.
        id: u64,
        /// Resource names (see [`crate::lock`]).
        resources: Vec<String>,
        /// How long to wait for holders to release, in milliseconds.
        wait_ms: u64,
    },
    /// Release these resources (all the task holds when empty). Answered with [`BrokerToWorker::Lock`].
    Unlock {
        /// Echoed in the answer.
        id: u64,
        /// Resource names; empty for all.
        resources: Vec<String>,
    },
    /// On a new link after a broker restart: take back what the task held, without waiting. Answered with
    /// [`BrokerToWorker::Lock`].
    Reclaim {
        /// Echoed in the answer.
        id: u64,
        /// What the task held.
        resources: Vec<String>,
    },
}

/// Broker → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerToWorker {
    /// A piece of the streaming answer to request `id`.
    Delta {
        /// The request.
        id: u64,
        /// The piece.
        delta: StreamDelta,
    },
    /// The complete answer to request `id`.
    Done {
        /// The request.
        id: u64,
        /// The answer.
        response: Box<ChatResponse>,
    },
    /// Request `id` failed.
    Failed {
        /// The request.
        id: u64,
        /// Why, with what the provider sent.
        error: LlmFailure,
    },
    /// The answer to a `Lock`, `Unlock` or `Reclaim`.
    Lock {
        /// The request.
        id: u64,
        /// What happened.
        outcome: LockOutcome,
    },
}

/// What the `Task` and `TaskResult` tools ask of the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum SubtaskRequest {
    /// Create a child task (once per call).
    Create {
        /// What the child is to do.
        description: String,
        /// Its persona, if named.
        persona: Option<String>,
        /// Its tier, if named.
        tier: Option<String>,
        /// Whether the parent waits for it.
        wait: bool,
    },
    /// How a child of this task stands.
    Result {
        /// The child's id, as the model gave it.
        task: String,
    },
}

/// The supervisor's answer to a [`SubtaskRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum SubtaskAnswer {
    /// Refused (a limit, a bad argument): the tool's error result.
    Refused {
        /// Why, naming the limit.
        error: String,
    },
    /// The child exists and has not ended.
    Pending {
        /// The child.
        child: TaskId,
        /// Its state now.
        status: String,
        /// The parent waits for it (the worker parks the task after the turn's calls).
        wait: bool,
    },
    /// The child has ended: its outcome (summary, branch, diff stat; or its error).
    Ended {
        /// The child.
        child: TaskId,
        /// The outcome in words, for the model.
        outcome: String,
        /// It failed or was cancelled.
        is_error: bool,
    },
}
