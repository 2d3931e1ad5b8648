//! A sliding log of what was sent on one key in the last window, for a provider that meters by window rather than
//! by bucket: at most `limit` per window, counted from when each answer arrived (the provider received the request
//! before that), and while a request is in flight however long it takes.

use std::time::{Duration, Instant};

use crate::limiter::DIMENSIONS;

/// Slack added to a send's window: the provider starts counting when the request reaches it, a moment after.
const MARGIN: Duration = Duration::from_millis(5);

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    expires: Instant,
    cost: [u64; DIMENSIONS],
    in_flight: bool,
}

/// The log.
#[derive(Debug, Default)]
pub struct WindowLog {
    entries: Vec<Entry>,
    used: [u64; DIMENSIONS],
}

impl WindowLog {
    fn expire(&mut self, now: Instant) {
        let used = &mut self.used;
        self.entries.retain(|e| {
            let keep = e.expires > now || e.in_flight;
            if !keep {
                for (u, c) in used.iter_mut().zip(e.cost) {
                    *u = u.saturating_sub(c);
                }
            }
            keep
        });
    }

    /// Whether `cost` fits under `limits` now; else the earliest moment it may.
    pub fn fits(
        &mut self,
        now: Instant,
        cost: [u64; DIMENSIONS],
        limits: [Option<u64>; DIMENSIONS],
    ) -> Result<(), Instant> {
        self.expire(now);
        let fits = |used: &[u64; DIMENSIONS]| {
            limits.iter().zip(used).zip(cost).all(|((l, u), c)| l.is_none_or(|l| u.saturating_add(c) <= l || *u == 0))
        };
        if fits(&self.used) {
            return Ok(());
        }
        let mut order: Vec<&Entry> = self.entries.iter().filter(|e| !e.in_flight).collect();
        order.sort_by_key(|e| e.expires);
        let mut used = self.used;
        for e in order {
            for (u, c) in used.iter_mut().zip(e.cost) {
                *u = u.saturating_sub(c);
            }
            if fits(&used) {
                return Err(e.expires);
            }
        }
        // Only requests in flight stand in the way: their answers wake the queue.
        Err(now + Duration::from_secs(60))
    }

    /// Count a send.
    pub fn push(&mut self, id: u64, now: Instant, window: Duration, cost: [u64; DIMENSIONS]) {
        for (u, c) in self.used.iter_mut().zip(cost) {
            *u = u.saturating_add(c);
        }
        self.entries.push(Entry { id, expires: now + window + MARGIN, cost, in_flight: true });
    }

    /// Its answer arrived at `at`: it counts until a window after that.
    pub fn answered(&mut self, id: u64, at: Instant, window: Duration) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.in_flight = false;
            e.expires = e.expires.max(at + window + MARGIN);
        }
    }

    /// Settle a send: `Some` replaces its cost with what was reported, `None` refunds it.
    pub fn settle(&mut self, id: u64, at: Instant, window: Duration, actual: Option<[u64; DIMENSIONS]>) {
        let Some(pos) = self.entries.iter().position(|e| e.id == id) else { return };
        let entry = &mut self.entries[pos];
        if entry.in_flight {
            entry.in_flight = false;
            entry.expires = entry.expires.max(at + window + MARGIN);
        }
        let new = actual.unwrap_or([0; DIMENSIONS]);
        for ((u, old), n) in self.used.iter_mut().zip(entry.cost.iter_mut()).zip(new) {
            *u = u.saturating_sub(*old).saturating_add(n);
            *old = n;
        }
        if actual.is_none() {
            self.entries.swap_remove(pos);
        }
    }

    /// What the window holds now.
    pub fn used(&mut self, now: Instant) -> [u64; DIMENSIONS] {
        self.expire(now);
        self.used
    }
}
