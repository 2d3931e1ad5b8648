//! The Notifications pane's model: what the user should know, newest first — a task needs input and for what, a
//! task completed or failed, a key was revoked — and the alerts the dashboard raises for the terminal (OSC 9 /
//! OSC 777) for the live ones. Bounded to [`MAX_NOTIFICATIONS`].

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use neuraphage_ipc::{EventKind, TaskEvent, TaskId, TaskStatus};

use crate::text::cut;

/// Notifications kept.
pub const MAX_NOTIFICATIONS: usize = 200;

/// Alerts waiting to be written to the terminal (more are dropped: a burst is not worth more).
pub const MAX_PENDING_ALERTS: usize = 8;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// The task waits on the user.
    NeedsInput,
    /// The task completed.
    Completed,
    /// The task failed.
    Failed,
    /// A key of a pool was revoked.
    KeyRevoked,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The task.
    pub task: TaskId,
    /// What about.
    pub kind: NoticeKind,
    /// What it says (raw; escaped when drawn).
    pub text: String,
}

impl Notice {
    /// The notification an event makes, if any.
    pub fn from_event(event: &TaskEvent) -> Option<Notice> {
        let (kind, text) = match &event.kind {
            EventKind::StatusChanged { to: TaskStatus::WaitingForUser { prompt }, .. } => {
                (NoticeKind::NeedsInput, format!("needs input: {}", cut(prompt, 1024)))
            }
            EventKind::StatusChanged { to: TaskStatus::Completed { summary }, .. } => (
                NoticeKind::Completed,
                match summary {
                    Some(s) => format!("completed: {}", cut(s, 1024)),
                    None => "completed".to_owned(),
                },
            ),
            EventKind::StatusChanged { to: TaskStatus::Failed { error, .. }, .. } => {
                (NoticeKind::Failed, format!("failed: {}", cut(error, 1024)))
            }
            EventKind::KeyRevoked { pool, key, reason } => (
                NoticeKind::KeyRevoked,
                format!("key {} of pool {} revoked: {}", cut(key, 64), cut(pool, 64), cut(reason, 512)),
            ),
            _ => return None,
        };
        Some(Notice { at: event.at, task: event.task.clone(), kind, text })
    }
}

/// The notifications, newest first, and the terminal alerts not yet written.
#[derive(Debug, Default)]
pub struct Notices {
    list: VecDeque<Notice>,
    alerts: Vec<Notice>,
}

impl Notices {
    /// Record one; `live` ones (not from history) also raise a terminal alert.
    pub fn push(&mut self, notice: Notice, live: bool) {
        if live && notice.kind != NoticeKind::KeyRevoked && self.alerts.len() < MAX_PENDING_ALERTS {
            self.alerts.push(notice.clone());
        }
        // Newest first: a live one goes to the front, one from history (read after live ones may have come) where
        // its time puts it.
        let at = if live { 0 } else { self.list.iter().position(|n| n.at <= notice.at).unwrap_or(self.list.len()) };
        self.list.insert(at, notice);
        self.list.truncate(MAX_NOTIFICATIONS);
    }

    /// Newest first.
    pub fn iter(&self) -> impl Iterator<Item = &Notice> {
        self.list.iter()
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The alerts raised since the last call.
    pub fn take_alerts(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.alerts)
    }
}
