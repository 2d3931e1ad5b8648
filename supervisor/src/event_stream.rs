//! A subscription served on a control connection ([`ControlRequest::Subscribe`]): the connection becomes a stream.
//!
//! Registered on the bus under the store's lock ([`crate::event_bus`]), it sends the backlog from the store (events
//! after `since` up to the bus's cursor, read in pages so memory stays bounded), [`StreamItem::CaughtUp`], then the
//! live tail from its bounded queue. Every write has a deadline: a client that does not read is dropped after it,
//! and while it is slow its queue drops items (it is told [`StreamItem::Missed`]), so it never slows a task, the
//! bus or another client. The stream ends when the client closes or sends anything, when the supervisor stops, or
//! (with `until_end`) when its task ends.
//!
//! A follower that never reads but gets little data would never meet a deadline while the socket buffer absorbs
//! its items, so a stream's send buffer is made small ([`STREAM_SEND_BUFFER`]): a few items left unread fill it
//! and the next write's deadline drops the follower. When every stream slot is taken, the stream that has gone
//! longest without taking an item ([`LiveStreams::evict_oldest`]) is ended to make room for the new one.
//!
//! [`ControlRequest::Subscribe`]: neuraphage_ipc::ControlRequest::Subscribe

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neuraphage_ipc::events::{StreamItem, Subscribe, ends_task};
use neuraphage_ipc::{ControlReply, IpcError, Link, ReplyFrame, RequestFrame, RequestId, TaskId, TaskStatus};
use tokio::net::UnixStream;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::event_bus::{PAGE_EVENTS, Subscription};
use crate::requests::Daemon;

type ControlLink = Link<UnixStream, RequestFrame, ReplyFrame>;

/// Bytes the kernel may hold for a stream's client (it doubles this); a follower that leaves this much unread is
/// blocked and then dropped by the write deadline.
pub const STREAM_SEND_BUFFER: usize = 8 * 1024;

/// The streams being served, by connection number: when each last delivered an item, and how to end it.
#[derive(Default)]
pub struct LiveStreams(Mutex<HashMap<u64, (Instant, CancellationToken)>>);

impl LiveStreams {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, CancellationToken)>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Register connection `id`'s stream; the returned token ends it when it is evicted or `parent` is cancelled.
    pub fn register(&self, id: u64, parent: &CancellationToken) -> CancellationToken {
        let token = parent.child_token();
        self.map().insert(id, (Instant::now(), token.clone()));
        token
    }

    /// Connection `id`'s stream delivered an item now.
    pub fn touch(&self, id: u64) {
        if let Some(entry) = self.map().get_mut(&id) {
            entry.0 = Instant::now();
        }
    }

    /// The stream ended.
    pub fn remove(&self, id: u64) {
        self.map().remove(&id);
    }

    /// End the stream that has gone longest without delivering an item; false if there is none.
    pub fn evict_oldest(&self) -> bool {
        let mut map = self.map();
        let oldest = map.iter().min_by_key(|(_, (since, _))| *since).map(|(id, _)| *id);
        match oldest.and_then(|id| map.remove(&id)) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// A subscription, registered.
struct Registered {
    subscription: Subscription,
    cursor: u64,
    task: Option<TaskId>,
    status: Option<TaskStatus>,
}

/// Serve one subscription until it ends. `write` bounds each write to the client; `delivered` is called after each
/// live item is written.
pub async fn serve(
    daemon: Arc<Daemon>,
    link: &mut ControlLink,
    id: RequestId,
    request: Subscribe,
    write: Duration,
    shutdown: CancellationToken,
    delivered: &(dyn Fn() + Send + Sync),
) -> Result<(), IpcError> {
    if let Err(e) = nix::sys::socket::setsockopt(link.get_ref(), nix::sys::socket::sockopt::SndBuf, &STREAM_SEND_BUFFER)
    {
        tracing::warn!(error = %e, "cannot shrink a stream's send buffer");
    }
    let d = daemon.clone();
    let (task_typed, deltas) = (request.task.clone(), request.deltas);
    let registered = tokio::task::spawn_blocking(move || {
        d.with_store(|s| {
            let task = task_typed.as_deref().map(|t| s.resolve(t)).transpose()?;
            let (subscription, cursor) = d.events().subscribe(task.clone(), deltas, || s.last_event_seq())?;
            let status = task.as_ref().map(|t| s.task(t)).transpose()?.map(|t| t.status);
            Ok(Registered { subscription, cursor, task, status })
        })
    })
    .await;
    let Registered { subscription, cursor, task, status } = match registered {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return send(link, id, write, ControlReply::Error(e.to_control_error())).await,
        Err(e) => {
            let error = neuraphage_ipc::ControlError::new(neuraphage_ipc::ErrorCode::Internal, e.to_string());
            return send(link, id, write, ControlReply::Error(error)).await;
        }
    };
    tracing::info!(task = ?task, since = ?request.since, follow = request.follow, cursor, "subscribed");
    if let Some(mut after) = request.since {
        while after < cursor {
            let (d, t) = (daemon.clone(), task.clone());
            let page = tokio::task::spawn_blocking(move || {
                d.with_store(|s| s.events_after(after, cursor, t.as_ref(), PAGE_EVENTS))
            })
            .await
            .map_err(|e| IpcError::Io(std::io::Error::other(e)))?
            .map_err(|e| IpcError::Io(std::io::Error::other(e.to_string())))?;
            let Some(last) = page.last().map(|e| e.seq) else { break };
            for event in page {
                send(link, id, write, ControlReply::Stream(StreamItem::Event(event))).await?;
            }
            after = last;
        }
    }
    send(link, id, write, ControlReply::Stream(StreamItem::CaughtUp { seq: cursor })).await?;
    let until_end = request.until_end && task.is_some();
    if let Some(status) = status.filter(|s| until_end && s.state().is_terminal()) {
        return send(link, id, write, ControlReply::Stream(StreamItem::End { status })).await;
    }
    if !request.follow {
        return Ok(());
    }
    loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            // The client closed, broke a frame, or said something: the stream ends.
            _ = link.recv() => return Ok(()),
            item = subscription.next() => item,
        };
        let end = if until_end { ends_task(&item).cloned() } else { None };
        send(link, id, write, ControlReply::Stream(item)).await?;
        delivered();
        if let Some(status) = end {
            return send(link, id, write, ControlReply::Stream(StreamItem::End { status })).await;
        }
    }
}

/// Send one reply within `write`.
async fn send(link: &mut ControlLink, id: RequestId, write: Duration, reply: ControlReply) -> Result<(), IpcError> {
    match timeout(write, link.send(&ReplyFrame { id, reply })).await {
        Ok(sent) => sent,
        Err(_) => Err(IpcError::TimedOut { what: "the subscriber to read", secs: write.as_secs_f64() }),
    }
}
