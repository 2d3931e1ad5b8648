//! OpenAI-compatible chat completions: the request body (system prompt as a `system` message, assistant tool uses as
//! `tool_calls`, tool results as `role: "tool"` messages, tools as `{"type": "function", "function": {...}}`,
//! `stream_options.include_usage`; Anthropic thinking blocks are not sent; system and tools first, in the same order
//! every turn, so the provider's automatic prefix caching applies) and the streamed answer (`data:` chunks
//! accumulated per `tool_calls[].index`, `finish_reason`, the usage chunk — `prompt_tokens_details.cached_tokens` is the cache read, and `input_tokens` is
//! `prompt_tokens` less it, so nothing is billed twice —, `[DONE]`).
//!
//! Reference: <https://platform.openai.com/docs/api-reference/chat/create>.

use std::collections::BTreeMap;

use neuraphage_ipc::llm::{
    ChatRequest, ChatResponse, ContentBlock, LlmFailure, Message, Speaker, StopReason, StreamDelta, Usage,
};
use serde_json::{Value, json};

use super::sse::Events;
use super::{classify_error_type, cut, failure, malformed, tool_input, truncate};

/// Prefix of a tool result's content when the tool failed (chat completions have no `is_error` flag).
pub const TOOL_ERROR_PREFIX: &str = "Error: ";

/// The field that caps output tokens: OpenAI's own API wants `max_completion_tokens` (`max_tokens` is deprecated and
/// refused by reasoning models); other OpenAI-compatible servers know `max_tokens`.
pub fn max_tokens_field(endpoint: &str) -> &'static str {
    let host = reqwest::Url::parse(endpoint).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    match host.as_deref() {
        Some("api.openai.com") => "max_completion_tokens",
        _ => "max_tokens",
    }
}

/// The request body for a streamed turn.
pub fn request_body(request: &ChatRequest, model: &str, max_tokens_field: &str) -> Value {
    let mut messages = Vec::new();
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    for message in &request.messages {
        push_messages(&mut messages, message);
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    body[max_tokens_field] = json!(request.max_tokens);
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
                })
            })
            .collect();
    }
    body
}

fn texts(message: &Message) -> Vec<&str> {
    message
        .content
        .iter()
        .filter_map(|b| match b {
            ContentBlock::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn push_messages(out: &mut Vec<Value>, message: &Message) {
    match message.role {
        Speaker::User => {
            // Tool results first: they must follow the assistant message that asked for them.
            for block in &message.content {
                if let ContentBlock::ToolResult { tool_use_id, content, is_error } = block {
                    let content = if *is_error && !content.starts_with(TOOL_ERROR_PREFIX) {
                        format!("{TOOL_ERROR_PREFIX}{content}")
                    } else {
                        content.clone()
                    };
                    out.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": content}));
                }
            }
            let texts = texts(message);
            if !texts.is_empty() {
                out.push(json!({"role": "user", "content": texts.join("\n\n")}));
            }
        }
        Speaker::Assistant => {
            let texts = texts(message);
            let calls: Vec<Value> = message
                .content
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::ToolUse { id, name, input } => Some(json!({
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": input.to_string()},
                    })),
                    _ => None,
                })
                .collect();
            if texts.is_empty() && calls.is_empty() {
                // Only thinking (Anthropic's; never sent to an OpenAI-compatible model) or nothing at all.
                return;
            }
            let content = if texts.is_empty() { Value::Null } else { json!(texts.join("\n\n")) };
            let mut assistant = json!({"role": "assistant", "content": content});
            if !calls.is_empty() {
                assistant["tool_calls"] = Value::Array(calls);
            }
            out.push(assistant);
        }
    }
}

/// The `finish_reason`.
pub fn stop_reason(value: &str) -> StopReason {
    match value {
        "stop" => StopReason::EndTurn,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "length" => StopReason::MaxTokens,
        "content_filter" => StopReason::Refusal,
        _ => StopReason::Other,
    }
}

fn usage_of(value: &Value) -> Usage {
    let n = |pointer: &str| value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let cached = n("/prompt_tokens_details/cached_tokens");
    Usage {
        input_tokens: n("/prompt_tokens").saturating_sub(cached),
        output_tokens: n("/completion_tokens"),
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: cached,
    }
}

fn str_field<'a>(value: &'a Value, name: &str) -> &'a str {
    value.get(name).and_then(Value::as_str).unwrap_or_default()
}

#[derive(Debug)]
struct ToolCall {
    block: u32,
    id: String,
    name: String,
    arguments: String,
    started: bool,
}

/// The state of one streamed completion.
#[derive(Debug)]
struct Accumulator {
    id: String,
    model: String,
    next_block: u32,
    text: Option<(u32, String)>,
    calls: BTreeMap<u64, ToolCall>,
    finish_reason: Option<String>,
    usage: Usage,
}

enum Flow {
    Continue,
    Done,
}

impl Accumulator {
    fn new(model: &str) -> Accumulator {
        Accumulator {
            id: String::new(),
            model: model.to_string(),
            next_block: 0,
            text: None,
            calls: BTreeMap::new(),
            finish_reason: None,
            usage: Usage::default(),
        }
    }

    fn take_block(&mut self) -> u32 {
        let block = self.next_block;
        self.next_block = self.next_block.saturating_add(1);
        block
    }

    fn text(&mut self, piece: &str, on_delta: &mut (dyn FnMut(StreamDelta) + Send)) {
        if piece.is_empty() {
            return;
        }
        if self.text.is_none() {
            let block = self.take_block();
            self.text = Some((block, String::new()));
        }
        if let Some((block, text)) = &mut self.text {
            text.push_str(piece);
            on_delta(StreamDelta::Text { index: *block, text: piece.to_string() });
        }
    }

    fn tool_call(&mut self, position: usize, call: &Value, on_delta: &mut (dyn FnMut(StreamDelta) + Send)) {
        let key = call.get("index").and_then(Value::as_u64).unwrap_or(position as u64);
        if !self.calls.contains_key(&key) {
            let block = self.take_block();
            self.calls.insert(
                key,
                ToolCall { block, id: String::new(), name: String::new(), arguments: String::new(), started: false },
            );
        }
        let Some(entry) = self.calls.get_mut(&key) else { return };
        let id = str_field(call, "id");
        if entry.id.is_empty() && !id.is_empty() {
            entry.id = id.to_string();
        }
        let function = call.get("function").unwrap_or(&Value::Null);
        let name = str_field(function, "name");
        // Some servers repeat the name in every chunk: keep the first.
        if entry.name.is_empty() && !name.is_empty() {
            entry.name = name.to_string();
        }
        let arguments = str_field(function, "arguments");
        entry.arguments.push_str(arguments);
        if !entry.started && !entry.name.is_empty() {
            entry.started = true;
            if entry.id.is_empty() {
                entry.id = format!("call_{key}");
            }
            on_delta(StreamDelta::ToolUseStart { index: entry.block, id: entry.id.clone(), name: entry.name.clone() });
            if !entry.arguments.is_empty() {
                on_delta(StreamDelta::ToolInput { index: entry.block, partial_json: entry.arguments.clone() });
            }
        } else if entry.started && !arguments.is_empty() {
            on_delta(StreamDelta::ToolInput { index: entry.block, partial_json: arguments.to_string() });
        }
    }

    fn event(&mut self, data: &str, on_delta: &mut (dyn FnMut(StreamDelta) + Send)) -> Result<Flow, LlmFailure> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(Flow::Done);
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| malformed(format!("unparseable chunk: {e}: {}", truncate(data, 200))))?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(chunk_error(error));
        }
        if !chunk.is_object() {
            return Err(malformed(format!("a chunk that is not an object: {}", truncate(data, 200))));
        }
        if self.id.is_empty() {
            self.id = str_field(&chunk, "id").to_string();
        }
        if let Some(model) = chunk.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()) {
            self.model = model.to_string();
        }
        let choices = chunk.get("choices").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let choice = choices.iter().find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0);
        if let Some(choice) = choice {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                self.text(text, on_delta);
            }
            if let Some(refusal) = delta.get("refusal").and_then(Value::as_str) {
                self.text(refusal, on_delta);
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (position, call) in calls.iter().enumerate() {
                    self.tool_call(position, call, on_delta);
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_string());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = usage_of(usage);
        }
        Ok(Flow::Continue)
    }

    fn finish(self) -> Result<ChatResponse, LlmFailure> {
        let mut blocks: BTreeMap<u32, ContentBlock> = BTreeMap::new();
        if let Some((block, text)) = self.text {
            blocks.insert(block, ContentBlock::Text { text });
        }
        let has_calls = !self.calls.is_empty();
        for (key, call) in self.calls {
            if call.name.is_empty() {
                return Err(malformed(format!("tool call {key} has no function name")));
            }
            let id = if call.id.is_empty() { format!("call_{key}") } else { call.id };
            blocks
                .insert(call.block, ContentBlock::ToolUse { id, name: call.name, input: tool_input(&call.arguments) });
        }
        let stop_reason = match self.finish_reason.as_deref().map(stop_reason) {
            // Some compatible servers say "stop" even when they call tools; the calls are what matters.
            Some(StopReason::EndTurn) | None if has_calls => StopReason::ToolUse,
            Some(reason) => reason,
            None => StopReason::EndTurn,
        };
        Ok(ChatResponse {
            id: self.id,
            model: self.model,
            content: blocks.into_values().collect(),
            stop_reason,
            usage: self.usage,
        })
    }
}

/// The failure for an `error` object sent in place of a chunk.
fn chunk_error(error: &Value) -> LlmFailure {
    let message = error.get("message").and_then(Value::as_str).unwrap_or("(no message)");
    let error_type = [str_field(error, "code"), str_field(error, "type")]
        .into_iter()
        .find(|t| !t.is_empty() && classify_error_type(t).0 != neuraphage_ipc::llm::LlmErrorKind::Other)
        .unwrap_or_else(|| str_field(error, "type"));
    let (kind, retryable) = match classify_error_type(error_type) {
        _ if super::is_prompt_too_long_error(error) => (neuraphage_ipc::llm::LlmErrorKind::PromptTooLong, false),
        (neuraphage_ipc::llm::LlmErrorKind::Other, _) => (neuraphage_ipc::llm::LlmErrorKind::Server, true),
        known => known,
    };
    failure(kind, format!("{error_type}: {} (error in the stream)", truncate(message, 1000)), None, retryable)
}

/// Reads a streamed completion to its `[DONE]`, passing deltas to `on_delta`.
pub async fn read_stream(
    events: &mut Events,
    model: &str,
    on_delta: &mut (dyn FnMut(StreamDelta) + Send),
) -> Result<ChatResponse, LlmFailure> {
    let mut acc = Accumulator::new(model);
    while let Some(event) = events.next().await? {
        if let Flow::Done = acc.event(&event.data, on_delta)? {
            return acc.finish();
        }
    }
    Err(cut("the stream ended before [DONE]"))
}

/// A whole (non-streamed) completion, for a server that answered with JSON; deltas are replayed from it.
pub fn parse_completion(
    body: &[u8],
    model: &str,
    on_delta: &mut (dyn FnMut(StreamDelta) + Send),
) -> Result<ChatResponse, LlmFailure> {
    let value: Value = serde_json::from_slice(body).map_err(|e| malformed(format!("the response is not JSON: {e}")))?;
    if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
        return Err(chunk_error(error));
    }
    let choice = value
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| malformed("the completion has no choices"))?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut acc = Accumulator::new(model);
    if let Some(text) = message.get("content").and_then(Value::as_str) {
        acc.text(text, on_delta);
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for (position, call) in calls.iter().enumerate() {
            let mut call = call.clone();
            call["index"] = json!(position);
            acc.tool_call(position, &call, on_delta);
        }
    }
    acc.id = str_field(&value, "id").to_string();
    if let Some(m) = value.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()) {
        acc.model = m.to_string();
    }
    acc.finish_reason = choice.get("finish_reason").and_then(Value::as_str).map(str::to_string);
    if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
        acc.usage = usage_of(usage);
    }
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use neuraphage_ipc::llm::{LlmErrorKind, ToolDefinition};

    #[test]
    fn messages_map_to_chat_completions() {
        let request = ChatRequest {
            model: None,
            system: "sys".into(),
            messages: vec![
                Message::user_text("task"),
                Message {
                    role: Speaker::Assistant,
                    content: vec![
                        ContentBlock::Text { text: "looking".into() },
                        ContentBlock::ToolUse {
                            id: "c1".into(),
                            name: "Read".into(),
                            input: json!({"file_path": "a"}),
                        },
                    ],
                },
                Message {
                    role: Speaker::User,
                    content: vec![ContentBlock::ToolResult {
                        tool_use_id: "c1".into(),
                        content: "no such file".into(),
                        is_error: true,
                    }],
                },
            ],
            tools: vec![ToolDefinition {
                name: "Read".into(),
                description: "reads".into(),
                input_schema: json!({"type": "object"}),
            }],
            max_tokens: 100,
            tier: None,
        };
        let body = request_body(&request, "m", "max_tokens");
        assert_eq!(
            body,
            json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": "task"},
                    {"role": "assistant", "content": "looking", "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "Read", "arguments": "{\"file_path\":\"a\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "c1", "content": "Error: no such file"},
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "max_tokens": 100,
                "tools": [{"type": "function", "function": {"name": "Read", "description": "reads", "parameters": {"type": "object"}}}],
            })
        );
        assert_eq!(max_tokens_field("https://api.openai.com/v1/chat/completions"), "max_completion_tokens");
        assert_eq!(max_tokens_field("http://localhost:11434/v1/chat/completions"), "max_tokens");
    }

    #[test]
    fn hostile_chunks_fail_cleanly_or_are_tolerated() {
        let mut sink = |_: StreamDelta| {};
        for data in ["{", "[1,2]", "\"x\""] {
            let mut acc = Accumulator::new("m");
            let kind = acc.event(data, &mut sink).err().map(|e| e.kind);
            assert_eq!(kind, Some(LlmErrorKind::MalformedResponse), "{data}");
        }
        let mut acc = Accumulator::new("m");
        for data in [
            r#"{"choices":"nope"}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":18446744073709551615,"function":{"name":"X"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":18446744073709551615,"function":{"arguments":"{}"}}]}}]}"#,
            r#"{"usage":null,"choices":[]}"#,
        ] {
            assert!(acc.event(data, &mut sink).is_ok(), "{data}");
        }
        let response = acc.finish().expect("a response");
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        let Some(ContentBlock::ToolUse { id, input, .. }) = response.content.first() else { panic!("a tool call") };
        assert_eq!(id, "call_18446744073709551615");
        assert_eq!(input, &json!({}));

        // A call that never gets a name is refused.
        let mut acc = Accumulator::new("m");
        let unnamed = r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{}"}}]}}]}"#;
        assert!(acc.event(unnamed, &mut sink).is_ok());
        assert_eq!(acc.finish().err().map(|e| e.kind), Some(LlmErrorKind::MalformedResponse));
    }
}
