//! The TEST DOUBLE's bucket metering, as Anthropic documents its rate limits: per key and dimension (requests,
//! input tokens, output tokens) a token bucket of a configured size, "continuously replenished up to your maximum
//! limit, rather than being reset at fixed intervals" at `limit / window`. The headers say the limit per window,
//! what remains in the bucket now, and when it will be full again; a refusal's `retry-after` is when the request
//! would fit.

use std::time::{Duration, Instant};

/// One key's buckets.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buckets {
    levels: [f64; 3],
    at: Option<Instant>,
}

/// What the buckets said about one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BucketAnswer {
    /// Admitted (and taken from the buckets).
    pub(crate) admitted: bool,
    /// What remains in each bucket.
    pub(crate) remaining: [u64; 3],
    /// Until each bucket is full.
    pub(crate) reset: [Duration; 3],
    /// Until a refused request would fit.
    pub(crate) retry: Duration,
}

impl Buckets {
    /// Admit a request of `cost` under `limits` per `window` (`None`: not enforced, shown as `shown`) with buckets
    /// of `sizes`.
    pub(crate) fn admit(
        &mut self,
        now: Instant,
        window: Duration,
        limits: [Option<u64>; 3],
        shown: [u64; 3],
        sizes: [u64; 3],
        cost: [u64; 3],
    ) -> BucketAnswer {
        let secs = window.as_secs_f64().max(0.001);
        let rate: [f64; 3] = std::array::from_fn(|i| limits[i].unwrap_or(shown[i]) as f64 / secs);
        let size: [f64; 3] =
            std::array::from_fn(|i| if limits[i].is_some() { sizes[i] as f64 } else { shown[i] as f64 });
        match self.at {
            None => self.levels = size,
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                for i in 0..3 {
                    self.levels[i] = (self.levels[i] + rate[i] * dt).min(size[i]);
                }
            }
        }
        self.at = Some(now);
        let need: [f64; 3] = std::array::from_fn(|i| (cost[i] as f64).min(size[i]));
        let admitted = (0..3).all(|i| limits[i].is_none() || self.levels[i] + 1e-9 >= need[i]);
        if admitted {
            for i in 0..3 {
                if limits[i].is_some() {
                    self.levels[i] -= cost[i] as f64;
                }
            }
        }
        let wait = |short: f64, r: f64| {
            if short <= 0.0 || r <= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(short / r) }
        };
        let retry = (0..3)
            .filter(|&i| limits[i].is_some())
            .map(|i| wait(need[i] - self.levels[i], rate[i]))
            .max()
            .unwrap_or_default();
        BucketAnswer {
            admitted,
            remaining: std::array::from_fn(|i| self.levels[i].max(0.0).floor() as u64),
            reset: std::array::from_fn(|i| wait(size[i] - self.levels[i], rate[i])),
            retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_of_60_refilled_at_600_a_minute() {
        let mut b = Buckets::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(60);
        let limits = [Some(600), None, None];
        let shown = [600, 1000, 1000];
        for _ in 0..60 {
            assert!(b.admit(t0, w, limits, shown, [60, 0, 0], [1, 10, 5]).admitted);
        }
        let refused = b.admit(t0, w, limits, shown, [60, 0, 0], [1, 10, 5]);
        assert!(!refused.admitted);
        assert_eq!(refused.remaining[0], 0);
        assert_eq!(refused.retry, Duration::from_millis(100));
        assert_eq!(refused.reset[0], Duration::from_secs(6));
        let later = b.admit(t0 + Duration::from_millis(100), w, limits, shown, [60, 0, 0], [1, 10, 5]);
        assert!(later.admitted, "refilled one a tenth of a second later");
    }
}
