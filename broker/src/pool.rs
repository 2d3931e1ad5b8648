//! A pool of API keys of one provider and the queue of requests waiting for them.
//!
//! Requests wait in one queue per pool, ordered by task priority (0 first); among equal priorities the task that
//! has been served least goes first (fair queuing by task, not by request: a task sending many requests does not
//! crowd out one sending few; the router counts a sub-task as its tree's top-level task, so making sub-tasks does not
//! multiply a task's share). A request goes to the key with the most headroom that can take its reservation
//! ([`KeyLimiter`]); when none can, the queue waits until the earliest moment one can, and then releases the request
//! first in order: as a key's bucket refills one request at a time, a priority-0 request that joins the queue is sent
//! at the next refill, whatever the backlog. An answer's rate-limit headers are learnt as soon as its head arrives
//! ([`Grant::observe`]), and what a key learnt is written to the broker's state file ([`LearntStore`]). A key that
//! answers 401/403 is taken out of the pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use neuraphage_ipc::TaskId;
use neuraphage_ipc::llm::{LlmErrorKind, LlmFailure};
use tokio::sync::{Notify, oneshot};

use crate::learnt::{Learnt, LearntStore};
use crate::limiter::{Cost, KeyLimiter, RateHeaders, Reservation};
use crate::provider::Provider;

/// How long a request waits before its task is told it is queued, then how often the detail is refreshed.
pub const QUEUED_REPORT: Duration = Duration::from_millis(500);

/// One key of a pool.
#[derive(Debug)]
pub struct Key {
    /// A name for logs and events (`pool#2`, or the name configured): never the key itself.
    pub label: String,
    /// The client that sends with this key.
    pub provider: Provider,
    limiter: KeyLimiter,
    revoked: Option<String>,
    /// Where what its limiter learns is kept, and under which name.
    memory: Option<(Arc<LearntStore>, String)>,
}

impl Key {
    /// A key with its client and limiter.
    pub fn new(label: String, provider: Provider, limiter: KeyLimiter) -> Key {
        Key { label, provider, limiter, revoked: None, memory: None }
    }

    /// Start from what `store` holds under `hash` (unless the limits were configured), and keep what is learnt
    /// there.
    pub fn remembered(mut self, store: Arc<LearntStore>, hash: String) -> Key {
        if let Some(learnt) = store.get(&hash)
            && !self.limiter.limits().iter().any(Option::is_some)
        {
            self.limiter.restore(&learnt);
        }
        self.memory = Some((store, hash));
        self
    }
}

struct Waiter {
    seq: u64,
    task: TaskId,
    priority: u8,
    cost: Cost,
    avoid: Option<usize>,
    tx: oneshot::Sender<Result<Grant, LlmFailure>>,
}

struct State {
    keys: Vec<Key>,
    waiting: Vec<Waiter>,
    /// Requests granted per task, in virtual time (a task that starts waiting is brought up to the least-served
    /// waiting task, so past idleness buys no burst).
    served: HashMap<TaskId, u64>,
    next_seq: u64,
    next_wake: Option<Instant>,
}

/// A pool of keys and its queue.
pub struct Pool {
    /// The pool's name.
    pub name: String,
    state: Mutex<State>,
    wake: Arc<Notify>,
    me: Weak<Pool>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).finish_non_exhaustive()
    }
}

/// A request's permission to send on one key, holding its reservation until settled.
#[derive(Debug)]
pub struct Grant {
    pool: Arc<Pool>,
    /// The key's index in the pool.
    pub key: usize,
    /// The key's label.
    pub label: String,
    /// The client to send with.
    pub provider: Provider,
    reservation: Option<Reservation>,
    cost: Cost,
}

impl Grant {
    /// The answer's head arrived, with these rate-limit headers (`None`: it had none): learn from them now, before
    /// the body, and let the queue go on.
    pub fn observe(&self, headers: Option<&RateHeaders>) {
        if let Some(reservation) = self.reservation {
            self.pool.observe(self.key, reservation, headers);
        }
    }

    /// Settle the reservation: with the usage reported (`Some`), or refunded (`None`: the provider refused the
    /// request without counting it); pause the key for `retry_after`.
    pub fn settle(mut self, actual: Option<Cost>, retry_after: Option<Duration>) {
        if let Some(reservation) = self.reservation.take() {
            self.pool.settle(self.key, reservation, actual, retry_after);
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        // Dropped unsettled (the caller went away mid-call): keep the estimate counted.
        if let Some(reservation) = self.reservation.take() {
            self.pool.settle(self.key, reservation, Some(self.cost), None);
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Pool {
    /// A pool of `keys`; its queue's timer runs on the current tokio runtime and stops when the pool is dropped.
    pub fn new(name: String, keys: Vec<Key>) -> Arc<Pool> {
        let state = State { keys, waiting: Vec::new(), served: HashMap::new(), next_seq: 0, next_wake: None };
        let wake = Arc::new(Notify::new());
        let pool = Arc::new_cyclic(|me| Pool { name, state: Mutex::new(state), wake: wake.clone(), me: me.clone() });
        tokio::spawn(timer(Arc::downgrade(&pool), wake));
        pool
    }

    /// Labels of the keys and whether each is usable.
    pub fn keys(&self) -> Vec<(String, bool)> {
        lock(&self.state).keys.iter().map(|k| (k.label.clone(), k.revoked.is_none())).collect()
    }

    /// The pool's headroom in each dimension: the mean over its usable keys of the fraction of that bucket free
    /// (`None`: no key has that limit); a pool whose keys are all revoked has none left.
    pub fn headroom(&self) -> [Option<f64>; crate::limiter::DIMENSIONS] {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let mut sums = [(0.0f64, 0u32); crate::limiter::DIMENSIONS];
        let mut usable = 0;
        for key in state.keys.iter_mut().filter(|k| k.revoked.is_none()) {
            usable += 1;
            for (sum, f) in sums.iter_mut().zip(key.limiter.fractions(now)) {
                if let Some(f) = f {
                    sum.0 += f;
                    sum.1 += 1;
                }
            }
        }
        if usable == 0 && !state.keys.is_empty() {
            return [Some(0.0); crate::limiter::DIMENSIONS];
        }
        sums.map(|(sum, n)| (n > 0).then(|| sum / f64::from(n)))
    }

    /// The first usable key's client (for describing the pool).
    pub fn provider(&self) -> Option<Provider> {
        lock(&self.state).keys.iter().find(|k| k.revoked.is_none()).map(|k| k.provider.clone())
    }

    /// Wait for a key that can take `cost`, in priority and fair order, preferring another key than `avoid`.
    /// `on_wait(waited, ahead)` is called while the request is queued: after [`QUEUED_REPORT`], then every second.
    pub async fn acquire(
        self: &Arc<Self>,
        task: &TaskId,
        priority: u8,
        cost: Cost,
        avoid: Option<usize>,
        on_wait: &mut (dyn FnMut(Duration, usize) + Send),
    ) -> Result<Grant, LlmFailure> {
        let (tx, mut rx) = oneshot::channel();
        let (seq, waiting) = {
            let mut state = lock(&self.state);
            state.next_seq += 1;
            let seq = state.next_seq;
            let floor = state.waiting.iter().filter_map(|w| state.served.get(&w.task)).min().copied().unwrap_or(0);
            let served = state.served.entry(task.clone()).or_insert(0);
            *served = (*served).max(floor);
            state.waiting.push(Waiter { seq, task: task.clone(), priority, cost, avoid, tx });
            self.pump(&mut state, Instant::now());
            (seq, state.next_wake.is_some())
        };
        if waiting {
            self.wake.notify_one();
        }
        let started = Instant::now();
        let mut report = QUEUED_REPORT;
        loop {
            match tokio::time::timeout(report, &mut rx).await {
                Ok(Ok(granted)) => return granted,
                Ok(Err(_)) => return Err(no_key(&self.name)),
                Err(_) => {
                    let ahead = {
                        let state = lock(&self.state);
                        let me = state.waiting.iter().find(|w| w.seq == seq).map(|w| (w.priority, w.seq));
                        me.map_or(0, |(p, s)| {
                            state.waiting.iter().filter(|w| w.priority < p || (w.priority == p && w.seq < s)).count()
                        })
                    };
                    on_wait(started.elapsed(), ahead);
                    report = Duration::from_secs(1);
                }
            }
        }
    }

    /// Take a key out of the pool (it answered 401/403). Waiters are failed if no usable key is left.
    pub fn revoke(&self, key: usize, reason: String) {
        let mut state = lock(&self.state);
        if let Some(k) = state.keys.get_mut(key) {
            k.revoked = Some(reason);
        }
        self.pump(&mut state, Instant::now());
        let waiting = state.next_wake.is_some();
        drop(state);
        if waiting {
            self.wake.notify_one();
        }
    }

    fn observe(&self, key: usize, reservation: Reservation, headers: Option<&RateHeaders>) {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let mut learnt: Option<(Arc<LearntStore>, String, Learnt)> = None;
        if let Some(k) = state.keys.get_mut(key) {
            k.limiter.observe(now, reservation, headers);
            if let Some(l) = k.limiter.take_learnt()
                && let Some((store, hash)) = &k.memory
            {
                learnt = Some((store.clone(), hash.clone(), l));
            }
        }
        self.pump(&mut state, now);
        let waiting = state.next_wake.is_some();
        drop(state);
        if waiting {
            self.wake.notify_one();
        }
        if let Some((store, hash, l)) = learnt {
            // A synced write: off the async threads (the store's lock keeps the writes in order).
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || store.put(&hash, l))),
                Err(_) => store.put(&hash, l),
            }
        }
    }

    fn settle(&self, key: usize, reservation: Reservation, actual: Option<Cost>, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut state = lock(&self.state);
        if let Some(k) = state.keys.get_mut(key) {
            k.limiter.settle(now, reservation, actual);
            if let Some(wait) = retry_after {
                k.limiter.pause_until(now + wait);
            }
        }
        self.pump(&mut state, now);
        let waiting = state.next_wake.is_some();
        drop(state);
        if waiting {
            self.wake.notify_one();
        }
    }

    /// Grant what can be granted now, in order; remember when to look again.
    fn pump(self: &Pool, state: &mut State, now: Instant) {
        state.waiting.retain(|w| !w.tx.is_closed());
        state.next_wake = None;
        while !state.waiting.is_empty() {
            if state.keys.iter().all(|k| k.revoked.is_some()) {
                for w in state.waiting.drain(..) {
                    let _ = w.tx.send(Err(no_key(&self.name)));
                }
                return;
            }
            let served = &state.served;
            let Some(best) = (0..state.waiting.len()).min_by_key(|&i| {
                let w = &state.waiting[i];
                (w.priority, served.get(&w.task).copied().unwrap_or(0), w.seq)
            }) else {
                return;
            };
            let (cost, avoid) = (state.waiting[best].cost, state.waiting[best].avoid);
            let mut order: Vec<(usize, f64)> = state
                .keys
                .iter_mut()
                .enumerate()
                .filter(|(_, k)| k.revoked.is_none())
                .map(|(i, k)| (i, k.limiter.headroom(now) - if Some(i) == avoid { 2.0 } else { 0.0 }))
                .collect();
            order.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut earliest: Option<Instant> = None;
            let mut granted = None;
            for (i, _) in order {
                match state.keys[i].limiter.try_reserve(now, cost) {
                    Ok(r) => {
                        granted = Some((i, r));
                        break;
                    }
                    Err(at) => earliest = Some(earliest.map_or(at, |e| e.min(at))),
                }
            }
            let Some((key, reservation)) = granted else {
                state.next_wake = earliest;
                return;
            };
            let waiter = state.waiting.swap_remove(best);
            *state.served.entry(waiter.task.clone()).or_insert(0) += 1;
            let k = &state.keys[key];
            // The pool outlives every grant: grants hold it by an Arc made from the caller's.
            let grant = |pool: Arc<Pool>| Grant {
                pool,
                key,
                label: k.label.clone(),
                provider: k.provider.clone(),
                reservation: Some(reservation),
                cost,
            };
            match self.me.upgrade() {
                Some(pool) => {
                    if let Err(Ok(mut unsent)) = waiter.tx.send(Ok(grant(pool))) {
                        // The caller went away: refund without re-entering the lock.
                        if let Some(r) = unsent.reservation.take() {
                            state.keys[key].limiter.settle(now, r, None);
                        }
                    }
                }
                None => return,
            }
        }
    }
}

fn no_key(pool: &str) -> LlmFailure {
    LlmFailure {
        kind: LlmErrorKind::Auth,
        message: format!("no usable key left in pool {pool}: every key was refused (401/403)"),
        status: None,
        retryable: false,
        retry_after_ms: None,
    }
}

/// Wake the queue when its earliest wait is over; ends soon after the pool is dropped.
async fn timer(pool: Weak<Pool>, wake: Arc<Notify>) {
    loop {
        let next = match pool.upgrade() {
            Some(pool) => lock(&pool.state).next_wake,
            None => return,
        };
        let idle = Instant::now() + Duration::from_secs(1);
        let at = next.map_or(idle, |n| n.min(idle));
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = wake.notified() => {}
        }
        let Some(pool) = pool.upgrade() else { return };
        let mut state = lock(&pool.state);
        pool.pump(&mut state, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::{DIMENSIONS, REQUESTS};
    use crate::provider::{ProviderConfig, ProviderKind};

    /// A pool of one key that takes one request per hour: each grant must be refunded for the next to go.
    fn one_at_a_time() -> Arc<Pool> {
        let provider = Provider::new(ProviderConfig::new(ProviderKind::Anthropic, "sk-test")).unwrap();
        let mut limits = [None; DIMENSIONS];
        limits[REQUESTS] = Some(1);
        let limiter = KeyLimiter::new(Duration::from_secs(3600), limits);
        Pool::new("p".into(), vec![Key::new("p#1".into(), provider, limiter)])
    }

    fn task(n: u64) -> TaskId {
        TaskId::from_bits(n)
    }

    /// Queue `(task, priority)` requests behind a held grant, then release one at a time; the order served.
    async fn order(pool: &Arc<Pool>, requests: &[(u64, u8)]) -> Vec<u64> {
        let held = pool.acquire(&task(999), 0, Cost::request(1, 1), None, &mut |_, _| {}).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for &(t, p) in requests {
            let (pool, tx) = (pool.clone(), tx.clone());
            tokio::spawn(async move {
                let grant = pool.acquire(&task(t), p, Cost::request(1, 1), None, &mut |_, _| {}).await.unwrap();
                tx.send((t, grant)).unwrap();
            });
            // Let each waiter enqueue in turn.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        held.settle(None, None);
        let mut served = Vec::new();
        for _ in requests {
            let (t, grant) = rx.recv().await.unwrap();
            served.push(t);
            grant.settle(None, None);
        }
        served
    }

    #[tokio::test]
    async fn higher_priority_goes_first() {
        let pool = one_at_a_time();
        assert_eq!(order(&pool, &[(1, 4), (2, 4), (3, 0), (4, 2)]).await, vec![3, 4, 1, 2]);
    }

    #[tokio::test]
    async fn equal_priorities_share_by_task_not_by_request() {
        let pool = one_at_a_time();
        // Task 1 queues three requests before task 2 queues one: task 2 still goes second.
        assert_eq!(order(&pool, &[(1, 2), (1, 2), (1, 2), (2, 2)]).await, vec![1, 2, 1, 1]);
    }

    #[tokio::test]
    async fn a_waiting_request_is_reported_and_a_revoked_pool_fails_its_waiters() {
        let pool = one_at_a_time();
        let held = pool.acquire(&task(1), 0, Cost::request(1, 1), None, &mut |_, _| {}).await.unwrap();
        let waiter = {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut reports = Vec::new();
                let result = pool
                    .acquire(&task(2), 0, Cost::request(1, 1), None, &mut |w, ahead| reports.push((w, ahead)))
                    .await;
                (result.map(|_| ()), reports)
            })
        };
        tokio::time::sleep(QUEUED_REPORT + Duration::from_millis(300)).await;
        pool.revoke(0, "401".into());
        let (result, reports) = waiter.await.unwrap();
        assert_eq!(result.unwrap_err().kind, LlmErrorKind::Auth);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].1, 0);
        drop(held);
    }
}
