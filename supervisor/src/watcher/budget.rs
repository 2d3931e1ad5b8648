//! A task's budget of Watcher judgements (`watcher.max-judgements-per-hour`): the cooldown is per finding, so a task
//! cycling through findings could cost a router call every interval, charged to it; past its budget a flagged task
//! is paused with the rules' finding instead. Pure: the caller gives the clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window the budget counts over.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// The judgements of one task in the last [`WINDOW`].
#[derive(Debug, Clone, Default)]
pub struct Budget {
    at: VecDeque<Instant>,
}

impl Budget {
    fn forget_old(&mut self, now: Instant) {
        while self.at.front().is_some_and(|&t| now.saturating_duration_since(t) >= WINDOW) {
            self.at.pop_front();
        }
    }

    /// Take one judgement at `now` if fewer than `max` were taken in the last hour; else `Err(how many were)`.
    pub fn take(&mut self, now: Instant, max: u32) -> Result<(), usize> {
        self.forget_old(now);
        if self.at.len() >= max as usize {
            return Err(self.at.len());
        }
        self.at.push_back(now);
        Ok(())
    }

    /// Whether nothing was taken in the last hour (the budget may be forgotten).
    pub fn is_idle(&self, now: Instant) -> bool {
        self.at.back().is_none_or(|&t| now.saturating_duration_since(t) >= WINDOW)
    }
}

/// Why a flagged task was not judged, for its `WatcherIntervened` diagnosis.
pub fn spent(used: usize, max: u32) -> String {
    format!(
        "not judged: this task had {used} Watcher judgement{} in the last hour, watcher.max-judgements-per-hour is \
         {max}",
        if used == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_an_hour_then_room_again() {
        let t0 = Instant::now();
        let mut b = Budget::default();
        for n in 0..4u64 {
            assert_eq!(b.take(t0 + Duration::from_secs(30 * n), 4), Ok(()), "judgement {n}");
        }
        assert_eq!(b.take(t0 + Duration::from_secs(150), 4), Err(4), "the fifth within the hour");
        assert_eq!(b.take(t0 + Duration::from_secs(3599), 4), Err(4));
        assert!(!b.is_idle(t0 + Duration::from_secs(3599)));
        // An hour after the first, one slot is free again (and only one).
        assert_eq!(b.take(t0 + WINDOW, 4), Ok(()));
        assert_eq!(b.take(t0 + WINDOW + Duration::from_secs(1), 4), Err(4));
        assert!(b.is_idle(t0 + WINDOW * 3));
        // 0: never judged.
        assert_eq!(Budget::default().take(t0, 0), Err(0));
        assert!(spent(4, 4).contains("watcher.max-judgements-per-hour is 4"), "{}", spent(4, 4));
    }
}
