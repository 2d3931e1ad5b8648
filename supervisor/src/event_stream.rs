//! A subscription served on a control connection ([`ControlRequest::Subscribe`]): the connection becomes a stream.
//!
//! Registered on the bus under the store's lock ([`crate::event_bus`]), it sends the backlog from the store (events
//! after `since` up to the bus's cursor, read in pages so memory stays bounded), [`StreamItem::CaughtUp`], then the
//! live tail from its bounded queue. Every write has a deadline: a client that does not read is dropped after it,
//! and while it is slow its queue drops items (it is told [`StreamItem::Missed`]), so it never slows a task, the
//! bus or another client. The stream ends when the client closes or sends anything, when the supervisor stops, or
//! (with `until_end`) when its task ends.
//!
//! [`ControlRequest::Subscribe`]: neuraphage_ipc::ControlRequest::Subscribe

use std::sync::Arc;
use std::time::Duration;

use neuraphage_ipc::events::{StreamItem, Subscribe, ends_task};
use neuraphage_ipc::{ControlReply, IpcError, Link, ReplyFrame, RequestFrame, RequestId, TaskId, TaskStatus};
use tokio::net::UnixStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::event_bus::{PAGE_EVENTS, Subscription};
use crate::requests::Daemon;

type ControlLink = Link<UnixStream, RequestFrame, ReplyFrame>;

/// A subscription, registered.
struct Registered {
    subscription: Subscription,
    cursor: u64,
    task: Option<TaskId>,
    status: Option<TaskStatus>,
}

/// Serve one subscription until it ends. `write` bounds each write to the client.
pub async fn serve(
    daemon: Arc<Daemon>,
    link: &mut ControlLink,
    id: RequestId,
    request: Subscribe,
    write: Duration,
    shutdown: CancellationToken,
) -> Result<(), IpcError> {
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
