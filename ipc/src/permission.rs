//! Permission requests and answers (issue 12, layered permissions): the worker asks the supervisor before a tool
//! runs; the user answers a request that asks with `task approve` / `task deny`, and lists or removes the rules
//! saved from answers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::task::TaskId;

/// The supervisor's answer to a worker's permission request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum PermissionAnswer {
    /// Run the tool.
    Allow,
    /// Do not run it; the model gets an error result with `reason` (which names the rule).
    Deny {
        /// What the model is told.
        reason: String,
    },
    /// Ask the user: the worker parks the task (`TaskEnded { NeedsUser { reason: prompt } }`) and exits.
    Ask {
        /// The question, naming the tool and the exact command or path.
        prompt: String,
    },
}

/// What `task approve` / `task deny` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionDecision {
    /// The task.
    pub task: TaskId,
    /// The tool.
    pub tool: String,
    /// The command line or path.
    pub subject: String,
    /// Allowed or denied.
    pub allowed: bool,
    /// The rule saved with `--always` / `--never`, if any.
    pub saved_rule: Option<i64>,
    /// Whether the task was queued again (false: it had not parked yet, and will be queued when it does).
    pub requeued: bool,
    /// The request's number (`request #N` in its prompt).
    #[serde(default)]
    pub request: i64,
}

/// A rule saved from an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionRule {
    /// Its number, for `permissions rm`.
    pub id: i64,
    /// `always` (true) or `never`.
    pub allow: bool,
    /// The tool it was saved for.
    pub tool: String,
    /// `command` (an exact command line) or `path` (a path and what is under it).
    pub kind: String,
    /// The command line or path.
    pub pattern: String,
    /// The task whose request it answered.
    pub from_task: Option<TaskId>,
    /// When it was saved.
    pub created_at: DateTime<Utc>,
}
