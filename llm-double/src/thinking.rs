//! The TEST DOUBLE's extended thinking, by the Messages API's rules: the signatures it issues, and the checks a
//! request passes — `thinking.budget_tokens` at least [`MIN_BUDGET`] and below `max_tokens`; every `thinking` block
//! sent back carries a signature the double issued for exactly that text, every `redacted_thinking` block data the
//! double issued; and, with thinking enabled, a last assistant turn that calls tools starts with its thinking block
//! (the API requires it so the model's reasoning continues across tool use).
//!
//! Reference: <https://platform.claude.com/docs/en/build-with-claude/extended-thinking>.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

use crate::script::HttpError;

/// The smallest budget the API accepts.
pub const MIN_BUDGET: u64 = 1024;
/// Signatures and redacted data remembered; beyond, the oldest are forgotten (a test double's bound).
pub const MAX_ISSUED: usize = 100_000;

fn digest(parts: &[&str]) -> u64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

/// What the double issued.
#[derive(Debug, Default)]
pub(crate) struct Issued {
    thinking: HashSet<u64>,
    redacted: HashSet<u64>,
    order: std::collections::VecDeque<(bool, u64)>,
    counter: u64,
}

impl Issued {
    fn remember(&mut self, redacted: bool, hash: u64) {
        let set = if redacted { &mut self.redacted } else { &mut self.thinking };
        if set.insert(hash) {
            self.order.push_back((redacted, hash));
        }
        while self.order.len() > MAX_ISSUED {
            if let Some((r, h)) = self.order.pop_front() {
                if r {
                    self.redacted.remove(&h)
                } else {
                    self.thinking.remove(&h)
                };
            }
        }
    }

    /// The signature for a thinking block (the scripted one, or a new one), remembered with its text.
    pub(crate) fn sign(&mut self, text: &str, scripted: Option<&str>) -> String {
        let signature = match scripted {
            Some(s) => s.to_owned(),
            None => {
                self.counter += 1;
                format!("EqDouble{:016x}{:08x}==", digest(&[text, "llm-double"]), self.counter)
            }
        };
        self.remember(false, digest(&[text, &signature]));
        signature
    }

    /// Remembers redacted data as issued.
    pub(crate) fn redact(&mut self, data: &str) {
        self.remember(true, digest(&[data]));
    }

    /// Refuses a request that breaks the thinking rules (see the module doc).
    pub(crate) fn check(&self, body: &Value) -> Result<(), Box<HttpError>> {
        let refuse = |message: String| Err(Box::new(HttpError::new(400).message(message)));
        let enabled = body.pointer("/thinking/type").and_then(Value::as_str) == Some("enabled");
        if enabled {
            let budget = body.pointer("/thinking/budget_tokens").and_then(Value::as_u64);
            let max_tokens = body.get("max_tokens").and_then(Value::as_u64).unwrap_or(0);
            match budget {
                None => return refuse("thinking.enabled.budget_tokens: Field required".into()),
                Some(b) if b < MIN_BUDGET => {
                    return refuse(format!(
                        "thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_BUDGET}"
                    ));
                }
                Some(b) if b >= max_tokens => {
                    return refuse(format!(
                        "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation \
                         at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size (max_tokens {max_tokens}, budget_tokens {b})"
                    ));
                }
                Some(_) => {}
            }
        }
        let messages = body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        for (i, message) in messages.iter().enumerate() {
            for (j, block) in message.get("content").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let text = |name: &str| block.get(name).and_then(Value::as_str).unwrap_or_default();
                match block.get("type").and_then(Value::as_str) {
                    Some("thinking") if !self.thinking.contains(&digest(&[text("thinking"), text("signature")])) => {
                        return refuse(format!("messages.{i}.content.{j}: Invalid `signature` in `thinking` block"));
                    }
                    Some("redacted_thinking") if !self.redacted.contains(&digest(&[text("data")])) => {
                        return refuse(format!(
                            "messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block"
                        ));
                    }
                    _ => {}
                }
            }
        }
        if !enabled {
            return Ok(());
        }
        let last_assistant = messages.iter().enumerate().rev().find(|(_, m)| m["role"] == "assistant");
        if let Some((i, message)) = last_assistant {
            let blocks = message.get("content").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let uses_tools = blocks.iter().any(|b| b["type"] == "tool_use");
            let first = blocks.first().and_then(|b| b.get("type")).and_then(Value::as_str).unwrap_or("none");
            if uses_tools && !matches!(first, "thinking" | "redacted_thinking") {
                return refuse(format!(
                    "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. \
                     When `thinking` is enabled, a final `assistant` message must start with a thinking block \
                     (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include \
                     thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please \
                     consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(thinking: Value, assistant: Value) -> Value {
        json!({
            "max_tokens": 4096,
            "thinking": thinking,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "go"}]},
                {"role": "assistant", "content": assistant},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
            ],
        })
    }

    #[test]
    fn signatures_must_be_the_issued_ones_and_a_tool_turn_keeps_its_thinking() {
        let mut issued = Issued::default();
        let signature = issued.sign("plan", None);
        issued.redact("SECRET");
        let on = json!({"type": "enabled", "budget_tokens": 2048});
        let tool = json!({"type": "tool_use", "id": "t", "name": "Read", "input": {}});
        let good = request(on.clone(), json!([{"type": "thinking", "thinking": "plan", "signature": signature}, tool]));
        issued.check(&good).expect("unchanged thinking passes");
        let redacted = request(on.clone(), json!([{"type": "redacted_thinking", "data": "SECRET"}, tool]));
        issued.check(&redacted).expect("issued redacted thinking passes");
        for bad in [
            request(on.clone(), json!([{"type": "thinking", "thinking": "plan!", "signature": signature}, tool])),
            request(on.clone(), json!([{"type": "thinking", "thinking": "plan", "signature": "forged"}, tool])),
            request(on.clone(), json!([{"type": "redacted_thinking", "data": "OTHER"}, tool])),
            request(on.clone(), json!([tool])),
            request(json!({"type": "enabled", "budget_tokens": 512}), json!([{"type": "text", "text": "x"}])),
            request(json!({"type": "enabled", "budget_tokens": 4096}), json!([{"type": "text", "text": "x"}])),
        ] {
            let err = issued.check(&bad).expect_err("refused");
            assert_eq!(err.status, 400);
        }
        // Without thinking, a tool turn needs no thinking block.
        issued.check(&request(json!(null), json!([tool]))).expect("thinking off");
        // A scripted signature is remembered too.
        let scripted = issued.sign("other", Some("given"));
        assert_eq!(scripted, "given");
        issued
            .check(&request(on, json!([{"type": "thinking", "thinking": "other", "signature": "given"}, tool])))
            .expect("scripted signature");
    }
}
