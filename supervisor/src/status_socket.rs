//! The status socket, `$NEURAPHAGE_RUNTIME_DIR/status.sock`: one JSON line ([`StatusLine`]) to every client at once,
//! and one more on every change, for shell bars (tmux, waybar, polybar), the terminal title and the TUI's Stats pane.
//!
//! Same peers as the control socket (mode 0600; same uid only, task processes refused: [`crate::server::refuse_peer`]).
//! Nothing is polled: one publisher holds an event-bus subscription while any client is connected and rebuilds the
//! line when an event is committed, the broker reports new pool headroom, notifications are muted or unmuted, or the
//! UTC day turns; rebuilds are coalesced to at most one per [`MIN_INTERVAL`] and the line goes out only when its
//! content (all but `at`) changed. Each client has a slot out of [`MAX_CLIENTS`], a small send buffer and a write
//! deadline ([`WRITE_DEADLINE`]): one that stops reading is dropped and never holds back another. The socket reads at
//! most a few bytes from a client: anything it sends, or its end of file, closes the connection.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use neuraphage_ipc::TaskState;
use neuraphage_ipc::status::{MAX_STATUS_LINE, MAX_WAITING_LISTED, PoolHeadroom, StatusLine, StatusWaiting};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::Result;
use crate::requests::Daemon;

/// Clients served at once; one more is told so and closed.
pub const MAX_CLIENTS: usize = 64;
/// At most one new line per this interval (the latest state).
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Time a client may take to read one line; one that takes longer is dropped.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// A client's send buffer (the kernel doubles it): a client that leaves this much unread meets the deadline.
pub const SEND_BUFFER: usize = 16 * 1024;
/// Characters of a waiting task's prompt shown in the line.
pub const PROMPT_CHARS: usize = 200;

/// One built line: the JSON text (newline included) and its content without `at`, to tell a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The line to send.
    pub json: Arc<str>,
    key: Arc<str>,
}

/// Today's (UTC) running totals, read incrementally from the costs table.
#[derive(Debug, Default)]
struct Today {
    day: Option<NaiveDate>,
    after_seq: u64,
    tokens: u64,
    nano_usd: u64,
}

/// The status line's state shared with the rest of the supervisor.
#[derive(Debug)]
pub struct StatusHub {
    line: watch::Sender<Published>,
    changed: Notify,
    client_arrived: Notify,
    pools: Mutex<Vec<PoolHeadroom>>,
    today: Mutex<Today>,
}

impl Default for StatusHub {
    fn default() -> StatusHub {
        StatusHub {
            line: watch::Sender::new(Published::default()),
            changed: Notify::new(),
            client_arrived: Notify::new(),
            pools: Mutex::new(Vec::new()),
            today: Mutex::new(Today::default()),
        }
    }
}

/// A task state's name in the line's `counts`.
pub fn state_key(state: TaskState) -> &'static str {
    match state {
        TaskState::Queued => "queued",
        TaskState::Running => "running",
        TaskState::WaitingForUser => "waiting_for_user",
        TaskState::Blocked => "blocked",
        TaskState::Paused => "paused",
        TaskState::Completed => "completed",
        TaskState::Failed => "failed",
        TaskState::Cancelled => "cancelled",
    }
}

impl StatusHub {
    /// The broker's latest pool headroom; a change makes a new line.
    pub fn set_pools(&self, pools: Vec<PoolHeadroom>) {
        let mut held = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if *held != pools {
            *held = pools;
            drop(held);
            self.changed.notify_one();
        }
    }

    /// Something the line shows changed outside the event bus (mute).
    pub fn touch(&self) {
        self.changed.notify_one();
    }

    /// Clients connected now.
    pub fn clients(&self) -> usize {
        self.line.receiver_count()
    }

    /// Build the line from the store now (blocking: call it on a blocking thread).
    pub fn build(&self, daemon: &Daemon) -> Result<Published> {
        let now = Utc::now();
        let day = now.date_naive();
        let midnight = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis()).unwrap_or(0);
        let (counts, waiting, today) = daemon.with_store(|s| {
            let counts = s.counts()?;
            let waiting = s.waiting()?;
            let mut today = self.today.lock().unwrap_or_else(PoisonError::into_inner);
            if today.day != Some(day) {
                // A new day (or the first line): count from every row recorded since midnight.
                *today = Today { day: Some(day), ..Today::default() };
            }
            let (tokens, nano, last) = s.costs_after(today.after_seq, midnight)?;
            today.tokens += tokens;
            today.nano_usd += nano;
            today.after_seq = last;
            Ok((counts, waiting, (today.tokens, today.nano_usd)))
        })?;
        let line = StatusLine {
            at: now,
            counts: counts
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(state, n)| (state_key(state).to_owned(), n))
                .collect::<BTreeMap<_, _>>(),
            waiting: waiting
                .into_iter()
                .take(MAX_WAITING_LISTED)
                .map(|w| StatusWaiting {
                    id: w.id,
                    prompt: crate::text_shown::one_line(&w.prompt, PROMPT_CHARS),
                    since: w.since,
                })
                .collect(),
            tokens_today: today.0,
            cost_today_usd: today.1 as f64 / 1e9,
            pools: self.pools.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            muted: daemon.mute.muted(),
        };
        Ok(publishable(line))
    }
}

/// The JSON text of `line` and its content key.
fn publishable(mut line: StatusLine) -> Published {
    let mut json = serde_json::to_string(&line).unwrap_or_default();
    json.push('\n');
    line.at = DateTime::<Utc>::UNIX_EPOCH;
    let key = serde_json::to_string(&line).unwrap_or_default();
    Published { json: json.into(), key: key.into() }
}

/// Build the line on a blocking thread.
async fn build(daemon: &Arc<Daemon>) -> Option<Published> {
    let d = daemon.clone();
    match tokio::task::spawn_blocking(move || d.status.build(&d)).await {
        Ok(Ok(line)) if line.json.len() <= MAX_STATUS_LINE => Some(line),
        Ok(Ok(line)) => {
            tracing::error!(bytes = line.json.len(), "the status line is over its bound; not sent");
            None
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot build the status line");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "the status line's builder failed");
            None
        }
    }
}

/// Keep the published line current while any client is connected: rebuild it on every change, at most once per
/// [`MIN_INTERVAL`]. With no client it holds no subscription and does nothing.
pub async fn publish(daemon: Arc<Daemon>, shutdown: CancellationToken) {
    let hub = &daemon.status;
    loop {
        while hub.clients() == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hub.client_arrived.notified() => {}
            }
        }
        let bus = daemon.events().clone();
        let subscription = match daemon.with_store(|s| bus.subscribe(None, false, || s.last_event_seq())) {
            Ok((subscription, _)) => subscription,
            Err(e) => {
                tracing::error!(error = %e, "the status socket cannot follow the event bus");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let built = Instant::now();
            if let Some(line) = build(&daemon).await {
                hub.line.send_if_modified(|current| {
                    let changed = current.key != line.key;
                    if changed {
                        *current = line;
                    }
                    changed
                });
            }
            let to_midnight = until_next_utc_day();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = subscription.next() => {}
                _ = hub.changed.notified() => {}
                _ = tokio::time::sleep(to_midnight) => {}
            }
            if hub.clients() == 0 {
                break;
            }
            let wait = MIN_INTERVAL.saturating_sub(built.elapsed());
            if !wait.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            // Everything that happened meanwhile is in the line built next.
            while subscription.try_next().is_some() {}
        }
    }
}

/// Time until the next UTC midnight (a little after it).
fn until_next_utc_day() -> Duration {
    let now = Utc::now();
    let next = now.date_naive().succ_opt().and_then(|d| d.and_hms_opt(0, 0, 1)).map(|t| t.and_utc());
    next.and_then(|n| (n - now).to_std().ok()).unwrap_or(Duration::from_secs(3600))
}

/// Bind the status socket (mode 0600, replacing a stale one).
pub fn bind(socket: &Path) -> Result<UnixListener> {
    crate::server::bind(socket)
}

/// Serve clients until `shutdown`, then remove the socket.
pub async fn serve(listener: UnixListener, socket: &Path, daemon: Arc<Daemon>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    tracker.spawn(publish(daemon.clone(), shutdown.clone()));
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    tracing::info!(socket = %socket.display(), "status socket serving");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let slot = slots.clone().try_acquire_owned().ok();
                let (daemon, stop) = (daemon.clone(), shutdown.clone());
                tracker.spawn(async move {
                    client(daemon, stream, slot.is_some(), stop).await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "status socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    if let Err(e) = std::fs::remove_file(socket) {
        tracing::warn!(error = %e, "could not remove the status socket");
    }
    tracker.close();
    let _ = timeout(Duration::from_secs(2), tracker.wait()).await;
}

/// A refusal, as the one line a refused client gets.
fn refusal(reason: &str) -> String {
    let mut line = serde_json::json!({ "error": reason }).to_string();
    line.push('\n');
    line
}

#[tracing::instrument(name = "status_client", skip_all, fields(pid))]
async fn client(daemon: Arc<Daemon>, mut stream: UnixStream, has_slot: bool, stop: CancellationToken) {
    let cred = match stream.peer_cred() {
        Ok(cred) => cred,
        Err(e) => return tracing::warn!(error = %e, "cannot read a status client's credentials; closing"),
    };
    tracing::Span::current().record("pid", cred.pid());
    let refused = crate::server::refuse_peer(&cred, &daemon).or_else(|| {
        (!has_slot).then(|| format!("the status socket is already serving {MAX_CLIENTS} clients; try again later"))
    });
    if let Some(reason) = refused {
        tracing::warn!(uid = cred.uid(), %reason, "status client refused");
        let _ = timeout(WRITE_DEADLINE, stream.write_all(refusal(&reason).as_bytes())).await;
        return;
    }
    if let Err(e) = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER) {
        tracing::warn!(error = %e, "cannot shrink a status client's send buffer");
    }
    // Subscribe before building the first line, so no change after it is missed.
    let mut changes = daemon.status.line.subscribe();
    daemon.status.client_arrived.notify_one();
    let Some(first) = build(&daemon).await else { return };
    let (mut rd, mut wr) = stream.into_split();
    if !matches!(timeout(WRITE_DEADLINE, wr.write_all(first.json.as_bytes())).await, Ok(Ok(()))) {
        return tracing::info!("a status client did not take its first line; dropped");
    }
    let mut last_key = first.key;
    let mut probe = [0u8; 8];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            // A client has nothing to say: end of file, an error or any bytes at all end it.
            _ = rd.read(&mut probe) => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                let line = changes.borrow_and_update().clone();
                if line.key == last_key || line.json.is_empty() {
                    continue;
                }
                match timeout(WRITE_DEADLINE, wr.write_all(line.json.as_bytes())).await {
                    Ok(Ok(())) => last_key = line.key,
                    Ok(Err(_)) => return,
                    Err(_) => return tracing::info!("a status client stopped reading; dropped"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_ignores_the_time_only() {
        let line = |at: i64, muted: bool| StatusLine {
            at: DateTime::from_timestamp(at, 0).unwrap_or_default(),
            counts: BTreeMap::from([("running".to_owned(), 2)]),
            waiting: Vec::new(),
            tokens_today: 5,
            cost_today_usd: 0.5,
            pools: Vec::new(),
            muted,
        };
        let (a, b, c) = (publishable(line(1, false)), publishable(line(2, false)), publishable(line(1, true)));
        assert_eq!(a.key, b.key);
        assert_ne!(a.json, b.json);
        assert_ne!(a.key, c.key);
        assert!(a.json.ends_with('\n') && !a.json[..a.json.len() - 1].contains('\n'));
        let back: StatusLine = serde_json::from_str(&a.json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.counts["running"], 2);
    }

    #[test]
    fn state_keys_are_snake_case() {
        assert_eq!(state_key(TaskState::WaitingForUser), "waiting_for_user");
        assert_eq!(TaskState::ALL.map(state_key).len(), 8);
    }
}
