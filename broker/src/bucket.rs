//! One dimension of a key's limits as the providers meter it: a token bucket of `capacity`, refilled continuously
//! at `limit / window` (Anthropic: "continuously replenished up to your maximum limit, rather than being reset at
//! fixed intervals"). The level may go below zero (a cost larger than the whole bucket is let through when the
//! bucket is full, and then owed).

use std::time::{Duration, Instant};

/// A token bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// The most it holds.
    capacity: f64,
    /// The limit per window it was learnt from (the most the capacity may be).
    limit: f64,
    /// Refill per second.
    rate: f64,
    level: f64,
    at: Instant,
}

impl Bucket {
    /// A bucket of `limit` refilled at `limit / window`, holding `level` now.
    pub fn new(limit: u64, window: Duration, level: f64, now: Instant) -> Bucket {
        let limit = limit as f64;
        let mut b = Bucket { capacity: limit, limit, rate: 0.0, level: 0.0, at: now };
        b.set_limit(limit as u64, window);
        b.level = level.min(b.capacity);
        b
    }

    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let dt = now.duration_since(self.at).as_secs_f64();
            if self.level < self.capacity {
                self.level = (self.level + self.rate * dt).min(self.capacity);
            }
            self.at = now;
        }
    }

    /// The level now.
    pub fn level(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.level
    }

    /// The capacity.
    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    /// The limit per window.
    pub fn limit(&self) -> u64 {
        self.limit as u64
    }

    /// Refill per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// What a cost needs in the bucket: itself, or the whole capacity when it is larger.
    fn need(&self, cost: u64) -> f64 {
        (cost as f64).min(self.capacity)
    }

    /// When `cost` fits (now, or the moment the refill makes room).
    pub fn when(&mut self, now: Instant, cost: u64) -> Instant {
        self.refill(now);
        let short = self.need(cost) - self.level;
        if short <= 1e-9 {
            return now;
        }
        if self.rate <= 0.0 {
            return now + Duration::from_secs(60);
        }
        // A millisecond more than the exact refill time, so the refill at the wake-up has surely made room.
        now + Duration::from_secs_f64((short / self.rate).min(3600.0)) + Duration::from_millis(1)
    }

    /// Take `amount` (may leave the level below zero).
    pub fn take(&mut self, now: Instant, amount: f64) {
        self.refill(now);
        self.level -= amount;
    }

    /// Give back `amount` (a refund, or a reservation settled below its estimate).
    pub fn give(&mut self, now: Instant, amount: f64) {
        self.refill(now);
        self.level = (self.level + amount).min(self.capacity);
    }

    /// A new limit per window: the refill rate follows; the capacity stays at most the limit.
    pub fn set_limit(&mut self, limit: u64, window: Duration) {
        self.limit = limit as f64;
        self.rate = self.limit / window.as_secs_f64().max(0.001);
        if self.capacity > self.limit || self.capacity <= 0.0 {
            self.capacity = self.limit;
        }
        self.level = self.level.min(self.capacity);
    }

    /// The capacity the provider's bucket is seen to have (between one and the limit).
    pub fn set_capacity(&mut self, capacity: f64) {
        self.capacity = capacity.clamp(1.0_f64.min(self.limit), self.limit.max(1.0));
        self.level = self.level.min(self.capacity);
    }

    /// The provider says at most `level` remains now: never more than that is assumed.
    pub fn at_most(&mut self, now: Instant, level: f64) {
        self.refill(now);
        self.level = self.level.min(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_continuously_and_never_past_its_capacity() {
        let t0 = Instant::now();
        let mut b = Bucket::new(600, Duration::from_secs(60), 0.0, t0);
        b.set_capacity(60.0);
        assert_eq!(b.rate(), 10.0);
        assert!((b.level(t0 + Duration::from_millis(500)) - 5.0).abs() < 1e-6);
        assert!((b.level(t0 + Duration::from_secs(100)) - 60.0).abs() < 1e-6);
    }

    #[test]
    fn says_when_a_cost_fits_and_a_cost_above_capacity_waits_for_a_full_bucket() {
        let t0 = Instant::now();
        let mut b = Bucket::new(60, Duration::from_secs(60), 0.0, t0);
        let at = b.when(t0, 2);
        assert!(at >= t0 + Duration::from_secs(2) && at <= t0 + Duration::from_millis(2002), "{:?}", at - t0);
        let full = b.when(t0, 1000);
        assert!(full >= t0 + Duration::from_secs(60), "{:?}", full - t0);
        b.take(t0, 1.0);
        assert!(b.level(t0) < 0.0, "a cost may be owed");
    }

    #[test]
    fn the_provider_can_only_lower_the_level() {
        let t0 = Instant::now();
        let mut b = Bucket::new(60, Duration::from_secs(60), 60.0, t0);
        b.at_most(t0, 10.0);
        assert_eq!(b.level(t0), 10.0);
        b.at_most(t0, 30.0);
        assert_eq!(b.level(t0), 10.0);
        b.give(t0, 100.0);
        assert_eq!(b.level(t0), 60.0);
    }
}
