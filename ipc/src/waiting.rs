//! What a person sends a task and what waits on them: the bound on a user message, the special messages, and the
//! rows of `neuraphage waiting`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::task::TaskId;

/// The longest user message (`task send`, `task answer`) accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The tool a task asks the user with (the worker's `AskUser`).
pub const ASK_USER_TOOL: &str = "AskUser";

/// Messages that act instead of being delivered (after trimming): pause, cancel, queue again.
pub const SPECIAL_MESSAGES: [&str; 3] = ["/pause", "/cancel", "/retry"];

/// A task waiting on the user, as `neuraphage waiting` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingTask {
    /// The task.
    pub id: TaskId,
    /// What it asks (a question, a permission, a limit reached).
    pub prompt: String,
    /// Whether the prompt is an `AskUser` question (`task answer` answers it).
    pub question: bool,
    /// When it started waiting.
    pub since: DateTime<Utc>,
    /// How long it has waited, in seconds, when listed.
    pub waiting_secs: u64,
    /// What the user asked the task to do.
    pub description: String,
    /// The task that created it, when it is a sub-task.
    #[serde(default)]
    pub parent: Option<TaskId>,
}
