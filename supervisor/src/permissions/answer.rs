//! `task approve` / `task deny` (with `--always` / `--never`) and `permissions list` / `permissions rm`, on the
//! supervisor's side. An answer is stored with who made it, its event, any saved rule and the task's move back to
//! the queue in one transaction; the user's YAML is never rewritten.

use neuraphage_ipc::permission::PermissionDecision;
use neuraphage_ipc::{ControlReply, ErrorCode};

use crate::error::{Result, SupervisorError};
use crate::requests::{Daemon, MAX_REASON_BYTES};
use crate::store::permissions::Decision;

/// Answer the task's pending permission request: number `request` if given (`request #N` in its prompt), else the
/// oldest. An approval without `--request` is refused when the task asked more than one request since the user's
/// last answer (the one waiting may not be the one the user read: an earlier one timed out and the model asked
/// again). `--always` is refused for a command too long for its prompt to show in full.
pub fn decide(
    daemon: &Daemon,
    task: &str,
    allow: bool,
    save: bool,
    reason: Option<String>,
    number: Option<i64>,
) -> Result<ControlReply> {
    if let Some(r) = reason.as_ref().filter(|r| r.len() > MAX_REASON_BYTES || r.contains('\0')) {
        return Err(SupervisorError::refused(
            ErrorCode::InvalidArgument,
            format!("the reason is {} bytes or has a NUL byte; the limit is {MAX_REASON_BYTES} bytes", r.len()),
        ));
    }
    let reply = daemon.with_store(|store| {
        let id = store.resolve(task)?;
        let state = store.task(&id)?.status.state();
        if state.is_terminal() {
            return Err(SupervisorError::refused(
                ErrorCode::Conflict,
                format!("{id} is {state}; its permission request no longer waits"),
            ));
        }
        let request = match number {
            Some(n) => store.pending_permission_numbered(&id, n)?.ok_or_else(|| {
                SupervisorError::refused(
                    ErrorCode::Conflict,
                    format!(
                        "{id} has no request #{n} waiting for an answer (answered, timed out, or not this task's); \
                         `neuraphage task show {id}` shows the one waiting"
                    ),
                )
            })?,
            None => store.pending_permission(&id)?.ok_or_else(|| {
                SupervisorError::refused(
                    ErrorCode::Conflict,
                    format!("{id} has no permission request waiting for an answer"),
                )
            })?,
        };
        if allow && number.is_none() && store.permissions_asked_since_user_answer(&id)? > 1 {
            return Err(SupervisorError::refused(
                ErrorCode::Conflict,
                format!(
                    "{id} asked more than one permission request since your last answer, so the one waiting may not \
                     be the one you read; approve it by its number: `neuraphage task approve {id} --request {}` \
                     (request #{}: {} `{}`)",
                    request.number,
                    request.number,
                    request.tool,
                    super::display::shown(&request.subject)
                ),
            ));
        }
        if save && allow && !super::display::shown_in_full(&request.subject) {
            return Err(SupervisorError::refused(
                ErrorCode::InvalidArgument,
                format!(
                    "request #{} is {} bytes, too long for its prompt to show in full: approve it without --always \
                     (nothing was decided)",
                    request.number,
                    request.subject.len()
                ),
            ));
        }
        let what = format!("{} `{}`", request.tool, super::bounded(&request.subject));
        let model_reason = match (&reason, allow) {
            (_, true) => None,
            (Some(r), false) => Some(format!("The user denied {what}: {r}. Nothing ran.")),
            (None, false) => Some(format!("The user denied {what}. Nothing ran.")),
        };
        let decision = Decision { allowed: allow, by: "user", reason: model_reason.as_deref(), save };
        let (saved_rule, requeued) = store.decide_permission(&request, &decision)?;
        Ok(ControlReply::PermissionDecided(PermissionDecision {
            task: id,
            tool: request.tool.clone(),
            subject: request.subject.clone(),
            allowed: allow,
            saved_rule,
            requeued,
            request: request.number,
        }))
    })?;
    daemon.workers.wake.notify_one();
    Ok(reply)
}

/// The saved rules.
pub fn list(daemon: &Daemon) -> Result<ControlReply> {
    Ok(ControlReply::PermissionRules(daemon.with_store(|s| s.permission_rules())?))
}

/// Remove a saved rule.
pub fn remove(daemon: &Daemon, id: i64) -> Result<ControlReply> {
    daemon.with_store(|s| s.remove_permission_rule(id))?;
    Ok(ControlReply::PermissionRuleRemoved { id })
}

/// After a task parked on the user: if its request was answered before it parked, queue it again now.
pub fn after_park(daemon: &Daemon, task: &neuraphage_ipc::TaskId) {
    match daemon.with_store(|s| s.requeue_if_answered(task)) {
        Ok(true) => daemon.workers.wake.notify_one(),
        Ok(false) => {}
        Err(e) => tracing::error!(%task, error = %e, "cannot check the task's answered permission requests"),
    }
}
