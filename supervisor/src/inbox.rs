//! A person talks to tasks: `task send` (and the special messages `/pause`, `/cancel`, `/retry`), `task answer`,
//! `task pause` / `resume`, `neuraphage waiting`; and the running sessions' side of it, [`Mailboxes`]: a message for
//! a running task is stored first ([`crate::store::inbox`]), then pushed to its session, which hands it to the
//! worker; a pause asked of a running task stops it after its next acknowledged checkpoint.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use neuraphage_ipc::waiting::{MAX_MESSAGE_BYTES, SPECIAL_MESSAGES};
use neuraphage_ipc::worker::UserInput;
use neuraphage_ipc::{ControlReply, ErrorCode, EventKind, TaskId, TaskState, TaskStatus};
use tokio::sync::mpsc;

use crate::error::{Result, SupervisorError};
use crate::requests::Daemon;

/// The running sessions' ends for user messages, and the pauses asked of running tasks.
#[derive(Debug, Default)]
pub struct Mailboxes {
    boxes: Mutex<HashMap<TaskId, mpsc::UnboundedSender<(u64, String)>>>,
    pausing: Mutex<HashSet<TaskId>>,
}

impl Mailboxes {
    fn boxes(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, mpsc::UnboundedSender<(u64, String)>>> {
        self.boxes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pausing(&self) -> std::sync::MutexGuard<'_, HashSet<TaskId>> {
        self.pausing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hand stored input (inbox id, framed text) to task `id`'s running session, if it has one.
    pub fn hand(&self, id: &TaskId, inbox: u64, framed: String) {
        if let Some(tx) = self.boxes().get(id) {
            let _ = tx.send((inbox, framed));
        }
    }

    /// Whether `task pause` asked the running task to stop at its next checkpoint.
    pub fn pause_requested(&self, id: &TaskId) -> bool {
        self.pausing().contains(id)
    }

    /// Forget a pause request (the session ended).
    pub fn clear_pause(&self, id: &TaskId) {
        self.pausing().remove(id);
    }
}

/// A session's mailbox: user messages stored for its task while it runs. Closed when dropped.
pub struct Mailbox {
    daemon: Arc<Daemon>,
    id: TaskId,
    rx: mpsc::UnboundedReceiver<(u64, String)>,
}

impl Mailbox {
    /// Open the task's mailbox. Open it before reading [`Mailbox::pending`]: a message stored in between is in
    /// both, and the worker takes each id once.
    pub fn open(daemon: &Arc<Daemon>, id: &TaskId) -> Mailbox {
        let (tx, rx) = mpsc::unbounded_channel();
        daemon.mailboxes.boxes().insert(id.clone(), tx);
        Mailbox { daemon: daemon.clone(), id: id.clone(), rx }
    }

    /// The task's stored input not yet in its conversation (for the worker's `Start`).
    pub fn pending(&self) -> Vec<UserInput> {
        self.daemon.with_store(|s| s.pending_input(&self.id)).unwrap_or_else(|e| {
            tracing::error!(task = %self.id, error = %e, "cannot read the task's inbox; its messages wait for the next session");
            Vec::new()
        })
    }

    /// The next message sent while the task runs.
    pub async fn recv(&mut self) -> Option<(u64, String)> {
        self.rx.recv().await
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.daemon.mailboxes.boxes().remove(&self.id);
    }
}

fn invalid(message: String) -> SupervisorError {
    SupervisorError::refused(ErrorCode::InvalidArgument, message)
}

/// Check a user message: 1 byte to 64 KiB, not blank, no NUL.
pub fn validate(text: &str) -> Result<()> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(invalid(format!(
            "the message is {} bytes; the limit is {MAX_MESSAGE_BYTES} bytes (64 KiB)",
            text.len()
        )));
    }
    if text.trim().is_empty() {
        return Err(invalid("the message is empty".into()));
    }
    if let Some(at) = text.find('\0') {
        return Err(invalid(format!("the message contains a NUL byte at byte {at}")));
    }
    Ok(())
}

/// `task send` (`answer_only`: `task answer`): store the message, then act on it; the reply says what became of it.
pub fn send(daemon: &Daemon, typed: &str, text: String, answer_only: bool) -> Result<ControlReply> {
    validate(&text)?;
    let id = daemon.with_store(|s| s.resolve(typed))?;
    if !answer_only && SPECIAL_MESSAGES.contains(&text.trim()) {
        return special(daemon, &id, text.trim());
    }
    let sent = daemon.with_store(|s| s.send_message(&id, &text, answer_only))?;
    tracing::info!(task = %id, inbox = sent.id, delivery = %sent.delivery, "user message stored");
    if sent.running
        && let Some(tx) = daemon.mailboxes.boxes().get(&id)
    {
        let _ = tx.send((sent.id, text));
    }
    if sent.task.status == TaskStatus::Queued {
        daemon.workers.wake.notify_one();
    }
    Ok(ControlReply::Sent { task: id, delivery: sent.delivery })
}

/// Put advice into task `id`'s next turn (a Watcher nudge, a relayed learning; `from`: `watcher` or `task <id>`):
/// stored and recorded first, then handed to its running session, if any. See [`Store::send_advice`].
///
/// [`Store::send_advice`]: crate::store::Store::send_advice
pub fn advise(daemon: &Daemon, id: &TaskId, from: &str, text: &str) -> Result<u64> {
    validate(text)?;
    let (inbox, framed, running) = daemon.with_store(|s| s.send_advice(id, from, text))?;
    tracing::info!(task = %id, inbox, %from, "advice stored");
    if running && let Some(tx) = daemon.mailboxes.boxes().get(id) {
        let _ = tx.send((inbox, framed));
    }
    Ok(inbox)
}

/// `/pause`, `/cancel`, `/retry`: act, then record the message with what was done.
fn special(daemon: &Daemon, id: &TaskId, command: &str) -> Result<ControlReply> {
    let delivery = match command {
        "/pause" => match pause_task(daemon, id)? {
            (_, true) => "pausing at its next checkpoint".to_owned(),
            _ => "paused".to_owned(),
        },
        "/cancel" => {
            daemon.with_store(|s| s.cancel(id, Some("cancelled by /cancel".into())))?;
            let running = daemon.workers.is_running(id);
            daemon.workers.cancel(id);
            // As `task kill`: its sub-tasks first (theirs is this reason), then a sub-task with no session to end
            // is told to its parent now.
            crate::subtasks::cancel_descendants(daemon, id, &format!("its parent {id} was cancelled"));
            if !running {
                crate::subtasks::on_end(daemon, id);
            }
            daemon.workers.wake.notify_one();
            "cancelled".to_owned()
        }
        _ => {
            daemon.with_store(|s| s.retry(id))?;
            daemon.workers.wake.notify_one();
            "queued again".to_owned()
        }
    };
    daemon.record(id, EventKind::UserMessage { id: 0, text: command.to_owned(), delivery: delivery.clone() });
    Ok(ControlReply::Sent { task: id.clone(), delivery })
}

/// Pause a task; `true` when it runs and stops at its next checkpoint.
fn pause_task(daemon: &Daemon, id: &TaskId) -> Result<(neuraphage_ipc::Task, bool)> {
    let (task, running) = daemon.with_store(|s| s.pause(id))?;
    if running {
        daemon.mailboxes.pausing().insert(id.clone());
        tracing::info!(task = %id, "pausing at the next checkpoint");
    }
    Ok((task, running))
}

/// `task pause`.
pub fn pause(daemon: &Daemon, typed: &str) -> Result<ControlReply> {
    let id = daemon.with_store(|s| s.resolve(typed))?;
    Ok(ControlReply::Task(pause_task(daemon, &id)?.0))
}

/// `task resume`.
pub fn resume(daemon: &Daemon, typed: &str) -> Result<ControlReply> {
    let task = daemon.with_store(|s| {
        let id = s.resolve(typed)?;
        s.resume(&id)
    })?;
    daemon.workers.wake.notify_one();
    Ok(ControlReply::Task(task))
}

/// `neuraphage waiting`.
pub fn waiting(daemon: &Daemon) -> Result<ControlReply> {
    Ok(ControlReply::Waiting { tasks: daemon.with_store(|s| s.waiting())? })
}

/// The end of a session: its status (a pause it asked for included), or Queued again for input it came too late
/// for; see [`crate::store::Store::end_session`].
pub fn end_session(daemon: &Daemon, id: &TaskId, status: TaskStatus) {
    daemon.mailboxes.clear_pause(id);
    match daemon.with_store(|s| s.end_session(id, status)) {
        Ok((task, true)) => {
            if task.status.state() == TaskState::Queued {
                tracing::info!(task = %id, "user input came after its last turn: queued again");
            }
            daemon.workers.wake.notify_one();
        }
        Ok((_, false)) => {}
        Err(e) => tracing::error!(task = %id, error = %e, "cannot change the task's status"),
    }
}
