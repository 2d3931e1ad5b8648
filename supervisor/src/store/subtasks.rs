//! Store operations of sub-tasks (issue 16): a child created once per parent call (with its edge and events, in one
//! transaction, under the tree's limits), depth and the live descendants of a tree, and the tree's cost.

use neuraphage_ipc::cost::CostTotals;
use neuraphage_ipc::{EventKind, Task, TaskId};
use rusqlite::{OptionalExtension, params};

use super::Store;
use super::tasks::{TaskDraft, append_event, insert_task, load};
use crate::error::{Result, SupervisorError};

/// Most ancestors followed (a guard against a corrupt parent chain; the depth limit is far lower).
const MAX_CHAIN: u32 = 64;

/// Most sub-tasks one task may create in all (ended ones included): a bound on what a looping model can make.
pub const MAX_CHILDREN: u32 = 256;

/// The states in which a task has ended.
const ENDED: &str = "('Completed', 'Failed', 'Cancelled')";

/// The tree's limits, as a child would change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `max-subtask-depth`.
    pub max_depth: u32,
    /// `max-subtasks`.
    pub max_live: u32,
}

/// Whether a child at `depth` may be created in a tree with `live` live sub-tasks; the refusal names the limit.
pub fn check(depth: u32, live: u32, limits: Limits) -> std::result::Result<(), String> {
    if depth > limits.max_depth {
        return Err(format!(
            "Task refused: the sub-task would be at depth {depth}, past max-subtask-depth {} (a top task is depth 1); \
             do this work yourself instead",
            limits.max_depth
        ));
    }
    if live >= limits.max_live {
        return Err(format!(
            "Task refused: this task tree already has {live} live sub-tasks, the limit max-subtasks is {}; wait for \
             some to end (TaskResult) or do this work yourself",
            limits.max_live
        ));
    }
    Ok(())
}

/// What [`Store::create_subtask`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new child.
    New(Task),
    /// The call had already created this child (a resumed parent asking again).
    Existing(Task),
    /// Over a limit: the reason.
    Refused(String),
}

/// What [`Store::tell_parent`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Told {
    /// The parent told.
    pub parent: TaskId,
    /// The advice stored for it, if any: its inbox id, its framed text, whether the parent is running.
    pub advice: Option<(u64, String, bool)>,
}

/// Refuse to queue again sub-task `task` (`what`: the user's action, e.g. `be retried`) when its parent has ended:
/// a child does not outlive its parent (its live sub-tasks are cancelled at its end, and at the next start after a
/// crash — a child queued again afterwards would run for no one and be cancelled at the next start).
pub(super) fn refuse_if_parent_ended(conn: &rusqlite::Connection, task: &Task, what: &str) -> Result<()> {
    let Some(parent) = &task.parent else { return Ok(()) };
    let state = load(conn, parent)?.status.state();
    if !state.is_terminal() {
        return Ok(());
    }
    Err(SupervisorError::refused(
        neuraphage_ipc::ErrorCode::Conflict,
        format!(
            "{} is a sub-task of {parent}, which is {state}: a sub-task does not outlive its parent, so it cannot \
             {what}; go on with {parent} instead (`neuraphage task send {parent} ...` or `task retry`)",
            task.id
        ),
    ))
}

impl Store {
    /// The child that the parent's call `call` created, if any.
    pub fn subtask_by_call(&self, parent: &TaskId, call: &str) -> Result<Option<Task>> {
        let id: Option<String> = self
            .conn
            .query_row(
                "SELECT id FROM tasks WHERE parent = ?1 AND subtask_call = ?2",
                params![parent.as_str(), call],
                |r| r.get(0),
            )
            .optional()?;
        match id.and_then(|id| id.parse::<TaskId>().ok()) {
            Some(id) => Ok(Some(self.task(&id)?)),
            None => Ok(None),
        }
    }

    /// A task's depth (a top task is 1) and its tree's top task.
    pub fn depth_and_root(&self, id: &TaskId) -> Result<(u32, TaskId)> {
        let mut at = id.clone();
        let mut depth = 1;
        while depth < MAX_CHAIN {
            let parent: Option<String> =
                self.conn.query_row("SELECT parent FROM tasks WHERE id = ?1", [at.as_str()], |r| r.get(0))?;
            match parent.and_then(|p| p.parse::<TaskId>().ok()) {
                Some(p) => {
                    at = p;
                    depth += 1;
                }
                None => break,
            }
        }
        Ok((depth, at))
    }

    /// The sub-tasks under `id`, at every depth, that have not ended, parents before children.
    pub fn live_descendants(&self, id: &TaskId) -> Result<Vec<TaskId>> {
        let sql = format!(
            "WITH RECURSIVE tree(id, depth) AS (
                 SELECT id, 1 FROM tasks WHERE parent = ?1
                 UNION SELECT t.id, tree.depth + 1 FROM tasks t JOIN tree ON t.parent = tree.id WHERE tree.depth < {MAX_CHAIN})
             SELECT tree.id FROM tree JOIN tasks t ON t.id = tree.id WHERE t.state NOT IN {ENDED}
             ORDER BY tree.depth, t.created_at, t.id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let ids = stmt.query_map([id.as_str()], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    /// Whether the parent waits for this child (its `Task` call had `wait: true`).
    pub fn waited_on(&self, child: &TaskId) -> Result<bool> {
        Ok(self.conn.query_row("SELECT subtask_wait FROM tasks WHERE id = ?1", [child.as_str()], |r| r.get(0))?)
    }

    /// Create the child of `draft.parent` for its call `call`, once: the existing child when the call already made
    /// one; else, within `limits` (checked in the transaction), the new child with its `child_of` edge, and
    /// `SubtaskCreated` on the parent.
    pub fn create_subtask(&mut self, draft: &TaskDraft, call: &str, wait: bool, limits: Limits) -> Result<Created> {
        let Some(parent) = draft.parent.clone() else {
            return Ok(Created::Refused("a sub-task needs its parent".into()));
        };
        if let Some(task) = self.subtask_by_call(&parent, call)? {
            return Ok(Created::Existing(task));
        }
        let made: u32 =
            self.conn.query_row("SELECT count(*) FROM tasks WHERE parent = ?1", [parent.as_str()], |r| r.get(0))?;
        if made >= MAX_CHILDREN {
            return Ok(Created::Refused(format!(
                "Task refused: this task has created {made} sub-tasks, the most one task may create"
            )));
        }
        let (parent_depth, root) = self.depth_and_root(&parent)?;
        let live = self.live_descendants(&root)?.len() as u32;
        let depth = parent_depth + 1;
        if let Err(why) = check(depth, live, limits) {
            return Ok(Created::Refused(why));
        }
        let tx = self.conn.transaction()?;
        let id = insert_task(&tx, draft)?;
        tx.execute(
            "UPDATE tasks SET subtask_call = ?2, subtask_wait = ?3 WHERE id = ?1",
            params![id.as_str(), call, wait],
        )?;
        append_event(&tx, &parent, &EventKind::SubtaskCreated { child: id.clone(), depth })?;
        let task = load(&tx, &id)?;
        tx.commit()?;
        Ok(Created::New(task))
    }

    /// Sub-tasks that ended and whose parent has not been told yet (V12 `parent_told = 0`), oldest first.
    pub fn untold_subtasks(&self) -> Result<Vec<TaskId>> {
        let mut stmt =
            self.conn.prepare_cached("SELECT id FROM tasks WHERE parent_told = 0 ORDER BY created_at, id")?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    /// Tasks that ended with a sub-task still live under them (an end the supervisor died before cascading), and
    /// how each ended.
    pub fn orphaned_subtasks(&self) -> Result<Vec<(TaskId, String)>> {
        let sql = format!(
            "SELECT DISTINCT p.id, p.state FROM tasks c JOIN tasks p ON c.parent = p.id
             WHERE c.state NOT IN {ENDED} AND p.state IN {ENDED} ORDER BY p.created_at, p.id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.into_iter().filter_map(|(id, state)| Some((id.parse().ok()?, state))).collect())
    }

    /// Tell the parent of `child` (a sub-task that ended) so, once: in one transaction, `SubtaskEnded { outcome:
    /// shown }` on the parent; for a child the parent does not wait for, `advice` (the outcome) as advice from
    /// `task CHILD` in its next turn, unless the parent has ended; and the mark that it was told. `None` when there
    /// is nothing to tell (told already, or not an ended sub-task).
    pub fn tell_parent(&mut self, child: &TaskId, shown: &str, advice: Option<&str>) -> Result<Option<Told>> {
        let tx = self.conn.transaction()?;
        let (parent, untold, wait): (Option<String>, bool, bool) = tx.query_row(
            "SELECT parent, parent_told IS 0, subtask_wait FROM tasks WHERE id = ?1",
            [child.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let Some(parent) = parent.and_then(|p| p.parse::<TaskId>().ok()).filter(|_| untold) else {
            return Ok(None);
        };
        append_event(&tx, &parent, &EventKind::SubtaskEnded { child: child.clone(), outcome: shown.to_owned() })?;
        let advice = match advice.filter(|_| !wait) {
            Some(text) => {
                let parent_state = load(&tx, &parent)?.status.state();
                if parent_state.is_terminal() {
                    None
                } else {
                    Some(super::inbox::advise_in(&tx, &parent, &format!("task {child}"), text)?)
                }
            }
            None => None,
        };
        tx.execute("UPDATE tasks SET parent_told = 1 WHERE id = ?1", [child.as_str()])?;
        tx.commit()?;
        Ok(Some(Told { parent, advice }))
    }

    /// What the task and every sub-task under it, at every depth, cost.
    pub fn tree_cost(&self, id: &TaskId) -> Result<CostTotals> {
        let sql = format!(
            "WITH RECURSIVE tree(id, depth) AS (
                 SELECT ?1, 0
                 UNION SELECT t.id, tree.depth + 1 FROM tasks t JOIN tree ON t.parent = tree.id WHERE tree.depth < {MAX_CHAIN})
             SELECT {} FROM costs WHERE task IN (SELECT id FROM tree)",
            super::costs::SUMS
        );
        Ok(self.conn.query_row(&sql, [id.as_str()], |r| super::costs::totals(r, 0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_depth: 3, max_live: 8 };

    #[test]
    fn limits_name_what_they_refuse() {
        assert!(check(2, 0, LIMITS).is_ok());
        assert!(check(3, 7, LIMITS).is_ok());
        let deep = check(4, 0, LIMITS).unwrap_err();
        assert!(deep.contains("depth 4") && deep.contains("max-subtask-depth 3"), "{deep}");
        let many = check(2, 8, LIMITS).unwrap_err();
        assert!(many.contains("8 live sub-tasks") && many.contains("max-subtasks is 8"), "{many}");
    }

    fn draft(parent: Option<&TaskId>) -> TaskDraft {
        TaskDraft { parent: parent.cloned(), ..TaskDraft::new("d") }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        (dir, store)
    }

    fn made(c: Created) -> Task {
        match c {
            Created::New(t) => t,
            other => panic!("expected a new child, got {other:?}"),
        }
    }

    #[test]
    fn one_child_per_call_depth_and_cap() {
        let (_dir, mut s) = store();
        let top = s.create_task(&draft(None)).unwrap().id;
        let a = made(s.create_subtask(&draft(Some(&top)), "call-1", true, LIMITS).unwrap());
        // The same call again: the same child.
        match s.create_subtask(&draft(Some(&top)), "call-1", true, LIMITS).unwrap() {
            Created::Existing(t) => assert_eq!(t.id, a.id),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.depth_and_root(&a.id).unwrap(), (2, top.clone()));
        let b = made(s.create_subtask(&draft(Some(&a.id)), "call-2", false, LIMITS).unwrap());
        assert!(s.waited_on(&a.id).unwrap() && !s.waited_on(&b.id).unwrap());
        assert_eq!(s.depth_and_root(&b.id).unwrap(), (3, top.clone()));
        match s.create_subtask(&draft(Some(&b.id)), "call-3", true, LIMITS).unwrap() {
            Created::Refused(why) => assert!(why.contains("max-subtask-depth 3"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Parents before children.
        assert_eq!(s.live_descendants(&top).unwrap(), vec![a.id.clone(), b.id.clone()]);
        s.cancel(&b.id, None).unwrap();
        assert_eq!(s.live_descendants(&top).unwrap(), vec![a.id.clone()]);
        let tight = Limits { max_depth: 3, max_live: 1 };
        match s.create_subtask(&draft(Some(&top)), "call-4", true, tight).unwrap() {
            Created::Refused(why) => assert!(why.contains("max-subtasks is 1"), "{why}"),
            other => panic!("{other:?}"),
        }
        let kinds: Vec<String> = s.detail(&top, 50).unwrap().events.iter().map(|e| e.kind.name().to_owned()).collect();
        assert_eq!(kinds.iter().filter(|k| *k == "subtask_created").count(), 1, "{kinds:?}");
    }

    #[test]
    fn an_ended_child_is_told_to_its_parent_once_with_its_status() {
        let (_dir, mut s) = store();
        let top = s.create_task(&draft(None)).unwrap().id;
        let waited = made(s.create_subtask(&draft(Some(&top)), "w", true, LIMITS).unwrap());
        let free = made(s.create_subtask(&draft(Some(&top)), "f", false, LIMITS).unwrap());
        assert!(s.untold_subtasks().unwrap().is_empty());
        assert_eq!(s.tell_parent(&free.id, "early", Some("early")).unwrap(), None, "not ended: nothing to tell");
        // The mark is set in the status's own transaction.
        s.cancel(&waited.id, None).unwrap();
        s.cancel(&free.id, None).unwrap();
        s.cancel(&top, None).unwrap();
        // Both, in creation order — two made in the same millisecond come in id order, so compare as sets.
        let mut untold = s.untold_subtasks().unwrap();
        untold.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let mut both = vec![waited.id.clone(), free.id.clone()];
        both.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        assert_eq!(untold, both);
        let told = s.tell_parent(&waited.id, "W ended", Some("W ended")).unwrap().unwrap();
        assert_eq!((told.parent, told.advice), (top.clone(), None), "a waited-for child is not advice");
        // The parent has ended: the event, no advice.
        assert_eq!(s.tell_parent(&free.id, "F ended", Some("F ended")).unwrap().unwrap().advice, None);
        assert_eq!(s.tell_parent(&free.id, "F ended", Some("F ended")).unwrap(), None, "once");
        assert!(s.untold_subtasks().unwrap().is_empty());
        let ended: Vec<_> = s
            .detail(&top, 50)
            .unwrap()
            .events
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::SubtaskEnded { .. }))
            .collect();
        assert_eq!(ended.len(), 2, "{ended:?}");
    }

    #[test]
    fn a_child_not_waited_for_is_told_as_advice_to_a_live_parent() {
        let (_dir, mut s) = store();
        let top = s.create_task(&draft(None)).unwrap().id;
        let free = made(s.create_subtask(&draft(Some(&top)), "f", false, LIMITS).unwrap());
        s.cancel(&free.id, None).unwrap();
        let told = s.tell_parent(&free.id, "F ended", Some("F ended")).unwrap().unwrap();
        let (_, framed, running) = told.advice.unwrap();
        assert!(framed.contains(&format!("task {}", free.id)) && framed.contains("F ended") && !running, "{framed}");
        assert_eq!(s.pending_input(&top).unwrap().len(), 1);
    }

    #[test]
    fn a_sub_task_whose_parent_ended_is_not_queued_again() {
        use neuraphage_ipc::{TaskState, TaskStatus};
        let (_dir, mut s) = store();
        let top = s.create_task(&draft(None)).unwrap().id;
        let kid = made(s.create_subtask(&draft(Some(&top)), "k", false, LIMITS).unwrap()).id;
        let failed = TaskStatus::Failed { error: "e".into(), recoverable: true };
        // The control: under a live parent, a failed child is retried, a cancelled one queued again by a message.
        s.transition(&kid, failed.clone()).unwrap();
        assert_eq!(s.retry(&kid).unwrap().status.state(), TaskState::Queued);
        s.cancel(&kid, None).unwrap();
        assert_eq!(s.send_message(&kid, "go on", false).unwrap().task.status.state(), TaskState::Queued);
        // The parent ends (its live child is cancelled with it); neither brings the child back.
        s.transition(&kid, failed.clone()).unwrap();
        s.transition(&top, TaskStatus::Completed { summary: None }).unwrap();
        let err = s.retry(&kid).unwrap_err().to_control_error().message;
        assert!(err.contains(&format!("sub-task of {top}, which is Completed")) && err.contains("be retried"), "{err}");
        s.cancel(&top, None).unwrap_err();
        let err = s.send_message(&kid, "go on", false).unwrap_err().to_control_error().message;
        assert!(err.contains("does not outlive its parent"), "{err}");
        // Nothing changed: still Failed, no message stored (the one pending is the control's).
        assert_eq!(s.task(&kid).unwrap().status, failed);
        assert_eq!(s.pending_input(&kid).unwrap().len(), 1);
    }

    #[test]
    fn live_children_of_an_ended_task_are_orphans() {
        let (_dir, mut s) = store();
        let top = s.create_task(&draft(None)).unwrap().id;
        let kid = made(s.create_subtask(&draft(Some(&top)), "k", false, LIMITS).unwrap());
        let ended = made(s.create_subtask(&draft(Some(&top)), "e", false, LIMITS).unwrap());
        s.cancel(&ended.id, None).unwrap();
        // The control: a live parent has no orphans.
        assert!(s.orphaned_subtasks().unwrap().is_empty());
        s.cancel(&top, None).unwrap();
        assert_eq!(s.orphaned_subtasks().unwrap(), vec![(top.clone(), "Cancelled".to_owned())]);
        s.cancel(&kid.id, None).unwrap();
        assert!(s.orphaned_subtasks().unwrap().is_empty());
    }

    #[test]
    fn a_task_creates_a_bounded_number_of_children_in_all() {
        let (_dir, mut s) = store();
        let top = s.create_task(&draft(None)).unwrap().id;
        let roomy = Limits { max_depth: 3, max_live: 10_000 };
        for i in 0..MAX_CHILDREN {
            made(s.create_subtask(&draft(Some(&top)), &format!("call-{i}"), false, roomy).unwrap());
        }
        match s.create_subtask(&draft(Some(&top)), "one-more", false, roomy).unwrap() {
            Created::Refused(why) => assert!(why.contains("256 sub-tasks"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
