//! Caps on the events one task can cause in volume, counted per task, not per process.
//!
//! A task can make its proxy decide (each connection it opens), its worker start, report its sandbox, exit and be
//! lost (each time it kills its own worker), and commits (the `Commit` tool). Each such event kind has a cap per
//! task ([`cap_of`]); the count starts from what the store already holds for the task (so a new worker, a new proxy
//! or a restarted supervisor does not start a fresh count), then goes on in memory. At the cap one more event,
//! [`EventKind::EventsCapped`], says so; past it, events of that kind are only logged.
//!
//! A plan (`TodoWrite`) is recorded with its checkpoint; its `plan_updated` event is capped the same way.
//!
//! Kinds the task cannot repeat at will (created, status changes, escalations, revoked keys) are not capped;
//! checkpoints are bounded by the loop itself (`max-iterations` turns of at most
//! `MAX_TOOL_CALLS_PER_TURN` tools each).

use std::collections::HashMap;
use std::sync::Mutex;

use neuraphage_ipc::{EventKind, TaskId};

/// Proxy decisions recorded per task.
pub const MAX_PROXY_DECISIONS: u64 = 10_000;
/// Events recorded per task of each kind a worker's life causes (start, sandbox report, exit, loss), and commits.
pub const MAX_WORKER_EVENTS: u64 = 1_000;

/// `plan_updated` events recorded per task (each carries the whole plan, up to `MAX_PLAN_BYTES`; the plan itself is
/// stored with the task past the cap all the same).
pub const MAX_PLAN_EVENTS: u64 = 1_000;

/// The cap on events of this kind per task, if the task can cause them in volume.
pub fn cap_of(kind: &EventKind) -> Option<u64> {
    match kind {
        EventKind::ProxyDecision { .. } => Some(MAX_PROXY_DECISIONS),
        EventKind::PlanUpdated { .. } => Some(MAX_PLAN_EVENTS),
        EventKind::WorkerStarted { .. }
        | EventKind::Sandboxed { .. }
        | EventKind::WorkerExited { .. }
        | EventKind::WorkerLost { .. }
        | EventKind::Committed { .. }
        | EventKind::ConversationRepaired { .. }
        | EventKind::Notice { .. }
        | EventKind::SubtaskEnded { .. } => Some(MAX_WORKER_EVENTS),
        _ => None,
    }
}

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Record it.
    Record,
    /// Record it, then an [`EventKind::EventsCapped`] saying the cap is reached.
    RecordLast {
        /// The cap.
        cap: u64,
    },
    /// Only log it.
    Drop,
}

/// Counts per task and kind, in memory, starting from the store's.
#[derive(Debug, Default)]
pub struct EventCaps {
    counts: Mutex<HashMap<(TaskId, &'static str), u64>>,
}

impl EventCaps {
    /// Decide on one more event of `kind` for `task`. `stored` counts the task's events of that kind in the store;
    /// it is asked once per task and kind in this process. If the store cannot be read, the event is recorded.
    pub fn admit<E>(&self, task: &TaskId, kind: &EventKind, stored: impl FnOnce() -> Result<u64, E>) -> Admission {
        let Some(cap) = cap_of(kind) else { return Admission::Record };
        let Ok(mut counts) = self.counts.lock() else { return Admission::Record };
        let key = (task.clone(), kind.name());
        let count = match counts.get_mut(&key) {
            Some(count) => count,
            None => {
                let Ok(n) = stored() else { return Admission::Record };
                counts.entry(key).or_insert(n)
            }
        };
        *count += 1;
        match (*count).cmp(&cap) {
            std::cmp::Ordering::Less => Admission::Record,
            std::cmp::Ordering::Equal => Admission::RecordLast { cap },
            std::cmp::Ordering::Greater => Admission::Drop,
        }
    }

    /// Forget a task's counts (when it ends; a later run counts from the store again).
    pub fn forget(&self, task: &TaskId) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.retain(|(t, _), _| t != task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision() -> EventKind {
        EventKind::ProxyDecision { host: "h".into(), port: 1, allowed: false, reason: "r".into() }
    }

    #[test]
    fn the_count_goes_on_from_the_stores_and_stops_at_the_cap() {
        let caps = EventCaps::default();
        let task: TaskId = "np-0123456789".parse().unwrap();
        let stored = || Ok::<_, ()>(MAX_PROXY_DECISIONS - 2);
        assert_eq!(caps.admit(&task, &decision(), stored), Admission::Record);
        assert_eq!(caps.admit(&task, &decision(), || Err(())), Admission::RecordLast { cap: MAX_PROXY_DECISIONS });
        assert_eq!(caps.admit(&task, &decision(), || Err(())), Admission::Drop);
        // Another kind, another task: counted apart.
        let lost = EventKind::WorkerLost { reason: "x".into(), attempt: 1, retry_in_ms: 0 };
        assert_eq!(caps.admit(&task, &lost, || Ok::<_, ()>(0)), Admission::Record);
        let other: TaskId = "np-0123456788".parse().unwrap();
        assert_eq!(caps.admit(&other, &decision(), || Ok::<_, ()>(0)), Admission::Record);
        // Uncapped kinds are always recorded; a forgotten task counts from the store again.
        let created = EventKind::Created { priority: Default::default() };
        assert_eq!(caps.admit(&task, &created, || Ok::<_, ()>(u64::MAX)), Admission::Record);
        caps.forget(&task);
        assert_eq!(caps.admit(&task, &decision(), || Ok::<_, ()>(0)), Admission::Record);
    }
}
