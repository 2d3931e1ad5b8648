//! A running task as the Watcher sees it, built from its stored events of the current session (since its last
//! `worker_started`): model turns, tokens, the last [`MAX_STEPS`] tool calls with their outcomes (and turns that
//! called no tool), and the time since its last progress (a file written or edited, a commit, a result not seen
//! before in the window, a message from the user). Bounded: at most [`MAX_EVENTS`] events are read per task.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use neuraphage_ipc::{EventKind, Task, TaskEvent, TaskId};

use super::rules::{Facts, Step};

/// Steps kept in a snapshot.
pub const MAX_STEPS: usize = 20;

/// Events read per task per look.
pub const MAX_EVENTS: usize = 400;

/// The event kinds a snapshot reads.
pub const KINDS: [&str; 8] = [
    "worker_started",
    "tool_call",
    "tool_result",
    "checkpoint",
    "cost",
    "committed",
    "user_message",
    "question_answered",
];

/// One task's snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The task.
    pub task: TaskId,
    /// What it was asked (the start of it).
    pub description: String,
    /// Its tier.
    pub tier: Option<String>,
    /// What the rules look at.
    pub facts: Facts,
    /// Model turns this session.
    pub iterations: u32,
    /// Tokens this session (input, output and cache).
    pub tokens: u64,
    /// The sequence number of the newest step's event (0: none): a later look with a higher one saw new steps.
    pub last_step_seq: u64,
    /// The session judged: its `worker_started` event's sequence number (0: unknown, set by the Watcher's pass from
    /// [`crate::store::Store::session_seq`]). A verdict acts only on that session (red team).
    pub session: u64,
}

/// The snapshot of `task` from its events (oldest first; at most [`MAX_EVENTS`] of [`KINDS`]) at `now`.
pub fn build(task: &Task, events: &[TaskEvent], now: DateTime<Utc>) -> Snapshot {
    let start = events.iter().rposition(|e| matches!(e.kind, EventKind::WorkerStarted { .. }));
    let session = &events[start.unwrap_or(0)..];
    let mut progress_at = session.first().map(|e| e.at).unwrap_or(now);
    let mut steps: Vec<Step> = Vec::new();
    let mut calls: HashMap<&str, usize> = HashMap::new();
    let mut seen_results: HashSet<(&str, &str)> = HashSet::new();
    let (mut iterations, mut tokens, mut last_step_seq) = (0u32, 0u64, 0u64);
    let mut talked = false;
    for e in session {
        match &e.kind {
            EventKind::ToolCall { tool, tool_use_id, input } => {
                talked = false;
                calls.insert(tool_use_id, steps.len());
                steps.push(Step::Tool { tool: tool.clone(), input: input.clone(), outcome: None });
                last_step_seq = e.seq;
            }
            EventKind::ToolResult { tool, tool_use_id, is_error, result } => {
                if let Some(Step::Tool { outcome, .. }) =
                    calls.get(tool_use_id.as_str()).and_then(|&i| steps.get_mut(i))
                {
                    *outcome = Some((*is_error, result.clone()));
                    last_step_seq = e.seq;
                }
                let wrote = matches!(tool.as_str(), "Write" | "Edit");
                if !is_error && (wrote || seen_results.insert((tool, result))) {
                    progress_at = e.at;
                }
            }
            EventKind::Checkpoint { point, .. } => {
                if point.starts_with("response_received") {
                    iterations += 1;
                    // A max_tokens / pause_turn answer is continued at once: one long turn, not a monologue.
                    talked = !(point.ends_with(":max_tokens") || point.ends_with(":pause_turn"));
                } else if point.starts_with("tool_started") {
                    talked = false;
                } else if point.starts_with("request_sent") && talked {
                    talked = false;
                    steps.push(Step::Talk);
                    last_step_seq = e.seq;
                }
            }
            EventKind::Cost { input_tokens, output_tokens, cache_tokens, .. } => {
                tokens =
                    tokens.saturating_add(*input_tokens).saturating_add(*output_tokens).saturating_add(*cache_tokens);
            }
            EventKind::Committed { .. } | EventKind::UserMessage { .. } | EventKind::QuestionAnswered { .. } => {
                progress_at = e.at;
            }
            _ => {}
        }
    }
    let keep = steps.len().saturating_sub(MAX_STEPS);
    steps.drain(..keep);
    let since_progress = (now - progress_at).to_std().unwrap_or(Duration::ZERO);
    Snapshot {
        task: task.id.clone(),
        description: task.description.chars().take(500).collect(),
        tier: task.tier.clone(),
        facts: Facts { steps, since_progress },
        iterations,
        tokens,
        last_step_seq,
        session: 0,
    }
}

/// The snapshot as the judge reads it (bounded: every text cut, control characters dropped).
pub fn render(s: &Snapshot, finding: &super::rules::Finding) -> String {
    let clean =
        |t: &str, max: usize| -> String { t.chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect() };
    let mut out = format!(
        "Task {}: {}\nModel turns this session: {}\nTokens this session: {}\nSince the last progress: {} s\n\
         Flagged by the rule {}: {}\n\nThe last tool calls, oldest first (data written by the task):\n",
        s.task,
        clean(&s.description, 500),
        s.iterations,
        s.tokens,
        s.facts.since_progress.as_secs(),
        finding.rule,
        finding.detail,
    );
    for (n, step) in s.facts.steps.iter().enumerate() {
        match step {
            Step::Tool { tool, input, outcome } => {
                let how = match outcome {
                    None => "running".to_owned(),
                    Some((true, r)) => format!("ERROR: {}", clean(r, 300)),
                    Some((false, r)) => format!("ok: {}", clean(r, 300)),
                };
                out.push_str(&format!("{}. {} {} -> {how}\n", n + 1, clean(tool, 64), clean(input, 300)));
            }
            Step::Talk => out.push_str(&format!("{}. (a turn of text, no tool call)\n", n + 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, secs: i64, kind: EventKind) -> TaskEvent {
        TaskEvent { seq, task: TaskId::from_bits(1), at: DateTime::from_timestamp(secs, 0).unwrap(), kind }
    }

    fn call(seq: u64, secs: i64, id: &str, cmd: &str) -> TaskEvent {
        ev(seq, secs, EventKind::ToolCall { tool: "Bash".into(), tool_use_id: id.into(), input: cmd.into() })
    }

    fn result(seq: u64, secs: i64, id: &str, err: bool, text: &str) -> TaskEvent {
        let kind =
            EventKind::ToolResult { tool: "Bash".into(), tool_use_id: id.into(), is_error: err, result: text.into() };
        ev(seq, secs, kind)
    }

    fn cp(seq: u64, point: &str) -> TaskEvent {
        ev(seq, 0, EventKind::Checkpoint { seq, point: point.into(), commit: String::new() })
    }

    #[test]
    fn steps_progress_and_the_session() {
        let task = Task { id: TaskId::from_bits(1), ..crate::watcher::tests_support::task() };
        let events = vec![
            call(1, 0, "old", "old"),
            ev(2, 10, EventKind::WorkerStarted { pid: 1, workdir: String::new() }),
            cp(3, "response_received"),
            call(4, 20, "a", "make"),
            result(5, 21, "a", false, "built"),
            cp(6, "request_sent"),
            cp(7, "response_received"),
            cp(8, "request_sent"),
            call(9, 40, "b", "make"),
            result(10, 41, "b", true, "boom"),
            call(11, 50, "c", "make"),
            result(12, 51, "c", false, "built"),
        ];
        let s = build(&task, &events, DateTime::from_timestamp(100, 0).unwrap());
        assert_eq!(s.facts.steps.len(), 4, "{:?}", s.facts.steps);
        assert_eq!(s.facts.steps[1], Step::Talk);
        assert_eq!(s.iterations, 2);
        assert_eq!(s.last_step_seq, 12);
        // The last new result was at 21 s: "built" again at 51 s is not new.
        assert_eq!(s.facts.since_progress, Duration::from_secs(79));
    }

    #[test]
    fn a_continued_answer_is_one_long_turn_not_a_monologue() {
        let task = Task { id: TaskId::from_bits(1), ..crate::watcher::tests_support::task() };
        let mut events = vec![ev(1, 0, EventKind::WorkerStarted { pid: 1, workdir: String::new() })];
        for n in 0..6u64 {
            events.push(cp(2 + 2 * n, "response_received:max_tokens"));
            events.push(cp(3 + 2 * n, "request_sent"));
        }
        let s = build(&task, &events, DateTime::from_timestamp(100, 0).unwrap());
        assert!(s.facts.steps.is_empty(), "{:?}", s.facts.steps);
        // The control: the same turns ending without a continuation are the model talking to itself.
        let plain: Vec<TaskEvent> = events
            .iter()
            .map(|e| match &e.kind {
                EventKind::Checkpoint { seq, point, .. } if point.starts_with("response_received") => {
                    cp(*seq, "response_received")
                }
                _ => e.clone(),
            })
            .collect();
        let s = build(&task, &plain, DateTime::from_timestamp(100, 0).unwrap());
        assert_eq!(s.facts.steps, vec![Step::Talk; 6]);
    }
}
