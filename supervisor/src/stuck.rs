//! A stopped or wedged worker counts as stuck: no frame on its link for [`stuck_after`] (its runtime sends a
//! heartbeat every [`heartbeat_every`] while it sends nothing else), and the runner then kills it and resumes the
//! task from its last checkpoint, as for a worker that died.
//!
//! A task can `kill -STOP` its own worker (the worker is its Bash's parent, in the same sandbox domain); without this
//! it would hold its `max-concurrent` slot for ever.

use std::time::Duration;

/// A worker that sent nothing for this long is stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(60);

/// Test knob, compiled into debug builds only: a shorter [`STUCK_AFTER`], in milliseconds, so a test can see a
/// stopped worker replaced without waiting a minute. A release build does not read it.
pub const ENV_TEST_STUCK_AFTER_MS: &str = "NEURAPHAGE_TEST_STUCK_AFTER_MS";

/// How long a worker may stay silent before it counts as stuck.
pub fn stuck_after() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var(ENV_TEST_STUCK_AFTER_MS).ok().and_then(|v| v.parse::<u64>().ok()) {
        return Duration::from_millis(ms.max(200));
    }
    STUCK_AFTER
}

/// The heartbeat interval given to workers: a twelfth of [`stuck_after`] (5 s for a minute), so that several
/// heartbeats are missed before a worker counts as stuck.
pub fn heartbeat_every() -> Duration {
    stuck_after() / 12
}

/// Why a stuck worker was replaced, for its `worker_lost` event.
pub fn reason(silent: Duration) -> String {
    format!(
        "the worker sent nothing for {} s (stopped or wedged); it is killed and the task resumes from its last \
         checkpoint",
        silent.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_heartbeats_fit_in_the_bound() {
        assert!(heartbeat_every() * 4 < stuck_after());
        assert!(reason(Duration::from_secs(60)).contains("nothing for 60 s"));
    }
}
