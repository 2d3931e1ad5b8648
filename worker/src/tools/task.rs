//! `Task {description, persona?, tier?, wait?}` and `TaskResult {task}`: sub-tasks. A worker cannot create tasks;
//! the agent loop asks the supervisor over the supervisor link (`WorkerToSupervisor::Subtask`), which creates the
//! child through the same path as `task new`, with its limits (depth, live descendants). This module only describes
//! the tools, checks their input and words the answers for the model.

use neuraphage_ipc::llm::ToolDefinition;
use neuraphage_ipc::worker::{SubtaskAnswer, SubtaskRequest};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ToolOutcome;

/// The `Task` tool's name.
pub const NAME: &str = "Task";

/// The `TaskResult` tool's name.
pub const RESULT_NAME: &str = "TaskResult";

/// Longest sub-task description (the same bound as `task new`).
pub const MAX_DESCRIPTION: usize = neuraphage_ipc::MAX_DESCRIPTION_BYTES;

#[derive(Debug, Deserialize)]
pub(super) struct Input {
    description: String,
    #[serde(default)]
    persona: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default, deserialize_with = "super::lenient_bool")]
    wait: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ResultInput {
    task: String,
}

/// The `Task` tool, for the model.
pub(super) fn definition() -> ToolDefinition {
    ToolDefinition {
        name: NAME.into(),
        description: "Starts a sub-task: another agent, with its own worktree and branch made from this task's branch \
            as it stands now (your uncommitted changes are committed first), works on the description you give. \
            With wait true (the default) this task pauses until the sub-task ends and the result is the sub-task's \
            outcome (its summary, branch and diff stat, or its error); several Task calls in one turn run their \
            sub-tasks in parallel. With wait false the result is the sub-task's id at once; use TaskResult to see \
            how it stands, and its outcome comes to you when it ends. Depth and the number of live sub-tasks are \
            limited."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "description": {"type": "string", "description": "What the sub-task is to do, self-contained"},
                "persona": {"type": "string", "description": "A persona name for the sub-task (optional)"},
                "tier": {"type": "string", "description": "Model tier: router, worker or expert (optional)"},
                "wait": {"type": "boolean", "description": "Wait for its outcome (default true)"}
            },
            "required": ["description"]
        }),
    }
}

/// The `TaskResult` tool, for the model.
pub(super) fn result_definition() -> ToolDefinition {
    ToolDefinition {
        name: RESULT_NAME.into(),
        description: "How a sub-task this task started stands: its outcome if it has ended (summary, branch, diff \
            stat, or its error), else its status."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {"task": {"type": "string", "description": "The sub-task's id (np-…)"}},
            "required": ["task"]
        }),
    }
}

/// The supervisor request of a `Task` call, or what is wrong with the call.
pub fn create(input: &Value) -> Result<SubtaskRequest, ToolOutcome> {
    let input: Input = super::parse(NAME, input)?;
    let description = input.description.trim().to_owned();
    if description.is_empty() {
        return Err(ToolOutcome::error("Task: the description is empty; say what the sub-task should do"));
    }
    if description.len() > MAX_DESCRIPTION {
        return Err(ToolOutcome::error(format!(
            "Task: the description is {} bytes; at most {MAX_DESCRIPTION}",
            description.len()
        )));
    }
    let named = |field: &str, v: Option<String>| -> Result<Option<String>, ToolOutcome> {
        match v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
            Some(v) if v.len() > 64 => Err(ToolOutcome::error(format!("Task: `{field}` is longer than 64 bytes"))),
            other => Ok(other),
        }
    };
    Ok(SubtaskRequest::Create {
        description,
        persona: named("persona", input.persona)?,
        tier: named("tier", input.tier)?,
        wait: input.wait.unwrap_or(true),
    })
}

/// The supervisor request of a `TaskResult` call, or what is wrong with the call.
pub fn result(input: &Value) -> Result<SubtaskRequest, ToolOutcome> {
    let input: ResultInput = super::parse(RESULT_NAME, input)?;
    let task = input.task.trim().to_owned();
    if task.is_empty() || task.len() > 64 {
        return Err(ToolOutcome::error("TaskResult: `task` must be a sub-task id such as np-0123456789"));
    }
    Ok(SubtaskRequest::Result { task })
}

/// What the model is told of the supervisor's answer. `None`: the parent waits for the child (no result yet).
pub fn outcome(answer: SubtaskAnswer) -> Option<ToolOutcome> {
    match answer {
        SubtaskAnswer::Refused { error } => Some(ToolOutcome::error(error)),
        SubtaskAnswer::Pending { wait: true, .. } => None,
        SubtaskAnswer::Pending { child, status, wait: false } => Some(ToolOutcome::ok(format!(
            "Sub-task {child} is {status}. Its outcome comes to you when it ends; TaskResult {{\"task\": \"{child}\"}} \
             tells how it stands."
        ))),
        SubtaskAnswer::Ended { outcome, is_error, .. } => Some(ToolOutcome { content: outcome, is_error }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_checked_and_wait_defaults_to_true() {
        match create(&json!({"description": " do it "})).unwrap() {
            SubtaskRequest::Create { description, wait, persona, tier } => {
                assert_eq!((description.as_str(), wait, persona, tier), ("do it", true, None, None));
            }
            other => panic!("{other:?}"),
        }
        let req = create(&json!({"description": "x", "wait": "false", "tier": "expert"})).unwrap();
        assert!(matches!(req, SubtaskRequest::Create { wait: false, tier: Some(ref t), .. } if t == "expert"));
        assert!(create(&json!({"description": "  "})).unwrap_err().content.contains("empty"));
        assert!(create(&json!({"description": "x", "persona": "p".repeat(65)})).unwrap_err().content.contains("64"));
        assert!(result(&json!({"task": ""})).is_err());
        assert!(result(&json!({})).unwrap_err().content.starts_with("TaskResult"));
    }

    #[test]
    fn a_waited_pending_child_has_no_result_yet() {
        let child: neuraphage_ipc::TaskId = "np-0000000001".parse().unwrap();
        let pending = |wait| SubtaskAnswer::Pending { child: child.clone(), status: "Queued".into(), wait };
        assert!(outcome(pending(true)).is_none());
        assert!(outcome(pending(false)).unwrap().content.contains("np-0000000001"));
        let refused = outcome(SubtaskAnswer::Refused { error: "max-subtask-depth 3".into() }).unwrap();
        assert!(refused.is_error);
    }
}
