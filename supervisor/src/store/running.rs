//! Store operations of running tasks: the scheduler's queries, status changes, checkpoints, and the end of a task.

use chrono::Utc;
use neuraphage_ipc::task::PlanItem;
use neuraphage_ipc::worker::{Checkpoint, CheckpointKind};
use neuraphage_ipc::{EventKind, RunningPhase, Task, TaskId, TaskState, TaskStatus};
use rusqlite::{OptionalExtension, params};

use super::tasks::{append_event, change_status, load, set_status};
use super::{Store, to_json, to_millis};
use crate::error::Result;
use crate::event_caps::Admission;

/// A Queued task whose blocker can never complete, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The waiting task.
    pub task: TaskId,
    /// The blocker that failed or was cancelled.
    pub blocker: TaskId,
    /// The blocker's state.
    pub state: TaskState,
}

impl Store {
    /// Queued tasks whose blockers are all Completed, most urgent first, then oldest; at most `limit`.
    pub fn ready(&self, limit: usize) -> Result<Vec<Task>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM tasks t WHERE t.state = 'Queued' AND NOT EXISTS (
                 SELECT 1 FROM edges e JOIN tasks b ON b.id = e.other
                 WHERE e.task = t.id AND e.kind = 'blocked_by' AND b.state <> 'Completed')
             ORDER BY t.priority, t.created_at, t.id LIMIT ?1",
        )?;
        let ids = stmt.query_map([limit as i64], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        ids.iter().filter_map(|id| id.parse::<TaskId>().ok()).map(|id| self.task(&id)).collect()
    }

    /// Queued tasks that wait on a Failed or Cancelled task.
    pub fn stuck(&self) -> Result<Vec<Stuck>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT t.id, b.id, b.state FROM tasks t JOIN edges e ON e.task = t.id AND e.kind = 'blocked_by'
             JOIN tasks b ON b.id = e.other
             WHERE t.state = 'Queued' AND b.state IN ('Failed', 'Cancelled', 'Blocked') ORDER BY t.id, b.id",
        )?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        let mut stuck: Vec<Stuck> = Vec::new();
        for row in rows {
            let (task, blocker, state) = row?;
            if let (Ok(task), Ok(blocker), Ok(state)) = (task.parse(), blocker.parse(), state.parse()) {
                if stuck.last().is_some_and(|s: &Stuck| s.task == task) {
                    continue;
                }
                stuck.push(Stuck { task, blocker, state });
            }
        }
        Ok(stuck)
    }

    /// Blocked tasks none of whose blockers has failed, been cancelled or is blocked itself (a blocker was retried),
    /// and none of whose waited-for sub-tasks is still live (issue 16): they may wait in the queue again.
    pub fn unblocked(&self) -> Result<Vec<TaskId>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT t.id FROM tasks t WHERE t.state = 'Blocked' AND NOT EXISTS (
                 SELECT 1 FROM edges e JOIN tasks b ON b.id = e.other
                 WHERE e.task = t.id AND e.kind = 'blocked_by' AND b.state IN ('Failed', 'Cancelled', 'Blocked'))
             AND NOT EXISTS (SELECT 1 FROM tasks c WHERE c.parent = t.id AND c.subtask_wait = 1
                 AND c.state NOT IN ('Completed', 'Failed', 'Cancelled'))
             ORDER BY t.id",
        )?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    /// Queue a Failed, WaitingForUser or Paused task again (it resumes from its conversation); any other state is
    /// refused, and so is a sub-task whose parent has ended.
    pub fn retry(&mut self, id: &TaskId) -> Result<Task> {
        let task = self.task(id)?;
        if !matches!(task.status.state(), TaskState::Failed | TaskState::WaitingForUser | TaskState::Paused) {
            return Err(crate::error::SupervisorError::refused(
                neuraphage_ipc::ErrorCode::Conflict,
                format!("{id} is {}; only a Failed, WaitingForUser or Paused task can be retried", task.status.state()),
            ));
        }
        let tx = self.conn.transaction()?;
        super::subtasks::refuse_if_parent_ended(&tx, &task, "be retried")?;
        set_status(&tx, &task, TaskStatus::Queued)?;
        let task = load(&tx, id)?;
        tx.commit()?;
        Ok(task)
    }

    /// Change a task's status (recording the change as an event), unless it is already finished. Returns the task
    /// as it is now, and whether it changed.
    pub fn transition(&mut self, id: &TaskId, status: TaskStatus) -> Result<(Task, bool)> {
        let tx = self.conn.transaction()?;
        let task = load(&tx, id)?;
        if task.status.state().is_terminal() || task.status == status {
            return Ok((task, false));
        }
        change_status(&tx, &task, status)?;
        let task = load(&tx, id)?;
        tx.commit()?;
        Ok((task, true))
    }

    /// Record that a task now has a branch.
    pub fn set_branch(&mut self, id: &TaskId, branch: &str) -> Result<()> {
        self.conn.execute("UPDATE tasks SET branch = ?2 WHERE id = ?1", params![id.as_str(), branch])?;
        Ok(())
    }

    /// The task moved to another model tier: store it, with its event.
    pub fn escalate(&mut self, id: &TaskId, from: &str, to: &str, reason: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("UPDATE tasks SET tier = ?2 WHERE id = ?1", params![id.as_str(), to])?;
        let kind = EventKind::Escalated { from: from.to_owned(), to: to.to_owned(), reason: reason.to_owned() };
        append_event(&tx, id, &kind)?;
        tx.commit()?;
        Ok(())
    }

    /// Show (or with `None`, stop showing) that a running task's model request waits in the broker's queue. Only
    /// a task waiting for the model changes; the change is not an event (it is frequent and transient).
    pub fn set_queued(&mut self, id: &TaskId, detail: Option<String>) -> Result<()> {
        let task = load(&self.conn, id)?;
        let waiting = matches!(
            &task.status,
            TaskStatus::Running { phase: RunningPhase::LlmRequest | RunningPhase::LlmQueued { .. } }
        );
        if !waiting {
            return Ok(());
        }
        let phase = match detail {
            Some(detail) => RunningPhase::LlmQueued { detail },
            None => RunningPhase::LlmRequest,
        };
        self.conn.execute(
            "UPDATE tasks SET status = ?2 WHERE id = ?1",
            params![id.as_str(), to_json(&TaskStatus::Running { phase })?],
        )?;
        Ok(())
    }

    /// Append an event.
    pub fn record(&mut self, id: &TaskId, kind: EventKind) -> Result<()> {
        let tx = self.conn.transaction()?;
        append_event(&tx, id, &kind)?;
        tx.commit()?;
        Ok(())
    }

    /// How many events of `kind` (as stored, [`EventKind::name`]) the task has.
    pub fn count_events(&self, id: &TaskId, kind: &str) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM events WHERE task = ?1 AND kind = ?2",
            params![id.as_str(), kind],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// Persist an acknowledged checkpoint (its conversation is already committed at `commit`), its event, and the
    /// running phase it implies.
    pub fn checkpoint(&mut self, id: &TaskId, cp: &Checkpoint, commit: &str) -> Result<()> {
        self.checkpoint_capped(id, cp, commit, Admission::Record)
    }

    /// [`Store::checkpoint`], its plan's `plan_updated` event as `plan_event` admits it (the task's cap on those
    /// events, [`crate::event_caps`]; the plan itself is stored with the task all the same).
    pub fn checkpoint_capped(
        &mut self,
        id: &TaskId,
        cp: &Checkpoint,
        commit: &str,
        plan_event: Admission,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO checkpoints (task, seq, kind, iteration, data, commit_id, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id.as_str(), cp.seq as i64, cp.kind.name(), cp.iteration, to_json(&cp.kind)?, commit, to_millis(Utc::now())],
        )?;
        let point = match &cp.kind {
            CheckpointKind::ToolStarted { tool, .. } | CheckpointKind::ToolCompleted { tool, .. } => {
                format!("{}:{tool}", cp.kind.name())
            }
            // A continued answer (the Watcher tells it from a model talking to itself).
            CheckpointKind::ResponseReceived {
                stop_reason:
                    Some(s @ (neuraphage_ipc::llm::StopReason::MaxTokens | neuraphage_ipc::llm::StopReason::PauseTurn)),
                ..
            } => format!(
                "{}:{}",
                cp.kind.name(),
                if *s == neuraphage_ipc::llm::StopReason::MaxTokens { "max_tokens" } else { "pause_turn" }
            ),
            other => other.name().to_owned(),
        };
        append_event(&tx, id, &EventKind::Checkpoint { seq: cp.seq, point, commit: commit.to_owned() })?;
        super::inbox::on_checkpoint(&tx, id, cp)?;
        if let Some(plan) = &cp.plan {
            // The plan (TodoWrite) is stored with the task, and its event recorded, with the checkpoint.
            // (A checkpoint is the worker's word: bounded again here.)
            let items = neuraphage_ipc::task::bounded_plan(plan);
            tx.execute("UPDATE tasks SET plan = ?2 WHERE id = ?1", params![id.as_str(), to_json(&items)?])?;
            match plan_event {
                Admission::Record => append_event(&tx, id, &EventKind::PlanUpdated { items })?,
                Admission::RecordLast { cap } => {
                    append_event(&tx, id, &EventKind::PlanUpdated { items })?;
                    append_event(&tx, id, &EventKind::EventsCapped { capped: "plan_updated".to_owned(), cap })?;
                }
                Admission::Drop => {
                    tracing::info!(task = %id, "over the task's cap on plan_updated events: not recorded")
                }
            }
        }
        // A tool's start or end is also a tool-call event, in the same transaction (no second sync before the ack).
        if let Some(kind) = crate::tool_events::from_checkpoint(cp) {
            append_event(&tx, id, &kind)?;
        }
        let phase = match &cp.kind {
            CheckpointKind::RequestSent => Some(RunningPhase::LlmRequest),
            CheckpointKind::ResponseReceived { .. } | CheckpointKind::ToolCompleted { .. } => {
                Some(RunningPhase::Processing)
            }
            CheckpointKind::ToolStarted { tool, .. } => Some(RunningPhase::ToolExecution { tool: tool.clone() }),
            CheckpointKind::TaskEnded { .. } => None,
            CheckpointKind::Compacted { .. } => Some(RunningPhase::AssemblingContext),
        };
        let task = load(&tx, id)?;
        if let Some(phase) = phase
            && task.status.state() == TaskState::Running
        {
            change_status(&tx, &task, TaskStatus::Running { phase })?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The last acknowledged checkpoint's `iteration` (the drift guard's turn count), 0 when none.
    pub fn last_iteration(&self, id: &TaskId) -> Result<u32> {
        Ok(self
            .conn
            .query_row(
                "SELECT iteration FROM checkpoints WHERE task = ?1 ORDER BY seq DESC LIMIT 1",
                [id.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|n| n.clamp(0, u32::MAX as i64) as u32)
            .unwrap_or(0))
    }

    /// The task's plan as stored (empty: none).
    pub fn plan(&self, id: &TaskId) -> Result<Vec<PlanItem>> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT plan FROM tasks WHERE id = ?1", [id.as_str()], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(match text {
            Some(text) => serde_json::from_str(&text).unwrap_or_default(),
            None => Vec::new(),
        })
    }

    /// The last acknowledged checkpoint's sequence number and conversation commit.
    pub fn last_checkpoint(&self, id: &TaskId) -> Result<Option<(u64, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq, commit_id FROM checkpoints WHERE task = ?1 ORDER BY seq DESC LIMIT 1",
                [id.as_str()],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)),
            )
            .optional()?)
    }
}
