//! The Tasks pane's model: every task the dashboard knows, kept from the task list and the event stream, and the
//! order it shows them in.
//!
//! Order: tasks waiting on the user first, oldest wait first (flat, wherever their parent is); then the rest as a
//! tree, a sub-task indented under its parent, siblings by state (running, blocked, queued, paused, then finished
//! ones newest first). A filter keeps tasks of one state and/or whose id or description contains a text; a task
//! whose parent is filtered out or unknown is shown as a root.
//!
//! Memory is bounded: a description, prompt or error is kept cut to [`KEPT_TEXT`] bytes, and of finished tasks only
//! the [`MAX_FINISHED`] most recently changed are kept.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use neuraphage_ipc::{Task, TaskId, TaskState, TaskStatus};

/// Bytes of a task's description, prompt or error kept.
pub const KEPT_TEXT: usize = 2048;

/// Finished tasks (completed, failed, cancelled) kept, the most recently changed.
pub const MAX_FINISHED: usize = 2000;

/// Deepest indentation of a sub-task.
pub const MAX_DEPTH: u8 = 4;

/// One shown row: the task and how deep it is indented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row<'a> {
    /// The task.
    pub task: &'a Task,
    /// 0 for a root.
    pub depth: u8,
}

/// What the pane shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks whose id or description contains this (case-insensitive); empty: all.
    pub text: String,
}

impl Filter {
    fn keeps(&self, task: &Task) -> bool {
        if self.state.is_some_and(|s| s != task.status.state()) {
            return false;
        }
        if self.text.is_empty() {
            return true;
        }
        let needle = self.text.to_lowercase();
        task.id.as_str().contains(&needle) || task.description.to_lowercase().contains(&needle)
    }

    /// Whether anything is filtered.
    pub fn is_active(&self) -> bool {
        self.state.is_some() || !self.text.is_empty()
    }
}

/// The known tasks and their shown order.
#[derive(Debug, Default)]
pub struct TaskTable {
    tasks: HashMap<TaskId, Task>,
    order: Vec<(TaskId, u8)>,
    dirty: bool,
    filter: Filter,
}

impl TaskTable {
    /// Replace everything with a fresh list (the supervisor's `ListTasks`).
    pub fn replace_all(&mut self, tasks: Vec<Task>) {
        self.tasks = tasks.into_iter().map(|t| (t.id.clone(), slim(t))).collect();
        self.bound();
        self.dirty = true;
        self.refresh();
    }

    /// Add or replace one task.
    pub fn upsert(&mut self, task: Task) {
        self.tasks.insert(task.id.clone(), slim(task));
        self.bound();
        self.dirty = true;
        self.refresh();
    }

    /// A status change; false when the task is unknown (the caller fetches it).
    pub fn set_status(&mut self, id: &TaskId, status: &TaskStatus, at: DateTime<Utc>) -> bool {
        let Some(task) = self.tasks.get_mut(id) else { return false };
        task.status = slim_status(status.clone());
        task.updated_at = at;
        self.dirty = true;
        if status.state().is_terminal() {
            self.bound();
        }
        self.refresh();
        true
    }

    /// One task.
    pub fn get(&self, id: &TaskId) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// How many tasks are known.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether no task is known.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The filter in force.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// Set the filter.
    pub fn set_filter(&mut self, filter: Filter) {
        self.filter = filter;
        self.dirty = true;
        self.refresh();
    }

    /// Recompute the order if anything changed.
    pub fn refresh(&mut self) {
        if self.dirty {
            self.order = order(&self.tasks, &self.filter);
            self.dirty = false;
        }
    }

    /// The shown rows, in order.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> + '_ {
        self.order.iter().filter_map(|(id, depth)| self.tasks.get(id).map(|task| Row { task, depth: *depth }))
    }

    /// The shown rows from `start`, at most `count`.
    pub fn window(&self, start: usize, count: usize) -> Vec<Row<'_>> {
        self.order
            .iter()
            .skip(start)
            .take(count)
            .filter_map(|(id, depth)| self.tasks.get(id).map(|task| Row { task, depth: *depth }))
            .collect()
    }

    /// The id shown at `index`.
    pub fn id_at(&self, index: usize) -> Option<&TaskId> {
        self.order.get(index).map(|(id, _)| id)
    }

    /// Where `id` is shown.
    pub fn index_of(&self, id: &TaskId) -> Option<usize> {
        self.order.iter().position(|(i, _)| i == id)
    }

    /// How many rows are shown.
    pub fn shown(&self) -> usize {
        self.order.len()
    }

    /// Tasks by state (every state present, zeros included).
    pub fn counts(&self) -> BTreeMap<TaskState, u64> {
        let mut counts: BTreeMap<TaskState, u64> = TaskState::ALL.iter().map(|s| (*s, 0)).collect();
        for task in self.tasks.values() {
            *counts.entry(task.status.state()).or_default() += 1;
        }
        counts
    }

    /// The tasks waiting on the user, oldest wait first.
    pub fn waiting(&self) -> Vec<&Task> {
        let mut waiting: Vec<&Task> =
            self.tasks.values().filter(|t| t.status.state() == TaskState::WaitingForUser).collect();
        waiting.sort_by(|a, b| a.updated_at.cmp(&b.updated_at).then_with(|| a.id.cmp(&b.id)));
        waiting
    }

    /// Forget the oldest finished tasks beyond [`MAX_FINISHED`].
    fn bound(&mut self) {
        let finished = self.tasks.values().filter(|t| t.status.state().is_terminal()).count();
        if finished <= MAX_FINISHED {
            return;
        }
        let mut old: Vec<(DateTime<Utc>, TaskId)> = self
            .tasks
            .values()
            .filter(|t| t.status.state().is_terminal())
            .map(|t| (t.updated_at, t.id.clone()))
            .collect();
        old.sort();
        for (_, id) in old.into_iter().take(finished - MAX_FINISHED) {
            self.tasks.remove(&id);
        }
    }
}

/// A task with its texts cut to [`KEPT_TEXT`].
fn slim(mut task: Task) -> Task {
    task.description = crate::text::cut(&task.description, KEPT_TEXT).to_owned();
    task.status = slim_status(task.status);
    task
}

fn slim_status(status: TaskStatus) -> TaskStatus {
    let cut = |s: String| crate::text::cut(&s, KEPT_TEXT).to_owned();
    match status {
        TaskStatus::WaitingForUser { prompt } => TaskStatus::WaitingForUser { prompt: cut(prompt) },
        TaskStatus::Blocked { on } => TaskStatus::Blocked { on: cut(on) },
        TaskStatus::Completed { summary } => TaskStatus::Completed { summary: summary.map(cut) },
        TaskStatus::Failed { error, recoverable } => TaskStatus::Failed { error: cut(error), recoverable },
        TaskStatus::Cancelled { reason } => TaskStatus::Cancelled { reason: reason.map(cut) },
        other => other,
    }
}

/// Where a state sorts among siblings (waiting ones are listed apart).
fn rank(state: TaskState) -> u8 {
    match state {
        TaskState::WaitingForUser => 0,
        TaskState::Running => 1,
        TaskState::Blocked => 2,
        TaskState::Queued => 3,
        TaskState::Paused => 4,
        TaskState::Failed | TaskState::Completed | TaskState::Cancelled => 5,
    }
}

fn sibling_order(a: &Task, b: &Task) -> std::cmp::Ordering {
    let (ra, rb) = (rank(a.status.state()), rank(b.status.state()));
    ra.cmp(&rb)
        .then_with(|| {
            if ra == 5 {
                // Finished: newest first.
                b.updated_at.cmp(&a.updated_at)
            } else {
                a.priority.cmp(&b.priority).then_with(|| a.created_at.cmp(&b.created_at))
            }
        })
        .then_with(|| a.id.cmp(&b.id))
}

/// The shown order (see the module doc).
pub fn order(tasks: &HashMap<TaskId, Task>, filter: &Filter) -> Vec<(TaskId, u8)> {
    let kept: HashMap<&TaskId, &Task> = tasks.iter().filter(|(_, t)| filter.keeps(t)).collect();
    let mut waiting: Vec<&Task> =
        kept.values().copied().filter(|t| t.status.state() == TaskState::WaitingForUser).collect();
    waiting.sort_by(|a, b| a.updated_at.cmp(&b.updated_at).then_with(|| a.id.cmp(&b.id)));
    let mut out: Vec<(TaskId, u8)> = waiting.iter().map(|t| (t.id.clone(), 0)).collect();

    let rest: Vec<&Task> = kept.values().copied().filter(|t| t.status.state() != TaskState::WaitingForUser).collect();
    let mut children: HashMap<&TaskId, Vec<&Task>> = HashMap::new();
    let mut roots = Vec::new();
    for task in &rest {
        match task
            .parent
            .as_ref()
            .filter(|p| kept.get(p).is_some_and(|p| p.status.state() != TaskState::WaitingForUser))
        {
            Some(parent) if parent != &task.id => children.entry(parent).or_default().push(task),
            _ => roots.push(*task),
        }
    }
    roots.sort_by(|a, b| sibling_order(a, b));
    for list in children.values_mut() {
        list.sort_by(|a, b| sibling_order(a, b));
    }
    // Depth-first, iteratively (a parent cycle cannot loop: each task is placed once).
    let mut placed: std::collections::HashSet<&TaskId> = std::collections::HashSet::new();
    let mut stack: Vec<(&Task, u8)> = roots.iter().rev().map(|t| (*t, 0)).collect();
    while let Some((task, depth)) = stack.pop() {
        if !placed.insert(&task.id) {
            continue;
        }
        out.push((task.id.clone(), depth));
        if let Some(kids) = children.get(&task.id) {
            for kid in kids.iter().rev() {
                stack.push((kid, (depth + 1).min(MAX_DEPTH)));
            }
        }
    }
    // Tasks only reachable through a parent cycle: shown as roots.
    let mut left: Vec<&Task> = rest.into_iter().filter(|t| !placed.contains(&t.id)).collect();
    left.sort_by(|a, b| sibling_order(a, b));
    out.extend(left.into_iter().map(|t| (t.id.clone(), 0)));
    out
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use neuraphage_ipc::{Priority, RunningPhase};
    use pretty_assertions::assert_eq;

    use super::*;

    pub(crate) fn task(n: u64, status: TaskStatus, changed_secs: i64) -> Task {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).single().unwrap();
        Task {
            id: TaskId::from_bits(n),
            status,
            priority: Priority::DEFAULT,
            description: format!("task {n}"),
            repo: None,
            profile: None,
            parent: None,
            base_commit: None,
            branch: None,
            tier: None,
            persona: None,
            no_watch: false,
            created_at: t0 + Duration::seconds(n as i64),
            updated_at: t0 + Duration::seconds(changed_secs),
        }
    }

    fn waiting(n: u64, since: i64) -> Task {
        task(n, TaskStatus::WaitingForUser { prompt: format!("q{n}") }, since)
    }

    fn running(n: u64) -> Task {
        task(n, TaskStatus::Running { phase: RunningPhase::LlmRequest }, 0)
    }

    fn shown(table: &mut TaskTable) -> Vec<(u64, u8)> {
        table.refresh();
        table.rows().map(|r| (u64::from_str_radix(&r.task.id.as_str()[3..], 16).unwrap(), r.depth)).collect()
    }

    #[test]
    fn waiting_tasks_come_first_oldest_wait_first() {
        let mut table = TaskTable::default();
        table.replace_all(vec![
            running(1),
            waiting(2, 300),
            task(3, TaskStatus::Queued, 0),
            waiting(4, 100),
            task(5, TaskStatus::Completed { summary: None }, 50),
            waiting(6, 200),
            task(7, TaskStatus::Blocked { on: "np-1".into() }, 0),
        ]);
        assert_eq!(shown(&mut table), vec![(4, 0), (6, 0), (2, 0), (1, 0), (7, 0), (3, 0), (5, 0)]);
        let ids: Vec<TaskId> = table.waiting().iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids, [4, 6, 2].map(TaskId::from_bits));
        // A status change moves a task: 1 starts waiting now, after the others.
        table.set_status(&TaskId::from_bits(1), &TaskStatus::WaitingForUser { prompt: "x".into() }, {
            let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).single().unwrap();
            t0 + Duration::seconds(400)
        });
        assert_eq!(shown(&mut table)[..4], [(4, 0), (6, 0), (2, 0), (1, 0)]);
    }

    #[test]
    fn sub_tasks_are_indented_under_their_parent_and_a_cycle_does_not_loop() {
        let mut parent = running(1);
        parent.priority = Priority::LOW;
        let mut child = task(2, TaskStatus::Queued, 0);
        child.parent = Some(TaskId::from_bits(1));
        let mut grandchild = running(3);
        grandchild.parent = Some(TaskId::from_bits(2));
        let other = running(4);
        let mut a = task(5, TaskStatus::Paused, 0);
        a.parent = Some(TaskId::from_bits(6));
        let mut b = task(6, TaskStatus::Paused, 0);
        b.parent = Some(TaskId::from_bits(5));
        let mut table = TaskTable::default();
        table.replace_all(vec![child, grandchild, parent, other, a, b]);
        assert_eq!(shown(&mut table), vec![(4, 0), (1, 0), (2, 1), (3, 2), (5, 0), (6, 0)]);
    }

    #[test]
    fn the_filter_keeps_a_state_and_a_text() {
        let mut table = TaskTable::default();
        let mut fix = running(1);
        fix.description = "Fix the LOGIN bug".into();
        table.replace_all(vec![fix, running(2), waiting(3, 0)]);
        table.set_filter(Filter { state: None, text: "login".into() });
        assert_eq!(shown(&mut table), vec![(1, 0)]);
        table.set_filter(Filter { state: Some(TaskState::WaitingForUser), text: String::new() });
        assert_eq!(shown(&mut table), vec![(3, 0)]);
        table.set_filter(Filter { state: None, text: "np-000000000".into() });
        assert_eq!(shown(&mut table).len(), 3);
    }

    #[test]
    fn finished_tasks_and_long_texts_are_bounded() {
        let mut table = TaskTable::default();
        let mut tasks: Vec<Task> =
            (0..MAX_FINISHED as u64 + 10).map(|n| task(n, TaskStatus::Completed { summary: None }, n as i64)).collect();
        tasks[50].description = "x".repeat(100_000);
        table.replace_all(tasks);
        assert_eq!(table.len(), MAX_FINISHED);
        assert!(table.get(&TaskId::from_bits(3)).is_none(), "the oldest went");
        assert_eq!(table.get(&TaskId::from_bits(50)).unwrap().description.len(), KEPT_TEXT);
    }
}
