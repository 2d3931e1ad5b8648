//! What the TEST DOUBLE saw: every request, with its headers and parsed JSON body, for assertions and policies.

use serde_json::Value;

/// Which API a request was addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/messages` (Anthropic Messages API).
    AnthropicMessages,
    /// `POST /v1/chat/completions` (OpenAI chat completions).
    OpenAiChat,
    /// Any other method or path (answered 404).
    Other,
}

/// One request as the double received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// Which API it addressed.
    pub endpoint: Endpoint,
    /// The HTTP method.
    pub method: String,
    /// The path (and query, if any).
    pub path: String,
    /// The headers in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`Value::Null` when it was not JSON).
    pub body: Value,
    /// The body as text (lossy UTF-8).
    pub raw_body: String,
}

impl RecordedRequest {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// True when the body asks for a stream (`"stream": true`).
    pub fn is_stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool).unwrap_or(false)
    }

    /// The `model` field of the body.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// The system prompt's text: Anthropic's `system` (a string, or the text of its blocks joined by newlines — the
    /// form a request with prompt-caching breakpoints has), or OpenAI's `system` / `developer` messages joined.
    pub fn system_text(&self) -> String {
        match self.body.get("system") {
            Some(Value::String(text)) => return text.clone(),
            Some(Value::Array(blocks)) => {
                return blocks
                    .iter()
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            _ => {}
        }
        self.messages()
            .iter()
            .filter(|m| matches!(m.get("role").and_then(Value::as_str), Some("system" | "developer")))
            .filter_map(|m| m.get("content").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The `messages` array of the body (empty when absent).
    pub fn messages(&self) -> &[Value] {
        self.body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
    }

    /// How many tool results the conversation holds: Anthropic `tool_result` content blocks plus OpenAI
    /// `role: "tool"` messages.
    pub fn tool_result_count(&self) -> usize {
        self.messages()
            .iter()
            .map(|message| {
                if message.get("role").and_then(Value::as_str) == Some("tool") {
                    return 1;
                }
                message
                    .get("content")
                    .and_then(Value::as_array)
                    .map(|blocks| {
                        blocks.iter().filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result")).count()
                    })
                    .unwrap_or(0)
            })
            .sum()
    }

    /// The content of every Anthropic `tool_result` block in the conversation, oldest first (a content that is not a
    /// string is given as its JSON text).
    pub fn tool_results(&self) -> Vec<String> {
        self.messages()
            .iter()
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .filter(|b| b["type"] == "tool_result")
            .map(|b| match &b["content"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    /// The text of the first user message (text blocks or parts joined by newlines), if there is one.
    pub fn first_user_text(&self) -> Option<String> {
        let message = self.messages().iter().find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
        match message.get("content")? {
            Value::String(text) => Some(text.clone()),
            Value::Array(blocks) => {
                let texts: Vec<&str> = blocks
                    .iter()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                    .filter_map(|b| b.get("text").and_then(Value::as_str))
                    .collect();
                if texts.is_empty() { None } else { Some(texts.join("\n")) }
            }
            _ => None,
        }
    }
}
