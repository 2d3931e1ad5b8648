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
use neuraphage_ipc::waiting::MAX_MESSAGE_BYTES;
use neuraphage_ipc::{
    ControlReply, ControlRequest, EventKind, MAX_DESCRIPTION_BYTES, NewTask, Task, TaskEvent, TaskId, TaskState,
    TaskStatus,
};

use crate::keys::Command;
use crate::live::LiveLogs;
use crate::notices::{Notice, Notices};
use crate::stats::Stats;
use crate::tasks::{Filter, TaskTable};

/// Lines of a diff kept for the diff view.
pub const MAX_DIFF_LINES: usize = 20_000;

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
}

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
    /// Lines left out beyond [`MAX_DIFF_LINES`].
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
    effects: Vec<Effect>,
    /// Stored events received while the task list is read, re-applied after it.
    buffered: Option<Vec<TaskEvent>>,
    fetching: HashSet<TaskId>,
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
                if seq > 0 {
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

    /// A stored event read back at start (older than the live ones): it feeds notifications, logs and the rate,
    /// never a task's status.
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
        if matches!(
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
        ) {
            self.logs.log_mut(&event.task).event(event);
        }
    }

    fn fetch(&mut self, task: &TaskId) {
        if self.fetching.insert(task.clone()) {
            self.effects
                .push(Effect::Call(ControlRequest::ShowTask { task: task.to_string() }, ReplyTo::Detail(task.clone())));
        }
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
                                let total = patch.lines().count();
                                view.lines = patch.lines().take(MAX_DIFF_LINES).map(str::to_owned).collect();
                                view.cut = total.saturating_sub(MAX_DIFF_LINES);
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

    /// Ask for the selected task's recent history once.
    fn seed_selected(&mut self) {
        if let Some(id) = self.selected.clone()
            && !self.logs.get(&id).is_some_and(|l| l.seeded)
        {
            self.fetch(&id);
        }
    }

    fn select_index(&mut self, index: usize) {
        self.tasks.refresh();
        if let Some(id) = self.tasks.id_at(index).cloned() {
            if self.selected.as_ref() != Some(&id) {
                self.scroll = 0;
            }
            self.selected = Some(id);
            self.seed_selected();
        }
    }

    fn selected_index(&mut self) -> Option<usize> {
        self.tasks.refresh();
        self.selected.as_ref().and_then(|id| self.tasks.index_of(id))
    }

    fn act(&mut self, what: &str, request: impl FnOnce(String) -> ControlRequest) {
        match &self.selected {
            Some(id) => {
                let request = request(id.to_string());
                self.effects.push(Effect::Call(request, ReplyTo::Action(what.to_owned())));
            }
            None => self.flash = Some(("no task is selected".to_owned(), true)),
        }
    }

    /// One command from a key.
    pub fn command(&mut self, command: Command) {
        if self.mode.typing() {
            self.typed(command);
            return;
        }
        if command == Command::Quit {
            self.effects.push(Effect::Quit);
            return;
        }
        match &mut self.mode {
            Mode::ConfirmKill(id) => {
                if command == Command::Yes {
                    let task = id.to_string();
                    self.effects.push(Effect::Call(
                        ControlRequest::KillTask { task, reason: Some("killed from the dashboard".into()) },
                        ReplyTo::Action("killed".into()),
                    ));
                }
                self.mode = Mode::Dashboard;
            }
            Mode::Help => self.mode = Mode::Dashboard,
            Mode::Diff(view) => match command {
                Command::ScrollDown(n) => {
                    view.scroll = (view.scroll + n as usize).min(view.lines.len().saturating_sub(1))
                }
                Command::ScrollUp(n) => view.scroll = view.scroll.saturating_sub(n as usize),
                Command::Top => view.scroll = 0,
                Command::Bottom => view.scroll = view.lines.len().saturating_sub(1),
                _ => self.mode = Mode::Dashboard,
            },
            Mode::Attached { input } => match command {
                Command::Detach => {
                    self.mode = Mode::Dashboard;
                    self.scroll = 0;
                }
                Command::Send => *input = Some(String::new()),
                other => self.dashboard_command(other),
            },
            Mode::Dashboard | Mode::Prompt { .. } => self.dashboard_command(command),
        }
    }

    /// A command while a line is typed.
    fn typed(&mut self, command: Command) {
        let filter_changed = match (&mut self.mode, command) {
            (Mode::Prompt { text, purpose }, Command::Input(c)) => {
                if text.len() < MAX_MESSAGE_BYTES.min(MAX_DESCRIPTION_BYTES) {
                    text.push(c);
                }
                matches!(purpose, Purpose::Filter)
            }
            (Mode::Attached { input: Some(text) }, Command::Input(c)) => {
                if text.len() < MAX_MESSAGE_BYTES {
                    text.push(c);
                }
                false
            }
            (Mode::Prompt { text, purpose }, Command::Backspace) => {
                text.pop();
                matches!(purpose, Purpose::Filter)
            }
            (Mode::Attached { input: Some(text) }, Command::Backspace) => {
                text.pop();
                false
            }
            (_, Command::Submit) => {
                self.submit();
                false
            }
            (Mode::Attached { input }, Command::Cancel) => {
                *input = None;
                false
            }
            (Mode::Prompt { purpose, .. }, Command::Cancel) => {
                let was_filter = *purpose == Purpose::Filter;
                self.mode = Mode::Dashboard;
                if was_filter {
                    let state = self.tasks.filter().state;
                    self.tasks.set_filter(Filter { state, text: String::new() });
                    self.keep_selection_shown();
                }
                false
            }
            _ => false,
        };
        if filter_changed && let Mode::Prompt { text, .. } = &self.mode {
            let filter = Filter { state: self.tasks.filter().state, text: text.clone() };
            self.tasks.set_filter(filter);
            self.keep_selection_shown();
        }
    }

    fn dashboard_command(&mut self, command: Command) {
        let index = self.selected_index();
        match command {
            Command::Down => self.select_index(index.map_or(0, |i| (i + 1).min(self.tasks.shown().saturating_sub(1)))),
            Command::Up => self.select_index(index.map_or(0, |i| i.saturating_sub(1))),
            Command::Top => self.select_index(0),
            Command::Bottom => self.select_index(self.tasks.shown().saturating_sub(1)),
            Command::ScrollUp(n) => self.scroll = self.scroll.saturating_add(n),
            Command::ScrollDown(n) => self.scroll = self.scroll.saturating_sub(n),
            Command::Help => self.mode = Mode::Help,
            Command::Attach => {
                if self.selected.is_some() {
                    self.mode = Mode::Attached { input: None };
                    self.scroll = 0;
                }
            }
            Command::Send => {
                if let Some(id) = self.selected.clone() {
                    self.mode = Mode::Prompt { purpose: Purpose::Message(id), text: String::new() };
                }
            }
            Command::NewTask => self.mode = Mode::Prompt { purpose: Purpose::NewTask, text: String::new() },
            Command::Filter => {
                self.mode = Mode::Prompt { purpose: Purpose::Filter, text: self.tasks.filter().text.clone() }
            }
            Command::CycleState => {
                let next = match self.tasks.filter().state {
                    None => Some(TaskState::ALL[0]),
                    Some(s) => {
                        TaskState::ALL.iter().position(|x| *x == s).and_then(|i| TaskState::ALL.get(i + 1)).copied()
                    }
                };
                let text = self.tasks.filter().text.clone();
                self.tasks.set_filter(Filter { state: next, text });
                self.keep_selection_shown();
            }
            Command::Cancel => {
                if self.tasks.filter().is_active() {
                    self.tasks.set_filter(Filter::default());
                }
                self.flash = None;
            }
            Command::Approve | Command::ApproveAlways | Command::Deny => {
                let (allow, save) = match command {
                    Command::Approve => (true, false),
                    Command::ApproveAlways => (true, true),
                    _ => (false, false),
                };
                let what = if allow { "approve" } else { "deny" };
                self.act(what, |task| ControlRequest::DecidePermission {
                    task,
                    allow,
                    save,
                    reason: None,
                    request: None,
                });
            }
            Command::PauseResume => {
                let paused = self.selected_task().is_some_and(|t| t.status.state() == TaskState::Paused);
                if paused {
                    self.act("resumed", |task| ControlRequest::ResumeTask { task });
                } else {
                    self.act("paused", |task| ControlRequest::PauseTask { task });
                }
            }
            Command::Kill => {
                if let Some(id) = self.selected.clone() {
                    self.mode = Mode::ConfirmKill(id);
                }
            }
            Command::Retry => self.act("retried", |task| ControlRequest::RetryTask { task }),
            Command::Diff => {
                if let Some(id) = self.selected.clone() {
                    self.mode =
                        Mode::Diff(DiffView { task: id.clone(), lines: Vec::new(), scroll: 0, loading: true, cut: 0 });
                    self.effects
                        .push(Effect::Call(ControlRequest::TaskDiff { task: id.to_string() }, ReplyTo::Diff(id)));
                }
            }
            Command::Detach | Command::Yes | Command::Quit => {}
            Command::Input(_) | Command::Backspace | Command::Submit => {}
        }
    }

    fn keep_selection_shown(&mut self) {
        self.tasks.refresh();
        if self.selected.as_ref().is_none_or(|id| self.tasks.index_of(id).is_none()) {
            self.selected = self.tasks.id_at(0).cloned();
            self.seed_selected();
        }
    }

    fn submit(&mut self) {
        let mode = std::mem::replace(&mut self.mode, Mode::Dashboard);
        match mode {
            Mode::Prompt { purpose: Purpose::Filter, .. } => self.keep_selection_shown(),
            Mode::Prompt { purpose: Purpose::NewTask, text } => {
                if text.trim().is_empty() {
                    self.flash = Some(("the task description is empty; nothing was created".into(), true));
                } else {
                    self.effects.push(Effect::Call(
                        ControlRequest::CreateTask(NewTask::described(text)),
                        ReplyTo::Action("created".into()),
                    ));
                }
            }
            Mode::Prompt { purpose: Purpose::Message(id), text } => self.send(&id, text),
            Mode::Attached { input: Some(text) } => {
                if let Some(id) = self.selected.clone() {
                    self.send(&id, text);
                }
                self.mode = Mode::Attached { input: None };
            }
            other => self.mode = other,
        }
    }

    fn send(&mut self, id: &TaskId, text: String) {
        if text.trim().is_empty() {
            self.flash = Some(("the message is empty; nothing was sent".into(), true));
            return;
        }
        self.effects.push(Effect::Call(
            ControlRequest::SendMessage { task: id.to_string(), text },
            ReplyTo::Action("send".into()),
        ));
    }

    /// A waiting task's prompt, if the task waits.
    pub fn prompt_of(task: &Task) -> Option<&str> {
        match &task.status {
            TaskStatus::WaitingForUser { prompt } => Some(prompt),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
