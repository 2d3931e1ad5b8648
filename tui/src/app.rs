//! The dashboard's state, and every change to it: pure (no terminal, no socket), so it is unit-tested directly.
//!
//! Inputs: stream items from the control socket ([`App::stream`]), the history read at start ([`App::history`]),
//! status lines ([`App::status`]), replies to requests ([`App::reply`]) and commands from keys ([`App::command`]).
//! Outputs: [`Effect`]s — control requests for the event loop to make — taken with [`App::take_effects`], terminal
//! alerts ([`crate::notices::Notices::take_alerts`]) and the terminal title ([`App::title`]). Drawing reads it.

use std::cell::Cell;
use std::collections::HashSet;

use chrono::{DateTime, Offset, Utc};
use neuraphage_ipc::events::StreamItem;
use neuraphage_ipc::llm::StreamDelta;
use neuraphage_ipc::{ControlReply, ControlRequest, EventKind, Task, TaskEvent, TaskId, TaskState, TaskStatus};

use crate::live::LiveLogs;
use crate::notices::{Notice, Notices};
use crate::stats::Stats;
use crate::tasks::TaskTable;

/// Lines of a diff kept for the diff view (the rest is counted, not kept: `neuraphage task diff` shows it all).
pub const MAX_DIFF_LINES: usize = 5_000;

/// Bytes of a diff kept for the diff view.
pub const MAX_DIFF_BYTES: usize = 512 * 1024;

/// Bytes of one diff line kept (a screen's width of it is shown; a minified file's line is cut here).
pub const MAX_DIFF_LINE_BYTES: usize = 1024;

/// Patch bytes asked of the supervisor for the diff view (it cuts there, and says so in a last line): the view keeps
/// far less, the rest is only counted.
pub const DIFF_ASKED_BYTES: u64 = 8 * 1024 * 1024;

/// Stream events buffered while the task list is being read.
const MAX_BUFFERED: usize = 10_000;

/// What the screen shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Every pane.
    Dashboard,
    /// The keys.
    Help,
    /// The selected task full-screen, with an input line (`Some` while typing).
    Attached {
        /// The message being typed.
        input: Option<String>,
    },
    /// A task's diff.
    Diff(DiffView),
    /// An input line over the dashboard.
    Prompt {
        /// What the line is for.
        purpose: Purpose,
        /// What is typed so far.
        text: String,
    },
    /// "Kill this task?"
    ConfirmKill(TaskId),
}

impl Mode {
    /// Whether keys are typed into a line.
    pub fn typing(&self) -> bool {
        matches!(self, Mode::Prompt { .. } | Mode::Attached { input: Some(_) })
    }
}

/// What an input line is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A new task's description.
    NewTask,
    /// The text filter.
    Filter,
    /// A message to a task.
    Message(TaskId),
    /// Why a task's pending permission request is denied (optional: Enter on an empty line denies without one).
    DenyReason {
        /// The task.
        task: TaskId,
        /// Typed over the attached view (back to it afterwards), else over the dashboard.
        attached: bool,
    },
}

/// Bytes of a deny reason (the supervisor's limit, `MAX_REASON_BYTES`).
pub const MAX_REASON_BYTES: usize = 4096;

/// A diff being shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffView {
    /// The task.
    pub task: TaskId,
    /// The patch's lines (raw; escaped when drawn); empty while it loads.
    pub lines: Vec<String>,
    /// The first line shown.
    pub scroll: usize,
    /// Still loading.
    pub loading: bool,
    /// Lines left out beyond [`MAX_DIFF_LINES`] or [`MAX_DIFF_BYTES`] (the last kept line says so).
    pub cut: usize,
}

/// The control link's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Connecting.
    Connecting,
    /// Streaming.
    Live,
    /// Lost, with why; reconnecting.
    Lost(String),
}

/// Why a request is made: what to do with its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyTo {
    /// A task's detail: add the task, seed its log and plan.
    Detail(TaskId),
    /// The diff view's patch.
    Diff(TaskId),
    /// The conversation so far, asked for on attaching when the log was at `mark` ([`crate::live::LiveLog::mark`]).
    Conversation {
        /// The task.
        task: TaskId,
        /// Where its log was.
        mark: u64,
    },
    /// A user action; its outcome is said in the footer.
    Action(String),
}

/// What the event loop is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Make a control request and hand the reply to [`App::reply`].
    Call(ControlRequest, ReplyTo),
    /// Read every task (paged) and hand them to [`App::tasks_listed`].
    ListTasks,
    /// Read the stored events after `since` (not following) into [`App::history`].
    History {
        /// Sequence number to read after.
        since: u64,
    },
    /// Leave.
    Quit,
}

/// Events read back at start for the notifications and the logs.
pub const HISTORY_EVENTS: u64 = 2000;

/// The whole state.
#[derive(Debug)]
pub struct App {
    /// Known tasks.
    pub tasks: TaskTable,
    /// Per-task live logs and plans.
    pub logs: LiveLogs,
    /// Notifications.
    pub notices: Notices,
    /// Stats.
    pub stats: Stats,
    /// What the screen shows.
    pub mode: Mode,
    /// The selected task.
    pub selected: Option<TaskId>,
    /// Rows the live pane is scrolled back from its end.
    pub scroll: u16,
    /// The first shown row of the Tasks pane (kept by drawing so the selection stays in view).
    pub list_offset: Cell<usize>,
    /// The last action's outcome (`true`: an error).
    pub flash: Option<(String, bool)>,
    /// The control link.
    pub link: Link,
    /// Now, for ages (set by the event loop; fixed in tests).
    pub now: DateTime<Utc>,
    /// The local time zone's offset, for clock times (UTC in tests).
    pub utc_offset: chrono::FixedOffset,
    pub(crate) effects: Vec<Effect>,
    /// Stored events received while the task list is read, re-applied after it.
    buffered: Option<Vec<TaskEvent>>,
    fetching: HashSet<TaskId>,
    fetching_conversation: HashSet<TaskId>,
    history_asked: bool,
}

impl App {
    /// An empty dashboard at `now`.
    pub fn new(now: DateTime<Utc>) -> App {
        App {
            tasks: TaskTable::default(),
            logs: LiveLogs::default(),
            notices: Notices::default(),
            stats: Stats::default(),
            mode: Mode::Dashboard,
            selected: None,
            scroll: 0,
            list_offset: Cell::new(0),
            flash: None,
            link: Link::Connecting,
            now,
            utc_offset: Utc.fix(),
            effects: Vec::new(),
            buffered: None,
            fetching: HashSet::new(),
            fetching_conversation: HashSet::new(),
            history_asked: false,
        }
    }

    /// The requests to make, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The selected task, if it is known.
    pub fn selected_task(&self) -> Option<&Task> {
        self.selected.as_ref().and_then(|id| self.tasks.get(id))
    }

    /// The terminal title: `np ⏳2 ▶5 ✓12` (waiting, running, completed; failed when any).
    pub fn title(&self) -> String {
        let counts = self.tasks.counts();
        let n = |s: TaskState| counts.get(&s).copied().unwrap_or(0);
        let mut title =
            format!("np ⏳{} ▶{} ✓{}", n(TaskState::WaitingForUser), n(TaskState::Running), n(TaskState::Completed));
        if n(TaskState::Failed) > 0 {
            title.push_str(&format!(" ✗{}", n(TaskState::Failed)));
        }
        title
    }

    /// One item of the live stream.
    pub fn stream(&mut self, item: StreamItem) {
        match item {
            StreamItem::Event(event) => {
                if let Some(buffer) = &mut self.buffered
                    && buffer.len() < MAX_BUFFERED
                    && matches!(event.kind, EventKind::StatusChanged { .. })
                {
                    buffer.push(event.clone());
                }
                self.event(&event, true);
            }
            StreamItem::Delta { task, delta } => match delta {
                StreamDelta::Text { text, .. } => self.logs.log_mut(&task).text(&text),
                StreamDelta::ToolUseStart { .. } | StreamDelta::ToolInput { .. } | StreamDelta::Thinking { .. } => {}
            },
            StreamItem::CaughtUp { seq } => {
                self.link = Link::Live;
                self.buffered = Some(Vec::new());
                self.effects.push(Effect::ListTasks);
                // The recent past once (not again after a reconnection: it would repeat notifications).
                if seq > 0 && !self.history_asked {
                    self.history_asked = true;
                    self.effects.push(Effect::History { since: seq.saturating_sub(HISTORY_EVENTS) });
                }
            }
            StreamItem::Missed { count, deltas, .. } => {
                self.flash = Some((
                    format!("fell behind the stream: {count} events and {deltas} pieces of text missed; re-reading"),
                    true,
                ));
                if self.buffered.is_none() {
                    self.buffered = Some(Vec::new());
                    self.effects.push(Effect::ListTasks);
                }
            }
            StreamItem::End { .. } => {}
        }
    }

    /// A stored event read back at start (older than the live ones): it feeds notifications and the rate, never a
    /// task's status or log.
    pub fn history(&mut self, event: &TaskEvent) {
        self.event(&event.clone(), false);
    }

    fn event(&mut self, event: &TaskEvent, live: bool) {
        if live {
            match &event.kind {
                EventKind::StatusChanged { to, .. }
                    if !self.tasks.set_status(&event.task, to, event.at) && self.buffered.is_none() =>
                {
                    self.fetch(&event.task);
                }
                EventKind::Created { .. } if self.buffered.is_none() => self.fetch(&event.task),
                _ => {}
            }
        }
        if matches!(event.kind, EventKind::Cost { .. }) {
            self.stats.request(event.at);
        }
        if let Some(notice) = Notice::from_event(event) {
            self.notices.push(notice, live);
        }
        // The past reaches a log only through its task's detail (`ShowTask`), in order.
        if live
            && matches!(
                event.kind,
                EventKind::ToolCall { .. }
                    | EventKind::ToolResult { .. }
                    | EventKind::StatusChanged { .. }
                    | EventKind::UserMessage { .. }
                    | EventKind::QuestionAsked { .. }
                    | EventKind::QuestionAnswered { .. }
                    | EventKind::PermissionRequested { .. }
                    | EventKind::PermissionDecided { .. }
                    | EventKind::PlanUpdated { .. }
                    | EventKind::Notice { .. }
                    | EventKind::Escalated { .. }
                    | EventKind::WorkerLost { .. }
                    | EventKind::KeyRevoked { .. }
                    | EventKind::Committed { .. }
                    | EventKind::PausedBySupervisor { .. }
            )
        {
            self.logs.log_mut(&event.task).event(event);
        }
    }

    pub(crate) fn fetch(&mut self, task: &TaskId) {
        if self.fetching.insert(task.clone()) {
            self.effects
                .push(Effect::Call(ControlRequest::ShowTask { task: task.to_string() }, ReplyTo::Detail(task.clone())));
        }
    }

    /// Ask for a task's conversation so far once (on attaching), marking where its log is now: the subscription
    /// is already caught up, so what comes live from here follows the conversation (as `task attach` orders it).
    pub(crate) fn load_conversation(&mut self, task: &TaskId) {
        let log = self.logs.log_mut(task);
        if log.conversation || !self.fetching_conversation.insert(task.clone()) {
            return;
        }
        let mark = log.mark();
        self.effects.push(Effect::Call(
            ControlRequest::TaskLog { task: task.to_string() },
            ReplyTo::Conversation { task: task.clone(), mark },
        ));
    }

    /// The task list (every page).
    pub fn tasks_listed(&mut self, tasks: Vec<Task>) {
        self.tasks.replace_all(tasks);
        for event in self.buffered.take().unwrap_or_default() {
            if let EventKind::StatusChanged { to, .. } = &event.kind {
                self.tasks.set_status(&event.task, to, event.at);
            }
        }
        self.tasks.refresh();
        if self.selected.as_ref().is_none_or(|id| self.tasks.index_of(id).is_none()) {
            self.selected = self.tasks.id_at(0).cloned();
        }
        self.seed_selected();
    }

    /// The latest status line.
    pub fn status(&mut self, line: neuraphage_ipc::status::StatusLine) {
        self.stats.status = Some(line);
    }

    /// The control link was lost (the supervisor stopped); the loop reconnects.
    pub fn lost(&mut self, why: String) {
        self.link = Link::Lost(why);
        self.buffered = None;
        self.fetching.clear();
        self.fetching_conversation.clear();
    }

    /// A request's reply (`Err`: its refusal or failure, in words).
    pub fn reply(&mut self, purpose: ReplyTo, reply: Result<ControlReply, String>) {
        match (purpose, reply) {
            (ReplyTo::Detail(id), Ok(ControlReply::Detail(detail))) => {
                self.fetching.remove(&id);
                let detail = *detail;
                self.tasks.upsert(detail.task);
                let log = self.logs.log_mut(&id);
                if !log.seeded {
                    log.seed(&detail.events);
                    if log.plan.is_empty() {
                        log.plan = detail.plan;
                    }
                }
                self.tasks.refresh();
                if self.selected.is_none() {
                    self.selected = Some(id);
                }
            }
            (ReplyTo::Detail(id), _) => {
                self.fetching.remove(&id);
            }
            (ReplyTo::Conversation { task, mark }, reply) => {
                self.fetching_conversation.remove(&task);
                match reply {
                    Ok(ControlReply::Log { messages, .. }) => {
                        self.logs.log_mut(&task).load_conversation(&messages, mark, &task)
                    }
                    Ok(other) => self.flash = Some((format!("unexpected reply to the conversation: {other:?}"), true)),
                    // As `task attach`: say so and follow live (attaching again asks again).
                    Err(e) => {
                        self.flash =
                            Some((format!("the conversation so far cannot be read now ({e}); following live"), true))
                    }
                }
            }
            (ReplyTo::Diff(id), reply) => {
                if let Mode::Diff(view) = &mut self.mode
                    && view.task == id
                {
                    view.loading = false;
                    match reply {
                        Ok(ControlReply::Diff { patch, base_commit, .. }) => {
                            if base_commit.is_none() {
                                view.lines = vec!["(this task has no repository, so no diff)".to_owned()];
                            } else if patch.is_empty() {
                                view.lines = vec!["(no changes)".to_owned()];
                            } else {
                                (view.lines, view.cut) = bounded_diff(&patch, &id);
                            }
                        }
                        Ok(other) => view.lines = vec![format!("unexpected reply: {other:?}")],
                        Err(e) => view.lines = vec![format!("no diff: {e}")],
                    }
                }
            }
            (ReplyTo::Action(what), Ok(reply)) => {
                let said = match &reply {
                    ControlReply::Task(task) => {
                        let text = format!("{what}: {} is {}", task.id, task.status.state());
                        self.tasks.upsert(task.clone());
                        self.tasks.refresh();
                        if what == "created" {
                            self.selected = Some(task.id.clone());
                        }
                        text
                    }
                    ControlReply::Sent { task, delivery } => format!("sent to {task}: {delivery}"),
                    ControlReply::PermissionDecided(d) => {
                        let verb = if d.allowed { "approved" } else { "denied" };
                        let saved = d.saved_rule.map(|r| format!(" (saved rule #{r})")).unwrap_or_default();
                        format!("{verb} request #{} of {}: {} {}{saved}", d.request, d.task, d.tool, d.subject)
                    }
                    other => format!("{what}: {other:?}"),
                };
                self.flash = Some((said, false));
            }
            (ReplyTo::Action(what), Err(e)) => self.flash = Some((format!("{what}: {e}"), true)),
        }
    }

    /// A waiting task's prompt, if the task waits.
    pub fn prompt_of(task: &Task) -> Option<&str> {
        match &task.status {
            TaskStatus::WaitingForUser { prompt } => Some(prompt),
            _ => None,
        }
    }
}

/// A patch's first lines for the diff view: at most [`MAX_DIFF_LINES`] lines and [`MAX_DIFF_BYTES`] bytes, each
/// line cut to [`MAX_DIFF_LINE_BYTES`]; when more is left, a last line says how many lines and where to see them.
/// One pass over what is kept, one byte count over the rest: a huge patch costs no more than its size to skip.
pub fn bounded_diff(patch: &str, task: &TaskId) -> (Vec<String>, usize) {
    let mut lines = Vec::new();
    let (mut bytes, mut at) = (0, 0);
    for line in patch.split_inclusive('\n') {
        let text = line.strip_suffix('\n').unwrap_or(line);
        let text = text.strip_suffix('\r').unwrap_or(text);
        let kept = crate::text::cut(text, MAX_DIFF_LINE_BYTES);
        if lines.len() >= MAX_DIFF_LINES || bytes + kept.len() > MAX_DIFF_BYTES {
            break;
        }
        bytes += kept.len();
        lines.push(kept.to_owned());
        at += line.len();
    }
    let rest = &patch.as_bytes()[at..];
    let cut = match rest {
        [] => 0,
        _ => rest.iter().filter(|b| **b == b'\n').count() + usize::from(rest.last() != Some(&b'\n')),
    };
    if cut > 0 {
        // Past what the supervisor sent there is more still (its last line says so): the count is a lower bound.
        let shown = if patch
            .trim_end()
            .rsplit('\n')
            .next()
            .is_some_and(|l| l.starts_with(neuraphage_ipc::control::DIFF_CUT_NOTE))
        {
            format!("more than {}", cut - 1)
        } else {
            cut.to_string()
        };
        lines.push(format!("… {shown} more lines, see `neuraphage task diff {task}`"));
    }
    (lines, cut)
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
