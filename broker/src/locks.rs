//! The lock table: named resources (see [`neuraphage_ipc::lock`]) held by tasks, so tasks that share a repository
//! or anything else can take turns.
//!
//! - Acquisition is all-or-nothing: a `Lock` call gets every resource it names or none, and holds nothing while it
//!   waits (so waiting cannot deadlock through partial holds); resources are checked in sorted order.
//! - Waiting is bounded: the caller gives a wait, capped at [`MAX_WAIT`]; at the end it is refused, naming holders.
//! - Deadlocks are refused, not waited out: before (and whenever) a call waits, the wait-for graph (task → tasks
//!   holding what it waits for) is searched; a wait that would close a cycle is refused with the cycle named.
//! - Leases are tied to the holder's link: every link gets a [`Lease`], and dropping it (the link closed: the worker
//!   exited or was killed) frees its locks at once and wakes the waiters.
//! - After a broker restart the table starts empty with a grace period: holders re-claim their locks on their new
//!   link ([`Lease::reclaim`], no waiting); new acquisitions wait until the grace ends, so none can take a resource
//!   a holder has not re-claimed yet.
//!
//! Waiters are woken together when anything changes; the first to retry wins (no FIFO promise).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use neuraphage_ipc::TaskId;
use neuraphage_ipc::lock::{LockInfo, LockOutcome, LockTableView, MAX_RESOURCES_PER_REQUEST, validate_resource};
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest a `Lock` call may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// How long holders have to re-claim their locks after a broker restart.
pub const RESTART_GRACE: Duration = Duration::from_millis(neuraphage_ipc::broker::LOCK_RESTART_GRACE_MS);

/// The table, shared by every link the broker serves.
#[derive(Debug)]
pub struct LockTable {
    state: Mutex<State>,
    changed: watch::Sender<()>,
    grace_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    held: BTreeMap<String, Hold>,
    waiting: BTreeMap<u64, Waiter>,
    next_link: u64,
    next_order: u64,
}

#[derive(Debug)]
struct Hold {
    task: TaskId,
    link: u64,
    since: Instant,
}

#[derive(Debug)]
struct Waiter {
    task: TaskId,
    resources: Vec<String>,
    order: u64,
}

/// One link's hold on the table: what its task acquires through it is freed when it is dropped.
#[derive(Debug)]
pub struct Lease {
    table: Arc<LockTable>,
    link: u64,
    task: TaskId,
}

impl LockTable {
    /// An empty table; `grace` is zero on a first start and [`RESTART_GRACE`] after a restart.
    pub fn new(grace: Duration) -> Arc<LockTable> {
        let grace_until = (!grace.is_zero()).then(|| Instant::now() + grace);
        Arc::new(LockTable { state: Mutex::default(), changed: watch::Sender::new(()), grace_until })
    }

    /// A lease for a new link of `task` (the task the supervisor said is on it).
    pub fn lease(self: &Arc<Self>, task: TaskId) -> Lease {
        let mut state = self.state();
        state.next_link += 1;
        Lease { table: self.clone(), link: state.next_link, task }
    }

    /// Who holds what and who waits, for `neuraphage locks`.
    pub fn view(&self) -> LockTableView {
        let state = self.state();
        let now = Instant::now();
        let mut waiters: Vec<&Waiter> = state.waiting.values().collect();
        waiters.sort_by_key(|w| w.order);
        let locks = state
            .held
            .iter()
            .map(|(resource, hold)| LockInfo {
                resource: resource.clone(),
                holder: hold.task.clone(),
                held_ms: now.saturating_duration_since(hold.since).as_millis() as u64,
                waiters: waiters.iter().filter(|w| w.resources.contains(resource)).map(|w| w.task.clone()).collect(),
            })
            .collect();
        let grace_remaining_ms = self.grace_left(now).map(|d| d.as_millis() as u64);
        LockTableView { locks, grace_remaining_ms }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change below is made whole before the guard drops, so a poisoned lock holds a consistent table.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn grace_left(&self, now: Instant) -> Option<Duration> {
        self.grace_until.filter(|until| *until > now).map(|until| until - now)
    }

    fn notify(&self) {
        self.changed.send_replace(());
    }
}

impl Lease {
    /// The task this lease is for.
    pub fn task(&self) -> &TaskId {
        &self.task
    }

    /// Acquire every one of `resources`, or none: wait up to `wait` (capped at [`MAX_WAIT`]) while others hold any
    /// of them, and refuse at once a wait that would close a wait-for cycle.
    pub async fn acquire(&self, resources: Vec<String>, wait: Duration) -> LockOutcome {
        let resources = match checked(resources) {
            Ok(r) => r,
            Err(reason) => return refused(reason),
        };
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        loop {
            let mut changed = self.table.changed.subscribe();
            let grace_end = {
                let mut state = self.table.state();
                let now = Instant::now();
                let grace = self.table.grace_left(now);
                let blockers = state.blockers(&self.task, &resources);
                let all_mine = blockers.is_empty() && resources.iter().all(|r| state.held.contains_key(r));
                if blockers.is_empty() && (grace.is_none() || all_mine) {
                    state.waiting.remove(&self.link);
                    for r in &resources {
                        state.held.entry(r.clone()).or_insert(Hold {
                            task: self.task.clone(),
                            link: self.link,
                            since: now,
                        });
                    }
                    return LockOutcome::Granted { resources };
                }
                if let Some(cycle) = state.cycle_through(&self.task, &blockers) {
                    state.waiting.remove(&self.link);
                    let shown: Vec<&str> = cycle.iter().map(TaskId::as_str).collect();
                    return LockOutcome::Refused {
                        reason: format!(
                            "deadlock: waiting for {} would close the wait-for cycle {}; nothing was acquired. \
                             Release what you hold (Unlock) and ask again for everything in one Lock call",
                            resources.join(", "),
                            shown.join(" → ")
                        ),
                        cycle,
                    };
                }
                if now >= deadline {
                    state.waiting.remove(&self.link);
                    let held_by = blockers.iter().map(TaskId::as_str).collect::<Vec<_>>().join(", ");
                    let reason = if blockers.is_empty() {
                        "the broker restarted and its grace period for holders to re-claim their locks has not ended; \
                         try again"
                            .to_owned()
                    } else {
                        format!("timed out: {} still held by {held_by}; nothing was acquired", resources.join(", "))
                    };
                    return refused(reason);
                }
                let order = match state.waiting.get(&self.link) {
                    Some(w) if w.resources == resources => w.order,
                    _ => {
                        state.next_order += 1;
                        state.next_order
                    }
                };
                let waiter = Waiter { task: self.task.clone(), resources: resources.clone(), order };
                state.waiting.insert(self.link, waiter);
                grace.map(|g| now + g)
            };
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = async { match grace_end { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {}
            }
        }
    }

    /// Release `resources` (everything this task holds when empty); what was not held is ignored.
    pub fn release(&self, resources: Vec<String>) -> LockOutcome {
        let mut state = self.table.state();
        let released: Vec<String> = state
            .held
            .iter()
            .filter(|(r, h)| h.task == self.task && (resources.is_empty() || resources.contains(r)))
            .map(|(r, _)| r.clone())
            .collect();
        for r in &released {
            state.held.remove(r);
        }
        self.table.notify();
        LockOutcome::Released { resources: released }
    }

    /// After a broker restart: take back what this task held, without waiting. Refused (nothing taken) if another
    /// task holds any of them.
    pub fn reclaim(&self, resources: Vec<String>) -> LockOutcome {
        let resources = match checked(resources) {
            Ok(r) => r,
            Err(reason) => return refused(reason),
        };
        let mut state = self.table.state();
        let blockers = state.blockers(&self.task, &resources);
        if !blockers.is_empty() {
            let held_by = blockers.iter().map(TaskId::as_str).collect::<Vec<_>>().join(", ");
            return refused(format!("cannot re-claim {}: now held by {held_by}", resources.join(", ")));
        }
        let now = Instant::now();
        for r in &resources {
            state.held.entry(r.clone()).or_insert(Hold { task: self.task.clone(), link: self.link, since: now });
        }
        LockOutcome::Granted { resources }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut state = self.table.state();
        state.held.retain(|_, hold| hold.link != self.link);
        state.waiting.remove(&self.link);
        drop(state);
        self.table.notify();
    }
}

impl State {
    /// Tasks other than `task` holding any of `resources`.
    fn blockers(&self, task: &TaskId, resources: &[String]) -> BTreeSet<TaskId> {
        resources.iter().filter_map(|r| self.held.get(r)).filter(|h| &h.task != task).map(|h| h.task.clone()).collect()
    }

    /// If `task` waited for `blockers`, the cycle that would close: `[task, …, task]`.
    fn cycle_through(&self, task: &TaskId, blockers: &BTreeSet<TaskId>) -> Option<Vec<TaskId>> {
        // Edges of the wait-for graph as it stands, without `task`'s own (it is about to replace them).
        let mut edges: BTreeMap<&TaskId, BTreeSet<TaskId>> = BTreeMap::new();
        for w in self.waiting.values().filter(|w| &w.task != task) {
            edges.entry(&w.task).or_default().extend(self.blockers(&w.task, &w.resources));
        }
        // Depth-first from each blocker, looking for `task`.
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Vec<TaskId>> = blockers.iter().rev().map(|b| vec![task.clone(), b.clone()]).collect();
        while let Some(path) = stack.pop() {
            let last = path.last()?.clone();
            if &last == task {
                return Some(path);
            }
            if !seen.insert(last.clone()) {
                continue;
            }
            for next in edges.get(&last).into_iter().flatten().rev() {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
        None
    }
}

/// Validate, sort and deduplicate a request's names.
fn checked(mut resources: Vec<String>) -> Result<Vec<String>, String> {
    if resources.is_empty() {
        return Err("name at least one resource".into());
    }
    if resources.len() > MAX_RESOURCES_PER_REQUEST {
        return Err(format!("{} resources in one call; the limit is {MAX_RESOURCES_PER_REQUEST}", resources.len()));
    }
    for r in &resources {
        validate_resource(r)?;
    }
    resources.sort();
    resources.dedup();
    Ok(resources)
}

fn refused(reason: String) -> LockOutcome {
    LockOutcome::Refused { reason, cycle: Vec::new() }
}

#[cfg(test)]
#[path = "locks_tests.rs"]
mod tests;
