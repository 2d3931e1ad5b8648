//! The drift guard ("Drift Detection" of `reference/neuraphage-agentic-loop.md`): a pure state machine the agent loop
//! feeds with what happens (model turns, their tokens, tool results, file writes) and asks before each model request
//! whether the task should stop and wait for the user. Limits: model turns (`max-iterations`), consecutive tool
//! failures, time without progress (no file changed and no tool result unlike every earlier one); tokens in one turn
//! over a threshold only warn. A trip does not fail the task: the loop ends the session `NeedsUser` with
//! [`Drift::reason`], which names the limit and summarises where the task stands, built mechanically. The counters
//! restart when the user speaks ([`Drift::restart`]).

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use neuraphage_ipc::task::{PlanItem, PlanStatus};
use neuraphage_ipc::worker::DriftLimits;

use crate::context::clean;

/// How many of the last tool calls the summary names.
const LAST_TOOLS: usize = 5;
/// Most distinct tool results remembered (by hash) to tell a new one; past it the oldest are forgotten.
const MAX_SEEN_RESULTS: usize = 4096;
/// Most written files the summary names.
const MAX_FILES_NAMED: usize = 10;

/// The guard's state for one worker session.
#[derive(Debug, Clone)]
pub struct Drift {
    limits: DriftLimits,
    max_iterations: u32,
    /// Model turns counted toward `max_iterations` (since the task started or the user last spoke).
    iterations: u32,
    consecutive_failures: u32,
    last_progress: Instant,
    seen: HashSet<u64>,
    seen_order: VecDeque<u64>,
    last_tools: VecDeque<(String, bool)>,
    files_written: BTreeSet<String>,
}

/// Why the guard stopped the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trip {
    /// `max-iterations` model turns.
    Iterations(u32),
    /// This many tool failures in a row.
    Failures(u32),
    /// No progress for this long.
    NoProgress(Duration),
}

impl Drift {
    /// A guard with these limits, `iterations` turns already counted (a resumed worker), progress at `now`.
    pub fn new(limits: DriftLimits, max_iterations: u32, iterations: u32, now: Instant) -> Drift {
        Drift {
            limits,
            max_iterations: max_iterations.max(1),
            iterations,
            consecutive_failures: 0,
            last_progress: now,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            last_tools: VecDeque::new(),
            files_written: BTreeSet::new(),
        }
    }

    /// Turns counted toward `max-iterations`.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The user spoke (a message delivered, or the task was retried): every budget starts again.
    pub fn restart(&mut self, now: Instant) {
        self.iterations = 0;
        self.consecutive_failures = 0;
        self.last_progress = now;
    }

    /// Remember an earlier result (a resumed worker's conversation) without counting it as progress.
    pub fn remember_result(&mut self, content: &str) {
        self.insert_seen(hash(content));
    }

    /// Before a model request: whether a limit is passed.
    pub fn check(&self, now: Instant) -> Option<Trip> {
        if self.iterations >= self.max_iterations {
            return Some(Trip::Iterations(self.iterations));
        }
        if self.limits.max_consecutive_failures > 0 && self.consecutive_failures > self.limits.max_consecutive_failures
        {
            return Some(Trip::Failures(self.consecutive_failures));
        }
        let idle = now.saturating_duration_since(self.last_progress);
        if self.limits.no_progress_secs > 0 && idle >= Duration::from_secs(self.limits.no_progress_secs) {
            return Some(Trip::NoProgress(idle));
        }
        None
    }

    /// A model turn ended having used `tokens` (input + output): a warning when over the threshold.
    pub fn on_response(&mut self, tokens: u64) -> Option<String> {
        self.iterations += 1;
        let over = self.limits.iteration_tokens_warning;
        (over > 0 && tokens > over).then(|| {
            format!(
                "turn {} used {tokens} tokens (over iteration-tokens-warning, {over}): the task may be burning tokens",
                self.iterations
            )
        })
    }

    /// A tool call ended. `wrote`: the file a successful Write / Edit changed.
    pub fn on_tool(&mut self, tool: &str, is_error: bool, content: &str, wrote: Option<&str>, now: Instant) {
        if is_error {
            self.consecutive_failures += 1;
        } else {
            self.consecutive_failures = 0;
        }
        let h = hash(content);
        if !self.seen.contains(&h) {
            self.insert_seen(h);
            self.last_progress = now;
        }
        if let Some(file) = wrote.filter(|_| !is_error) {
            self.last_progress = now;
            if self.files_written.len() < 1000 {
                self.files_written.insert(clean(file, 200));
            }
        }
        if self.last_tools.len() == LAST_TOOLS {
            self.last_tools.pop_front();
        }
        self.last_tools.push_back((clean(tool, 40), is_error));
    }

    fn insert_seen(&mut self, h: u64) {
        if self.seen.insert(h) {
            self.seen_order.push_back(h);
            if self.seen_order.len() > MAX_SEEN_RESULTS
                && let Some(old) = self.seen_order.pop_front()
            {
                self.seen.remove(&old);
            }
        }
    }

    /// The waiting reason: the limit, then one paragraph on where the task stands.
    pub fn reason(&self, trip: &Trip, plan: &[PlanItem]) -> String {
        let limit = match trip {
            Trip::Iterations(n) => format!(
                "the drift guard stopped the task after {n} model turns without finishing (max-iterations is {})",
                self.max_iterations
            ),
            Trip::Failures(n) => format!(
                "the drift guard stopped the task after {n} tool failures in a row (drift.max-consecutive-failures is {})",
                self.limits.max_consecutive_failures
            ),
            Trip::NoProgress(d) => format!(
                "the drift guard stopped the task: no file changed and no new tool result for {} s \
                 (drift.no-progress-minutes is {})",
                d.as_secs(),
                self.limits.no_progress_secs / 60
            ),
        };
        let mut s = format!("{limit}. Where it stands: {} model turns since the user last spoke", self.iterations);
        if !plan.is_empty() {
            let done = plan.iter().filter(|i| i.status == PlanStatus::Done).count();
            s.push_str(&format!("; plan {done}/{} done", plan.len()));
            if let Some(now) = plan.iter().find(|i| i.status == PlanStatus::InProgress) {
                s.push_str(&format!(" (in progress: {})", clean(&now.content, 100)));
            }
        }
        if self.files_written.is_empty() {
            s.push_str("; no file written this session");
        } else {
            let named: Vec<&str> = self.files_written.iter().take(MAX_FILES_NAMED).map(String::as_str).collect();
            let more = self.files_written.len().saturating_sub(MAX_FILES_NAMED);
            s.push_str(&format!("; files written: {}", named.join(", ")));
            if more > 0 {
                s.push_str(&format!(" and {more} more"));
            }
        }
        if !self.last_tools.is_empty() {
            let tools: Vec<String> =
                self.last_tools.iter().map(|(t, err)| format!("{t} {}", if *err { "failed" } else { "ok" })).collect();
            s.push_str(&format!("; last tools: {}", tools.join(", ")));
        }
        s.push_str(". Send the task a message (`neuraphage task send`) to resume it with new budgets.");
        s
    }
}

fn hash(content: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DriftLimits {
        DriftLimits { max_consecutive_failures: 3, no_progress_secs: 60, iteration_tokens_warning: 1000 }
    }

    #[test]
    fn iterations_trip_at_the_limit_and_restart_when_the_user_speaks() {
        let t = Instant::now();
        let mut d = Drift::new(limits(), 3, 1, t);
        assert_eq!(d.check(t), None);
        d.on_response(10);
        d.on_response(10);
        assert_eq!(d.check(t), Some(Trip::Iterations(3)));
        d.restart(t);
        assert_eq!(d.check(t), None);
        assert_eq!(d.iterations(), 0);
    }

    #[test]
    fn consecutive_failures_trip_past_the_limit_and_a_success_resets_them() {
        let t = Instant::now();
        let mut d = Drift::new(limits(), 100, 0, t);
        for i in 0..3 {
            d.on_tool("Bash", true, &format!("exit 1 ({i})"), None, t);
        }
        assert_eq!(d.check(t), None, "three in a row is the limit, not past it");
        d.on_tool("Read", false, "ok", None, t);
        for i in 0..4 {
            d.on_tool("Bash", true, &format!("e{i}"), None, t);
        }
        assert_eq!(d.check(t), Some(Trip::Failures(4)));
        let reason = d.reason(&Trip::Failures(4), &[]);
        assert!(reason.contains("4 tool failures in a row") && reason.contains("Bash failed"), "{reason}");
    }

    #[test]
    fn no_progress_means_no_write_and_no_new_result() {
        let t = Instant::now();
        let mut d = Drift::new(limits(), 100, 0, t);
        d.on_tool("Read", false, "same", None, t);
        // The same result again is not progress.
        d.on_tool("Read", false, "same", None, t + Duration::from_secs(50));
        assert_eq!(d.check(t + Duration::from_secs(59)), None);
        assert!(matches!(d.check(t + Duration::from_secs(61)), Some(Trip::NoProgress(_))));
        // A new result is.
        d.on_tool("Read", false, "different", None, t + Duration::from_secs(61));
        assert_eq!(d.check(t + Duration::from_secs(100)), None);
        // So is a successful write, even of a seen result.
        d.on_tool("Write", false, "same", Some("a.rs"), t + Duration::from_secs(110));
        assert_eq!(d.check(t + Duration::from_secs(169)), None);
        let plan = [
            PlanItem { content: "one".into(), status: PlanStatus::Done },
            PlanItem { content: "two".into(), status: PlanStatus::InProgress },
        ];
        let reason = d.reason(&Trip::NoProgress(Duration::from_secs(61)), &plan);
        assert!(reason.contains("plan 1/2 done") && reason.contains("in progress: two") && reason.contains("a.rs"));
    }

    #[test]
    fn tokens_over_the_threshold_warn_without_stopping() {
        let t = Instant::now();
        let mut d = Drift::new(limits(), 100, 0, t);
        assert!(d.on_response(999).is_none());
        assert!(d.on_response(1001).unwrap().contains("1001 tokens"));
        assert_eq!(d.check(t), None);
    }
}
