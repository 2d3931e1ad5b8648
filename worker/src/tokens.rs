//! Token accounting: how many tokens the next model request will hold, so the loop can compact before it passes the
//! window. Pure functions, no I/O.
//!
//! The estimate is the one the providers' rough rule and the LLM double use: one token per four bytes of each
//! piece's JSON, rounded up, where the pieces are every tool definition, the system prompt and every content block
//! of every message (wrapped with its role, as the double counts it). The count of a request is the last response's
//! reported usage (input + cache read + cache creation + output: everything that went in and came out of that turn)
//! plus the estimate of what was added since; before the first response, or after the conversation was rewritten
//! (compaction), the estimate of the whole request. It is never below the whole estimate either, so a provider
//! reporting less than it was sent (or a scripted double) cannot hide the conversation's growth.

use neuraphage_ipc::llm::{ContentBlock, Message, Speaker, ToolDefinition, Usage};

/// Tokens of a piece of text (one per four bytes, rounded up).
pub fn count_text(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Tokens of one content block of a message said by `role`, counted as the block's JSON wrapped with its role.
pub fn count_block(role: Speaker, block: &ContentBlock) -> u64 {
    let role = match role {
        Speaker::User => "user",
        Speaker::Assistant => "assistant",
    };
    let json = serde_json::json!({ "role": role, "block": block });
    count_text(&json.to_string())
}

/// Tokens of one message (its blocks).
pub fn count_message(message: &Message) -> u64 {
    message.content.iter().map(|b| count_block(message.role, b)).sum()
}

/// Tokens of messages.
pub fn count_messages(messages: &[Message]) -> u64 {
    messages.iter().map(count_message).sum()
}

/// Tokens of the fixed part of a request: the tool definitions and the system prompt.
pub fn count_fixed(system: &str, tools: &[ToolDefinition]) -> u64 {
    let tools: u64 = tools.iter().map(|t| count_text(&serde_json::to_string(t).unwrap_or_default())).sum();
    tools + count_text(&serde_json::Value::String(system.to_owned()).to_string())
}

/// Everything a response's usage says went in and came out of that turn.
pub fn usage_total(usage: &Usage) -> u64 {
    usage
        .input_tokens
        .saturating_add(usage.cache_read_input_tokens)
        .saturating_add(usage.cache_creation_input_tokens)
        .saturating_add(usage.output_tokens)
}

/// Counts what the next request holds, anchored on the last response's usage.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    /// The last response's usage total, and how many messages the conversation held with that response in it.
    anchor: Option<(u64, usize)>,
}

impl Counter {
    /// A counter with no response seen yet.
    pub fn new() -> Counter {
        Counter::default()
    }

    /// A response arrived: `usage` covers the conversation up to and including it (`messages_len` messages).
    pub fn observe(&mut self, usage: &Usage, messages_len: usize) {
        self.anchor = Some((usage_total(usage), messages_len));
    }

    /// The conversation was rewritten (compacted): the last usage no longer describes its prefix.
    pub fn reset(&mut self) {
        self.anchor = None;
    }

    /// Tokens the next request will hold: `fixed` (see [`count_fixed`]) and `messages`.
    pub fn next_request(&self, fixed: u64, messages: &[Message]) -> u64 {
        let whole = fixed + count_messages(messages);
        match self.anchor {
            Some((total, len)) if len <= messages.len() => {
                total.saturating_add(count_messages(&messages[len..])).max(whole)
            }
            _ => whole,
        }
    }
}

#[cfg(test)]
mod tests {
    use neuraphage_ipc::llm::Message;
    use serde_json::json;

    use super::*;

    fn result(id: &str, bytes: usize) -> Message {
        Message {
            role: Speaker::User,
            content: vec![ContentBlock::ToolResult {
                tool_use_id: id.into(),
                content: "x".repeat(bytes),
                is_error: false,
            }],
        }
    }

    #[test]
    fn a_block_counts_its_json_with_its_role_at_four_bytes_a_token() {
        let block = ContentBlock::Text { text: "abcd".into() };
        let json = json!({"role": "user", "block": {"type": "text", "text": "abcd"}}).to_string();
        assert_eq!(count_block(Speaker::User, &block), (json.len() as u64).div_ceil(4));
        assert_eq!(count_text(""), 0);
        assert_eq!(count_text("abcde"), 2);
        // Escapes count as the wire carries them.
        assert!(count_text(&json!("\n\n\n\n").to_string()) > count_text("\n\n\n\n"));
    }

    #[test]
    fn before_any_response_the_whole_request_is_estimated() {
        let counter = Counter::new();
        let messages = vec![Message::user_text("do it"), result("t1", 4000)];
        let whole = 100 + count_messages(&messages);
        assert_eq!(counter.next_request(100, &messages), whole);
        assert!(whole > 1000, "a 4000-byte result is over 1000 tokens");
    }

    #[test]
    fn after_a_response_its_usage_plus_what_was_added_and_never_below_the_estimate() {
        let mut counter = Counter::new();
        let mut messages = vec![Message::user_text("do it"), Message { role: Speaker::Assistant, content: vec![] }];
        let usage = Usage { input_tokens: 5000, output_tokens: 100, cache_read_input_tokens: 2000, ..Usage::default() };
        counter.observe(&usage, messages.len());
        messages.push(result("t1", 400));
        let added = count_message(&messages[2]);
        assert_eq!(counter.next_request(10, &messages), 7100 + added);
        // A usage below what was sent does not hide it.
        counter.observe(&Usage { input_tokens: 1, ..Usage::default() }, 2);
        assert_eq!(counter.next_request(10, &messages), 10 + count_messages(&messages));
        // After a rewrite shorter than the anchor, the whole estimate.
        counter.observe(&usage, 3);
        assert_eq!(counter.next_request(10, &messages[..1]), 10 + count_messages(&messages[..1]));
        counter.reset();
        assert_eq!(counter.next_request(10, &messages), 10 + count_messages(&messages));
    }

    #[test]
    fn fixed_part_counts_tools_and_system() {
        let tool = ToolDefinition { name: "Read".into(), description: "d".into(), input_schema: json!({}) };
        assert!(count_fixed("system", std::slice::from_ref(&tool)) > count_fixed("system", &[]));
        assert!(count_fixed("a longer system prompt", &[]) > count_fixed("s", &[]));
    }
}
