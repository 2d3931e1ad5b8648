//! One API key's rate limits as the providers meter them: per dimension (requests, input tokens, output tokens, and
//! OpenAI's tokens) a [`Bucket`] of up to `limit`, refilled continuously at `limit / window`.
//!
//! A caller [`KeyLimiter::try_reserve`]s its estimated cost (input tokens estimated from the request, less what the
//! prompt cache will serve; output tokens as `max_tokens`) before it sends; when it does not fit, it learns the
//! moment it will, so the queue releases one request as soon as the refill holds it, never in bursts. When the
//! answer's head arrives ([`KeyLimiter::observe`]), its rate-limit headers ([`RateHeaders`]) correct the model: the
//! limit sets the refill rate; `remaining` caps the level (less what was sent since and not yet answered: never
//! assumed higher than the provider says); `remaining + rate × reset` is the provider's bucket size (Anthropic may
//! enforce 60 a minute as a bucket of one a second). The reservation is [`KeyLimiter::settle`]d with the usage
//! reported (or refunded when the provider refused the request).
//!
//! A provider that meters by window rather than by bucket shows it in its headers: its `reset` is when the oldest
//! request leaves the window, so `remaining + rate × reset` exceeds the limit (a bucket's never does). Such a key
//! is also held to a sliding log of the last window ([`WindowLog`]), so it sees no 429 either.
//!
//! Until a key's first answer has said its limits, [`COLD_START`] requests go out at once; limits configured, or
//! learnt by an earlier broker ([`Learnt`]), need no such start.
//!
//! Why not `governor`: its GCRA cells admit a fixed cost up front and cannot settle a reservation to the cost later
//! reported, nor take a level the provider reports.

use std::time::{Duration, Instant};

use crate::bucket::Bucket;
use crate::learnt::Learnt;
pub use crate::rate_headers::{Dimension, RateHeaders, go_duration};
use crate::window_log::WindowLog;

/// The dimensions a key is limited in.
pub const DIMENSIONS: usize = 4;
/// Index of requests.
pub const REQUESTS: usize = 0;
/// Index of input tokens.
pub const INPUT: usize = 1;
/// Index of output tokens.
pub const OUTPUT: usize = 2;
/// Index of input and output tokens together (OpenAI's `tokens`).
pub const TOKENS: usize = 3;
/// Names of the dimensions, for messages.
pub const NAMES: [&str; DIMENSIONS] = ["requests", "input tokens", "output tokens", "tokens"];

/// Requests let out at once on a key whose limits nobody has said yet. Four: the smallest published per-minute
/// limits (Anthropic's tier 1, 50 requests a minute) hold four in their bucket many times over, so a cold start
/// costs no 429; and the first answer's head, which comes with the status line well within a second, replaces the
/// guess, so more would buy nothing but risk.
pub const COLD_START: usize = 4;

/// The share of its bucket a key restored from the state file starts with: after a restart the provider's bucket is
/// anywhere between empty and full, and the first answer's head says where.
const RESTORED_LEVEL: f64 = 0.25;

/// The cost of one request in each dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost(pub [u64; DIMENSIONS]);

impl Cost {
    /// One request of `input` and `output` tokens.
    pub fn request(input: u64, output: u64) -> Cost {
        Cost([1, input, output, input.saturating_add(output)])
    }
}

/// A reservation held by a request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation(u64);

#[derive(Debug, Clone)]
struct Flight {
    id: u64,
    cost: [u64; DIMENSIONS],
    /// The buckets it was taken from (a bucket learnt while it was in flight was not).
    debited: [bool; DIMENSIONS],
    /// Its answer's head arrived.
    heard: bool,
}

/// One key's buckets and what is in flight on it.
#[derive(Debug)]
pub struct KeyLimiter {
    window: Duration,
    buckets: [Option<Bucket>; DIMENSIONS],
    log: WindowLog,
    /// The provider meters by window: the log binds too.
    windowed: bool,
    /// Limits were configured or restored, or an answer's head arrived: no cold start.
    known: bool,
    flights: Vec<Flight>,
    next_id: u64,
    paused_until: Option<Instant>,
    /// What was learnt changed since [`KeyLimiter::take_learnt`].
    dirty: bool,
}

impl KeyLimiter {
    /// A key limited per `window` by `limits` (`None`: not known yet; it is learnt from the first answer).
    /// Configured limits start with full buckets.
    pub fn new(window: Duration, limits: [Option<u64>; DIMENSIONS]) -> KeyLimiter {
        let now = Instant::now();
        KeyLimiter {
            window,
            buckets: limits.map(|l| l.map(|l| Bucket::new(l, window, l as f64, now))),
            log: WindowLog::default(),
            windowed: false,
            known: limits.iter().any(Option::is_some),
            flights: Vec::new(),
            next_id: 0,
            paused_until: None,
            dirty: false,
        }
    }

    /// The limits known now.
    pub fn limits(&self) -> [Option<u64>; DIMENSIONS] {
        std::array::from_fn(|i| self.buckets[i].as_ref().map(Bucket::limit))
    }

    /// Whether the provider was seen to meter this key by window.
    pub fn windowed(&self) -> bool {
        self.windowed
    }

    /// The fraction of the tightest bucket still free (before a cold start's first answer: of the cold start).
    pub fn headroom(&mut self, now: Instant) -> f64 {
        if !self.known {
            return 1.0 - self.flights.len() as f64 / COLD_START as f64;
        }
        self.buckets
            .iter_mut()
            .flatten()
            .map(|b| if b.capacity() <= 0.0 { 0.0 } else { (b.level(now) / b.capacity()).clamp(0.0, 1.0) })
            .fold(1.0, f64::min)
    }

    /// Reserve `cost` now, or say when it may fit. A cost larger than a whole bucket goes when the bucket is full.
    pub fn try_reserve(&mut self, now: Instant, cost: Cost) -> Result<Reservation, Instant> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Err(until);
            }
            self.paused_until = None;
        }
        if !self.known && self.flights.len() >= COLD_START {
            // The first answer's head wakes the queue.
            return Err(now + self.window);
        }
        let mut at = now;
        for (b, c) in self.buckets.iter_mut().zip(cost.0) {
            if let Some(b) = b {
                at = at.max(b.when(now, c));
            }
        }
        if self.windowed
            && let Err(t) = self.log.fits(now, cost.0, self.limits())
        {
            at = at.max(t);
        }
        if at > now {
            return Err(at);
        }
        self.next_id += 1;
        let id = self.next_id;
        let mut debited = [false; DIMENSIONS];
        for ((b, c), d) in self.buckets.iter_mut().zip(cost.0).zip(debited.iter_mut()) {
            if let Some(b) = b {
                b.take(now, c as f64);
                *d = true;
            }
        }
        self.log.push(id, now, self.window, cost.0);
        self.flights.push(Flight { id, cost: cost.0, debited, heard: false });
        Ok(Reservation(id))
    }

    /// The head of `reservation`'s answer arrived `now`, with these rate-limit headers (`None`: it had none).
    pub fn observe(&mut self, now: Instant, reservation: Reservation, headers: Option<&RateHeaders>) {
        let Some(pos) = self.flights.iter().position(|f| f.id == reservation.0) else { return };
        if self.flights[pos].heard {
            return;
        }
        self.flights[pos].heard = true;
        if !self.known {
            self.known = true;
            self.dirty = true;
        }
        self.log.answered(reservation.0, now, self.window);
        let Some(headers) = headers else { return };
        for (i, d) in headers.0.iter().enumerate() {
            let Some(limit) = d.limit else { continue };
            // Sent after this one and not yet answered: perhaps not counted in what the provider says remains.
            let after: u64 = self.flights.iter().filter(|f| f.id > reservation.0 && !f.heard).map(|f| f.cost[i]).sum();
            let window = self.window;
            let bucket = self.buckets[i].get_or_insert_with(|| Bucket::new(limit, window, limit as f64, now));
            if bucket.limit() != limit {
                bucket.set_limit(limit, window);
                self.dirty = true;
            }
            if let (Some(remaining), Some(reset)) = (d.remaining, d.reset) {
                let implied = remaining as f64 + bucket.rate() * reset.as_secs_f64();
                let slack = 0.5 + bucket.rate() * d.precision.as_secs_f64();
                if implied > limit as f64 + slack {
                    if !self.windowed {
                        self.windowed = true;
                        self.dirty = true;
                    }
                } else if !self.windowed {
                    let before = bucket.capacity();
                    bucket.set_capacity(implied);
                    if (bucket.capacity() - before).abs() > before * 0.1 {
                        self.dirty = true;
                    }
                }
            }
            if let Some(remaining) = d.remaining {
                bucket.at_most(now, remaining as f64 - after as f64);
            }
        }
    }

    /// Settle a reservation at `now`: `Some(actual)` replaces its estimate with what the provider reported; `None`
    /// refunds it (the provider refused the request without counting it).
    pub fn settle(&mut self, now: Instant, reservation: Reservation, actual: Option<Cost>) {
        let Some(pos) = self.flights.iter().position(|f| f.id == reservation.0) else { return };
        let flight = self.flights.swap_remove(pos);
        let new = actual.map_or([0; DIMENSIONS], |a| a.0);
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if let Some(b) = b
                && flight.debited[i]
            {
                let delta = flight.cost[i] as f64 - new[i] as f64;
                if delta >= 0.0 {
                    b.give(now, delta);
                } else {
                    b.take(now, -delta);
                }
            }
        }
        self.log.settle(reservation.0, now, self.window, actual.map(|a| a.0));
    }

    /// Send nothing on this key before `until` (the provider's `retry-after`).
    pub fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    /// What is free now in each bucket (`None`: not limited).
    pub fn levels(&mut self, now: Instant) -> [Option<f64>; DIMENSIONS] {
        std::array::from_fn(|i| self.buckets[i].as_mut().map(|b| b.level(now)))
    }

    /// The fraction (0..=1) of each bucket free now (`None`: not limited), for the status socket.
    pub fn fractions(&mut self, now: Instant) -> [Option<f64>; DIMENSIONS] {
        std::array::from_fn(|i| {
            self.buckets[i].as_mut().map(|b| {
                let cap = b.capacity();
                if cap <= 0.0 { 0.0 } else { (b.level(now) / cap).clamp(0.0, 1.0) }
            })
        })
    }

    /// What was learnt, when it changed since the last call (for the state file).
    pub fn take_learnt(&mut self) -> Option<Learnt> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        Some(Learnt {
            window_ms: self.window.as_millis() as u64,
            limits: self.limits(),
            capacity: std::array::from_fn(|i| self.buckets[i].as_ref().map(Bucket::capacity)),
            windowed: self.windowed,
        })
    }

    /// Start from what an earlier broker learnt (ignored when it was for another window).
    pub fn restore(&mut self, learnt: &Learnt) {
        if learnt.window_ms != self.window.as_millis() as u64 || !learnt.limits.iter().any(Option::is_some) {
            return;
        }
        let now = Instant::now();
        for i in 0..DIMENSIONS {
            let Some(limit) = learnt.limits[i] else { continue };
            let mut b = Bucket::new(limit, self.window, f64::MAX, now);
            if let Some(c) = learnt.capacity[i].filter(|c| c.is_finite()) {
                b.set_capacity(c);
            }
            let level = b.capacity() * RESTORED_LEVEL;
            b.at_most(now, level.max(1.0));
            self.buckets[i] = Some(b);
        }
        self.windowed = learnt.windowed;
        self.known = true;
    }
}

#[cfg(test)]
#[path = "limiter_tests.rs"]
mod tests;
