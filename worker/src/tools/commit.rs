//! `Commit {message}`: asks the supervisor to commit the worktree to the task's branch. The agent loop carries it
//! out over the supervisor link (git runs on the supervisor's side, through git2: no hooks, filters or fsmonitor of
//! the repository run); this module only describes and checks the call.

use neuraphage_ipc::llm::ToolDefinition;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ToolOutcome;

/// The tool's name.
pub const NAME: &str = "Commit";

/// Longest commit message accepted.
pub const MAX_MESSAGE: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
struct Input {
    message: String,
}

/// The tool, for the model.
pub(super) fn definition() -> ToolDefinition {
    ToolDefinition {
        name: NAME.into(),
        description: "Commits every change in the working directory to this task's branch, with the given message. \
            Use it to save a coherent step of your work; do not run `git commit` yourself (the repository's git \
            metadata is read-only to you). Files ignored by .gitignore are not committed."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "message": {"type": "string", "description": "The commit message: a short summary line, then details if useful"}
            },
            "required": ["message"]
        }),
    }
}

/// The commit message of a call, or what is wrong with the call.
pub fn message(input: &Value) -> Result<String, ToolOutcome> {
    let input: Input = super::parse(NAME, input)?;
    let message = input.message.trim();
    if message.is_empty() {
        return Err(ToolOutcome::error("Commit: the message is empty"));
    }
    if message.len() > MAX_MESSAGE {
        return Err(ToolOutcome::error(format!(
            "Commit: the message is {} bytes; at most {MAX_MESSAGE}",
            message.len()
        )));
    }
    if message.contains('\0') {
        return Err(ToolOutcome::error("Commit: the message contains a NUL character"));
    }
    Ok(message.to_owned())
}
