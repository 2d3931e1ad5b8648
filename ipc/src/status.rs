//! The status socket's line (`$NEURAPHAGE_RUNTIME_DIR/status.sock`): one JSON object per line, sent at once to any
//! client that connects and again on every change, for shell bars (tmux, waybar, polybar), the terminal title and the
//! TUI's Stats pane.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::task::TaskId;

/// The socket's file name under the runtime folder.
pub const STATUS_SOCKET: &str = "status.sock";

/// Most bytes of one status line a client reads before giving up on it.
pub const MAX_STATUS_LINE: usize = 256 * 1024;

/// Most waiting tasks listed in one line (the count in `counts` is exact).
pub const MAX_WAITING_LISTED: usize = 50;

/// One status line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusLine {
    /// When it was made.
    pub at: DateTime<Utc>,
    /// Tasks by status name (`queued`, `running`, `waiting_for_user`, `blocked`, `paused`, `completed`, `failed`,
    /// `cancelled`); a status with no task is absent.
    pub counts: BTreeMap<String, u64>,
    /// The tasks waiting on the user, oldest wait first (at most [`MAX_WAITING_LISTED`]).
    pub waiting: Vec<StatusWaiting>,
    /// Tokens used today (UTC), all tasks.
    pub tokens_today: u64,
    /// What they cost, in US dollars.
    pub cost_today_usd: f64,
    /// Each key pool's rate-limit headroom.
    pub pools: Vec<PoolHeadroom>,
    /// Notifications muted (`neuraphage notify mute`).
    pub muted: bool,
}

/// A task waiting on the user, as the status line lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusWaiting {
    /// The task.
    pub id: TaskId,
    /// What it waits for: the question, the pending command, or the reason (escaped, cut to 200 characters).
    pub prompt: String,
    /// Since when.
    pub since: DateTime<Utc>,
}

/// A key pool's headroom: the fraction of each limit left, as the broker's buckets hold it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolHeadroom {
    /// The pool's name.
    pub pool: String,
    /// Fraction (0..=1) of the request limit left; `None`: no limit known.
    pub requests: Option<f64>,
    /// Fraction (0..=1) of the input-token limit left; `None`: no limit known.
    pub input_tokens: Option<f64>,
    /// Fraction (0..=1) of the output-token limit left; `None`: no limit known.
    pub output_tokens: Option<f64>,
}
