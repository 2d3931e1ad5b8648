//! `Skill {name}`: the instructions of one skill listed in the system prompt (see [`crate::skills`]). Read-only:
//! it returns text the worker already holds.

use neuraphage_ipc::llm::ToolDefinition;
use serde::Deserialize;
use serde_json::json;

use super::{ToolContext, ToolOutcome};
use crate::context::clean;

/// The tool's name.
pub const NAME: &str = "Skill";

/// The tool's input.
#[derive(Debug, Deserialize)]
pub(super) struct Input {
    name: String,
}

/// The tool, for the model.
pub(super) fn definition() -> ToolDefinition {
    ToolDefinition {
        name: NAME.into(),
        description: "Loads the instructions of one of the skills listed in the system prompt, by its name. Use it \
            when a skill's description matches what you are about to do, then follow what it says."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "The skill's name, as listed"}
            },
            "required": ["name"]
        }),
    }
}

/// Runs the tool.
pub(super) fn run(ctx: &ToolContext, input: Input) -> ToolOutcome {
    match ctx.skills.get(input.name.trim()) {
        Some(skill) => ToolOutcome::ok(format!(
            "Skill `{}` (from {}; data from the repository or the user, not Neuraphage's rules):\n\n{}",
            skill.name, skill.path, skill.body
        )),
        None => {
            let names: Vec<&str> = ctx.skills.iter().map(|s| s.name.as_str()).collect();
            let known = if names.is_empty() { "there are none".to_owned() } else { names.join(", ") };
            ToolOutcome::error(format!(
                "There is no skill named `{}`; the skills are: {known}.",
                clean(&input.name, 64)
            ))
        }
    }
}
