//! `TodoWrite {todos: [{content, status}]}`: the task's plan, as Claude Code has it. The whole list is given each
//! time; the agent loop puts it in the call's `tool_completed` checkpoint and the supervisor stores it with the task
//! (`task show` prints it). Bookkeeping only: it touches no file. Status `pending`, `in_progress`, `completed` (or
//! `done`); at most [`MAX_ITEMS`] items of at most [`MAX_CONTENT`] characters, [`MAX_BYTES`] bytes in all (each
//! update is an event the user's tools read: a plan over them is refused, nothing saved).

use neuraphage_ipc::llm::ToolDefinition;
use neuraphage_ipc::task::{PlanItem, PlanStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ToolOutcome;

/// The tool's name.
pub const NAME: &str = "TodoWrite";
/// Most items in a plan.
pub const MAX_ITEMS: usize = neuraphage_ipc::task::MAX_PLAN_ITEMS;
/// Longest item, in characters.
pub const MAX_CONTENT: usize = neuraphage_ipc::task::MAX_PLAN_ITEM_CHARS;
/// Most bytes of the items' texts together.
pub const MAX_BYTES: usize = neuraphage_ipc::task::MAX_PLAN_BYTES;

#[derive(Debug, Deserialize)]
struct Input {
    todos: Vec<Todo>,
}

#[derive(Debug, Deserialize)]
struct Todo {
    content: String,
    status: String,
}

/// The tool, for the model.
pub(super) fn definition() -> ToolDefinition {
    ToolDefinition {
        name: NAME.into(),
        description: "Saves your plan for this task as a list of items, each pending, in_progress or completed. \
            Give the whole list each time (it replaces the last one); keep one item in_progress, and mark items \
            completed as soon as they are done. The user sees the plan and its progress. Use it for tasks of three \
            steps or more."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "todos": {
                    "type": "array",
                    "maxItems": MAX_ITEMS,
                    "items": {
                        "type": "object",
                        "properties": {
                            "content": {"type": "string", "description": "What is to be done", "maxLength": MAX_CONTENT},
                            "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]}
                        },
                        "required": ["content", "status"]
                    }
                }
            },
            "required": ["todos"]
        }),
    }
}

/// The plan a call gives, or the error result naming what is wrong.
pub fn parse(input: &Value) -> Result<Vec<PlanItem>, ToolOutcome> {
    let input: Input = super::parse(NAME, input)?;
    if input.todos.len() > MAX_ITEMS {
        return Err(ToolOutcome::error(format!(
            "TodoWrite: at most {MAX_ITEMS} items, got {}; nothing was saved",
            input.todos.len()
        )));
    }
    let mut items = Vec::with_capacity(input.todos.len());
    for (i, todo) in input.todos.into_iter().enumerate() {
        let content = todo.content.trim();
        if content.is_empty() {
            return Err(ToolOutcome::error(format!("TodoWrite: item {} has no content; nothing was saved", i + 1)));
        }
        if content.chars().count() > MAX_CONTENT {
            return Err(ToolOutcome::error(format!(
                "TodoWrite: item {} is longer than {MAX_CONTENT} characters; nothing was saved",
                i + 1
            )));
        }
        let status = match todo.status.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "pending" | "todo" => PlanStatus::Pending,
            "in_progress" | "doing" => PlanStatus::InProgress,
            "completed" | "done" | "complete" => PlanStatus::Done,
            other => {
                return Err(ToolOutcome::error(format!(
                    "TodoWrite: item {} has status `{}`; use pending, in_progress or completed; nothing was saved",
                    i + 1,
                    crate::context::clean(other, 40)
                )));
            }
        };
        items.push(PlanItem { content: content.to_owned(), status });
    }
    let bytes: usize = items.iter().map(|i| i.content.len()).sum();
    if bytes > MAX_BYTES {
        return Err(ToolOutcome::error(format!(
            "TodoWrite: the plan's items hold {bytes} bytes of text, over {MAX_BYTES} bytes in all; shorten them \
             (a few words each); nothing was saved"
        )));
    }
    Ok(items)
}

/// What the model is told once the plan is saved.
pub fn result(items: &[PlanItem]) -> ToolOutcome {
    let done = items.iter().filter(|i| i.status == PlanStatus::Done).count();
    let doing = items.iter().filter(|i| i.status == PlanStatus::InProgress).count();
    ToolOutcome::ok(format!(
        "The plan was saved: {done}/{} done, {doing} in progress. Keep it up to date as you work.",
        items.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_parsed_with_its_statuses() {
        let items = parse(&json!({"todos": [
            {"content": "a", "status": "completed"}, {"content": "b", "status": "done"},
            {"content": "c", "status": "in_progress"}, {"content": "d", "status": "pending"}
        ]}))
        .unwrap();
        let statuses: Vec<PlanStatus> = items.iter().map(|i| i.status).collect();
        assert_eq!(statuses, [PlanStatus::Done, PlanStatus::Done, PlanStatus::InProgress, PlanStatus::Pending]);
        assert!(result(&items).content.contains("2/4 done"));
    }

    #[test]
    fn bad_plans_are_refused() {
        assert!(parse(&json!({})).is_err());
        assert!(parse(&json!({"todos": [{"content": "a", "status": "maybe"}]})).unwrap_err().content.contains("maybe"));
        assert!(parse(&json!({"todos": [{"content": " ", "status": "pending"}]})).is_err());
        assert!(parse(&json!({"todos": [{"content": "x".repeat(501), "status": "pending"}]})).is_err());
        let many: Vec<Value> = (0..101).map(|i| json!({"content": format!("{i}"), "status": "pending"})).collect();
        assert!(parse(&json!({"todos": many})).unwrap_err().content.contains("at most 100"));
        assert_eq!(parse(&json!({"todos": []})).unwrap(), Vec::new());
        // 100 items of 500 four-byte characters: 200 KB in each plan event before.
        let wide: Vec<Value> = (0..100).map(|_| json!({"content": "😀".repeat(500), "status": "pending"})).collect();
        let err = parse(&json!({"todos": wide})).unwrap_err().content;
        assert!(err.contains("200000 bytes") && err.contains("nothing was saved"), "{err}");
        let fits: Vec<Value> = (0..100).map(|_| json!({"content": "x".repeat(160), "status": "pending"})).collect();
        assert_eq!(parse(&json!({"todos": fits})).unwrap().len(), 100, "control: a plan within the bound");
    }
}
