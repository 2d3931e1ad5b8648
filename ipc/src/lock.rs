//! Lock-table wire types, shared by the worker link (a task's `Lock` / `Unlock` tool calls), the broker link (the
//! supervisor asking for the table) and the control link (`neuraphage locks`).
//!
//! A resource name is `KIND:BODY` with KIND one of `path` (a path relative to the repository's top, e.g.
//! `path:src/main.rs`), `ref` (a git ref, e.g. `ref:refs/heads/main`) or `name` (anything else the tasks agree on,
//! e.g. `name:port-8080`). The body is 1 to [`MAX_RESOURCE_BODY`] bytes of ASCII letters, digits and `._-/+@=:`;
//! a `path:` body must be relative and may not contain `..`, `.` or empty segments. [`validate_resource`] is the one
//! check, made by the broker.

use serde::{Deserialize, Serialize};

use crate::task::TaskId;

/// Longest body of a resource name (after `KIND:`).
pub const MAX_RESOURCE_BODY: usize = 256;

/// Most resources one `Lock` call may ask for.
pub const MAX_RESOURCES_PER_REQUEST: usize = 32;

/// The kinds of resource, as written before the colon.
pub const RESOURCE_KINDS: [&str; 3] = ["path", "ref", "name"];

/// What the broker answers to a `Lock`, `Unlock` or `Reclaim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum LockOutcome {
    /// The task now holds all of these (sorted); it held none of the others it asked for in this call.
    Granted {
        /// Every resource asked for, sorted.
        resources: Vec<String>,
    },
    /// Nothing was acquired.
    Refused {
        /// Why, in words (a deadlock, a timeout naming the holders, a bad name).
        reason: String,
        /// For a deadlock: the wait-for cycle, starting and ending with the asking task.
        cycle: Vec<TaskId>,
    },
    /// These were held and are now free.
    Released {
        /// The resources released, sorted.
        resources: Vec<String>,
    },
}

/// One held resource in the table, for `neuraphage locks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The resource name.
    pub resource: String,
    /// The task holding it.
    pub holder: TaskId,
    /// Milliseconds it has been held (in this broker's life).
    pub held_ms: u64,
    /// Tasks waiting for it, in the order they asked.
    pub waiters: Vec<TaskId>,
}

/// The lock table as the broker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockTableView {
    /// Held resources, sorted by name.
    pub locks: Vec<LockInfo>,
    /// After a broker restart: milliseconds left in which holders re-claim their locks (new acquisitions wait).
    pub grace_remaining_ms: Option<u64>,
}

/// Check a resource name; the error says what is wrong with it.
pub fn validate_resource(name: &str) -> Result<(), String> {
    let Some((kind, body)) = name.split_once(':') else {
        return Err(format!(
            "resource {name:?} has no kind: write path:…, ref:… or name:… (e.g. path:src/main.rs, name:port-8080)"
        ));
    };
    if !RESOURCE_KINDS.contains(&kind) {
        return Err(format!("resource {name:?}: unknown kind {kind:?}; the kinds are path, ref and name"));
    }
    if body.is_empty() || body.len() > MAX_RESOURCE_BODY {
        return Err(format!("resource {name:?}: the part after {kind}: must be 1 to {MAX_RESOURCE_BODY} bytes"));
    }
    if let Some(c) = body.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-/+@=:".contains(*c))) {
        return Err(format!(
            "resource {name:?}: character {c:?} is not allowed; use ASCII letters, digits and . _ - / + @ = :"
        ));
    }
    if kind == "path" && (body.starts_with('/') || body.split('/').any(|s| s.is_empty() || s == "." || s == "..")) {
        return Err(format!(
            "resource {name:?}: a path is relative to the repository's top, without empty, . or .. segments"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_resource;

    #[test]
    fn names_are_checked() {
        for good in ["path:src/main.rs", "ref:refs/heads/main", "name:port-8080", "name:a:b", "path:a/.hidden"] {
            assert_eq!(validate_resource(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("src/main.rs", "no kind"),
            ("file:x", "unknown kind"),
            ("name:", "1 to 256"),
            ("name:a b", "' '"),
            ("path:/etc/passwd", "relative"),
            ("path:a/../b", "relative"),
            ("path:a//b", "relative"),
            ("name:é", "'é'"),
        ] {
            let err = validate_resource(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(validate_resource(&format!("name:{}", "x".repeat(257))).is_err());
        assert!(validate_resource(&format!("name:{}", "x".repeat(256))).is_ok());
    }
}
