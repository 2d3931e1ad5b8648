//! The Watcher's interventions: nudge (advice in the task's next turn, [`crate::inbox::advise`]), escalate (up one
//! tier, as the broker's escalation does; the session stops and the task resumes on that tier), pause (the task's worker is stopped and the task waits for the user with
//! the diagnosis), abort (the worker is stopped and the task fails with the diagnosis). Each is recorded as a
//! `WatcherIntervened` event, in the transaction that stores the status the session is to end with (V12), so a
//! supervisor crash before the session ends does not undo it.

use neuraphage_ipc::{EventKind, TaskId, TaskStatus};

use super::judge::Recommendation;
use crate::requests::Daemon;

/// What to do, and what to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// The rule that flagged the task.
    pub rule: String,
    /// What to do.
    pub recommendation: Recommendation,
    /// The diagnosis (the judge's, or the rule's finding).
    pub diagnosis: String,
    /// Confidence in percent (0: unjudged).
    pub confidence: u8,
    /// The advice, for a nudge.
    pub nudge: Option<String>,
}

/// The tier above `tier` (`None`: the default, `worker`), if any.
pub fn next_tier(tier: Option<&str>) -> Option<&'static str> {
    match tier.unwrap_or(neuraphage_ipc::broker::DEFAULT_TIER) {
        "router" => Some("worker"),
        "worker" => Some("expert"),
        _ => None,
    }
}

/// Carry out `action` on running task `id` (on tier `tier`) in its session `session` (its `worker_started` event's
/// seq); returns what was done (a nudge that cannot be stored, or an escalation past the top tier, becomes a pause:
/// a flagged task never goes on silently). A verdict on a session that has ended since (the judge took its time, the
/// task went on in a new session) is not carried out on the next one (red team): nothing is done.
pub fn act(daemon: &Daemon, id: &TaskId, tier: Option<&str>, session: u64, mut action: Action) -> Recommendation {
    match daemon.with_store(|s| s.session_seq(id)) {
        Ok(now) if now == session => {}
        Ok(now) => {
            tracing::info!(task = %id, judged = session, now, "the Watcher's verdict is on a session that ended; not acted on");
            return Recommendation::Continue;
        }
        Err(e) => {
            tracing::warn!(task = %id, error = %e, "cannot read the task's session; the Watcher's verdict is not acted on");
            return Recommendation::Continue;
        }
    }
    match action.recommendation {
        Recommendation::Continue => {}
        Recommendation::Nudge => {
            let text = action.nudge.clone().unwrap_or_else(|| action.diagnosis.clone());
            if let Err(e) = crate::inbox::advise(daemon, id, "watcher", &text) {
                tracing::warn!(task = %id, error = %e, "the Watcher's nudge could not be stored; pausing instead");
                action.diagnosis = format!("{} (the nudge could not be delivered: {e})", action.diagnosis);
                action.recommendation = Recommendation::Pause;
            }
        }
        Recommendation::Escalate => match next_tier(tier) {
            // A sub-task never runs above its parent's tier (it would cost more than the task that made it): the
            // Watcher pauses it instead, for the user to decide.
            Some(to)
                if let Some(cap) =
                    crate::subtasks::parent_tier(daemon, id).filter(|p| crate::subtasks::above(to, p)) =>
            {
                action.diagnosis =
                    format!("{} (a sub-task does not go above its parent's tier, {cap})", action.diagnosis);
                action.recommendation = Recommendation::Pause;
            }
            Some(to) => {
                let from = tier.unwrap_or(neuraphage_ipc::broker::DEFAULT_TIER);
                let reason = format!("the Watcher: {}", action.diagnosis);
                if let Err(e) = daemon.with_store(|s| s.escalate(id, from, to, &reason)) {
                    tracing::error!(task = %id, error = %e, "cannot escalate the task");
                }
            }
            None => {
                action.diagnosis = format!("{} (already on the top tier)", action.diagnosis);
                action.recommendation = Recommendation::Pause;
            }
        },
        Recommendation::Pause | Recommendation::Abort => {}
    }
    let status = match action.recommendation {
        Recommendation::Pause => Some(TaskStatus::WaitingForUser {
            prompt: format!("Paused by the Watcher ({}): {}", action.rule, action.diagnosis),
        }),
        Recommendation::Abort => Some(TaskStatus::Failed {
            error: format!("Aborted by the Watcher ({}): {}", action.rule, action.diagnosis),
            recoverable: true,
        }),
        // Its worker's model link is granted its tier at the start: the session stops and the task is queued again,
        // to resume from its last checkpoint on the new tier.
        Recommendation::Escalate => Some(TaskStatus::Queued),
        _ => None,
    };
    let intervened = EventKind::WatcherIntervened {
        rule: action.rule.clone(),
        recommendation: action.recommendation.name().to_owned(),
        diagnosis: action.diagnosis.clone(),
        confidence: action.confidence,
    };
    // The event and the status the session ends with, together and durable before the worker is stopped: the
    // session's end (runner's `finish`), or after a crash the next start, ends the task with it instead of Cancelled
    // or a fresh queue.
    match daemon.with_store(|s| s.watcher_intervened(id, session, &intervened, status.as_ref())) {
        Ok(true) => {
            crate::crash_point::at("watcher_stopped");
            daemon.workers.cancel(id);
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(task = %id, error = %e, "cannot store the Watcher's intervention");
            // Still stop the worker of a task the Watcher judged must not go on (it ends as Cancelled).
            if matches!(action.recommendation, Recommendation::Pause | Recommendation::Abort) {
                daemon.workers.cancel(id);
            }
        }
    }
    tracing::info!(task = %id, rule = %action.rule, recommendation = action.recommendation.name(), "the Watcher intervened");
    action.recommendation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_go_up_one_step() {
        assert_eq!(next_tier(Some("router")), Some("worker"));
        assert_eq!(next_tier(None), Some("expert"));
        assert_eq!(next_tier(Some("expert")), None);
    }
}
