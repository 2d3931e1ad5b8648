//! What keys do to the dashboard: each [`Command`] changes the [`App`]'s mode or selection, or asks for a control
//! request (an [`Effect`]) — the same requests the CLI makes for `task approve|deny [--reason]|send|pause|resume|
//! kill|retry|diff|new|log`. Pure, like the rest of the state.

use neuraphage_ipc::waiting::MAX_MESSAGE_BYTES;
use neuraphage_ipc::{ControlRequest, MAX_DESCRIPTION_BYTES, NewTask, TaskId, TaskState};

use crate::app::{App, DiffView, Effect, MAX_REASON_BYTES, Mode, Purpose, ReplyTo};
use crate::keys::Command;
use crate::tasks::Filter;

impl App {
    /// Ask for the selected task's recent history once.
    pub(crate) fn seed_selected(&mut self) {
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
                Command::Deny => self.ask_deny_reason(true),
                other => self.dashboard_command(other),
            },
            Mode::Dashboard | Mode::Prompt { .. } => self.dashboard_command(command),
        }
    }

    /// A command while a line is typed.
    fn typed(&mut self, command: Command) {
        let filter_changed = match (&mut self.mode, command) {
            (Mode::Prompt { text, purpose }, Command::Input(c)) => {
                let max = match purpose {
                    Purpose::DenyReason { .. } => MAX_REASON_BYTES,
                    _ => MAX_MESSAGE_BYTES.min(MAX_DESCRIPTION_BYTES),
                };
                if text.len() + c.len_utf8() <= max {
                    text.push(c);
                }
                matches!(purpose, Purpose::Filter)
            }
            (Mode::Attached { input: Some(text) }, Command::Input(c)) => {
                if text.len() + c.len_utf8() <= MAX_MESSAGE_BYTES {
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
            (Mode::Prompt { purpose: Purpose::DenyReason { task, attached }, .. }, Command::Cancel) => {
                let said = format!("not denied: {task} still waits");
                self.mode = if *attached { Mode::Attached { input: None } } else { Mode::Dashboard };
                self.flash = Some((said, false));
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
                if let Some(id) = self.selected.clone() {
                    self.mode = Mode::Attached { input: None };
                    self.scroll = 0;
                    self.load_conversation(&id);
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
            Command::Approve | Command::ApproveAlways => {
                let save = command == Command::ApproveAlways;
                self.act("approve", |task| ControlRequest::DecidePermission {
                    task,
                    allow: true,
                    save,
                    reason: None,
                    request: None,
                });
            }
            Command::Deny => self.ask_deny_reason(false),
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
                    // The supervisor cuts the patch for us: what the view keeps, with room for long lines to count.
                    let max_bytes = Some(crate::app::DIFF_ASKED_BYTES);
                    self.effects.push(Effect::Call(
                        ControlRequest::TaskDiff { task: id.to_string(), max_bytes },
                        ReplyTo::Diff(id),
                    ));
                }
            }
            Command::Detach | Command::Yes | Command::Quit => {}
            Command::Input(_) | Command::Backspace | Command::Submit => {}
        }
    }

    /// `x`: type why the selected task's pending request is denied (optional), then Enter denies it — the CLI's
    /// `task deny ID [--reason TEXT]`.
    fn ask_deny_reason(&mut self, attached: bool) {
        match self.selected.clone() {
            Some(task) => {
                self.mode = Mode::Prompt { purpose: Purpose::DenyReason { task, attached }, text: String::new() }
            }
            None => self.flash = Some(("no task is selected".to_owned(), true)),
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
            Mode::Prompt { purpose: Purpose::DenyReason { task, attached }, text } => {
                let reason = Some(text.trim().to_owned()).filter(|r| !r.is_empty());
                self.effects.push(Effect::Call(
                    ControlRequest::DecidePermission {
                        task: task.to_string(),
                        allow: false,
                        save: false,
                        reason,
                        request: None,
                    },
                    ReplyTo::Action("deny".into()),
                ));
                if attached {
                    self.mode = Mode::Attached { input: None };
                }
            }
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
}
