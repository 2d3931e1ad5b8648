//! The live pane's model: per task, what it is doing as it happens — the model's streamed text, each tool call as
//! one line with its outcome, what the user and the supervisor said — and its plan (TodoWrite).
//!
//! Attaching loads the conversation so far ([`LiveLog::load_conversation`], from `TaskLog`, as `task attach`
//! does): its last [`MAX_BACKLOG_MESSAGES`] messages / [`MAX_BACKLOG_BYTES`], with a note of what was left out, go
//! before what arrived live since the request was made.
//!
//! Bounded: a task's log keeps its newest [`MAX_LOG_BYTES`] of text in at most [`MAX_ENTRIES`] entries, and logs are
//! kept for at most [`MAX_LOGS`] tasks (the least recently active go first). Text is stored as the task wrote it
//! and escaped when drawn.

use std::collections::{HashMap, VecDeque};

use neuraphage_ipc::llm::{ContentBlock, Message, Speaker};
use neuraphage_ipc::task::{PlanItem, PlanStatus};
use neuraphage_ipc::{EventKind, TaskEvent, TaskId, TaskStatus};

use crate::text::cut;

/// Bytes of text one task's log keeps.
pub const MAX_LOG_BYTES: usize = 32 * 1024;

/// Entries one task's log keeps.
pub const MAX_ENTRIES: usize = 400;

/// Tasks whose logs are kept.
pub const MAX_LOGS: usize = 200;

/// Most plan items kept.
pub const MAX_PLAN_ITEMS: usize = 100;

/// Messages of the conversation so far shown on attaching (the last ones).
pub const MAX_BACKLOG_MESSAGES: usize = 40;

/// Bytes of the conversation so far shown on attaching (the last ones; at least the last message, its text cut).
pub const MAX_BACKLOG_BYTES: usize = 16 * 1024;

/// Bytes of one text block of the conversation so far (its end is kept).
const BACKLOG_BLOCK: usize = 4096;

/// Bytes of one tool call's shown input or outcome.
const TOOL_TEXT: usize = 512;

/// What kind of note a line is (it decides its colour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// A status change or the supervisor's report.
    Status,
    /// The task needs the user.
    Attention,
    /// Something failed.
    Failure,
    /// The user said it.
    User,
}

/// One entry of a task's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The model's text (grows as it streams).
    Text(String),
    /// A tool call, with its outcome once known (`is_error`, the result's first line).
    Tool {
        /// The call's id.
        id: String,
        /// The tool.
        tool: String,
        /// What it was called with, in a few words.
        input: String,
        /// `(is_error, first line of the result)`.
        outcome: Option<(bool, String)>,
    },
    /// A line about the task.
    Note(NoteKind, String),
}

impl Entry {
    fn bytes(&self) -> usize {
        match self {
            Entry::Text(t) => t.len(),
            Entry::Tool { input, outcome, tool, .. } => {
                input.len() + tool.len() + outcome.as_ref().map_or(0, |(_, o)| o.len())
            }
            Entry::Note(_, t) => t.len(),
        }
    }
}

/// One task's log and plan.
#[derive(Debug, Clone, Default)]
pub struct LiveLog {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// The plan as its latest TodoWrite set it.
    pub plan: Vec<PlanItem>,
    /// Its recent history was read (`ShowTask`), so it is not asked for again.
    pub seeded: bool,
    /// Streamed text was lost (the stream fell behind).
    pub gaps: u64,
    touched: u64,
    /// The lowest sequence number of a stored event applied.
    first_seq: Option<u64>,
    /// Entries ever pushed (marks what arrived after a conversation was asked for).
    pushed: u64,
    /// The conversation so far was loaded (attaching does not ask again).
    pub conversation: bool,
}

impl LiveLog {
    /// The entries, oldest first.
    pub fn entries(&self) -> &VecDeque<Entry> {
        &self.entries
    }

    fn push(&mut self, entry: Entry) {
        self.pushed += 1;
        self.bytes += entry.bytes();
        self.entries.push_back(entry);
        self.trim();
    }

    fn trim(&mut self) {
        while (self.bytes > MAX_LOG_BYTES || self.entries.len() > MAX_ENTRIES) && self.entries.len() > 1 {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.bytes();
            }
        }
        // A single huge streamed text keeps only its tail.
        if self.bytes > MAX_LOG_BYTES
            && let Some(Entry::Text(t)) = self.entries.back_mut()
            && t.len() > MAX_LOG_BYTES
        {
            let mut start = t.len() - MAX_LOG_BYTES;
            while !t.is_char_boundary(start) {
                start += 1;
            }
            t.drain(..start);
            self.bytes = t.len();
        }
    }

    /// More streamed text.
    pub fn text(&mut self, piece: &str) {
        let piece = cut(piece, MAX_LOG_BYTES);
        if let Some(Entry::Text(t)) = self.entries.back_mut() {
            t.push_str(piece);
            self.bytes += piece.len();
            self.trim();
        } else {
            self.push(Entry::Text(piece.to_owned()));
        }
    }

    /// A note line.
    pub fn note(&mut self, kind: NoteKind, text: &str) {
        self.push(Entry::Note(kind, cut(text, crate::text::MAX_SHOWN_BYTES).to_owned()));
    }

    /// The plan's progress: (done, total).
    pub fn progress(&self) -> (usize, usize) {
        (self.plan.iter().filter(|i| i.status == PlanStatus::Done).count(), self.plan.len())
    }

    /// Put `later` (what arrived live before this log was seeded) after this log's entries: its stored events
    /// already here are not repeated, a tool call already here only gets its outcome.
    pub fn append(&mut self, later: LiveLog) {
        for entry in later.entries {
            if let Entry::Tool { id, outcome: Some(o), .. } = &entry
                && let Some(Entry::Tool { outcome, .. }) =
                    self.entries.iter_mut().find(|e| matches!(e, Entry::Tool { id: i, .. } if i == id))
            {
                *outcome = Some(o.clone());
                continue;
            }
            if matches!(&entry, Entry::Tool { id, .. } if self.entries.iter().any(|e| matches!(e, Entry::Tool { id: i, .. } if i == id)))
            {
                continue;
            }
            self.push(entry);
        }
        self.gaps += later.gaps;
        self.first_seq = match (self.first_seq, later.first_seq) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Seed from a task's recent events (`ShowTask`): those older than anything applied already.
    pub fn seed(&mut self, events: &[TaskEvent]) {
        let before = self.first_seq;
        let mut older = LiveLog::default();
        for event in events.iter().filter(|e| before.is_none_or(|first| e.seq < first)) {
            older.event(event);
        }
        let later = std::mem::take(self);
        *self = older;
        if !later.plan.is_empty() {
            self.plan = later.plan.clone();
        }
        let (pushed, conversation) = (later.pushed, later.conversation);
        self.append(later);
        // The count goes on from the live one: a mark taken before stays valid.
        self.pushed = pushed;
        self.conversation = conversation;
        self.seeded = true;
    }

    /// Where the log is now, to hand back to [`LiveLog::load_conversation`] with the conversation asked for now.
    pub fn mark(&self) -> u64 {
        self.pushed
    }

    /// The conversation so far (`TaskLog`, asked for at `mark`) in place of what the log held then: its last
    /// [`MAX_BACKLOG_MESSAGES`] messages within [`MAX_BACKLOG_BYTES`] (a note says how many earlier ones, how big,
    /// and where to read them all), then what arrived live since `mark` (with the text streaming at `mark`, which
    /// no stored message holds yet). A tool call already in the conversation is not repeated.
    pub fn load_conversation(&mut self, messages: &[Message], mark: u64, task: &TaskId) {
        let since = if self.pushed >= mark { (self.pushed - mark) as usize } else { self.entries.len() };
        let mut keep_from = self.entries.len().saturating_sub(since);
        if keep_from > 0 && matches!(self.entries.get(keep_from - 1), Some(Entry::Text(_))) {
            keep_from -= 1;
        }
        let later: Vec<Entry> = self.entries.drain(keep_from..).collect();
        // The last messages within the bounds (at least one).
        let mut start = messages.len();
        let mut bytes = 0;
        while start > 0 && messages.len() - start < MAX_BACKLOG_MESSAGES {
            let size = message_bytes(&messages[start - 1]);
            if start < messages.len() && bytes + size > MAX_BACKLOG_BYTES {
                break;
            }
            bytes += size;
            start -= 1;
        }
        let mut log = LiveLog { plan: std::mem::take(&mut self.plan), ..LiveLog::default() };
        if start > 0 {
            let left: usize = messages[..start].iter().map(message_bytes).sum();
            log.note(
                NoteKind::Status,
                &format!(
                    "… {start} earlier message{} ({} KiB) not shown; all of it: `neuraphage task log {task}`",
                    if start == 1 { "" } else { "s" },
                    left.div_ceil(1024)
                ),
            );
        }
        for message in &messages[start..] {
            log.message(message);
        }
        for entry in later {
            if let Entry::Tool { id, outcome, .. } = &entry
                && let Some(Entry::Tool { outcome: known, .. }) =
                    log.entries.iter_mut().find(|e| matches!(e, Entry::Tool { id: i, .. } if i == id))
            {
                if known.is_none() {
                    *known = outcome.clone();
                }
                continue;
            }
            log.push(entry);
        }
        log.gaps = self.gaps;
        log.first_seq = self.first_seq;
        log.pushed = self.pushed;
        log.touched = self.touched;
        log.seeded = true;
        log.conversation = true;
        *self = log;
    }

    /// A tool's result: its first non-blank line completes the line of its call (newest first), or stands alone
    /// when the call is not shown.
    fn tool_outcome(&mut self, tool_use_id: &str, tool: &str, is_error: bool, result: &str) {
        let line = cut(result.lines().find(|l| !l.trim().is_empty()).unwrap_or(""), TOOL_TEXT).to_owned();
        let found = self.entries.iter_mut().rev().find_map(|e| match e {
            Entry::Tool { id, outcome, .. } if id == tool_use_id => Some(outcome),
            _ => None,
        });
        match found {
            Some(outcome) => {
                // A model picks the ids: the same one may be answered again, replacing what it weighed.
                let old = outcome.as_ref().map_or(0, |(_, o)| o.len());
                self.bytes = self.bytes - old + line.len();
                *outcome = Some((is_error, line));
                self.trim();
            }
            None => self.push(Entry::Tool {
                id: cut(tool_use_id, 256).to_owned(),
                tool: cut(tool, 64).to_owned(),
                input: String::new(),
                outcome: Some((is_error, line)),
            }),
        }
    }

    /// One stored message as entries: text as text (the user's as a note), each tool call as one line completed by
    /// its result.
    fn message(&mut self, message: &Message) {
        for block in &message.content {
            match block {
                ContentBlock::Text { text } if !text.trim().is_empty() => {
                    let tail = tail_of(text, BACKLOG_BLOCK);
                    match message.role {
                        Speaker::Assistant => {
                            // Each message's text on its own (text() would join it to the previous one).
                            self.push(Entry::Text(tail.into_owned()));
                        }
                        Speaker::User => self.note(NoteKind::User, &format!("user: {tail}")),
                    }
                }
                ContentBlock::ToolUse { id, name, input } => self.push(Entry::Tool {
                    id: cut(id, 256).to_owned(),
                    tool: cut(name, 64).to_owned(),
                    input: tool_input(name, &input.to_string()),
                    outcome: None,
                }),
                ContentBlock::ToolResult { tool_use_id, content, is_error } => {
                    self.tool_outcome(tool_use_id, "tool", *is_error, content);
                }
                _ => {}
            }
        }
    }

    /// Apply one stored event about this task.
    pub fn event(&mut self, event: &TaskEvent) {
        self.first_seq = Some(self.first_seq.map_or(event.seq, |s| s.min(event.seq)));
        match &event.kind {
            EventKind::ToolCall { tool, tool_use_id, input } => {
                let already = self.entries.iter().any(|e| matches!(e, Entry::Tool { id, .. } if id == tool_use_id));
                if !already {
                    self.push(Entry::Tool {
                        id: cut(tool_use_id, 256).to_owned(),
                        tool: cut(tool, 64).to_owned(),
                        input: tool_input(tool, input),
                        outcome: None,
                    });
                }
            }
            EventKind::ToolResult { tool_use_id, is_error, result, tool } => {
                self.tool_outcome(tool_use_id, tool, *is_error, result);
            }
            EventKind::StatusChanged { to, .. } => {
                let (kind, text) = status_note(to);
                self.note(kind, &text);
            }
            EventKind::UserMessage { text, delivery, .. } => {
                self.note(NoteKind::User, &format!("you: {} ({delivery})", cut(text, 1024)))
            }
            EventKind::Advice { from, text, .. } => {
                self.note(NoteKind::Attention, &format!("advice from {from}: {}", cut(text, 1024)))
            }
            EventKind::SubtaskCreated { child, depth } => {
                self.note(NoteKind::Status, &format!("sub-task {child} created (depth {depth})"))
            }
            EventKind::SubtaskEnded { child, outcome } => {
                self.note(NoteKind::Status, &format!("sub-task {child} ended: {}", cut(outcome, 1024)))
            }
            EventKind::KnowledgeInjected { ids } => {
                self.note(NoteKind::Status, &format!("knowledge injected: {}", cut(&ids.join(", "), 512)))
            }
            EventKind::KnowledgeRecorded { id, title, how, .. } => {
                self.note(NoteKind::Status, &format!("learning {id} recorded ({how}): {}", cut(title, 256)))
            }
            EventKind::KnowledgeRelayed { learning, from, to } => {
                self.note(NoteKind::Status, &format!("learning {learning} relayed from {from} to {to}"))
            }
            EventKind::QuestionAsked { question, options } => {
                let options = if options.is_empty() { String::new() } else { format!(" [{}]", options.join("/")) };
                self.note(NoteKind::Attention, &format!("question: {}{options}", cut(question, 2048)))
            }
            EventKind::QuestionAnswered { text, .. } => {
                self.note(NoteKind::User, &format!("answer: {}", cut(text, 1024)))
            }
            EventKind::PermissionRequested { prompt, .. } => {
                self.note(NoteKind::Attention, &format!("asks: {}", cut(prompt, 2048)))
            }
            EventKind::PermissionDecided { tool, subject, allowed, by, .. } => {
                let how = if *allowed { "allowed" } else { "denied" };
                self.note(NoteKind::Status, &format!("{how} by {by}: {tool} {}", cut(subject, 512)))
            }
            EventKind::PlanUpdated { items } => {
                self.plan = items
                    .iter()
                    .take(MAX_PLAN_ITEMS)
                    .map(|i| PlanItem { content: cut(&i.content, 512).to_owned(), status: i.status })
                    .collect();
            }
            EventKind::Notice { notice, message } => {
                self.note(NoteKind::Status, &format!("{notice}: {}", cut(message, 1024)))
            }
            EventKind::Escalated { from, to, .. } => {
                self.note(NoteKind::Status, &format!("escalated from {from} to {to}"))
            }
            EventKind::WorkerLost { reason, attempt, .. } => {
                self.note(NoteKind::Failure, &format!("worker lost ({reason}); restart {attempt}"))
            }
            EventKind::KeyRevoked { pool, key, .. } => {
                self.note(NoteKind::Failure, &format!("key {key} of pool {pool} revoked"))
            }
            EventKind::Committed { branch, commit } => {
                self.note(NoteKind::Status, &format!("committed {} to {branch}", cut(commit, 12)))
            }
            EventKind::PausedBySupervisor { reason } => {
                self.note(NoteKind::Attention, &format!("paused by the supervisor: {reason}"))
            }
            EventKind::WatcherIntervened { rule, recommendation, diagnosis, .. } => {
                self.note(NoteKind::Attention, &format!("watcher ({rule}): {recommendation}: {}", cut(diagnosis, 1024)))
            }
            EventKind::PersonaSelected { persona, reason } => {
                self.note(NoteKind::Status, &format!("persona {persona} ({})", cut(reason, 256)))
            }
            _ => {}
        }
    }
}

/// What a stored message weighs against [`MAX_BACKLOG_BYTES`]: its text as shown (each block cut).
fn message_bytes(message: &Message) -> usize {
    message
        .content
        .iter()
        .map(|b| match b {
            ContentBlock::Text { text } => text.len().min(BACKLOG_BLOCK),
            ContentBlock::ToolUse { name, .. } => name.len() + TOOL_TEXT,
            ContentBlock::ToolResult { .. } => TOOL_TEXT,
            _ => 0,
        })
        .sum()
}

/// The last `max` bytes of `text`, on a character boundary, with `…` in front when cut.
fn tail_of(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..]).into()
}

/// A status change as a log line.
fn status_note(to: &TaskStatus) -> (NoteKind, String) {
    match to {
        TaskStatus::Queued => (NoteKind::Status, "queued".into()),
        TaskStatus::Running { .. } => (NoteKind::Status, "running".into()),
        TaskStatus::WaitingForUser { prompt } => (NoteKind::Attention, format!("waits on you: {}", cut(prompt, 2048))),
        TaskStatus::Blocked { on } => (NoteKind::Status, format!("blocked on {on}")),
        TaskStatus::Paused => (NoteKind::Status, "paused".into()),
        TaskStatus::Completed { summary } => {
            (NoteKind::Status, format!("completed{}", summary.as_deref().map(|s| format!(": {s}")).unwrap_or_default()))
        }
        TaskStatus::Failed { error, .. } => (NoteKind::Failure, format!("failed: {}", cut(error, 2048))),
        TaskStatus::Cancelled { reason } => {
            (NoteKind::Status, format!("cancelled{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()))
        }
    }
}

/// What a tool was called with, in a few words: the command, the path or the pattern where the input names one.
pub fn tool_input(tool: &str, input: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(input).ok();
    let key = ["command", "file_path", "path", "pattern", "question", "skill", "description"]
        .into_iter()
        .find_map(|k| parsed.as_ref().and_then(|v| v.get(k)).and_then(|v| v.as_str()));
    let _ = tool;
    cut(key.unwrap_or(input), TOOL_TEXT).to_owned()
}

/// Every task's log.
#[derive(Debug, Default)]
pub struct LiveLogs {
    logs: HashMap<TaskId, LiveLog>,
    clock: u64,
}

impl LiveLogs {
    /// A task's log, made if missing (and the least recently active one dropped beyond [`MAX_LOGS`]).
    pub fn log_mut(&mut self, task: &TaskId) -> &mut LiveLog {
        self.clock += 1;
        if !self.logs.contains_key(task) && self.logs.len() >= MAX_LOGS {
            let oldest = self.logs.iter().min_by_key(|(_, l)| l.touched).map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.logs.remove(&oldest);
            }
        }
        let clock = self.clock;
        let log = self.logs.entry(task.clone()).or_default();
        log.touched = clock;
        log
    }

    /// A task's log, if any.
    pub fn get(&self, task: &TaskId) -> Option<&LiveLog> {
        self.logs.get(task)
    }

    /// How many logs are kept.
    pub fn len(&self) -> usize {
        self.logs.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use pretty_assertions::assert_eq;

    use super::*;

    fn ev(kind: EventKind) -> TaskEvent {
        TaskEvent { seq: 1, task: TaskId::from_bits(1), at: Utc::now(), kind }
    }

    #[test]
    fn a_tool_call_is_one_line_completed_by_its_result() {
        let mut log = LiveLog::default();
        log.text("Let me look");
        log.text(" at it.");
        log.event(&ev(EventKind::ToolCall {
            tool: "Bash".into(),
            tool_use_id: "t1".into(),
            input: r#"{"command":"cargo test"}"#.into(),
        }));
        log.event(&ev(EventKind::ToolResult {
            tool: "Bash".into(),
            tool_use_id: "t1".into(),
            is_error: true,
            result: "\nerror: 2 failed\nmore".into(),
        }));
        log.text("Fixing.");
        assert_eq!(
            log.entries().iter().cloned().collect::<Vec<_>>(),
            vec![
                Entry::Text("Let me look at it.".into()),
                Entry::Tool {
                    id: "t1".into(),
                    tool: "Bash".into(),
                    input: "cargo test".into(),
                    outcome: Some((true, "error: 2 failed".into()))
                },
                Entry::Text("Fixing.".into()),
            ]
        );
    }

    #[test]
    fn the_log_is_bounded_in_bytes_and_entries() {
        let mut log = LiveLog::default();
        for i in 0..2000 {
            log.note(NoteKind::Status, &format!("note {i} {}", "x".repeat(100)));
        }
        assert!(log.entries().len() <= MAX_ENTRIES);
        assert!(log.bytes <= MAX_LOG_BYTES);
        let mut log = LiveLog::default();
        log.text(&"y".repeat(100_000));
        log.text(&"z".repeat(100_000));
        assert_eq!(log.bytes, MAX_LOG_BYTES);
        assert!(matches!(log.entries().back(), Some(Entry::Text(t)) if t.ends_with('z') && t.len() == MAX_LOG_BYTES));
        let mut logs = LiveLogs::default();
        for n in 0..(MAX_LOGS as u64 + 5) {
            logs.log_mut(&TaskId::from_bits(n)).text("hi");
        }
        assert_eq!(logs.len(), MAX_LOGS);
        assert!(logs.get(&TaskId::from_bits(0)).is_none());
    }

    /// The sum of what the log's entries weigh, to hold its running count to.
    fn weighed(log: &LiveLog) -> usize {
        log.entries().iter().map(Entry::bytes).sum()
    }

    #[test]
    fn a_tool_call_id_answered_many_times_keeps_the_byte_count_true() {
        // A model chooses its tool calls' ids: the same id every time, answered every time.
        let result = format!("{}\n", "r".repeat(TOOL_TEXT));
        let mut log = LiveLog::default();
        log.event(&ev(EventKind::ToolCall { tool: "Bash".into(), tool_use_id: "x".into(), input: "{}".into() }));
        for _ in 0..200 {
            log.event(&ev(EventKind::ToolResult {
                tool: "Bash".into(),
                tool_use_id: "x".into(),
                is_error: false,
                result: result.clone(),
            }));
        }
        assert_eq!(log.bytes, weighed(&log));
        // Streamed text after it trims against a true count (a count grown past the entries' own would leave one
        // short text over the bound, and cutting its tail underflowed).
        log.text("hello");
        assert_eq!(log.bytes, weighed(&log));
        assert!(matches!(log.entries().back(), Some(Entry::Text(t)) if t == "hello"));
        // The same from a conversation read on attaching.
        let answer =
            |_: usize| ContentBlock::ToolResult { tool_use_id: "x".into(), content: result.clone(), is_error: false };
        let mut content =
            vec![ContentBlock::ToolUse { id: "x".into(), name: "Bash".into(), input: serde_json::json!({}) }];
        content.extend((0..200).map(answer));
        let messages = vec![
            Message { role: Speaker::User, content },
            Message { role: Speaker::Assistant, content: vec![ContentBlock::Text { text: "done".into() }] },
        ];
        let mut log = LiveLog::default();
        log.load_conversation(&messages, 0, &TaskId::from_bits(1));
        assert_eq!(log.bytes, weighed(&log));
        log.text("more");
        assert_eq!(log.bytes, weighed(&log));
    }

    #[test]
    fn the_plan_follows_plan_updated() {
        let mut log = LiveLog::default();
        let items = vec![
            PlanItem { content: "read".into(), status: PlanStatus::Done },
            PlanItem { content: "fix".into(), status: PlanStatus::InProgress },
            PlanItem { content: "test".into(), status: PlanStatus::Pending },
        ];
        log.event(&ev(EventKind::PlanUpdated { items: items.clone() }));
        assert_eq!(log.plan, items);
        assert_eq!(log.progress(), (1, 3));
    }
}
