//! The Anthropic Messages API wire format, as the TEST DOUBLE sends it: SSE events (`message_start`,
//! `content_block_start`, `ping`, `content_block_delta` with `text_delta` / `input_json_delta` / `thinking_delta` /
//! `signature_delta`, `content_block_stop`, `message_delta`, `message_stop`, `error`), the non-streamed message, and
//! the JSON error body. Thinking blocks stream their text, then their signature in one delta; a `redacted_thinking`
//! block comes whole in its start event.
//!
//! Reference: <https://docs.anthropic.com/en/api/messages-streaming> and <https://docs.anthropic.com/en/api/errors>.

use serde_json::{Value, json};

use crate::script::{Reply, ReplyBlock};
use crate::server::split_chunks;

/// The raw text inserted by a `Malformed` fault without its own text: a delta whose JSON is cut short.
pub(crate) const MALFORMED: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_del\n\n";

/// The unknown event type the double can insert.
pub(crate) const UNKNOWN_EVENT_TYPE: &str = "llm_double_unknown_event";

fn frame(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn usage_json(reply: &Reply, output_tokens: u64) -> Value {
    let usage = reply.reported_usage();
    json!({
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": output_tokens,
    })
}

/// The SSE events of a streamed reply, in the documented order. Tool ids must already be assigned.
pub(crate) fn events(reply: &Reply, message_id: &str, model: &str) -> Vec<String> {
    let mut out = Vec::new();
    out.push(frame(
        "message_start",
        &json!({
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage_json(reply, reply.reported_usage().output_tokens.min(1)),
            }
        }),
    ));
    let ping = frame("ping", &json!({"type": "ping"}));
    if reply.blocks.is_empty() {
        out.push(ping.clone());
    }
    for (index, block) in reply.blocks.iter().enumerate() {
        match block {
            ReplyBlock::Text(text) => {
                out.push(frame(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
                ));
                if index == 0 {
                    out.push(ping.clone());
                }
                for piece in split_chunks(text, reply.chunk_chars) {
                    out.push(frame(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
                    ));
                }
            }
            ReplyBlock::ToolCall { id, name, input } => {
                out.push(frame(
                    "content_block_start",
                    &json!({
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "tool_use", "id": id.clone().unwrap_or_default(), "name": name, "input": {}},
                    }),
                ));
                if index == 0 {
                    out.push(ping.clone());
                }
                let mut pieces = vec![String::new()];
                pieces.extend(split_chunks(&input.to_string(), reply.chunk_chars));
                for piece in pieces {
                    out.push(frame(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    ));
                }
            }
            ReplyBlock::Thinking { text, signature } => {
                out.push(frame(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
                ));
                if index == 0 {
                    out.push(ping.clone());
                }
                for piece in split_chunks(text, reply.chunk_chars) {
                    out.push(frame(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": piece}}),
                    ));
                }
                out.push(frame(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": signature.clone().unwrap_or_default()}}),
                ));
            }
            ReplyBlock::RedactedThinking { data } => {
                out.push(frame(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index, "content_block": {"type": "redacted_thinking", "data": data}}),
                ));
                if index == 0 {
                    out.push(ping.clone());
                }
            }
        }
        out.push(frame("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
    }
    out.push(frame(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": reply.effective_stop_reason().anthropic(), "stop_sequence": null},
            "usage": {"output_tokens": reply.reported_usage().output_tokens},
        }),
    ));
    out.push(frame("message_stop", &json!({"type": "message_stop"})));
    out
}

/// The non-streamed message.
pub(crate) fn message(reply: &Reply, message_id: &str, model: &str) -> Value {
    let content: Vec<Value> = reply
        .blocks
        .iter()
        .map(|block| match block {
            ReplyBlock::Text(text) => json!({"type": "text", "text": text}),
            ReplyBlock::ToolCall { id, name, input } => {
                json!({"type": "tool_use", "id": id.clone().unwrap_or_default(), "name": name, "input": input})
            }
            ReplyBlock::Thinking { text, signature } => {
                json!({"type": "thinking", "thinking": text, "signature": signature.clone().unwrap_or_default()})
            }
            ReplyBlock::RedactedThinking { data } => json!({"type": "redacted_thinking", "data": data}),
        })
        .collect();
    json!({
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reply.effective_stop_reason().anthropic(),
        "stop_sequence": null,
        "usage": usage_json(reply, reply.reported_usage().output_tokens),
    })
}

/// The documented error type for an HTTP status.
pub(crate) fn error_type_for(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// A stock message for an HTTP status.
pub(crate) fn stock_message(status: u16) -> &'static str {
    match status {
        401 => "invalid x-api-key",
        403 => "Your API key does not have permission to use the specified resource.",
        404 => "The requested resource could not be found.",
        413 => "Request exceeds the maximum allowed number of bytes.",
        429 => "This request would exceed the rate limit for your organization (llm-double) of requests per minute.",
        529 => "Overloaded",
        500..=599 => "Internal server error",
        _ => "Invalid request",
    }
}

/// The HTTP status for an error type (used when a mid-stream error is scripted for a non-streamed request).
pub(crate) fn status_for(error_type: &str) -> u16 {
    match error_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// The JSON error body.
pub(crate) fn error_body(error_type: &str, message: &str, request_id: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id})
}

/// The mid-stream `error` event.
pub(crate) fn error_event(error_type: &str, message: &str) -> String {
    frame("error", &json!({"type": "error", "error": {"type": error_type, "message": message}}))
}

/// An event of a type no client knows.
pub(crate) fn unknown_event() -> String {
    frame(
        UNKNOWN_EVENT_TYPE,
        &json!({"type": UNKNOWN_EVENT_TYPE, "note": "an event type from the future; clients must ignore it"}),
    )
}
