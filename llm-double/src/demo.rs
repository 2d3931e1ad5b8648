//! [`DemoPolicy`]: a deterministic "scripted model" for the demo. It does a small coding task in any repository,
//! choosing its next move from how many tool results the conversation already holds:
//!
//! | tool results so far | answer |
//! |---|---|
//! | 0 | `Glob {"pattern": "**/*"}` |
//! | 1 | `Grep {"pattern": "fn \|def \|TODO", "path": "."}` |
//! | 2 | `Bash {"command": "ls -la && git status --short \|\| true"}` |
//! | 3 | `Write {"file_path": "NEURAPHAGE_NOTES.md", "content": <a note quoting the task>}` |
//! | 4 | `Read {"file_path": "NEURAPHAGE_NOTES.md"}` |
//! | 5 or more | a text summary, `end_turn` |
//!
//! Each tool call comes after a short text saying what it is about to do, so streaming shows text. It is a TEST
//! DOUBLE: no model is involved.

use serde_json::json;

use crate::record::RecordedRequest;
use crate::script::{Policy, Reply, Step, StopReason, TokenUsage, policy};

/// The file the demo writes and reads back.
pub const NOTES_FILE: &str = "NEURAPHAGE_NOTES.md";

/// The most characters of the task description the note quotes.
const MAX_QUOTED_CHARS: usize = 2000;

/// The demo's scripted model (see the module docs for its moves).
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoPolicy;

impl DemoPolicy {
    /// The step for a request.
    pub fn step(&self, request: &RecordedRequest) -> Step {
        let task = task_description(request);
        let reply = match request.tool_result_count() {
            0 => Reply::text("I'll start by listing the files in the repository.")
                .with_tool("Glob", json!({"pattern": "**/*"})),
            1 => Reply::text("Next I'll search the code for definitions and TODO markers.")
                .with_tool("Grep", json!({"pattern": "fn |def |TODO", "path": "."})),
            2 => Reply::text("Let me look at the working tree and its git status.")
                .with_tool("Bash", json!({"command": "ls -la && git status --short || true"})),
            3 => Reply::text(format!("Now I'll write my notes on the task to {NOTES_FILE}."))
                .with_tool("Write", json!({"file_path": NOTES_FILE, "content": note(&task)})),
            4 => Reply::text("I'll read the notes back to check them.")
                .with_tool("Read", json!({"file_path": NOTES_FILE})),
            _ => Reply::text(format!(
                "Done. I listed the repository's files, searched for definitions and TODOs, checked the git status, \
                 and wrote {NOTES_FILE} with notes on the task \"{}\". (This answer came from the scripted demo \
                 model, a test double, not from a real LLM.)",
                first_line(&task)
            ))
            .stop(StopReason::EndTurn),
        };
        let output_tokens = reply_size(&reply) / 4 + 1;
        let input_tokens = u64::try_from(request.raw_body.len() / 4).unwrap_or(u64::MAX).max(1);
        Step::Reply(reply.with_usage(TokenUsage { input_tokens, output_tokens, ..TokenUsage::default() }))
    }

    /// This policy as a [`Policy`] for [`crate::LlmDouble::set_policy`] or [`crate::DoubleConfig::policy`].
    pub fn policy(self) -> Policy {
        policy(move |request| self.step(request))
    }
}

fn task_description(request: &RecordedRequest) -> String {
    let text = request.first_user_text().unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        return "(no task description)".to_string();
    }
    let mut quoted: String = text.chars().take(MAX_QUOTED_CHARS).collect();
    if quoted.len() < text.len() {
        quoted.push('…');
    }
    quoted
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

fn note(task: &str) -> String {
    let quoted: Vec<String> =
        task.lines().map(|line| if line.is_empty() { ">".to_string() } else { format!("> {line}") }).collect();
    format!(
        "# Neuraphage notes\n\n## Task\n\n{}\n\n## What was done\n\n\
         - Listed the repository's files (Glob `**/*`).\n\
         - Searched for definitions and TODO markers (Grep `fn |def |TODO`).\n\
         - Looked at the working tree (`ls -la && git status --short`).\n\
         - Wrote this note.\n\n\
         _Written by the scripted demo model (neuraphage-llm-double, a test double), not by a real LLM._\n",
        quoted.join("\n")
    )
}

fn reply_size(reply: &Reply) -> u64 {
    let size: usize = reply
        .blocks
        .iter()
        .map(|b| match b {
            crate::script::ReplyBlock::Text(t) => t.len(),
            crate::script::ReplyBlock::ToolCall { input, .. } => input.to_string().len(),
            crate::script::ReplyBlock::Thinking { text, .. } => text.len(),
            crate::script::ReplyBlock::RedactedThinking { data } => data.len(),
        })
        .sum();
    u64::try_from(size).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Endpoint;
    use crate::script::ReplyBlock;
    use serde_json::Value;

    fn request(body: Value) -> RecordedRequest {
        RecordedRequest {
            endpoint: Endpoint::AnthropicMessages,
            method: "POST".into(),
            path: "/v1/messages".into(),
            headers: vec![],
            raw_body: body.to_string(),
            body,
        }
    }

    fn tool_of(step: &Step) -> Option<(String, Value)> {
        let Step::Reply(reply) = step else { return None };
        reply.blocks.iter().find_map(|b| match b {
            ReplyBlock::ToolCall { name, input, .. } => Some((name.clone(), input.clone())),
            _ => None,
        })
    }

    #[test]
    fn walks_through_the_six_turns_by_counting_tool_results() {
        let mut messages =
            vec![json!({"role": "user", "content": [{"type": "text", "text": "Fix the README\nplease"}]})];
        let expected = ["Glob", "Grep", "Bash", "Write", "Read"];
        for (turn, name) in expected.iter().enumerate() {
            let step = DemoPolicy.step(&request(json!({"messages": messages})));
            let (tool, input) = tool_of(&step).expect("a tool call");
            assert_eq!(&tool, name, "turn {turn}");
            if tool == "Write" {
                assert_eq!(input["file_path"], NOTES_FILE);
                let content = input["content"].as_str().expect("content");
                assert!(content.contains("> Fix the README\n> please"), "{content}");
            }
            messages.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": format!("t{turn}"), "name": tool, "input": input}]}));
            messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("t{turn}"), "content": "ok"}]}));
        }
        let last = DemoPolicy.step(&request(json!({"messages": messages})));
        assert!(tool_of(&last).is_none());
        let Step::Reply(reply) = last else { panic!("a reply") };
        assert_eq!(reply.effective_stop_reason(), StopReason::EndTurn);
    }

    #[test]
    fn counts_openai_tool_messages_too() {
        let body = json!({"messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "Task"},
            {"role": "assistant", "content": null, "tool_calls": []},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ]});
        let (tool, input) = tool_of(&DemoPolicy.step(&request(body))).expect("a tool call");
        assert_eq!(tool, "Grep");
        assert_eq!(input, json!({"pattern": "fn |def |TODO", "path": "."}));
    }
}
