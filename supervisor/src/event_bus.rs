//! The live event bus: stored events (after their commit) and the model's streamed text, fanned out to subscribers.
//!
//! Publishers never block and never allocate without bound: each [`Subscription`] has a bounded queue (items and
//! bytes); when it is full, items are dropped and counted, and once the subscriber has drained what was queued it is
//! told [`StreamItem::Missed`] (how many stored events, their sequence range to re-read from the store, and how many
//! deltas). Nothing is queued for it in between, so the items it does get are in order with one gap, named.
//!
//! Stored events reach the bus through [`EventBus::publish_committed`], which the store's guard
//! ([`crate::requests::Daemon`]) calls whenever it releases the store: every event committed since the last call is
//! read back (in seq order, under the store's lock, so publication order is commit order) and published. A new
//! subscription is registered under the same lock ([`EventBus::subscribe`]), at a cursor: the backlog is the store
//! up to the cursor, the live tail everything after it — no gap, no duplicate. With no subscriber the cursor is
//! forgotten and nothing is read back.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use neuraphage_ipc::events::StreamItem;
use neuraphage_ipc::llm::StreamDelta;
use neuraphage_ipc::{TaskEvent, TaskId};
use tokio::sync::Notify;

/// Items one subscriber may have queued.
pub const QUEUE_ITEMS: usize = 4096;
/// Bytes (roughly: text carried) one subscriber may have queued.
pub const QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Stored events read back from the store at a time.
pub const PAGE_EVENTS: usize = 256;

/// The bus: subscribers and the publication cursor.
#[derive(Debug, Default)]
pub struct EventBus {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    subscribers: HashMap<u64, Arc<Shared>>,
    next_id: u64,
    /// The last stored event published; `None` while nobody subscribes.
    cursor: Option<u64>,
}

/// One subscriber's side shared with the bus.
#[derive(Debug)]
struct Shared {
    task: Option<TaskId>,
    deltas: bool,
    queue: Mutex<Queue>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<(StreamItem, usize)>,
    bytes: usize,
    missed_events: u64,
    missed_deltas: u64,
    first_missed: Option<u64>,
    last_missed: u64,
}

/// A subscriber's end; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    bus: Arc<EventBus>,
    id: u64,
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here can be left half-changed by a panic that matters: keep using a poisoned lock.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Rough size of an item in a queue.
fn weight(item: &StreamItem) -> usize {
    const BASE: usize = 128;
    match item {
        StreamItem::Delta { delta, .. } => {
            BASE + match delta {
                StreamDelta::Text { text, .. } => text.len(),
                StreamDelta::ToolUseStart { id, name, .. } => id.len() + name.len(),
                StreamDelta::ToolInput { partial_json, .. } => partial_json.len(),
                StreamDelta::Thinking { text, .. } => text.len(),
            }
        }
        // Stored events are bounded at the source (texts cut to a few KiB); count them by their JSON size.
        StreamItem::Event(event) => BASE + serde_json::to_string(&event.kind).map(|s| s.len()).unwrap_or(0),
        _ => BASE,
    }
}

impl EventBus {
    /// Register a subscriber for one task or all, under the store's lock; `last_seq` reads the store's last event
    /// sequence number (asked only when no cursor is kept). Returns the subscription and the cursor: the backlog is
    /// every stored event up to it, the live tail every one after.
    pub fn subscribe<E>(
        self: &Arc<Self>,
        task: Option<TaskId>,
        deltas: bool,
        last_seq: impl FnOnce() -> Result<u64, E>,
    ) -> Result<(Subscription, u64), E> {
        let mut inner = lock(&self.inner);
        let cursor = match inner.cursor {
            Some(c) => c,
            None => last_seq()?,
        };
        inner.cursor = Some(cursor);
        inner.next_id += 1;
        let id = inner.next_id;
        let shared = Arc::new(Shared { task, deltas, queue: Mutex::new(Queue::default()), ready: Notify::new() });
        inner.subscribers.insert(id, shared.clone());
        Ok((Subscription { bus: self.clone(), id, shared }, cursor))
    }

    /// Publish every event committed since the last call: `read(after, limit)` returns stored events with a
    /// sequence number above `after`, oldest first. Call it with the store locked. A failed read is logged and
    /// retried at the next call.
    pub fn publish_committed<E: std::fmt::Display>(
        &self,
        mut read: impl FnMut(u64, usize) -> Result<Vec<TaskEvent>, E>,
    ) {
        let mut inner = lock(&self.inner);
        let Some(mut cursor) = inner.cursor else { return };
        loop {
            let page = match read(cursor, PAGE_EVENTS) {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read new events back for the event bus");
                    break;
                }
            };
            let full = page.len() == PAGE_EVENTS;
            for event in page {
                cursor = cursor.max(event.seq);
                let item = StreamItem::Event(event);
                let w = weight(&item);
                for sub in inner.subscribers.values() {
                    if sub.task.as_ref().is_none_or(|t| matches!(&item, StreamItem::Event(e) if e.task == *t)) {
                        sub.offer(item.clone(), w);
                    }
                }
            }
            if !full {
                break;
            }
        }
        inner.cursor = Some(cursor);
    }

    /// Publish a piece of a task's streamed model answer (live only).
    pub fn publish_delta(&self, task: &TaskId, delta: &StreamDelta) {
        let inner = lock(&self.inner);
        let item = StreamItem::Delta { task: task.clone(), delta: delta.clone() };
        let w = weight(&item);
        for sub in inner.subscribers.values() {
            if sub.deltas && sub.task.as_ref().is_none_or(|t| t == task) {
                sub.offer(item.clone(), w);
            }
        }
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        lock(&self.inner).subscribers.len()
    }
}

impl Shared {
    /// Queue an item, or count it as missed; never blocks on the subscriber.
    fn offer(&self, item: StreamItem, w: usize) {
        let mut q = lock(&self.queue);
        let behind = q.missed_events > 0 || q.missed_deltas > 0;
        if behind || q.items.len() >= QUEUE_ITEMS || q.bytes + w > QUEUE_BYTES {
            match item {
                StreamItem::Event(e) => {
                    q.missed_events += 1;
                    q.first_missed.get_or_insert(e.seq);
                    q.last_missed = e.seq;
                }
                _ => q.missed_deltas += 1,
            }
            return;
        }
        q.bytes += w;
        q.items.push_back((item, w));
        drop(q);
        self.ready.notify_one();
    }

    /// The next item without waiting: queued items first, then what was missed.
    fn try_next(&self) -> Option<StreamItem> {
        let mut q = lock(&self.queue);
        if let Some((item, w)) = q.items.pop_front() {
            q.bytes = q.bytes.saturating_sub(w);
            return Some(item);
        }
        if q.missed_events > 0 || q.missed_deltas > 0 {
            let item = StreamItem::Missed {
                count: q.missed_events,
                resume_from: q.first_missed.unwrap_or(0),
                through: q.last_missed,
                deltas: q.missed_deltas,
            };
            (q.missed_events, q.missed_deltas, q.first_missed, q.last_missed) = (0, 0, None, 0);
            return Some(item);
        }
        None
    }
}

impl Subscription {
    /// The next item, waiting for one.
    pub async fn next(&self) -> StreamItem {
        loop {
            if let Some(item) = self.shared.try_next() {
                return item;
            }
            self.shared.ready.notified().await;
        }
    }

    /// The next item if one is queued.
    pub fn try_next(&self) -> Option<StreamItem> {
        self.shared.try_next()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = lock(&self.bus.inner);
        inner.subscribers.remove(&self.id);
        if inner.subscribers.is_empty() {
            inner.cursor = None;
        }
    }
}

#[cfg(test)]
#[path = "event_bus_tests.rs"]
mod tests;
