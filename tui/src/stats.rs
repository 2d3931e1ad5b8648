//! The Stats pane's model: the status socket's latest line (tokens and cost today, each pool's headroom) when the
//! supervisor offers one, and the model calls per minute counted from the event stream's cost events (one per
//! model response).

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use neuraphage_ipc::status::StatusLine;

/// Minutes of history kept for the sparkline.
pub const MINUTES: usize = 120;

/// The Stats pane's data.
#[derive(Debug, Default)]
pub struct Stats {
    /// The status socket's latest line; `None`: no status socket (shown as `—`).
    pub status: Option<StatusLine>,
    /// Model responses per minute, oldest first: `(minute since the epoch, count)`, consecutive minutes.
    minutes: VecDeque<(i64, u32)>,
}

impl Stats {
    /// One model response, at `at`.
    pub fn request(&mut self, at: DateTime<Utc>) {
        let minute = at.timestamp().div_euclid(60);
        match self.minutes.back_mut() {
            Some((m, count)) if *m == minute => *count = count.saturating_add(1),
            Some((m, _)) if *m > minute => {
                // Out of order (history): count it in its minute if kept.
                if let Some((_, count)) = self.minutes.iter_mut().find(|(m, _)| *m == minute) {
                    *count = count.saturating_add(1);
                }
            }
            _ => {
                self.advance_to(minute);
                if let Some((_, count)) = self.minutes.back_mut() {
                    *count = 1;
                }
            }
        }
    }

    /// Make the history reach `minute` (zeros for minutes without a response).
    fn advance_to(&mut self, minute: i64) {
        let last = self.minutes.back().map(|(m, _)| *m);
        match last {
            Some(last) if minute - last <= MINUTES as i64 => {
                for m in last + 1..=minute {
                    self.minutes.push_back((m, 0));
                }
            }
            Some(last) if minute <= last => {}
            _ => {
                self.minutes.clear();
                self.minutes.push_back((minute, 0));
            }
        }
        while self.minutes.len() > MINUTES {
            self.minutes.pop_front();
        }
    }

    /// Counts per minute for the last `n` minutes up to `now` (oldest first; zeros where nothing happened).
    pub fn per_minute(&self, now: DateTime<Utc>, n: usize) -> Vec<u32> {
        let current = now.timestamp().div_euclid(60);
        (0..n as i64)
            .rev()
            .map(|back| {
                let m = current - back;
                self.minutes.iter().find(|(k, _)| *k == m).map_or(0, |(_, c)| *c)
            })
            .collect()
    }

    /// Responses in the last full minute and the current one, per minute.
    pub fn rate(&self, now: DateTime<Utc>) -> u32 {
        let last = self.per_minute(now, 2);
        last.iter().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn requests_are_counted_per_minute_with_gaps_as_zeros() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).single().unwrap();
        let mut stats = Stats::default();
        for s in [0, 10, 20, 70, 200] {
            stats.request(t0 + Duration::seconds(s));
        }
        stats.request(t0 + Duration::seconds(30)); // late, in its minute
        assert_eq!(stats.per_minute(t0 + Duration::seconds(200), 5), vec![0, 4, 1, 0, 1]);
        assert_eq!(stats.rate(t0 + Duration::seconds(200)), 1);
        stats.request(t0 + Duration::hours(10));
        assert_eq!(stats.per_minute(t0 + Duration::hours(10), 3), vec![0, 0, 1]);
    }
}
