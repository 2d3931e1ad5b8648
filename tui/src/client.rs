//! The dashboard's links to the supervisor: the control socket — one connection subscribed to the event stream
//! (every task, with deltas), a short-lived one per request (an action, a task's detail, the list) — and the status
//! socket, read line by line (each bounded to [`MAX_STATUS_LINE`]) when the supervisor offers one.

use std::io::ErrorKind;
use std::time::Duration;

use neuraphage_ipc::control::{MAX_REPLY_FRAME, MAX_REQUEST_FRAME};
use neuraphage_ipc::events::{StreamItem, Subscribe};
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::status::{MAX_STATUS_LINE, STATUS_SOCKET, StatusLine};
use neuraphage_ipc::{ControlReply, ControlRequest, IpcError, Link, ReplyFrame, RequestFrame, Role, Task, TaskEvent};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::UnixStream;

use crate::error::TuiError;

/// How long to wait for any one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

type ControlLink = Link<UnixStream, ReplyFrame, RequestFrame>;

async fn connect(paths: &Paths) -> Result<ControlLink, TuiError> {
    let socket = paths.control_socket();
    let stream = UnixStream::connect(&socket).await.map_err(|e| match e.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused | ErrorKind::NotADirectory => TuiError::NotRunning(format!(
            "the supervisor is not running (nothing answers at {}); start it with `neuraphage daemon start`",
            socket.display()
        )),
        _ => TuiError::Failed(format!("cannot connect to {}: {e}", socket.display())),
    })?;
    let mut link = Link::with_limits(stream, MAX_REPLY_FRAME, MAX_REQUEST_FRAME);
    match tokio::time::timeout(REPLY_TIMEOUT, link.connect_handshake(Role::Cli)).await {
        Ok(Ok(_)) => Ok(link),
        Ok(Err(e)) => Err(TuiError::Failed(format!("the supervisor refused the handshake: {e}"))),
        Err(_) => Err(TuiError::Failed("the supervisor did not answer the handshake".into())),
    }
}

/// One request on its own connection; a refusal comes back as its message.
pub async fn call(paths: &Paths, request: ControlRequest) -> Result<ControlReply, String> {
    let mut link = connect(paths).await.map_err(|e| e.to_string())?;
    let exchange = async {
        link.send(&RequestFrame { id: 1, request }).await?;
        link.expect().await
    };
    match tokio::time::timeout(REPLY_TIMEOUT, exchange).await {
        Ok(Ok(ReplyFrame { reply: ControlReply::Error(e), .. })) => Err(e.message),
        Ok(Ok(frame)) => Ok(frame.reply),
        Ok(Err(e)) => Err(link_error(e)),
        Err(_) => Err(format!("no reply from the supervisor in {REPLY_TIMEOUT:?}")),
    }
}

fn link_error(e: IpcError) -> String {
    match e {
        IpcError::Closed => "the supervisor closed the connection (is it stopping?)".to_owned(),
        other => other.to_string(),
    }
}

/// Every task, page by page.
pub async fn list(paths: &Paths) -> Result<Vec<Task>, String> {
    let (mut all, mut offset) = (Vec::new(), Some(0));
    while let Some(o) = offset {
        match call(paths, ControlRequest::ListTasks { state: None, offset: o }).await? {
            ControlReply::Tasks { tasks, next } => {
                all.extend(tasks);
                offset = next.filter(|n| *n > o);
            }
            other => return Err(format!("unexpected reply to the task list: {other:?}")),
        }
    }
    Ok(all)
}

/// The stored events after `since`, up to now (a stream that ends once caught up).
pub async fn history(paths: &Paths, since: u64) -> Result<Vec<TaskEvent>, String> {
    let mut stream =
        subscribe(paths, Subscribe { task: None, since: Some(since), follow: false, deltas: false, until_end: false })
            .await
            .map_err(|e| e.to_string())?;
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout(REPLY_TIMEOUT, stream.next()).await {
            Ok(Ok(Some(StreamItem::Event(e)))) => events.push(e),
            Ok(Ok(Some(StreamItem::CaughtUp { .. }) | None)) => return Ok(events),
            Ok(Ok(Some(_))) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("the history did not arrive in time".into()),
        }
    }
}

/// An event stream.
pub struct EventStream {
    link: ControlLink,
}

/// Subscribe on a new connection.
pub async fn subscribe(paths: &Paths, subscribe: Subscribe) -> Result<EventStream, TuiError> {
    let mut link = connect(paths).await?;
    let request = RequestFrame { id: 1, request: ControlRequest::Subscribe(subscribe) };
    match tokio::time::timeout(REPLY_TIMEOUT, link.send(&request)).await {
        Ok(Ok(())) => Ok(EventStream { link }),
        Ok(Err(e)) => Err(TuiError::Failed(link_error(e))),
        Err(_) => Err(TuiError::Failed("the supervisor did not take the subscription".into())),
    }
}

impl EventStream {
    /// The next item; `None` when the supervisor ended the stream.
    pub async fn next(&mut self) -> Result<Option<StreamItem>, String> {
        match self.link.recv().await {
            Ok(Some(ReplyFrame { reply: ControlReply::Stream(item), .. })) => Ok(Some(item)),
            Ok(Some(ReplyFrame { reply: ControlReply::Error(e), .. })) => Err(e.message),
            Ok(Some(ReplyFrame { reply, .. })) => Err(format!("unexpected reply on the stream: {reply:?}")),
            Ok(None) => Ok(None),
            Err(e) => Err(link_error(e)),
        }
    }
}

/// Read the status socket's lines into `tx` until it closes; returns at once when there is no status socket.
pub async fn status_lines(paths: Paths, tx: tokio::sync::mpsc::Sender<StatusLine>) {
    let Ok(stream) = UnixStream::connect(paths.runtime_dir.join(STATUS_SOCKET)).await else { return };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        // A line longer than the bound ends the reading (a bug or a hostile peer): bounded memory.
        let read = (&mut reader).take(MAX_STATUS_LINE as u64 + 1).read_until(b'\n', &mut line).await;
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) if n > MAX_STATUS_LINE => return,
            Ok(_) => {
                if let Ok(status) = serde_json::from_slice::<StatusLine>(&line)
                    && tx.send(status).await.is_err()
                {
                    return;
                }
            }
        }
    }
}
