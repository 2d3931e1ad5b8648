//! Shared measuring helpers for the benchmarks in `benches/`: latency percentiles and throughput.
#![deny(missing_docs)]

use std::time::Duration;

/// Latencies of one run, and the wall time it took.
#[derive(Debug, Clone)]
pub struct Run {
    /// What was measured.
    pub label: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Per-operation latencies.
    pub latencies: Vec<Duration>,
    /// Wall time of the whole run.
    pub wall: Duration,
}

impl Run {
    /// The `p`-th percentile latency (nearest rank).
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// Operations per second over the wall time.
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }

    /// One table row.
    pub fn row(&self) -> String {
        format!(
            "{:<28} {:>7} {:>6} {:>10.1} {:>10.2} {:>10.2}",
            self.label,
            self.clients,
            self.latencies.len(),
            self.per_second(),
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0)),
        )
    }

    /// The table header.
    pub fn header() -> String {
        format!("{:<28} {:>7} {:>6} {:>10} {:>10} {:>10}", "path", "clients", "ops", "ops/s", "p50 ms", "p99 ms")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
