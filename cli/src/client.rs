//! A client of the supervisor's control socket: connect, handshake, one request at a time.

use std::io::ErrorKind;
use std::time::Duration;

use neuraphage_ipc::control::{MAX_REPLY_FRAME, MAX_REQUEST_FRAME};
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::{ControlError, ControlReply, ControlRequest, IpcError, Link, ReplyFrame, RequestFrame, Role};
use tokio::net::UnixStream;

use crate::error::CliError;

/// How long to wait for any one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// An open control link.
pub struct Client {
    link: Link<UnixStream, ReplyFrame, RequestFrame>,
    next_id: u64,
}

impl Client {
    /// Connect to the supervisor of `paths` and complete the handshake.
    pub async fn connect(paths: &Paths) -> Result<Client, CliError> {
        let socket = paths.control_socket();
        let stream = UnixStream::connect(&socket).await.map_err(|e| match e.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused | ErrorKind::NotADirectory => {
                CliError::NotRunning(format!(
                    "the supervisor is not running (nothing answers at {}); start it with `neuraphage daemon start`",
                    socket.display()
                ))
            }
            ErrorKind::PermissionDenied => CliError::Failed(format!(
                "permission denied connecting to {}: the supervisor there belongs to another user",
                socket.display()
            )),
            _ => CliError::Failed(format!("cannot connect to {}: {e}", socket.display())),
        })?;
        let mut link = Link::with_limits(stream, MAX_REPLY_FRAME, MAX_REQUEST_FRAME);
        match tokio::time::timeout(REPLY_TIMEOUT, link.connect_handshake(Role::Cli)).await {
            Ok(Ok(_)) => Ok(Client { link, next_id: 1 }),
            Ok(Err(e)) => Err(link_error(&socket.display().to_string(), e)),
            Err(_) => {
                Err(CliError::Failed(format!("the supervisor at {} did not answer the handshake", socket.display())))
            }
        }
    }

    /// Send one request and wait for its reply. A refusal comes back as [`CliError::Refused`].
    pub async fn call(&mut self, request: ControlRequest) -> Result<ControlReply, CliError> {
        let id = self.next_id;
        self.next_id += 1;
        let exchange = async {
            self.link.send(&RequestFrame { id, request }).await?;
            self.link.expect().await
        };
        let frame = match tokio::time::timeout(REPLY_TIMEOUT, exchange).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(e)) => return Err(link_error("the supervisor", e)),
            Err(_) => return Err(CliError::Failed(format!("no reply from the supervisor in {REPLY_TIMEOUT:?}"))),
        };
        if frame.id != id {
            return Err(CliError::Failed(format!("the supervisor answered request {} instead of {id}", frame.id)));
        }
        match frame.reply {
            ControlReply::Error(e) => Err(CliError::Refused(e)),
            reply => Ok(reply),
        }
    }
}

fn link_error(peer: &str, e: IpcError) -> CliError {
    match e {
        IpcError::Refused { reason, .. } => {
            CliError::Refused(ControlError::new(neuraphage_ipc::ErrorCode::Unknown, reason))
        }
        IpcError::Closed => CliError::Failed(format!("{peer} closed the connection (is it stopping?)")),
        other => CliError::Failed(format!("{peer}: {other}")),
    }
}

/// An event stream: the connection after a `Subscribe`.
pub struct EventStream {
    link: Link<UnixStream, ReplyFrame, RequestFrame>,
}

impl Client {
    /// Turn this connection into an event stream.
    pub async fn subscribe(mut self, subscribe: neuraphage_ipc::events::Subscribe) -> Result<EventStream, CliError> {
        let request = RequestFrame { id: self.next_id, request: ControlRequest::Subscribe(subscribe) };
        match tokio::time::timeout(REPLY_TIMEOUT, self.link.send(&request)).await {
            Ok(Ok(())) => Ok(EventStream { link: self.link }),
            Ok(Err(e)) => Err(link_error("the supervisor", e)),
            Err(_) => Err(CliError::Failed("the supervisor did not take the subscription".into())),
        }
    }
}

impl EventStream {
    /// The next item; `None` when the supervisor ended the stream.
    pub async fn next(&mut self) -> Result<Option<neuraphage_ipc::events::StreamItem>, CliError> {
        match self.link.recv().await {
            Ok(Some(ReplyFrame { reply: ControlReply::Stream(item), .. })) => Ok(Some(item)),
            Ok(Some(ReplyFrame { reply: ControlReply::Error(e), .. })) => Err(CliError::Refused(e)),
            Ok(Some(ReplyFrame { reply, .. })) => Err(unexpected(reply)),
            Ok(None) => Ok(None),
            Err(e) => Err(link_error("the supervisor", e)),
        }
    }
}

/// The reply was not the kind the request calls for (a supervisor bug or a version skew).
pub fn unexpected(reply: ControlReply) -> CliError {
    CliError::Failed(format!("unexpected reply from the supervisor: {reply:?}"))
}
