//! Anthropic prompt-caching breakpoints: where a request's `cache_control: {"type": "ephemeral"}` marks go, by the
//! rules of the Messages API's "Prompt caching" documentation.
//!
//! The prompt is cached as prefixes in the order tools → system → messages. A breakpoint goes on the last tool
//! definition, on the system prompt (sent as an array of text blocks for it) and on the latest messages: the last
//! content block of the last message (this turn writes the cache up to there) and the last content block of the
//! last user message before it (the previous turn wrote up to there, so this turn reads it). Never more than
//! [`MAX_BREAKPOINTS`] in all, never on a `thinking` / `redacted_thinking` block (the API refuses it; the previous
//! eligible block of the same message takes it) and never on an empty text block (refused too).
//!
//! Reference: <https://platform.claude.com/docs/en/build-with-claude/prompt-caching>.

use serde_json::{Value, json};

/// The most `cache_control` blocks one request may carry (the API answers 400 beyond it).
pub const MAX_BREAKPOINTS: usize = 4;

/// The mark itself.
pub fn ephemeral() -> Value {
    json!({"type": "ephemeral"})
}

/// Whether a content block may carry `cache_control`.
fn eligible(block: &Value) -> bool {
    match block.get("type").and_then(Value::as_str) {
        Some("thinking" | "redacted_thinking") => false,
        Some("text") => block.get("text").and_then(Value::as_str).is_some_and(|t| !t.is_empty()),
        Some(_) => true,
        None => false,
    }
}

/// The index of the last block of `message` that may carry a breakpoint.
fn last_eligible(message: &Value) -> Option<usize> {
    let blocks = message.get("content")?.as_array()?;
    blocks.iter().rposition(eligible)
}

/// Puts the breakpoints on a Messages API body built without them (`system` a string, `messages[].content` arrays).
/// Returns how many were placed (at most [`MAX_BREAKPOINTS`]).
pub fn place_breakpoints(body: &mut Value) -> usize {
    let mut placed = 0usize;
    if let Some(last) = body.get_mut("tools").and_then(Value::as_array_mut).and_then(|t| t.last_mut())
        && let Some(tool) = last.as_object_mut()
    {
        tool.insert("cache_control".into(), ephemeral());
        placed += 1;
    }
    if let Some(system) = body.get("system").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned) {
        body["system"] = json!([{"type": "text", "text": system, "cache_control": ephemeral()}]);
        placed += 1;
    }
    let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) else { return placed };
    let mut targets: Vec<(usize, usize)> = Vec::new();
    if let Some(last) = messages.len().checked_sub(1) {
        if let Some(block) = last_eligible(&messages[last]) {
            targets.push((last, block));
        }
        let previous_user =
            messages[..last].iter().rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"));
        if let Some(user) = previous_user
            && let Some(block) = last_eligible(&messages[user])
        {
            targets.push((user, block));
        }
    }
    for (message, block) in targets {
        if placed >= MAX_BREAKPOINTS {
            break;
        }
        if let Some(b) =
            messages[message].get_mut("content").and_then(|c| c.get_mut(block)).and_then(Value::as_object_mut)
        {
            b.insert("cache_control".into(), ephemeral());
            placed += 1;
        }
    }
    placed
}

/// Every `cache_control` mark of a body, as (where, block type): `tools[i]`, `system[i]`, `messages[i].content[j]`.
pub fn breakpoints(body: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let marked = |v: &Value| v.get("cache_control").is_some();
    for (i, tool) in body.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if marked(tool) {
            found.push(format!("tools[{i}]"));
        }
    }
    for (i, block) in body.get("system").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if marked(block) {
            found.push(format!("system[{i}]"));
        }
    }
    for (i, message) in body.get("messages").and_then(Value::as_array).into_iter().flatten().enumerate() {
        for (j, block) in message.get("content").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if marked(block) {
                found.push(format!("messages[{i}].content[{j}]"));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(messages: Value) -> Value {
        json!({
            "system": "sys",
            "tools": [{"name": "A"}, {"name": "B"}],
            "messages": messages,
        })
    }

    #[test]
    fn tools_system_and_the_latest_two_user_turns() {
        let mut b = body(json!([
            {"role": "user", "content": [{"type": "text", "text": "task"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "1", "name": "A", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "1", "content": "x"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "2", "name": "A", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "2", "content": "y"}]},
        ]));
        assert_eq!(place_breakpoints(&mut b), 4);
        assert_eq!(breakpoints(&b), ["tools[1]", "system[0]", "messages[2].content[0]", "messages[4].content[0]"]);
        assert_eq!(b["system"], json!([{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]));
    }

    #[test]
    fn never_on_thinking_or_empty_text_and_never_more_than_four() {
        // A paused assistant turn ends the conversation: its last eligible block is the text before the thinking.
        let mut b = body(json!([
            {"role": "user", "content": [{"type": "text", "text": "task"}, {"type": "text", "text": ""}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "partial"},
                {"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "redacted_thinking", "data": "d"},
            ]},
        ]));
        assert_eq!(place_breakpoints(&mut b), 4);
        assert_eq!(breakpoints(&b), ["tools[1]", "system[0]", "messages[0].content[0]", "messages[1].content[0]"]);
        // Only thinking in the last message: no mark there.
        let mut b = body(json!([
            {"role": "user", "content": [{"type": "text", "text": "task"}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"}]},
        ]));
        assert_eq!(place_breakpoints(&mut b), 3);
        assert_eq!(breakpoints(&b), ["tools[1]", "system[0]", "messages[0].content[0]"]);
        // No tools, no system, one message.
        let mut b = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]});
        assert_eq!(place_breakpoints(&mut b), 1);
        assert_eq!(b.get("system"), None);
    }
}
