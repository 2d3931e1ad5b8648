//! The OpenAI chat completions wire format, as the TEST DOUBLE sends it: `data: {chat.completion.chunk}` lines
//! (`choices[0].delta.content`, `delta.tool_calls[{index, id, type, function: {name, arguments}}]`), a final chunk
//! with `finish_reason`, an optional usage chunk (`stream_options.include_usage`), then `data: [DONE]`; the
//! non-streamed `chat.completion` object; and the JSON error body. Scripted thinking blocks are not sent (chat
//! completions have none).
//!
//! Reference: <https://platform.openai.com/docs/api-reference/chat/streaming> and
//! <https://platform.openai.com/docs/guides/error-codes>.

use serde_json::{Value, json};

use crate::script::{Reply, ReplyBlock};
use crate::server::split_chunks;

/// The raw text inserted by a `Malformed` fault without its own text: a chunk whose JSON is cut short.
pub(crate) const MALFORMED: &str =
    "data: {\"id\":\"chatcmpl-double\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":\n\n";

/// The last line of every complete stream.
pub(crate) const DONE: &str = "data: [DONE]\n\n";

fn frame(data: &Value) -> String {
    format!("data: {data}\n\n")
}

struct Chunker<'a> {
    id: &'a str,
    model: &'a str,
    created: i64,
    include_usage: bool,
}

impl Chunker<'_> {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_llm_double",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        frame(&chunk)
    }
}

fn usage_json(reply: &Reply) -> Value {
    let u = reply.reported_usage();
    let prompt = u.input_tokens.saturating_add(u.cache_creation_input_tokens).saturating_add(u.cache_read_input_tokens);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output_tokens,
        "total_tokens": prompt.saturating_add(u.output_tokens),
        "prompt_tokens_details": {"cached_tokens": u.cache_read_input_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    })
}

/// The stream lines of a reply, `[DONE]` included. Tool ids must already be assigned.
pub(crate) fn events(reply: &Reply, id: &str, model: &str, created: i64, include_usage: bool) -> Vec<String> {
    let chunker = Chunker { id, model, created, include_usage };
    let mut out = vec![chunker.chunk(json!({"role": "assistant", "content": "", "refusal": null}), None)];
    let mut tool_index = 0usize;
    for block in &reply.blocks {
        match block {
            ReplyBlock::Text(text) => {
                for piece in split_chunks(text, reply.chunk_chars) {
                    out.push(chunker.chunk(json!({"content": piece}), None));
                }
            }
            ReplyBlock::ToolCall { id, name, input } => {
                out.push(chunker.chunk(
                    json!({"tool_calls": [{
                        "index": tool_index,
                        "id": id.clone().unwrap_or_default(),
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }]}),
                    None,
                ));
                for piece in split_chunks(&input.to_string(), reply.chunk_chars) {
                    out.push(
                        chunker.chunk(
                            json!({"tool_calls": [{"index": tool_index, "function": {"arguments": piece}}]}),
                            None,
                        ),
                    );
                }
                tool_index += 1;
            }
            // Chat completions have no thinking blocks.
            ReplyBlock::Thinking { .. } | ReplyBlock::RedactedThinking { .. } => {}
        }
    }
    out.push(chunker.chunk(json!({}), Some(reply.effective_stop_reason().openai())));
    if include_usage {
        out.push(frame(&json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_llm_double",
            "choices": [],
            "usage": usage_json(reply),
        })));
    }
    out.push(DONE.to_string());
    out
}

/// The non-streamed `chat.completion`.
pub(crate) fn completion(reply: &Reply, id: &str, model: &str, created: i64) -> Value {
    let text: String = reply
        .blocks
        .iter()
        .filter_map(|b| match b {
            ReplyBlock::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    let tool_calls: Vec<Value> = reply
        .blocks
        .iter()
        .filter_map(|b| match b {
            ReplyBlock::ToolCall { id, name, input } => Some(json!({
                "id": id.clone().unwrap_or_default(),
                "type": "function",
                "function": {"name": name, "arguments": input.to_string()},
            })),
            _ => None,
        })
        .collect();
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() { Value::Null } else { Value::String(text) },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_llm_double",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": reply.effective_stop_reason().openai()}],
        "usage": usage_json(reply),
    })
}

/// The documented error type for an HTTP status.
pub(crate) fn error_type_for(status: u16) -> &'static str {
    match status {
        429 => "requests",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    }
}

/// The documented error code for an HTTP status, if it has one.
fn error_code_for(status: u16) -> Option<&'static str> {
    match status {
        401 => Some("invalid_api_key"),
        429 => Some("rate_limit_exceeded"),
        _ => None,
    }
}

/// A stock message for an HTTP status.
pub(crate) fn stock_message(status: u16) -> &'static str {
    match status {
        401 => "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        403 => "You are not allowed to sample from this model",
        404 => "The model does not exist or you do not have access to it.",
        429 => "Rate limit reached for requests (llm-double). Please try again later.",
        503 | 529 => "The engine is currently overloaded, please try again later",
        500..=599 => "The server had an error while processing your request. Sorry about that!",
        _ => "Invalid request",
    }
}

/// The HTTP status for an error type (used when a mid-stream error is scripted for a non-streamed request).
pub(crate) fn status_for(error_type: &str) -> u16 {
    match error_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "requests" | "tokens" | "rate_limit_error" => 429,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// The JSON error body.
pub(crate) fn error_body(status: u16, error_type: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": error_type, "param": null, "code": error_code_for(status)}})
}

/// The mid-stream error line (OpenAI sends an `error` object in place of a chunk).
pub(crate) fn error_event(error_type: &str, message: &str) -> String {
    frame(&json!({"error": {"message": message, "type": error_type, "param": null, "code": null}}))
}

/// A chunk of a shape no client knows: no choices, and a field from the future (clients must ignore both).
pub(crate) fn unknown_event(id: &str, model: &str, created: i64) -> String {
    frame(&json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "llm_double_unknown_field": {"note": "a field from the future; clients must ignore it"},
    }))
}
