//! The event stream: what a subscriber on the control socket receives after [`Subscribe`].
//!
//! A [`crate::ControlRequest::Subscribe`] turns its connection into a stream of [`crate::ControlReply::Stream`]
//! replies (all with the request's id): first the backlog of stored events after `since` (read from the store in
//! pages), then [`StreamItem::CaughtUp`], then the live tail — stored events as they are committed and the model's
//! streamed text ([`StreamItem::Delta`], live only, never stored, without a sequence number). Between backlog and
//! tail there is no gap and no duplicate. A subscriber that falls behind loses items from its bounded queue and is
//! then told [`StreamItem::Missed`]: how many stored events, from which sequence number to re-read them, and how
//! many deltas (those cannot be re-read).

use serde::{Deserialize, Serialize};

use crate::llm::StreamDelta;
use crate::task::{TaskEvent, TaskId, TaskStatus};

/// What to stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// One task (id or unique prefix), or every task.
    pub task: Option<String>,
    /// Send the stored events with a sequence number above this first; `None`: no backlog, live events only.
    pub since: Option<u64>,
    /// Go on with the live tail after the backlog; `false`: end after [`StreamItem::CaughtUp`].
    pub follow: bool,
    /// Include the model's streamed text ([`StreamItem::Delta`]).
    pub deltas: bool,
    /// For one task: end the stream ([`StreamItem::End`]) once the task is Completed, Failed or Cancelled.
    pub until_end: bool,
}

/// One item of an event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamItem {
    /// A stored event (from the backlog or live).
    Event(TaskEvent),
    /// A piece of a model's streamed answer (live only).
    Delta {
        /// The task whose model call it is.
        task: TaskId,
        /// The piece.
        delta: StreamDelta,
    },
    /// The backlog is done: what follows is live.
    CaughtUp {
        /// The last stored event's sequence number when the subscription began (0 for an empty store).
        seq: u64,
    },
    /// The subscriber fell behind and items were dropped from its queue.
    Missed {
        /// Stored events dropped.
        count: u64,
        /// The first dropped event's sequence number: re-read with `since = resume_from - 1`.
        resume_from: u64,
        /// The last dropped event's sequence number.
        through: u64,
        /// Deltas dropped (live only: they cannot be re-read; the conversation has the text once the turn ends).
        deltas: u64,
    },
    /// The stream ends here (the task ended, with `until_end`).
    End {
        /// The task's status.
        status: TaskStatus,
    },
}

/// Whether this item ends a task: a status change into Completed, Failed or Cancelled.
pub fn ends_task(item: &StreamItem) -> Option<&TaskStatus> {
    match item {
        StreamItem::Event(TaskEvent { kind: crate::task::EventKind::StatusChanged { to, .. }, .. })
            if to.state().is_terminal() =>
        {
            Some(to)
        }
        _ => None,
    }
}
