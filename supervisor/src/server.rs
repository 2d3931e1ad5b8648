//! The control socket.
//!
//! `control.sock` (mode 0600, in the 0700 runtime folder) accepts clients of the same uid only, checked with
//! SO_PEERCRED before anything is read. Each connection gets a slot from a bounded pool, a handshake deadline, a
//! deadline to finish any frame it starts, and an idle limit, so a client that sends garbage, stalls half a frame or
//! vanishes mid-request costs one slot for a bounded time and never stops the others from being served. When every
//! slot is taken, the connection idle the longest is closed to make room, so idle clients cannot lock others out.
//! A `Subscribe` request turns its connection into an event stream ([`crate::event_stream`]): it gives its slot back
//! and takes one of the stream slots, which have their own cap.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neuraphage_ipc::control::{MAX_REPLY_FRAME, MAX_REQUEST_FRAME};
use neuraphage_ipc::{ControlReply, IpcError, Link, ReplyFrame, RequestFrame, Role};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Result, home_error};
use crate::requests::Daemon;

type ControlLink = Link<UnixStream, RequestFrame, ReplyFrame>;

/// Bounds on what one client may cost.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time allowed for the client's hello.
    pub handshake: Duration,
    /// Time allowed to finish a frame once its first byte has arrived.
    pub frame: Duration,
    /// Time a connection may sit idle between requests.
    pub idle: Duration,
    /// Time allowed to write a reply.
    pub write: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Event streams served at once (`Subscribe`); a stream gives back its connection slot and has a cap of its
    /// own; when it is reached, the stream longest without delivering an item is ended to make room.
    pub max_streams: usize,
    /// Time allowed for a stream's subscriber to take one item; one that does not read is dropped.
    pub stream_write: Duration,
    /// Time graceful shutdown waits for in-flight requests.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            handshake: Duration::from_secs(5),
            frame: Duration::from_secs(5),
            idle: Duration::from_secs(600),
            write: Duration::from_secs(10),
            max_connections: 64,
            max_streams: 64,
            stream_write: Duration::from_secs(10),
            drain: Duration::from_secs(10),
        }
    }
}

/// Bind the control socket, mode 0600, replacing a stale one (the caller holds the runtime folder's lock).
pub fn bind(socket: &Path) -> Result<UnixListener> {
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::info!(socket = %socket.display(), "removed a stale control socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(home_error(socket, format!("cannot remove the stale socket: {e}"))),
    }
    let listener = UnixListener::bind(socket).map_err(|e| home_error(socket, format!("cannot listen: {e}")))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(|e| home_error(socket, e))?;
    Ok(listener)
}

/// Why a peer may not use the supervisor's sockets (control and status): another uid, or a process of a task.
/// `None`: it may.
pub fn refuse_peer(cred: &tokio::net::unix::UCred, daemon: &Daemon) -> Option<String> {
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() != me {
        return Some(format!("connection from uid {} refused: this supervisor serves uid {me} only", cred.uid()));
    }
    let task_process = cred.pid().is_some_and(|pid| pid > 0 && daemon.workers.is_task_process(pid as u32));
    task_process.then(|| "connection from inside a task refused: tasks may not drive the supervisor".to_owned())
}

/// Connections waiting for their next request, by connection number: since when, and how to close them.
#[derive(Default)]
struct IdleLinks(Mutex<HashMap<u64, (Instant, CancellationToken)>>);

impl IdleLinks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, CancellationToken)>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Close the connection idle the longest (at least `min_idle`); false if there is none.
    fn evict_oldest(&self, min_idle: Duration) -> bool {
        let map = self.map();
        let oldest = map.values().filter(|(since, _)| since.elapsed() >= min_idle).min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// How long a connection must have been idle before it may be closed to make room.
const EVICTABLE_AFTER: Duration = Duration::from_millis(500);

/// Serve until `shutdown` is cancelled (by a signal or a `Shutdown` request), then drain and remove the socket.
pub async fn serve(
    listener: UnixListener,
    socket: &Path,
    daemon: Arc<Daemon>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let streams = Arc::new(Semaphore::new(limits.max_streams));
    let idle = Arc::new(IdleLinks::default());
    let live = Arc::new(crate::event_stream::LiveStreams::default());
    let mut next_id = 0u64;
    tracing::info!(socket = %socket.display(), pid = std::process::id(), "serving");
    // Under systemd (Type=notify): ready only now, with the socket bound and about to be accepted on, so a client
    // that waited for READY=1 connects at once; then the watchdog pings, until serving ends.
    let notifier = crate::notify::Notifier::from_env();
    notifier.ready();
    notifier.status(&format!("serving on {}", socket.display()));
    let watchdog_stop = CancellationToken::new();
    let watchdog = notifier.spawn_watchdog(watchdog_stop.clone());
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                next_id += 1;
                let conn = Connection {
                    id: next_id,
                    daemon: daemon.clone(),
                    limits: limits.clone(),
                    shutdown: shutdown.clone(),
                    idle: idle.clone(),
                    evicted: CancellationToken::new(),
                    streams: streams.clone(),
                    live: live.clone(),
                };
                let slots = slots.clone();
                tracker.spawn(async move {
                    let slot = match slots.clone().try_acquire_owned() {
                        Ok(slot) => Some(slot),
                        // Full: make room by closing the longest-idle connection, if any.
                        Err(_) if conn.idle.evict_oldest(EVICTABLE_AFTER) => {
                            timeout(Duration::from_secs(2), slots.acquire_owned()).await.ok().and_then(Result::ok)
                        }
                        Err(_) => None,
                    };
                    conn.run(stream, slot).await
                });
            }
            Err(e) => {
                // Out of fds or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    notifier.stopping();
    notifier.status("stopping: finishing requests and stopping workers");
    drop(listener);
    if let Err(e) = std::fs::remove_file(socket) {
        tracing::warn!(error = %e, "could not remove the control socket");
    }
    tracker.close();
    if timeout(limits.drain, tracker.wait()).await.is_err() {
        tracing::warn!("some connections were still open when shutdown finished");
    }
    watchdog_stop.cancel();
    if let Some(watchdog) = watchdog {
        let _ = watchdog.await;
    }
}

struct Connection {
    id: u64,
    daemon: Arc<Daemon>,
    limits: Limits,
    shutdown: CancellationToken,
    idle: Arc<IdleLinks>,
    evicted: CancellationToken,
    streams: Arc<Semaphore>,
    live: Arc<crate::event_stream::LiveStreams>,
}

impl Connection {
    #[tracing::instrument(name = "client", skip_all, fields(pid))]
    async fn run(self, stream: UnixStream, mut slot: Option<OwnedSemaphorePermit>) {
        let cred = match stream.peer_cred() {
            Ok(cred) => cred,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the peer's credentials; closing");
                return;
            }
        };
        tracing::Span::current().record("pid", cred.pid());
        let mut link: ControlLink = Link::with_limits(stream, MAX_REQUEST_FRAME, MAX_REPLY_FRAME);
        let refusal = if let Some(reason) = refuse_peer(&cred, &self.daemon) {
            Some(reason)
        } else if slot.is_none() {
            Some(format!(
                "the supervisor is already serving {} connections, all busy; try again",
                self.limits.max_connections
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            tracing::warn!(uid = cred.uid(), %reason, "refused");
            // Let the client's hello arrive first, so its write does not meet a closed socket (EPIPE) before it can
            // read why it was refused.
            let _ = timeout(Duration::from_millis(500), link.expect_as::<neuraphage_ipc::Hello>()).await;
            let _ = timeout(self.limits.write, link.refuse(Role::Supervisor, reason)).await;
            return;
        }
        match timeout(self.limits.handshake, link.accept_handshake(Role::Supervisor)).await {
            Ok(Ok(hello)) => tracing::debug!(role = %hello.role, "connected"),
            Ok(Err(e)) => {
                if matches!(e, IpcError::Malformed { .. } | IpcError::UnknownVariant { .. }) {
                    let reason = format!("the first frame must be a hello: {e}");
                    let _ = timeout(self.limits.write, link.refuse(Role::Supervisor, reason)).await;
                }
                return tracing::warn!(error = %e, "handshake failed; closing");
            }
            Err(_) => return tracing::warn!("no hello in time; closing"),
        }
        let served = self.requests(&mut link, &mut slot).await;
        self.idle.map().remove(&self.id);
        if let Err(e) = served {
            tracing::warn!(error = %e, "closing the link");
        }
    }

    /// Answer requests until the client leaves, misbehaves, or the supervisor stops.
    async fn requests(&self, link: &mut ControlLink, slot: &mut Option<OwnedSemaphorePermit>) -> Result<(), IpcError> {
        // Check twice per frame deadline whether an unfinished frame has been stalled for longer than allowed.
        let tick = self.limits.frame / 2;
        let mut partial_since: Option<Instant> = None;
        let mut idle_since = Instant::now();
        loop {
            if link.partial_frame_bytes() == 0 {
                self.idle.map().entry(self.id).or_insert_with(|| (Instant::now(), self.evicted.clone()));
            } else {
                self.idle.map().remove(&self.id);
            }
            let received = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = self.evicted.cancelled() => {
                    tracing::info!("closed an idle connection to make room for a new one");
                    return Ok(());
                }
                received = timeout(tick, link.recv()) => received,
            };
            let frame = match received {
                Err(_) if link.partial_frame_bytes() > 0 => {
                    let since = *partial_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.limits.frame {
                        return Err(IpcError::TimedOut {
                            what: "the rest of a frame",
                            secs: since.elapsed().as_secs_f64(),
                        });
                    }
                    continue;
                }
                Err(_) => {
                    partial_since = None;
                    if idle_since.elapsed() >= self.limits.idle {
                        return Err(IpcError::TimedOut { what: "a request", secs: idle_since.elapsed().as_secs_f64() });
                    }
                    continue;
                }
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
            };
            partial_since = None;
            self.idle.map().remove(&self.id);
            let RequestFrame { id, request } = frame;
            let request = match request {
                neuraphage_ipc::ControlRequest::Subscribe(subscribe) => {
                    let stream_slot = match self.streams.clone().try_acquire_owned() {
                        Ok(s) => Some(s),
                        // Full: end the stream longest without delivering an item to make room.
                        Err(_) if self.live.evict_oldest() => {
                            let acquire = self.streams.clone().acquire_owned();
                            timeout(Duration::from_secs(2), acquire).await.ok().and_then(Result::ok)
                        }
                        Err(_) => None,
                    };
                    match stream_slot {
                        Some(_stream_slot) => {
                            // A stream from here on: its request slot goes back to the others.
                            slot.take();
                            let stop = self.live.register(self.id, &self.shutdown);
                            let (daemon, write) = (self.daemon.clone(), self.limits.stream_write);
                            let (live, conn) = (self.live.clone(), self.id);
                            let touch = move || live.touch(conn);
                            let served =
                                crate::event_stream::serve(daemon, link, id, subscribe, write, stop, &touch).await;
                            self.live.remove(self.id);
                            return served;
                        }
                        None => {
                            let max = self.limits.max_streams;
                            let refusal = ControlReply::Error(neuraphage_ipc::ControlError::new(
                                neuraphage_ipc::ErrorCode::Unavailable,
                                format!("the supervisor is already serving {max} event streams; try again later"),
                            ));
                            timeout(self.limits.write, link.send(&ReplyFrame { id, reply: refusal })).await.map_err(
                                |_| IpcError::TimedOut { what: "the client to read its reply", secs: 0.0 },
                            )??;
                            idle_since = Instant::now();
                            continue;
                        }
                    }
                }
                request => request,
            };
            let shutdown = matches!(request, neuraphage_ipc::ControlRequest::Shutdown);
            let daemon = self.daemon.clone();
            let reply = tokio::task::spawn_blocking(move || daemon.handle(request)).await.unwrap_or_else(|e| {
                ControlReply::Error(neuraphage_ipc::ControlError::new(
                    neuraphage_ipc::ErrorCode::Internal,
                    format!("the request handler failed: {e}"),
                ))
            });
            let sent = timeout(self.limits.write, link.send(&ReplyFrame { id, reply })).await;
            if shutdown {
                tracing::info!("shutdown requested by a client");
                self.shutdown.cancel();
            }
            match sent {
                Ok(result) => result?,
                Err(_) => {
                    return Err(IpcError::TimedOut {
                        what: "the client to read its reply",
                        secs: self.limits.write.as_secs_f64(),
                    });
                }
            }
            idle_since = Instant::now();
        }
    }
}
