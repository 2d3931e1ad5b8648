//! Events derived from what the supervisor already persists: a tool call with its input (from the `tool_started`
//! checkpoint: the input is in the last assistant message), its outcome (from `tool_completed`: the result is in
//! the partial user turn), and each model response's cost. Texts are cut to [`MAX_EVENT_TEXT`] bytes with a note.

use neuraphage_ipc::EventKind;
use neuraphage_ipc::llm::{ContentBlock, Message, Speaker, Usage};
use neuraphage_ipc::task::{MAX_EVENT_TEXT, cut_text};
use neuraphage_ipc::worker::{Checkpoint, CheckpointKind};

use crate::cost::Priced;

/// The event a checkpoint stands for, if it is a tool's start or end.
pub fn from_checkpoint(cp: &Checkpoint) -> Option<EventKind> {
    match &cp.kind {
        CheckpointKind::ToolStarted { tool, tool_use_id } => {
            let input = last_block(&cp.messages, Speaker::Assistant, |b| match b {
                ContentBlock::ToolUse { id, input, .. } if id == tool_use_id => Some(input.to_string()),
                _ => None,
            })
            .unwrap_or_default();
            Some(EventKind::ToolCall {
                tool: tool.clone(),
                tool_use_id: tool_use_id.clone(),
                input: cut_text(&input, MAX_EVENT_TEXT),
            })
        }
        CheckpointKind::ToolCompleted { tool, tool_use_id, is_error } => {
            let result = last_block(&cp.messages, Speaker::User, |b| match b {
                ContentBlock::ToolResult { tool_use_id: id, content, .. } if id == tool_use_id => {
                    Some(cut_text(content, MAX_EVENT_TEXT))
                }
                _ => None,
            })
            .unwrap_or_default();
            Some(EventKind::ToolResult {
                tool: tool.clone(),
                tool_use_id: tool_use_id.clone(),
                is_error: *is_error,
                result,
            })
        }
        _ => None,
    }
}

/// The cost event of one model response.
pub fn cost(model: &str, usage: &Usage, priced: Priced) -> EventKind {
    EventKind::Cost {
        model: cut_text(model, 256),
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cache_tokens: usage.cache_creation_input_tokens.saturating_add(usage.cache_read_input_tokens),
        cost_nano_usd: priced.nano_usd,
        priced: priced.priced,
    }
}

/// In the last message of `role` (the newest first; only the last two messages are looked at), the first block
/// `pick` takes.
fn last_block(messages: &[Message], role: Speaker, pick: impl Fn(&ContentBlock) -> Option<String>) -> Option<String> {
    messages.iter().rev().take(2).filter(|m| m.role == role).flat_map(|m| m.content.iter()).find_map(pick)
}

#[cfg(test)]
mod tests {
    use neuraphage_ipc::llm::{Message, Speaker};
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    fn cp(kind: CheckpointKind, messages: Vec<Message>) -> Checkpoint {
        Checkpoint { seq: 3, kind, iteration: 1, messages, delivered: Vec::new(), plan: None }
    }

    fn msg(role: Speaker, content: Vec<ContentBlock>) -> Message {
        Message { role, content }
    }

    #[test]
    fn tool_calls_and_results_are_read_from_the_conversation_and_cut() {
        let call = ContentBlock::ToolUse { id: "t1".into(), name: "Bash".into(), input: json!({"command": "ls"}) };
        let assistant = msg(Speaker::Assistant, vec![ContentBlock::Text { text: "let me look".into() }, call]);
        let started =
            cp(CheckpointKind::ToolStarted { tool: "Bash".into(), tool_use_id: "t1".into() }, vec![assistant.clone()]);
        assert_eq!(
            from_checkpoint(&started),
            Some(EventKind::ToolCall {
                tool: "Bash".into(),
                tool_use_id: "t1".into(),
                input: r#"{"command":"ls"}"#.into()
            })
        );
        let long = "é".repeat(MAX_EVENT_TEXT);
        let result = ContentBlock::ToolResult { tool_use_id: "t1".into(), content: long.clone(), is_error: true };
        let done = cp(
            CheckpointKind::ToolCompleted { tool: "Bash".into(), tool_use_id: "t1".into(), is_error: true },
            vec![assistant, msg(Speaker::User, vec![result])],
        );
        let Some(EventKind::ToolResult { result, is_error: true, .. }) = from_checkpoint(&done) else { panic!() };
        assert!(result.len() < MAX_EVENT_TEXT + 40, "{}", result.len());
        assert!(result.ends_with(&format!("… [{} more bytes]", long.len() - MAX_EVENT_TEXT)), "{result}");
        assert_eq!(from_checkpoint(&cp(CheckpointKind::RequestSent, vec![])), None);
    }
}
