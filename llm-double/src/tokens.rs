//! How many tokens the double says a request holds: a fixed, documented estimate (one token per 4 bytes of text,
//! rounded up, per piece), used alike for usage, prompt caching and the context window, so tests can predict it.
//!
//! The pieces are taken in the order the providers process a prompt (Anthropic: tools, system, messages), one per
//! content block, so a prefix of the prompt is a prefix of [`anthropic_pieces`].

use serde_json::Value;

/// Tokens of one piece of text.
pub fn count_text(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// Tokens of a JSON value, by its compact serialisation.
pub fn count_json(value: &Value) -> u64 {
    count_text(&value.to_string())
}

/// The pieces of an Anthropic Messages request in prompt order, each with its tokens: every tool definition, every
/// system block (a string system prompt is one block), then every content block of every message (a string content
/// is one block). Keys such as `cache_control` are left out of a piece's text, so marking a block does not change
/// what it counts or how it hashes.
pub fn anthropic_pieces(body: &Value) -> Vec<(String, u64)> {
    let mut pieces = Vec::new();
    let mut push = |v: &Value| {
        let text = match v {
            Value::Object(map) => {
                let mut m = map.clone();
                m.remove("cache_control");
                Value::Object(m).to_string()
            }
            other => other.to_string(),
        };
        let n = count_text(&text);
        pieces.push((text, n));
    };
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        tools.iter().for_each(&mut push);
    }
    match body.get("system") {
        Some(Value::Array(blocks)) => blocks.iter().for_each(&mut push),
        Some(s @ Value::String(_)) => push(s),
        _ => {}
    }
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for m in messages {
            let role = m.get("role").cloned().unwrap_or(Value::Null);
            match m.get("content") {
                Some(Value::Array(blocks)) => {
                    for b in blocks {
                        push(&serde_json::json!({"role": role, "block": strip_cache_control(b)}));
                    }
                }
                Some(other) => push(&serde_json::json!({"role": role, "block": other})),
                None => {}
            }
        }
    }
    pieces
}

/// Tokens of an Anthropic request's prompt (tools, system, messages).
pub fn count_anthropic(body: &Value) -> u64 {
    anthropic_pieces(body).iter().map(|(_, n)| n).sum()
}

/// Tokens of an OpenAI chat completions request's prompt: every tool and every message, in order.
pub fn count_openai(body: &Value) -> u64 {
    openai_pieces(body).iter().map(|(_, n)| n).sum()
}

/// The pieces of an OpenAI chat completions request in prompt order: every tool, then every message.
pub fn openai_pieces(body: &Value) -> Vec<(String, u64)> {
    let mut pieces = Vec::new();
    for key in ["tools", "messages"] {
        if let Some(items) = body.get(key).and_then(Value::as_array) {
            for item in items {
                let text = item.to_string();
                let n = count_text(&text);
                pieces.push((text, n));
            }
        }
    }
    pieces
}

fn strip_cache_control(block: &Value) -> Value {
    match block {
        Value::Object(map) => {
            let mut m = map.clone();
            m.remove("cache_control");
            Value::Object(m)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cache_control_does_not_change_a_piece() {
        let plain =
            json!({"system": [{"type": "text", "text": "abcd"}], "messages": [{"role": "user", "content": "hi"}]});
        let marked = json!({"system": [{"type": "text", "text": "abcd", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(anthropic_pieces(&plain), anthropic_pieces(&marked));
        assert_eq!(count_text("abcde"), 2);
        assert!(count_anthropic(&plain) > 0);
    }
}
