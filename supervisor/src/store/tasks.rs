//! Task operations on the store: create, resolve ids, list, show, depend, cancel, count.

use std::collections::BTreeMap;

use chrono::Utc;
use neuraphage_ipc::task::TASK_ID_PREFIX;
use neuraphage_ipc::{
    ErrorCode, EventKind, Priority, Task, TaskDetail, TaskEvent, TaskId, TaskRef, TaskState, TaskStatus,
};
use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::{Store, from_json, from_millis, to_json, to_millis};
use crate::error::{Result, SupervisorError};

/// Most candidates named when a prefix is ambiguous.
const MAX_CANDIDATES: usize = 10;

/// A validated task to create (ids already resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDraft {
    /// What to do.
    pub description: String,
    /// Its priority.
    pub priority: Priority,
    /// Absolute path of its repository.
    pub repo: Option<String>,
    /// Its sandbox profile.
    pub profile: Option<String>,
    /// The task that created it.
    pub parent: Option<TaskId>,
    /// Tasks it waits for.
    pub after: Vec<TaskId>,
    /// The commit its branch starts from.
    pub base_commit: Option<String>,
    /// Its model tier (`None`: the default).
    pub tier: Option<String>,
    /// Its persona, already resolved (`None`: none).
    pub persona: Option<String>,
    /// The Watcher leaves it alone.
    pub no_watch: bool,
}

impl TaskDraft {
    /// A draft of `description` with every other field at its default: normal priority, no repository, profile,
    /// parent, dependencies, tier or persona, watched (tests and benches build on it with `..`).
    pub fn new(description: impl Into<String>) -> TaskDraft {
        TaskDraft {
            description: description.into(),
            priority: Priority::DEFAULT,
            repo: None,
            profile: None,
            parent: None,
            after: Vec::new(),
            base_commit: None,
            tier: None,
            persona: None,
            no_watch: false,
        }
    }
}

const TASK_COLUMNS: &str = "id, status, priority, description, repo, profile, parent, created_at, updated_at, base_commit, branch, tier, persona, no_watch";

/// A task from its row; a row that does not read back names the task in the error.
fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    let id: String = row.get(0)?;
    read_task(row, &id).map_err(|e| conversion(0, format!("task {id} is stored corrupt: {e}")))
}

fn read_task(row: &Row<'_>, id: &str) -> rusqlite::Result<Task> {
    let id = id.to_owned();
    let priority: u8 = row.get(2)?;
    Ok(Task {
        id: id.parse().map_err(|e: String| conversion(0, e))?,
        status: from_json(1, &row.get::<_, String>(1)?)?,
        priority: Priority::try_from(priority).map_err(|e| conversion(2, e))?,
        description: row.get(3)?,
        repo: row.get(4)?,
        profile: row.get(5)?,
        parent: row.get::<_, Option<String>>(6)?.map(|p| p.parse()).transpose().map_err(|e| conversion(6, e))?,
        created_at: from_millis(row.get(7)?)?,
        updated_at: from_millis(row.get(8)?)?,
        base_commit: row.get(9)?,
        branch: row.get(10)?,
        tier: row.get(11)?,
        persona: row.get(12)?,
        no_watch: row.get(13)?,
    })
}

pub(super) fn conversion(col: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, msg.into())
}

fn not_found(id: &str) -> SupervisorError {
    SupervisorError::refused(ErrorCode::NotFound, format!("no task has the id {id}; `neuraphage task list` shows them"))
}

pub(super) fn append_event(tx: &Transaction<'_>, task: &TaskId, kind: &EventKind) -> Result<()> {
    tx.execute(
        "INSERT INTO events (task, at, kind, data) VALUES (?1, ?2, ?3, ?4)",
        params![task.as_str(), to_millis(Utc::now()), kind.name(), to_json(kind)?],
    )?;
    Ok(())
}

impl Store {
    /// Store a new task with its dependencies and events; returns it once committed.
    pub fn create_task(&mut self, draft: &TaskDraft) -> Result<Task> {
        let tx = self.conn.transaction()?;
        let id = insert_task(&tx, draft)?;
        let task = load(&tx, &id)?;
        tx.commit()?;
        Ok(task)
    }

    /// Resolve what the user typed (a full id, a prefix with or without `np-`) to exactly one task.
    pub fn resolve(&self, typed: &str) -> Result<TaskId> {
        let typed = typed.trim().to_ascii_lowercase();
        let prefix = if typed.starts_with(TASK_ID_PREFIX) { typed.clone() } else { format!("{TASK_ID_PREFIX}{typed}") };
        let hex = &prefix[TASK_ID_PREFIX.len()..];
        if hex.is_empty() || hex.len() > 10 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SupervisorError::refused(
                ErrorCode::InvalidArgument,
                format!("{typed:?} is not a task id; ids look like np-3f2a9c01b4 (any unique prefix works)"),
            ));
        }
        let mut stmt = self.conn.prepare_cached("SELECT id FROM tasks WHERE id LIKE ?1 || '%' ORDER BY id LIMIT ?2")?;
        let ids = stmt
            .query_map(params![prefix, MAX_CANDIDATES as i64 + 1], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let ids: Vec<TaskId> = ids.into_iter().filter_map(|s| s.parse().ok()).collect();
        match ids.len() {
            0 => Err(not_found(&typed)),
            1 => Ok(ids.into_iter().next().ok_or_else(|| not_found(&typed))?),
            n => {
                let more = if n > MAX_CANDIDATES { " and more" } else { "" };
                let shown: Vec<TaskId> = ids.into_iter().take(MAX_CANDIDATES).collect();
                let names: Vec<&str> = shown.iter().map(TaskId::as_str).collect();
                Err(SupervisorError::Refused(neuraphage_ipc::ControlError {
                    code: ErrorCode::Ambiguous,
                    message: format!("{typed} matches several tasks: {}{more}; type more of the id", names.join(", ")),
                    candidates: shown,
                }))
            }
        }
    }

    /// One task.
    pub fn task(&self, id: &TaskId) -> Result<Task> {
        load(&self.conn, id)
    }

    /// Tasks, optionally of one state, in schedule order (priority, then age).
    pub fn list(&self, state: Option<TaskState>) -> Result<Vec<Task>> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE ?1 IS NULL OR state = ?1 ORDER BY priority, created_at, id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let tasks = stmt.query_map([state.map(TaskState::name)], task_from_row)?.collect::<rusqlite::Result<_>>()?;
        Ok(tasks)
    }

    /// One page of [`Store::list`]: at most `max_tasks` tasks from `offset`, cut short once their descriptions pass
    /// `max_bytes`; with the offset of the next page if there is more.
    pub fn page(
        &self,
        state: Option<TaskState>,
        offset: u64,
        max_tasks: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Task>, Option<u64>)> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE ?1 IS NULL OR state = ?1 ORDER BY priority, created_at, id
             LIMIT ?2 OFFSET ?3"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![state.map(TaskState::name), max_tasks as i64 + 1, offset as i64])?;
        let (mut tasks, mut bytes) = (Vec::new(), 0usize);
        while let Some(row) = rows.next()? {
            let task = task_from_row(row)?;
            if tasks.len() == max_tasks || (!tasks.is_empty() && bytes + task.description.len() > max_bytes) {
                return Ok((tasks.clone(), Some(offset + tasks.len() as u64)));
            }
            bytes += task.description.len();
            tasks.push(task);
        }
        Ok((tasks, None))
    }

    /// A task with its dependencies, dependents, sub-tasks and its last `events` events.
    pub fn detail(&self, id: &TaskId, events: usize) -> Result<TaskDetail> {
        let task = self.task(id)?;
        let refs = |sql: &str| -> Result<Vec<TaskRef>> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let rows = stmt.query_map([id.as_str()], |r| {
                let id: String = r.get(0)?;
                let state: String = r.get(1)?;
                Ok(TaskRef {
                    id: id.parse().map_err(|e: String| conversion(0, e))?,
                    status: state.parse().map_err(|e: String| conversion(1, e))?,
                    description: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        };
        let blocked_by = refs(
            "SELECT t.id, t.state, t.description FROM edges e JOIN tasks t ON t.id = e.other
             WHERE e.task = ?1 AND e.kind = 'blocked_by' ORDER BY e.created_at, t.id",
        )?;
        let blocks = refs(
            "SELECT t.id, t.state, t.description FROM edges e JOIN tasks t ON t.id = e.task
             WHERE e.other = ?1 AND e.kind = 'blocked_by' ORDER BY e.created_at, t.id",
        )?;
        let children = refs(
            "SELECT t.id, t.state, t.description FROM edges e JOIN tasks t ON t.id = e.task
             WHERE e.other = ?1 AND e.kind = 'child_of' ORDER BY e.created_at, t.id",
        )?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, task, at, data FROM (SELECT * FROM events WHERE task = ?1 ORDER BY seq DESC LIMIT ?2)
             ORDER BY seq",
        )?;
        let events = stmt
            .query_map(params![id.as_str(), events as i64], |r| {
                let task: String = r.get(1)?;
                Ok(TaskEvent {
                    seq: r.get::<_, i64>(0)? as u64,
                    task: task.parse().map_err(|e: String| conversion(1, e))?,
                    at: from_millis(r.get(2)?)?,
                    kind: from_json(3, &r.get::<_, String>(3)?)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let cost = self.task_cost(id)?;
        let plan = self.plan(id)?;
        let tree_cost = self.tree_cost(id)?;
        Ok(TaskDetail { task, blocked_by, blocks, children, events, cost, plan, tree_cost })
    }

    /// Make `task` wait for `on`. Refuses a self-dependency, a cycle, and finished tasks; returns false when the
    /// dependency already existed.
    pub fn add_dependency(&mut self, task: &TaskId, on: &TaskId) -> Result<bool> {
        if task == on {
            return Err(SupervisorError::refused(ErrorCode::Cycle, format!("{task} cannot depend on itself")));
        }
        let tx = self.conn.transaction()?;
        let waiter = load(&tx, task)?;
        let blocker = load(&tx, on)?;
        if waiter.status.state().is_terminal() {
            return Err(SupervisorError::refused(
                ErrorCode::Conflict,
                format!("{task} is already {}; a finished task cannot wait for another", waiter.status.state()),
            ));
        }
        if matches!(blocker.status.state(), TaskState::Cancelled | TaskState::Failed) {
            return Err(SupervisorError::refused(
                ErrorCode::Conflict,
                format!("{on} is {}; {task} would wait for it forever", blocker.status.state()),
            ));
        }
        if let Some(path) = wait_path(&tx, on, task)? {
            return Err(SupervisorError::refused(
                ErrorCode::Cycle,
                format!("{task} cannot wait for {on}: {on} already waits for {task} ({path}); that would be a cycle"),
            ));
        }
        let added = insert_edge(&tx, task, on, "blocked_by")?;
        if added {
            append_event(&tx, task, &EventKind::DependencyAdded { on: on.clone() })?;
        }
        tx.commit()?;
        Ok(added)
    }

    /// Cancel a task. A task already cancelled is returned unchanged; a finished one is refused.
    pub fn cancel(&mut self, id: &TaskId, reason: Option<String>) -> Result<Task> {
        let tx = self.conn.transaction()?;
        let task = load(&tx, id)?;
        match task.status.state() {
            TaskState::Cancelled => return Ok(task),
            state @ (TaskState::Completed | TaskState::Failed) => {
                return Err(SupervisorError::refused(
                    ErrorCode::Conflict,
                    format!("{id} is already {state}; there is nothing to cancel"),
                ));
            }
            _ => {}
        }
        set_status(&tx, &task, TaskStatus::Cancelled { reason })?;
        let task = load(&tx, id)?;
        tx.commit()?;
        Ok(task)
    }

    /// Number of tasks in every state (zeros included).
    pub fn counts(&self) -> Result<BTreeMap<TaskState, u64>> {
        let mut counts: BTreeMap<TaskState, u64> = TaskState::ALL.into_iter().map(|s| (s, 0)).collect();
        let mut stmt = self.conn.prepare_cached("SELECT state, count(*) FROM tasks GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
        for row in rows {
            let (state, n) = row?;
            let state: TaskState = state.parse().map_err(SupervisorError::Corrupt)?;
            counts.insert(state, n);
        }
        Ok(counts)
    }
}

/// Insert a new task with its edges and events in `tx`; its id.
pub(super) fn insert_task(tx: &Transaction<'_>, draft: &TaskDraft) -> Result<TaskId> {
    let now = Utc::now();
    let status = TaskStatus::Queued;
    let mut id = TaskId::from_bits(rand::random());
    // 40 random bits: a collision is rare but possible; draw again rather than fail.
    for _ in 0..8 {
        let taken: bool =
            tx.query_row("SELECT EXISTS(SELECT 1 FROM tasks WHERE id = ?1)", [id.as_str()], |r| r.get(0))?;
        if !taken {
            break;
        }
        id = TaskId::from_bits(rand::random());
    }
    tx.execute(
        "INSERT INTO tasks (id, description, priority, repo, profile, parent, state, status, created_at, updated_at,
                            base_commit, tier, persona, no_watch)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13)",
        params![
            id.as_str(),
            draft.description,
            draft.priority.get(),
            draft.repo,
            draft.profile,
            draft.parent.as_ref().map(TaskId::as_str),
            status.state().name(),
            to_json(&status)?,
            to_millis(now),
            draft.base_commit,
            draft.tier,
            draft.persona,
            draft.no_watch,
        ],
    )?;
    append_event(tx, &id, &EventKind::Created { priority: draft.priority })?;
    if let Some(parent) = &draft.parent {
        insert_edge(tx, &id, parent, "child_of")?;
    }
    for on in &draft.after {
        if insert_edge(tx, &id, on, "blocked_by")? {
            append_event(tx, &id, &EventKind::DependencyAdded { on: on.clone() })?;
        }
    }
    Ok(id)
}

pub(super) fn load(conn: &rusqlite::Connection, id: &TaskId) -> Result<Task> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1");
    conn.query_row(&sql, [id.as_str()], task_from_row).optional()?.ok_or_else(|| not_found(id.as_str()))
}

/// Insert an edge; false if it already existed.
pub(super) fn insert_edge(tx: &Transaction<'_>, task: &TaskId, other: &TaskId, kind: &str) -> Result<bool> {
    let n = tx.execute(
        "INSERT OR IGNORE INTO edges (task, other, kind, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![task.as_str(), other.as_str(), kind, to_millis(Utc::now())],
    )?;
    Ok(n == 1)
}

/// If `from` (transitively) waits for `to`, the chain of waits as "a → b → c". A breadth-first walk that visits
/// each task once, so its cost grows with the graph, not with the number of paths through it.
fn wait_path(tx: &Transaction<'_>, from: &TaskId, to: &TaskId) -> Result<Option<String>> {
    let mut stmt = tx.prepare_cached("SELECT other FROM edges WHERE task = ?1 AND kind = 'blocked_by'")?;
    let mut came_from: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut queue = std::collections::VecDeque::from([from.as_str().to_owned()]);
    came_from.insert(from.as_str().to_owned(), String::new());
    while let Some(node) = queue.pop_front() {
        if node == to.as_str() {
            let mut path = vec![node.clone()];
            let mut at = node;
            while let Some(prev) = came_from.get(&at).filter(|p| !p.is_empty()) {
                path.push(prev.clone());
                at = prev.clone();
            }
            path.reverse();
            return Ok(Some(path.join(" → ")));
        }
        let next = stmt.query_map([node.as_str()], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        for n in next {
            if !came_from.contains_key(&n) {
                came_from.insert(n.clone(), node.clone());
                queue.push_back(n);
            }
        }
    }
    Ok(None)
}

/// Change a task's status and record the change as an event.
pub(super) fn set_status(tx: &Transaction<'_>, task: &Task, status: TaskStatus) -> Result<()> {
    let from = task.status.state();
    tx.execute(
        // A pause asked of a running task (V13) holds only while it runs: any other state spends it.
        "UPDATE tasks SET state = ?2, status = ?3, updated_at = ?4,
                          pause_requested = (pause_requested AND ?2 = 'Running') WHERE id = ?1",
        params![task.id.as_str(), status.state().name(), to_json(&status)?, to_millis(Utc::now())],
    )?;
    // A sub-task that ends has its parent to tell, in this same transaction (V12; told by `Store::tell_parent`).
    if task.parent.is_some() && status.state().is_terminal() && !from.is_terminal() {
        tx.execute("UPDATE tasks SET parent_told = 0 WHERE id = ?1", [task.id.as_str()])?;
    }
    // A new session starts: a Watcher's stop stored for an earlier one (V12 `watcher_stop`, left if the supervisor
    // died before that session's end was stored, e.g. after a `task kill`) never ends this one.
    if status.state() == TaskState::Running && from != TaskState::Running {
        tx.execute(
            "UPDATE tasks SET watcher_stop = NULL WHERE id = ?1 AND watcher_stop IS NOT NULL",
            [task.id.as_str()],
        )?;
    }
    append_event(tx, &task.id, &EventKind::StatusChanged { from, to: status })
}

/// Change a task's status: a new state is recorded as an event ([`set_status`]); the same state with new detail
/// (e.g. a new running phase) is not, the checkpoints telling that story.
pub(super) fn change_status(tx: &Transaction<'_>, task: &Task, status: TaskStatus) -> Result<()> {
    if task.status.state() != status.state() {
        return set_status(tx, task, status);
    }
    tx.execute(
        "UPDATE tasks SET status = ?2, updated_at = ?3 WHERE id = ?1",
        params![task.id.as_str(), to_json(&status)?, to_millis(Utc::now())],
    )?;
    Ok(())
}

#[cfg(test)]
#[path = "tasks_tests.rs"]
mod tests;
