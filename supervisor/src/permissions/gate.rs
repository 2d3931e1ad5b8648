//! The supervisor's answer to a worker's `Permission` request (sent before a tool's `ToolStarted` checkpoint).
//!
//! A call already asked about (a resumed worker asks again for the same `tool_use_id`) gets its stored decision, or
//! asks again while it waits. Otherwise the [`super::policy`] decides, then [`super::rate`] holds back what is over
//! a runtime limit. What asks is stored (with its `PermissionRequested` event) before the worker is told to park;
//! every other decision is recorded as a `PermissionDecided` event naming the rule or setting that made it.

use std::path::Path;
use std::sync::Arc;

use neuraphage_ipc::permission::PermissionAnswer;
use neuraphage_ipc::{EventKind, TaskId};

use super::pattern::PathContext;
use super::policy::{Rules, Subject, Verdict, subject};
use crate::requests::Daemon;
use crate::store::permissions::NewRequest;

/// Answer one request. Never fails: a store error is answered with a denial that says so (nothing runs unchecked).
pub async fn answer(
    daemon: &Arc<Daemon>,
    task: &TaskId,
    workdir: &Path,
    tool_use_id: String,
    tool: String,
    input: serde_json::Value,
) -> PermissionAnswer {
    let (daemon, task, workdir) = (daemon.clone(), task.clone(), workdir.to_path_buf());
    let decided =
        tokio::task::spawn_blocking(move || decide(&daemon, &task, &workdir, &tool_use_id, &tool, &input)).await;
    match decided {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            PermissionAnswer::Deny { reason: format!("the permission check failed ({e}); the call was not run") }
        }
        Err(e) => PermissionAnswer::Deny { reason: format!("the permission check failed ({e}); the call was not run") },
    }
}

fn decide(
    daemon: &Daemon,
    task: &TaskId,
    workdir: &Path,
    tool_use_id: &str,
    tool: &str,
    input: &serde_json::Value,
) -> crate::error::Result<PermissionAnswer> {
    let subject = subject(tool, input);
    if let Some(stored) = daemon.with_store(|s| s.permission_request(task, tool_use_id))? {
        // A stored answer is for that call only: an id given again for another command or path (a provider or a
        // model that repeats ids) does not inherit it.
        if stored.tool != tool || stored.subject != full_text(&subject) {
            let reason = format!(
                "This {tool} call was not run: its id {tool_use_id:?} was already used for another call ({} `{}`). \
                 Make the call again.",
                stored.tool,
                super::bounded(&stored.subject)
            );
            return Ok(PermissionAnswer::Deny { reason });
        }
        return Ok(match stored.decision {
            None => PermissionAnswer::Ask { prompt: stored.prompt },
            Some(allowed) => {
                // An answer is for one run of the call: once the call has begun (its `ToolStarted` checkpoint, stored
                // after the worker was given the answer), the same id asking again is a model repeating an id, not a
                // resumed worker, and does not inherit the approval. A worker that died before that checkpoint gets
                // the answer again.
                if allowed && daemon.with_store(|s| s.tool_call_checkpointed(task, tool_use_id))? {
                    let reason = format!(
                        "This {tool} call was not run: its id {tool_use_id:?} was already answered and run. One \
                         approval runs one call; make a new call (it is judged afresh)."
                    );
                    daemon.record(
                        task,
                        decided(tool_use_id, tool, &quoted(&subject), false, "one approval, one run".into()),
                    );
                    return Ok(PermissionAnswer::Deny { reason });
                }
                let first = !stored.delivered;
                daemon.with_store(|s| s.mark_permission_delivered(task, tool_use_id))?;
                if allowed {
                    // The user's approval starts the runtime counts afresh, once, and this call is counted.
                    if first {
                        super::rate::reset(task);
                    }
                    let _ = super::rate::admit(task, tool, &daemon.config().security.runtime);
                    PermissionAnswer::Allow
                } else {
                    let reason = stored.reason.unwrap_or_else(|| "the call was denied".into());
                    PermissionAnswer::Deny { reason }
                }
            }
        });
    }
    let security = &daemon.config().security;
    let saved = daemon.with_store(|s| s.saved_rules())?;
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| "/root".into());
    let rules = Rules::new(security, &saved, PathContext { workdir: workdir.to_path_buf(), home });
    let mut verdict = rules.judge(tool, &subject);
    if let Verdict::Allow { .. } = verdict
        && subject != Subject::Unguarded
        && let Err(over) = super::rate::admit(task, tool, &security.runtime)
    {
        let prompt = format!("Allow {tool}: `{}`? (held back by the {over})", quoted(&subject));
        verdict = Verdict::Ask { by: over, prompt };
    }
    let text = quoted(&subject);
    match verdict {
        Verdict::Allow { by } => {
            if subject != Subject::Unguarded {
                daemon.record(task, decided(tool_use_id, tool, &text, true, by));
            }
            Ok(PermissionAnswer::Allow)
        }
        Verdict::Deny { by, reason } => {
            daemon.record(task, decided(tool_use_id, tool, &text, false, by));
            Ok(PermissionAnswer::Deny { reason })
        }
        Verdict::Ask { by, prompt } => {
            let full = full_text(&subject);
            let new = NewRequest {
                tool_use_id,
                tool,
                subject: &full,
                command: matches!(subject, Subject::Command(_)),
                prompt: &prompt,
                by: &by,
            };
            let prompt = daemon.with_store(|s| s.ask_permission(task, &new))?;
            Ok(PermissionAnswer::Ask { prompt })
        }
    }
}

fn decided(tool_use_id: &str, tool: &str, subject: &str, allowed: bool, by: String) -> EventKind {
    EventKind::PermissionDecided {
        tool_use_id: tool_use_id.to_owned(),
        tool: tool.to_owned(),
        subject: subject.to_owned(),
        allowed,
        by,
    }
}

/// The command line or path of a call, in full (as stored with a request).
fn full_text(subject: &Subject) -> String {
    match subject {
        Subject::Command(c) => c.clone(),
        Subject::Path { path, .. } => path.clone(),
        Subject::Unguarded => String::new(),
    }
}

fn quoted(subject: &Subject) -> String {
    match subject {
        Subject::Command(c) => super::display::shown(c),
        Subject::Path { path, .. } => super::display::shown(path),
        Subject::Unguarded => String::new(),
    }
}
