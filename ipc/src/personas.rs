//! What `neuraphage personas` and `neuraphage watcher log` answer: the personas in force and the Watcher's
//! interventions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::task::TaskId;

/// One persona as `neuraphage personas` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonaInfo {
    /// Its key (`senior`, `reviewer`, …), as `task new --persona` takes it.
    pub key: String,
    /// Its display name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The model tier it runs on (`router`, `worker`, `expert`).
    pub tier: String,
    /// The tools it may use; `None`: all.
    pub allowed_tools: Option<Vec<String>>,
    /// Used by Neuraphage itself (the Watcher), not assignable to a task.
    pub internal: bool,
    /// Built in, changed by `personas.yaml`, or added by it.
    pub origin: String,
}

/// One Watcher intervention, as `neuraphage watcher log` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherEntry {
    /// The event's sequence number.
    pub seq: u64,
    /// The task.
    pub task: TaskId,
    /// When.
    pub at: DateTime<Utc>,
    /// The rule that flagged the task.
    pub rule: String,
    /// What was done: `continue`, `nudge`, `escalate`, `pause`, `abort`.
    pub recommendation: String,
    /// The diagnosis (the judge's, or the rule's finding).
    pub diagnosis: String,
    /// The judge's confidence in percent (0 when unjudged).
    pub confidence: u8,
    /// For a nudge: whether the pattern was gone at the next look (`None`: not known yet).
    pub helped: Option<bool>,
}
