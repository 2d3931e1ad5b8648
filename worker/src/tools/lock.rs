//! `Lock {resources, timeout_secs?}` and `Unlock {resources?}`: the task's side of the broker's lock table, for
//! resources shared with other tasks (a path in the repository, a git ref, a free name such as a port).
//!
//! Unlike the other tools these do not run here: the agent loop sends them to the broker over its link and waits
//! for the answer (see `agent_locks.rs`). This module defines them for the model, parses their input and words the
//! broker's answer.

use neuraphage_ipc::llm::ToolDefinition;
use neuraphage_ipc::lock::{LockOutcome, MAX_RESOURCES_PER_REQUEST};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ToolOutcome, lenient_u64, parse};

/// How long a `Lock` call waits by default, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// Longest wait a `Lock` call may ask for (the broker caps it too).
pub const MAX_TIMEOUT_SECS: u64 = 600;

/// What the agent loop sends to the broker for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockCall {
    /// Acquire all of these, waiting up to `wait_ms`.
    Lock {
        /// Resource names.
        resources: Vec<String>,
        /// Milliseconds to wait.
        wait_ms: u64,
    },
    /// Release these (all when empty).
    Unlock {
        /// Resource names.
        resources: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
struct LockInput {
    resources: Vec<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct UnlockInput {
    #[serde(default)]
    resources: Option<Vec<String>>,
}

/// Whether `name` is one of the lock tools.
pub fn is_lock_tool(name: &str) -> bool {
    matches!(name, "Lock" | "Unlock")
}

/// Parse a lock tool's input; the error goes back to the model as the tool's result.
pub fn parse_call(name: &str, input: &Value) -> Result<LockCall, ToolOutcome> {
    match name {
        "Lock" => {
            let input: LockInput = parse(name, input)?;
            let secs = input.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS).min(MAX_TIMEOUT_SECS);
            Ok(LockCall::Lock { resources: input.resources, wait_ms: secs * 1000 })
        }
        _ => {
            let input: UnlockInput = parse(name, input)?;
            Ok(LockCall::Unlock { resources: input.resources.unwrap_or_default() })
        }
    }
}

/// The broker's answer, for the model.
pub fn describe(outcome: &LockOutcome) -> ToolOutcome {
    match outcome {
        LockOutcome::Granted { resources } => ToolOutcome::ok(format!(
            "Granted: you hold {}. Other tasks asking for them wait until you Unlock them or your task ends.",
            resources.join(", ")
        )),
        LockOutcome::Released { resources } if resources.is_empty() => {
            ToolOutcome::ok("Released nothing: you held none of those.")
        }
        LockOutcome::Released { resources } => ToolOutcome::ok(format!("Released {}.", resources.join(", "))),
        LockOutcome::Refused { reason, .. } => ToolOutcome::error(format!("Refused: {reason}")),
    }
}

pub(super) fn lock_definition() -> ToolDefinition {
    ToolDefinition {
        name: "Lock".into(),
        description: format!(
            "Takes resources shared with other tasks running at the same time, all or none, waiting up to \
             timeout_secs (default {DEFAULT_TIMEOUT_SECS}, at most {MAX_TIMEOUT_SECS}) while another task holds any \
             of them. Names: path:<path relative to the repository top>, ref:<git ref>, or name:<anything agreed>, \
             using letters, digits and . _ - / + @ = :. Ask for everything you need in one call: a call that \
             would deadlock is refused with the cycle of tasks. Locks are freed by Unlock or when the task ends."
        ),
        input_schema: json!({
            "type": "object",
            "properties": {
                "resources": {
                    "type": "array", "items": {"type": "string"}, "minItems": 1,
                    "maxItems": MAX_RESOURCES_PER_REQUEST,
                    "description": "Resource names, e.g. [\"path:Cargo.lock\", \"name:port-8080\"]"
                },
                "timeout_secs": {"type": "integer", "description": "Longest wait, in seconds"}
            },
            "required": ["resources"]
        }),
    }
}

pub(super) fn unlock_definition() -> ToolDefinition {
    ToolDefinition {
        name: "Unlock".into(),
        description: "Releases resources taken with Lock (all of them when `resources` is left out).".into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "resources": {"type": "array", "items": {"type": "string"}, "description": "What to release"}
            },
            "required": []
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_parsed_and_answers_worded() {
        let call = parse_call("Lock", &json!({"resources": ["name:a"], "timeout_secs": "5"})).unwrap();
        assert_eq!(call, LockCall::Lock { resources: vec!["name:a".into()], wait_ms: 5000 });
        let call = parse_call("Lock", &json!({"resources": ["name:a"], "timeout_secs": 99999})).unwrap();
        assert_eq!(call, LockCall::Lock { resources: vec!["name:a".into()], wait_ms: MAX_TIMEOUT_SECS * 1000 });
        assert_eq!(parse_call("Unlock", &json!({})).unwrap(), LockCall::Unlock { resources: Vec::new() });
        let err = parse_call("Lock", &json!({"timeout_secs": 1})).unwrap_err();
        assert!(err.is_error && err.content.contains("resources"), "{}", err.content);
        let refused = describe(&LockOutcome::Refused { reason: "deadlock: a → b → a".into(), cycle: Vec::new() });
        assert!(refused.is_error && refused.content.contains("deadlock"));
        assert!(!describe(&LockOutcome::Granted { resources: vec!["name:a".into()] }).is_error);
    }
}
