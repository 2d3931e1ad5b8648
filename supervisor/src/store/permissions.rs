//! Permission requests, their decisions, and the rules saved from answers (issue 12, layered permissions).
//!
//! A request that asks the user is stored (keyed by task and tool call) before the worker is told to park; the
//! answer (user or timeout) is stored with who made it, the `PermissionDecided` event and, when the task waits,
//! its move back to Queued, in one transaction. The resumed worker asks again for the same call and gets the
//! stored decision. Saved rules (`--always` / `--never`) live here; the user's YAML is never rewritten.

use chrono::Utc;
use neuraphage_ipc::permission::PermissionRule;
use neuraphage_ipc::{ErrorCode, EventKind, TaskId, TaskState, TaskStatus};
use rusqlite::{OptionalExtension, params};

use super::tasks::{append_event, load, set_status};
use super::{Store, from_millis, to_millis};
use crate::error::{Result, SupervisorError};
use crate::permissions::policy::SavedRule;

/// A stored request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    /// The task.
    pub task: TaskId,
    /// The model's id of the call.
    pub tool_use_id: String,
    /// The tool.
    pub tool: String,
    /// The command line or path.
    pub subject: String,
    /// Whether `subject` is a command line.
    pub command: bool,
    /// The question.
    pub prompt: String,
    /// When it was asked (unix ms).
    pub requested_at: i64,
    /// `Some(allowed)` once decided.
    pub decision: Option<bool>,
    /// Who or what decided.
    pub decided_by: Option<String>,
    /// What the model is told on a denial.
    pub reason: Option<String>,
    /// Whether a worker was given the decision.
    pub delivered: bool,
    /// Its number (shown in the prompt as `request #N`; `task approve --request N`).
    pub number: i64,
}

/// A new request to store.
#[derive(Debug, Clone)]
pub struct NewRequest<'a> {
    /// The model's id of the call.
    pub tool_use_id: &'a str,
    /// The tool.
    pub tool: &'a str,
    /// The command line or path.
    pub subject: &'a str,
    /// Whether `subject` is a command line.
    pub command: bool,
    /// The question.
    pub prompt: &'a str,
    /// The rule or setting that asks.
    pub by: &'a str,
}

/// A decision to store.
#[derive(Debug, Clone)]
pub struct Decision<'a> {
    /// Allowed or denied.
    pub allowed: bool,
    /// Who or what decided (`user`, `timeout`).
    pub by: &'a str,
    /// What the model is told on a denial.
    pub reason: Option<&'a str>,
    /// Save a rule from it.
    pub save: bool,
}

const REQUEST_COLUMNS: &str =
    "task, tool_use_id, tool, subject, command, prompt, requested_at, decision, decided_by, reason, delivered, rowid";

fn request_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRequest> {
    let decision: Option<String> = row.get(7)?;
    Ok(StoredRequest {
        task: parse_id(0, row.get::<_, String>(0)?)?,
        tool_use_id: row.get(1)?,
        tool: row.get(2)?,
        subject: row.get(3)?,
        command: row.get::<_, i64>(4)? == 1,
        prompt: row.get(5)?,
        requested_at: row.get(6)?,
        decision: decision.map(|d| d == "allow"),
        decided_by: row.get(8)?,
        reason: row.get(9)?,
        delivered: row.get::<_, i64>(10)? == 1,
        number: row.get(11)?,
    })
}

impl Store {
    /// The stored request for this call, if any.
    pub fn permission_request(&self, task: &TaskId, tool_use_id: &str) -> Result<Option<StoredRequest>> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM permission_requests WHERE task = ?1 AND tool_use_id = ?2");
        Ok(self.conn.query_row(&sql, params![task.as_str(), tool_use_id], request_from_row).optional()?)
    }

    /// Store a request that asks the user, with its `PermissionRequested` event (one transaction). A request already
    /// stored for this call is kept as it is. The prompt stored (and returned) starts with the request's number and
    /// ends with how to answer it.
    pub fn ask_permission(&mut self, task: &TaskId, new: &NewRequest<'_>) -> Result<String> {
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO permission_requests (task, tool_use_id, tool, subject, command, prompt, asked_by, requested_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                task.as_str(),
                new.tool_use_id,
                new.tool,
                new.subject,
                new.command as i64,
                new.prompt,
                new.by,
                to_millis(Utc::now())
            ],
        )?;
        if n == 1 {
            let number = tx.last_insert_rowid();
            let prompt = numbered(task, number, new.prompt);
            tx.execute(
                "UPDATE permission_requests SET prompt = ?3 WHERE task = ?1 AND tool_use_id = ?2",
                params![task.as_str(), new.tool_use_id, prompt],
            )?;
            let kind = EventKind::PermissionRequested {
                tool_use_id: new.tool_use_id.to_owned(),
                tool: new.tool.to_owned(),
                subject: crate::permissions::bounded(new.subject),
                by: new.by.to_owned(),
                prompt,
            };
            append_event(&tx, task, &kind)?;
        }
        let prompt: String = tx.query_row(
            "SELECT prompt FROM permission_requests WHERE task = ?1 AND tool_use_id = ?2",
            params![task.as_str(), new.tool_use_id],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(prompt)
    }

    /// The task's undecided request number `number`, if it is one.
    pub fn pending_permission_numbered(&self, task: &TaskId, number: i64) -> Result<Option<StoredRequest>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM permission_requests WHERE task = ?1 AND rowid = ?2 AND decision IS NULL"
        );
        Ok(self.conn.query_row(&sql, params![task.as_str(), number], request_from_row).optional()?)
    }

    /// How many requests the task asked since the user last answered one (timeouts do not count as answers).
    pub fn permissions_asked_since_user_answer(&self, task: &TaskId) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM permission_requests WHERE task = ?1 AND requested_at >= coalesce(
                 (SELECT max(decided_at) FROM permission_requests WHERE task = ?1 AND decided_by = 'user'), 0)",
            params![task.as_str()],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// Whether the task has a `ToolStarted` or `ToolCompleted` checkpoint for this call (it was run, or began to).
    pub fn tool_call_checkpointed(&self, task: &TaskId, tool_use_id: &str) -> Result<bool> {
        let hit: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM checkpoints WHERE task = ?1 AND kind IN ('tool_started', 'tool_completed')
                 AND json_extract(data, '$.tool_use_id') = ?2 LIMIT 1",
                params![task.as_str(), tool_use_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(hit.is_some())
    }

    /// The task's oldest undecided request.
    pub fn pending_permission(&self, task: &TaskId) -> Result<Option<StoredRequest>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM permission_requests WHERE task = ?1 AND decision IS NULL
             ORDER BY requested_at LIMIT 1"
        );
        Ok(self.conn.query_row(&sql, params![task.as_str()], request_from_row).optional()?)
    }

    /// Undecided requests asked before `before_ms` (for the timeout), oldest first, at most `limit`.
    pub fn expired_permissions(&self, before_ms: i64, limit: usize) -> Result<Vec<StoredRequest>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM permission_requests WHERE decision IS NULL AND requested_at < ?1
             ORDER BY requested_at LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![before_ms, limit as i64], request_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The oldest undecided request's time (unix ms), for the timeout timer.
    pub fn oldest_pending_permission(&self) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT min(requested_at) FROM permission_requests WHERE decision IS NULL",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )?)
    }

    /// Decide `request` (still undecided), record `PermissionDecided`, save a rule if asked, and queue the task again
    /// if it waits on the user, all in one transaction. Returns the saved rule's id and whether the task was queued.
    pub fn decide_permission(
        &mut self,
        request: &StoredRequest,
        decision: &Decision<'_>,
    ) -> Result<(Option<i64>, bool)> {
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "UPDATE permission_requests SET decision = ?3, decided_by = ?4, reason = ?5, decided_at = ?6
             WHERE task = ?1 AND tool_use_id = ?2 AND decision IS NULL",
            params![
                request.task.as_str(),
                request.tool_use_id,
                if decision.allowed { "allow" } else { "deny" },
                decision.by,
                decision.reason,
                to_millis(Utc::now())
            ],
        )?;
        if n == 0 {
            return Err(SupervisorError::refused(
                ErrorCode::Conflict,
                format!("{}: that permission request was already answered", request.task),
            ));
        }
        let rule = if decision.save {
            tx.execute(
                "INSERT INTO permission_rules (allow, command, pattern, tool, from_task, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    decision.allowed as i64,
                    request.command as i64,
                    request.subject,
                    request.tool,
                    request.task.as_str(),
                    to_millis(Utc::now())
                ],
            )?;
            Some(tx.last_insert_rowid())
        } else {
            None
        };
        let by = match rule {
            Some(id) => format!("{} (saved as rule #{id})", decision.by),
            None => decision.by.to_owned(),
        };
        let kind = EventKind::PermissionDecided {
            tool_use_id: request.tool_use_id.clone(),
            tool: request.tool.clone(),
            subject: crate::permissions::bounded(&request.subject),
            allowed: decision.allowed,
            by,
        };
        append_event(&tx, &request.task, &kind)?;
        // A held network connection is answered where it waits; its task runs on and is not queued.
        let requeued = request.tool != crate::permissions::network::NETWORK && requeue_if_waiting(&tx, &request.task)?;
        tx.commit()?;
        Ok((rule, requeued))
    }

    /// A task that just parked on the user whose request was answered meanwhile (before it parked) goes back to
    /// the queue. True if it did.
    pub fn requeue_if_answered(&mut self, task: &TaskId) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let answered: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM permission_requests WHERE task = ?1 AND decision IS NOT NULL AND delivered = 0
                 AND tool <> 'Network' LIMIT 1",
                [task.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        let pending: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM permission_requests WHERE task = ?1 AND decision IS NULL AND tool <> 'Network' LIMIT 1",
                [task.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        let requeued = answered.is_some() && pending.is_none() && requeue_if_waiting(&tx, task)?;
        tx.commit()?;
        Ok(requeued)
    }

    /// The worker was given the stored decision of this call.
    pub fn mark_permission_delivered(&mut self, task: &TaskId, tool_use_id: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE permission_requests SET delivered = 1 WHERE task = ?1 AND tool_use_id = ?2",
            params![task.as_str(), tool_use_id],
        )?;
        Ok(())
    }

    /// The saved rules, oldest first.
    pub fn permission_rules(&self) -> Result<Vec<PermissionRule>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, allow, command, pattern, tool, from_task, created_at FROM permission_rules ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PermissionRule {
                id: r.get(0)?,
                allow: r.get::<_, i64>(1)? == 1,
                kind: if r.get::<_, i64>(2)? == 1 { "command" } else { "path" }.to_owned(),
                pattern: r.get(3)?,
                tool: r.get(4)?,
                from_task: r.get::<_, Option<String>>(5)?.map(|t| parse_id(5, t)).transpose()?,
                created_at: from_millis(r.get(6)?)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The saved rules, as the policy reads them.
    pub fn saved_rules(&self) -> Result<Vec<SavedRule>> {
        Ok(self
            .permission_rules()?
            .into_iter()
            .filter(|r| r.tool != crate::permissions::network::NETWORK)
            .map(|r| SavedRule {
                id: r.id,
                allow: r.allow,
                command: r.kind == "command",
                write: matches!(r.tool.as_str(), "Write" | "Edit"),
                pattern: r.pattern,
            })
            .collect())
    }

    /// Remove a saved rule.
    pub fn remove_permission_rule(&mut self, id: i64) -> Result<()> {
        let n = self.conn.execute("DELETE FROM permission_rules WHERE id = ?1", [id])?;
        if n == 0 {
            return Err(SupervisorError::refused(
                ErrorCode::NotFound,
                format!("no saved rule has the number {id}; `neuraphage permissions list` shows them"),
            ));
        }
        Ok(())
    }
}

/// A prompt with its request number in front and how to answer it behind.
fn numbered(task: &TaskId, number: i64, prompt: &str) -> String {
    format!(
        "Request #{number}: {prompt} — answer with `neuraphage task approve {task} --request {number} [--always]` or \
         `neuraphage task deny {task} --request {number} [--never] [--reason TEXT]`"
    )
}

fn parse_id(col: usize, text: String) -> rusqlite::Result<TaskId> {
    text.parse().map_err(|e: String| super::tasks::conversion(col, e))
}

/// Queue the task again if it waits on the user. True if it did.
fn requeue_if_waiting(tx: &rusqlite::Transaction<'_>, task: &TaskId) -> Result<bool> {
    let current = load(tx, task)?;
    if current.status.state() != TaskState::WaitingForUser {
        return Ok(false);
    }
    set_status(tx, &current, TaskStatus::Queued)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tasks::TaskDraft;

    fn store_with_task() -> (tempfile::TempDir, Store, TaskId) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let draft = TaskDraft::new("t");
        let id = store.create_task(&draft).unwrap().id;
        (dir, store, id)
    }

    fn ask(store: &mut Store, id: &TaskId, call: &str) -> StoredRequest {
        let new = NewRequest {
            tool_use_id: call,
            tool: "Bash",
            subject: "git push",
            command: true,
            prompt: "Allow?",
            by: "r",
        };
        store.ask_permission(id, &new).unwrap();
        store.permission_request(id, call).unwrap().unwrap()
    }

    #[test]
    fn an_answer_is_stored_with_its_rule_and_requeues_a_waiting_task_once() {
        let (_dir, mut store, id) = store_with_task();
        let request = ask(&mut store, &id, "call-1");
        ask(&mut store, &id, "call-1");
        assert_eq!(store.count_events(&id, "permission_requested").unwrap(), 1, "asked twice, stored once");
        assert_eq!(store.pending_permission(&id).unwrap().unwrap().tool_use_id, "call-1");
        store.transition(&id, TaskStatus::WaitingForUser { prompt: "Allow?".into() }).unwrap();
        let decision = Decision { allowed: true, by: "user", reason: None, save: true };
        let (rule, requeued) = store.decide_permission(&request, &decision).unwrap();
        assert!(requeued && rule.is_some());
        assert_eq!(store.task(&id).unwrap().status, TaskStatus::Queued);
        assert_eq!(store.permission_request(&id, "call-1").unwrap().unwrap().decision, Some(true));
        assert!(store.decide_permission(&request, &decision).is_err(), "answered once");
        let saved = store.saved_rules().unwrap();
        assert_eq!(
            saved,
            [SavedRule { id: rule.unwrap(), allow: true, command: true, pattern: "git push".into(), write: false }]
        );
        store.remove_permission_rule(rule.unwrap()).unwrap();
        assert!(store.remove_permission_rule(rule.unwrap()).is_err());
        assert!(store.pending_permission(&id).unwrap().is_none());
    }

    #[test]
    fn an_answer_given_before_the_task_parked_requeues_it_when_it_parks() {
        let (_dir, mut store, id) = store_with_task();
        let request = ask(&mut store, &id, "call-2");
        store.transition(&id, TaskStatus::Running { phase: neuraphage_ipc::RunningPhase::AssemblingContext }).unwrap();
        let decision = Decision { allowed: false, by: "timeout", reason: Some("late"), save: false };
        assert_eq!(store.decide_permission(&request, &decision).unwrap(), (None, false));
        store.transition(&id, TaskStatus::WaitingForUser { prompt: "Allow?".into() }).unwrap();
        assert!(store.requeue_if_answered(&id).unwrap());
        assert_eq!(store.task(&id).unwrap().status, TaskStatus::Queued);
        store.mark_permission_delivered(&id, "call-2").unwrap();
        store.transition(&id, TaskStatus::WaitingForUser { prompt: "other".into() }).unwrap();
        assert!(!store.requeue_if_answered(&id).unwrap(), "a delivered answer does not requeue again");
        assert!(store.expired_permissions(i64::MAX, 10).unwrap().is_empty());
    }

    #[test]
    fn a_call_is_known_as_run_once_its_tool_started_checkpoint_is_stored() {
        use neuraphage_ipc::worker::{Checkpoint, CheckpointKind};
        let (_dir, mut store, id) = store_with_task();
        assert!(!store.tool_call_checkpointed(&id, "call-3").unwrap());
        let kind = CheckpointKind::ToolStarted { tool: "Bash".into(), tool_use_id: "call-3".into() };
        let cp = Checkpoint { seq: 1, kind, iteration: 1, messages: Vec::new(), delivered: Vec::new(), plan: None };
        store.checkpoint(&id, &cp, "c0ffee").unwrap();
        assert!(store.tool_call_checkpointed(&id, "call-3").unwrap());
        assert!(!store.tool_call_checkpointed(&id, "call-4").unwrap(), "another call is not");
    }

    #[test]
    fn requests_are_numbered_in_their_prompt_and_counted_since_the_users_last_answer() {
        let (_dir, mut store, id) = store_with_task();
        let first = ask(&mut store, &id, "call-5");
        assert!(first.prompt.starts_with(&format!("Request #{}: Allow?", first.number)), "{}", first.prompt);
        assert!(first.prompt.contains(&format!("--request {}", first.number)), "{}", first.prompt);
        assert_eq!(store.permissions_asked_since_user_answer(&id).unwrap(), 1);
        let timeout = Decision { allowed: false, by: "timeout", reason: Some("late"), save: false };
        store.decide_permission(&first, &timeout).unwrap();
        let second = ask(&mut store, &id, "call-6");
        assert_ne!(first.number, second.number);
        assert_eq!(store.permissions_asked_since_user_answer(&id).unwrap(), 2, "a timeout is not the user's answer");
        assert!(store.pending_permission_numbered(&id, first.number).unwrap().is_none(), "no longer pending");
        assert_eq!(store.pending_permission_numbered(&id, second.number).unwrap().unwrap().tool_use_id, "call-6");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let user = Decision { allowed: true, by: "user", reason: None, save: false };
        store.decide_permission(&second, &user).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        ask(&mut store, &id, "call-7");
        assert_eq!(store.permissions_asked_since_user_answer(&id).unwrap(), 1);
    }
}
