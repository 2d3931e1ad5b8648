//! The Anthropic Messages API: the request body (`model`, `max_tokens`, `system`, `messages`, `tools`,
//! `stream: true`; our content blocks map 1:1; prompt-caching breakpoints placed by [`super::cache`]; `thinking`
//! when the tier has a budget) and the streamed answer (`message_start`, `content_block_start`,
//! `content_block_delta` with `text_delta` / `input_json_delta` / `thinking_delta` / `signature_delta`,
//! `content_block_stop`, `message_delta`, `message_stop`, `ping`, `error`), accumulated per block index. `thinking`
//! and `redacted_thinking` blocks are kept whole (signature, data) to be sent back unchanged. Unknown event types
//! are ignored, as Anthropic's versioning policy asks; so are block and delta types this client does not use
//! (citations, server tools' results).
//!
//! Reference: <https://docs.anthropic.com/en/api/messages-streaming>,
//! <https://platform.claude.com/docs/en/build-with-claude/extended-thinking>.

use std::collections::BTreeMap;

use neuraphage_ipc::llm::{
    ChatRequest, ChatResponse, ContentBlock, LlmErrorKind, LlmFailure, Message, Speaker, StopReason, StreamDelta, Usage,
};
use serde_json::{Value, json};

use super::sse::Events;
use super::{CallOptions, cache, classify_error_type, cut, failure, malformed, tool_input, truncate};

/// The request body for a streamed turn, with the tier's `options`: cache breakpoints when `prompt_caching`, and
/// `thinking: {type: enabled, budget_tokens}` with `max_tokens` raised by the budget (the API requires
/// `budget_tokens < max_tokens`; thinking tokens count toward `max_tokens`).
pub fn request_body(request: &ChatRequest, model: &str, options: CallOptions) -> Value {
    let mut max_tokens = request.max_tokens;
    let mut body = json!({
        "model": model,
        "messages": request.messages.iter().map(message_json).collect::<Vec<_>>(),
        "stream": true,
    });
    if let Some(budget) = options.thinking_budget {
        max_tokens = max_tokens.saturating_add(budget);
        body["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
    }
    body["max_tokens"] = json!(max_tokens);
    if !request.system.is_empty() {
        body["system"] = Value::String(request.system.clone());
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
            .collect();
    }
    if options.prompt_caching {
        cache::place_breakpoints(&mut body);
    }
    body
}

fn message_json(message: &Message) -> Value {
    let role = match message.role {
        Speaker::User => "user",
        Speaker::Assistant => "assistant",
    };
    let content: Vec<Value> = message
        .content
        .iter()
        .map(|block| match block {
            ContentBlock::Text { text } => json!({"type": "text", "text": text}),
            ContentBlock::ToolUse { id, name, input } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
            ContentBlock::ToolResult { tool_use_id, content, is_error } => {
                json!({"type": "tool_result", "tool_use_id": tool_use_id, "content": content, "is_error": is_error})
            }
            ContentBlock::Thinking { thinking, signature } => {
                json!({"type": "thinking", "thinking": thinking, "signature": signature})
            }
            ContentBlock::RedactedThinking { data } => json!({"type": "redacted_thinking", "data": data}),
        })
        .collect();
    json!({"role": role, "content": content})
}

/// Anthropic's `stop_reason`.
pub fn stop_reason(value: &str) -> StopReason {
    match value {
        "end_turn" => StopReason::EndTurn,
        "tool_use" => StopReason::ToolUse,
        "max_tokens" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence,
        "refusal" => StopReason::Refusal,
        "pause_turn" => StopReason::PauseTurn,
        _ => StopReason::Other,
    }
}

/// Reads usage fields that are present, leaving the others as they are.
fn merge_usage(usage: &mut Usage, value: &Value) {
    let fields: [(&str, &mut u64); 4] = [
        ("input_tokens", &mut usage.input_tokens),
        ("output_tokens", &mut usage.output_tokens),
        ("cache_creation_input_tokens", &mut usage.cache_creation_input_tokens),
        ("cache_read_input_tokens", &mut usage.cache_read_input_tokens),
    ];
    for (name, slot) in fields {
        if let Some(n) = value.get(name).and_then(Value::as_u64) {
            *slot = n;
        }
    }
}

#[derive(Debug)]
enum Block {
    Text(String),
    Tool {
        id: String,
        name: String,
        json: String,
        input: Option<Value>,
    },
    /// Extended thinking: its text and signature, as streamed.
    Thinking {
        thinking: String,
        signature: String,
    },
    /// Encrypted thinking (`redacted_thinking`), whole in its start event.
    Redacted(String),
    /// A block type this client does not use (e.g. `citations`): its deltas are dropped.
    Ignored,
}

/// The state of one streamed message.
#[derive(Debug)]
struct Accumulator {
    id: String,
    model: String,
    usage: Usage,
    blocks: BTreeMap<u32, Block>,
    stop_reason: Option<StopReason>,
}

enum Flow {
    Continue,
    Done,
}

fn index_of(data: &Value, event: &str) -> Result<u32, LlmFailure> {
    data.get("index")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| malformed(format!("{event} without a valid index")))
}

fn str_field<'a>(value: &'a Value, name: &str) -> &'a str {
    value.get(name).and_then(Value::as_str).unwrap_or_default()
}

impl Accumulator {
    fn new(model: &str) -> Accumulator {
        Accumulator {
            id: String::new(),
            model: model.to_string(),
            usage: Usage::default(),
            blocks: BTreeMap::new(),
            stop_reason: None,
        }
    }

    fn event(
        &mut self,
        name: &str,
        data: &str,
        on_delta: &mut (dyn FnMut(StreamDelta) + Send),
    ) -> Result<Flow, LlmFailure> {
        const KNOWN: [&str; 8] = [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
            "ping",
            "error",
        ];
        // Without an `event:` line the parser says "message"; the data's `type` then names the event.
        if name != "message" && !KNOWN.contains(&name) {
            tracing::debug!(event = name, "ignoring an unknown Anthropic stream event");
            return Ok(Flow::Continue);
        }
        let value: Value = serde_json::from_str(data)
            .map_err(|e| malformed(format!("unparseable data in a {name} event: {e}: {}", truncate(data, 200))))?;
        let kind = if name == "message" { str_field(&value, "type") } else { name };
        match kind {
            "message_start" => {
                let message = value.get("message").unwrap_or(&Value::Null);
                self.id = str_field(message, "id").to_string();
                if let Some(model) = message.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()) {
                    self.model = model.to_string();
                }
                if let Some(usage) = message.get("usage") {
                    merge_usage(&mut self.usage, usage);
                }
            }
            "content_block_start" => {
                let index = index_of(&value, kind)?;
                let block = value.get("content_block").unwrap_or(&Value::Null);
                let new = match str_field(block, "type") {
                    "text" => {
                        let text = str_field(block, "text").to_string();
                        if !text.is_empty() {
                            on_delta(StreamDelta::Text { index, text: text.clone() });
                        }
                        Block::Text(text)
                    }
                    "tool_use" => {
                        let id = str_field(block, "id").to_string();
                        let name = str_field(block, "name").to_string();
                        if id.is_empty() || name.is_empty() {
                            return Err(malformed("a tool_use block without an id or a name"));
                        }
                        on_delta(StreamDelta::ToolUseStart { index, id: id.clone(), name: name.clone() });
                        Block::Tool { id, name, json: String::new(), input: None }
                    }
                    "thinking" => {
                        let thinking = str_field(block, "thinking").to_string();
                        if !thinking.is_empty() {
                            on_delta(StreamDelta::Thinking { index, text: thinking.clone() });
                        }
                        Block::Thinking { thinking, signature: str_field(block, "signature").to_string() }
                    }
                    "redacted_thinking" => Block::Redacted(str_field(block, "data").to_string()),
                    _ => Block::Ignored,
                };
                self.blocks.insert(index, new);
            }
            "content_block_delta" => {
                let index = index_of(&value, kind)?;
                let delta = value.get("delta").unwrap_or(&Value::Null);
                let block = self
                    .blocks
                    .get_mut(&index)
                    .ok_or_else(|| malformed(format!("a delta for block {index}, which never started")))?;
                match (block, str_field(delta, "type")) {
                    (Block::Text(text), "text_delta") => {
                        let piece = str_field(delta, "text");
                        text.push_str(piece);
                        on_delta(StreamDelta::Text { index, text: piece.to_string() });
                    }
                    (Block::Tool { json, .. }, "input_json_delta") => {
                        let piece = str_field(delta, "partial_json");
                        json.push_str(piece);
                        if !piece.is_empty() {
                            on_delta(StreamDelta::ToolInput { index, partial_json: piece.to_string() });
                        }
                    }
                    (Block::Thinking { thinking, .. }, "thinking_delta") => {
                        let piece = str_field(delta, "thinking");
                        thinking.push_str(piece);
                        if !piece.is_empty() {
                            on_delta(StreamDelta::Thinking { index, text: piece.to_string() });
                        }
                    }
                    // The signature comes whole, just before the block stops; kept byte for byte.
                    (Block::Thinking { signature, .. }, "signature_delta") => {
                        signature.push_str(str_field(delta, "signature"));
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = index_of(&value, kind)?;
                if let Some(Block::Tool { json, input, .. }) = self.blocks.get_mut(&index) {
                    *input = Some(tool_input(json));
                }
            }
            "message_delta" => {
                if let Some(reason) = value.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(stop_reason(reason));
                }
                if let Some(usage) = value.get("usage") {
                    merge_usage(&mut self.usage, usage);
                }
            }
            "message_stop" => return Ok(Flow::Done),
            "error" => return Err(stream_error(&value)),
            // "ping", and any type named only inside a bare `data:` line.
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn finish(self) -> ChatResponse {
        let content = self
            .blocks
            .into_values()
            .filter_map(|block| match block {
                Block::Text(text) if !text.is_empty() => Some(ContentBlock::Text { text }),
                Block::Tool { id, name, json, input } => {
                    Some(ContentBlock::ToolUse { id, name, input: input.unwrap_or_else(|| tool_input(&json)) })
                }
                Block::Thinking { thinking, signature } => Some(ContentBlock::Thinking { thinking, signature }),
                Block::Redacted(data) => Some(ContentBlock::RedactedThinking { data }),
                Block::Text(_) | Block::Ignored => None,
            })
            .collect();
        ChatResponse {
            id: self.id,
            model: self.model,
            content,
            stop_reason: self.stop_reason.unwrap_or(StopReason::Other),
            usage: self.usage,
        }
    }
}

/// The failure for an `error` event (or error body): `overloaded_error` is `Overloaded` and retryable, etc.
fn stream_error(value: &Value) -> LlmFailure {
    let error = value.get("error").unwrap_or(&Value::Null);
    let error_type = str_field(error, "type");
    let message = error.get("message").and_then(Value::as_str).unwrap_or("(no message)");
    let (kind, retryable) = if super::is_prompt_too_long_error(error) {
        (LlmErrorKind::PromptTooLong, false)
    } else {
        classify_error_type(error_type)
    };
    failure(kind, format!("{error_type}: {} (error event in the stream)", truncate(message, 1000)), None, retryable)
}

/// Reads a streamed message to its `message_stop`, passing deltas to `on_delta`.
pub async fn read_stream(
    events: &mut Events,
    model: &str,
    on_delta: &mut (dyn FnMut(StreamDelta) + Send),
) -> Result<ChatResponse, LlmFailure> {
    let mut acc = Accumulator::new(model);
    while let Some(event) = events.next().await? {
        if let Flow::Done = acc.event(&event.event, &event.data, on_delta)? {
            return Ok(acc.finish());
        }
    }
    Err(cut("the stream ended before message_stop"))
}

/// A whole (non-streamed) message, for a server that answered with JSON; deltas are replayed from it.
pub fn parse_message(
    body: &[u8],
    model: &str,
    on_delta: &mut (dyn FnMut(StreamDelta) + Send),
) -> Result<ChatResponse, LlmFailure> {
    let value: Value = serde_json::from_slice(body).map_err(|e| malformed(format!("the response is not JSON: {e}")))?;
    if value.get("type").and_then(Value::as_str) == Some("error") {
        return Err(stream_error(&value));
    }
    let blocks =
        value.get("content").and_then(Value::as_array).ok_or_else(|| malformed("the message has no content array"))?;
    let mut content = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        match str_field(block, "type") {
            "text" => {
                let text = str_field(block, "text").to_string();
                if !text.is_empty() {
                    on_delta(StreamDelta::Text { index, text: text.clone() });
                    content.push(ContentBlock::Text { text });
                }
            }
            "tool_use" => {
                let id = str_field(block, "id").to_string();
                let name = str_field(block, "name").to_string();
                let input = match block.get("input") {
                    Some(input @ Value::Object(_)) => input.clone(),
                    Some(other) => tool_input(&other.to_string()),
                    None => json!({}),
                };
                on_delta(StreamDelta::ToolUseStart { index, id: id.clone(), name: name.clone() });
                on_delta(StreamDelta::ToolInput { index, partial_json: input.to_string() });
                content.push(ContentBlock::ToolUse { id, name, input });
            }
            "thinking" => {
                let thinking = str_field(block, "thinking").to_string();
                if !thinking.is_empty() {
                    on_delta(StreamDelta::Thinking { index, text: thinking.clone() });
                }
                content.push(ContentBlock::Thinking { thinking, signature: str_field(block, "signature").to_string() });
            }
            "redacted_thinking" => {
                content.push(ContentBlock::RedactedThinking { data: str_field(block, "data").to_string() });
            }
            _ => {}
        }
    }
    let mut usage = Usage::default();
    if let Some(u) = value.get("usage") {
        merge_usage(&mut usage, u);
    }
    Ok(ChatResponse {
        id: str_field(&value, "id").to_string(),
        model: value.get("model").and_then(Value::as_str).unwrap_or(model).to_string(),
        content,
        stop_reason: value.get("stop_reason").and_then(Value::as_str).map_or(StopReason::Other, stop_reason),
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(events: &[(&str, &str)]) -> (Result<Option<ChatResponse>, LlmFailure>, Vec<StreamDelta>) {
        let mut deltas = Vec::new();
        let mut on_delta = |d: StreamDelta| deltas.push(d);
        let mut acc = Accumulator::new("m");
        for (name, data) in events {
            match acc.event(name, data, &mut on_delta) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Done) => return (Ok(Some(acc.finish())), deltas),
                Err(e) => return (Err(e), deltas),
            }
        }
        (Ok(None), deltas)
    }

    #[test]
    fn invalid_tool_json_is_kept_as_raw_text() {
        let (result, _) = run(&[
            ("message_start", r#"{"type":"message_start","message":{"id":"m1","usage":{"input_tokens":3}}}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"Read","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"file_pa"}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ]);
        let response = result.expect("ok").expect("done");
        assert_eq!(
            response.content,
            vec![ContentBlock::ToolUse {
                id: "t".into(),
                name: "Read".into(),
                input: json!({super::super::INVALID_INPUT_KEY: "{\"file_pa"}),
            }]
        );
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        assert_eq!(response.usage.input_tokens, 3);
        assert_eq!(response.usage.output_tokens, 9);
    }

    #[test]
    fn hostile_events_fail_cleanly() {
        for (name, data) in [
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":5,"delta":{"type":"text_delta","text":"x"}}"#,
            ),
            ("content_block_start", r#"{"index":-1}"#),
            ("content_block_start", r#"{"index":99999999999}"#),
            ("message_start", "not json"),
            ("content_block_start", r#"{"index":0,"content_block":{"type":"tool_use"}}"#),
        ] {
            let (result, _) = run(&[(name, data)]);
            assert_eq!(result.err().map(|e| e.kind), Some(LlmErrorKind::MalformedResponse), "{name} {data}");
        }
        // Unknown events and blocks are ignored, even with junk data.
        let (result, deltas) = run(&[
            ("future_event", "{{{"),
            ("content_block_start", r#"{"index":0,"content_block":{"type":"future_block","x":""}}"#),
            ("content_block_delta", r#"{"index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#),
            ("message", r#"{"type":"message_stop"}"#),
        ]);
        assert!(result.expect("ok").expect("done").content.is_empty());
        assert!(deltas.is_empty());
    }

    #[test]
    fn thinking_and_redacted_thinking_are_kept_whole_and_pause_turn_is_known() {
        let (result, deltas) = run(&[
            ("message_start", r#"{"type":"message_start","message":{"id":"m1","usage":{"input_tokens":3}}}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me "}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"think."}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB+/=="}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"ENCRYPTED"}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":1}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":2,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"so far"}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":2}"#),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"pause_turn"},"usage":{"output_tokens":9}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ]);
        let response = result.expect("ok").expect("done");
        assert_eq!(
            response.content,
            vec![
                ContentBlock::Thinking { thinking: "Let me think.".into(), signature: "EqQB+/==".into() },
                ContentBlock::RedactedThinking { data: "ENCRYPTED".into() },
                ContentBlock::Text { text: "so far".into() },
            ]
        );
        assert_eq!(response.stop_reason, StopReason::PauseTurn);
        assert_eq!(
            deltas[..2],
            [
                StreamDelta::Thinking { index: 0, text: "Let me ".into() },
                StreamDelta::Thinking { index: 0, text: "think.".into() },
            ]
        );
        // Sent back unchanged, in order.
        let back = message_json(&Message { role: Speaker::Assistant, content: response.content });
        assert_eq!(
            back["content"],
            json!([
                {"type": "thinking", "thinking": "Let me think.", "signature": "EqQB+/=="},
                {"type": "redacted_thinking", "data": "ENCRYPTED"},
                {"type": "text", "text": "so far"},
            ])
        );
    }

    #[test]
    fn thinking_raises_max_tokens_by_its_budget_and_caching_can_be_off() {
        let request = ChatRequest {
            model: None,
            system: "sys".into(),
            messages: vec![Message::user_text("hi")],
            tools: vec![],
            max_tokens: 4096,
            tier: None,
        };
        let body = request_body(&request, "m", CallOptions { prompt_caching: false, thinking_budget: Some(10_000) });
        assert_eq!(body["thinking"], json!({"type": "enabled", "budget_tokens": 10_000}));
        assert_eq!(body["max_tokens"], 14_096);
        assert_eq!(body["system"], "sys");
        assert!(super::super::cache::breakpoints(&body).is_empty());
        let body = request_body(&request, "m", CallOptions::default());
        assert_eq!(body.get("thinking"), None);
        assert_eq!(body["max_tokens"], 4096);
        assert_eq!(super::super::cache::breakpoints(&body), ["system[0]", "messages[0].content[0]"]);
    }
}
