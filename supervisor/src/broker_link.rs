//! The supervisor's side of the broker: spawn it, hand it each worker's link, collect what it reports.
//!
//! The broker gets two inherited sockets: the framed broker link and a SOCK_SEQPACKET socket over which each
//! worker's broker end travels with SCM_RIGHTS, its packet's data being the task id. The supervisor, not the worker,
//! says which task is on a link.
//!
//! [`keep_alive`] watches the broker: when it dies it is started again, and every running worker is handed a fresh
//! broker link (over the worker's own handoff socket, SCM_RIGHTS), so no task fails because the broker crashed.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::HashMap;

use neuraphage_ipc::broker::{
    ARG_CONTROL_FD, ARG_HANDOFF_FD, ARG_LOCK_GRACE_MS, BrokerToSupervisor, LOCK_RESTART_GRACE_MS, MAX_BROKER_FRAME,
    SupervisorToBroker,
};
use neuraphage_ipc::lock::LockTableView;
use neuraphage_ipc::{Link, Role, TaskId};
use tokio::sync::mpsc;

use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::requests::Daemon;

use crate::spawn::{fd_arg, seqpacket_pair, sibling_binary, spawn_with_fds, stream_pair};

/// Name of the broker binary.
pub const BROKER_BIN: &str = "neuraphage-broker";

/// The broker, whichever process currently is it.
pub struct Broker {
    handoff: Mutex<OwnedFd>,
    home: std::path::PathBuf,
    log: std::path::PathBuf,
}

/// A question for the broker: send the lock table here.
pub type LockQuery = std::sync::mpsc::Sender<LockTableView>;

/// What the broker sends up, for the supervisor to act on.
pub type BrokerLink = Link<UnixStream, BrokerToSupervisor, SupervisorToBroker>;

impl Broker {
    /// Spawn the broker (its stderr appended to `log`), complete the handshake on its link, and return it with the
    /// link and the child.
    pub async fn spawn(
        home: &std::path::Path,
        log: &std::path::Path,
    ) -> Result<(Broker, BrokerLink, tokio::process::Child), String> {
        let (handoff, link, child) = start(home, log, 0).await?;
        let broker = Broker { handoff: Mutex::new(handoff), home: home.to_path_buf(), log: log.to_path_buf() };
        Ok((broker, link, child))
    }

    /// Hand the broker the broker end of `task`'s worker link.
    pub fn hand_over(&self, task: &TaskId, link: OwnedFd) -> Result<(), String> {
        let handoff = self.handoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        neuraphage_ipc::inherit::send_fd(&handoff, task.as_str().as_bytes(), link)
            .map_err(|e| format!("cannot hand the broker {task}'s link: {e}"))
    }
}

/// Relay what the broker reports until its link closes: log its readiness, record usage, and forward lock-table
/// questions (answered by request id; questions pending when the broker dies are dropped, so the asker is told).
async fn pump(link: &mut BrokerLink, daemon: &Daemon, queries: &mut mpsc::UnboundedReceiver<LockQuery>) {
    let mut pending: HashMap<u64, LockQuery> = HashMap::new();
    let mut next_id = 0u64;
    loop {
        let received = tokio::select! {
            received = link.recv() => received,
            Some(query) = queries.recv() => {
                next_id += 1;
                if link.send(&SupervisorToBroker::ListLocks { id: next_id }).await.is_ok() {
                    pending.insert(next_id, query);
                }
                continue;
            }
        };
        match received {
            Ok(Some(BrokerToSupervisor::Ready { providers, warnings })) => {
                for w in warnings {
                    tracing::warn!("broker: {w}");
                }
                if providers.is_empty() {
                    tracing::warn!("the broker has no model provider: set ANTHROPIC_API_KEY or OPENAI_API_KEY");
                } else {
                    tracing::info!(?providers, "broker ready");
                }
            }
            Ok(Some(BrokerToSupervisor::Usage { task, model, usage })) => {
                tracing::info!(%task, %model, input = usage.input_tokens, output = usage.output_tokens, "usage");
                daemon.record_usage(&task, &model, &usage);
            }
            Ok(Some(BrokerToSupervisor::Locks { id, table })) => {
                if let Some(query) = pending.remove(&id) {
                    let _ = query.send(table);
                }
            }
            Ok(None) => return,
            Err(e) => return tracing::error!(error = %e, "broker link failed"),
        }
    }
}

/// Keep a broker running until `shutdown`: when it dies, start a new one (with a growing pause if starting fails)
/// and hand every running worker a fresh link to it. At shutdown, ask it to stop.
pub async fn keep_alive(
    broker: Arc<Broker>,
    workers: Arc<Daemon>,
    mut link: BrokerLink,
    mut child: tokio::process::Child,
    shutdown: CancellationToken,
) {
    let mut queries = match workers.take_lock_queries() {
        Some(q) => q,
        None => return tracing::error!("the broker watch started twice"),
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = link.send(&SupervisorToBroker::Shutdown).await;
                if tokio::time::timeout(Duration::from_secs(3), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                return;
            }
            _ = pump(&mut link, &workers, &mut queries) => {}
        }
        let status = child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
        tracing::error!(%status, "the broker exited; starting a new one");
        let mut pause = Duration::from_millis(200);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            // Holders re-claim their locks from the new broker within its grace period.
            match start(&broker.home, &broker.log, LOCK_RESTART_GRACE_MS).await {
                Ok((handoff, new_link, new_child)) => {
                    *broker.handoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = handoff;
                    (link, child) = (new_link, new_child);
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the broker");
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
        workers.workers.relink_all(&broker);
    }
}

/// Start a broker process and complete the handshake on its link.
async fn start(
    home: &std::path::Path,
    log: &std::path::Path,
    lock_grace_ms: u64,
) -> Result<(OwnedFd, BrokerLink, tokio::process::Child), String> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let binary = sibling_binary(BROKER_BIN)?;
    let (ours, theirs) = stream_pair().map_err(|e| format!("socketpair: {e}"))?;
    let (handoff, handoff_child) = seqpacket_pair().map_err(|e| format!("socketpair: {e}"))?;
    let mut cmd = tokio::process::Command::new(&binary);
    cmd.arg(ARG_CONTROL_FD)
        .arg(fd_arg(&theirs))
        .arg(ARG_HANDOFF_FD)
        .arg(fd_arg(&handoff_child))
        .arg("--home")
        .arg(home)
        .arg(ARG_LOCK_GRACE_MS)
        .arg(lock_grace_ms.to_string())
        // systemd's notify socket is the supervisor's alone.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log_file);
    let child = spawn_with_fds(&mut cmd, &[&theirs, &handoff_child])
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    drop((theirs, handoff_child));
    let pid = child.id().unwrap_or(0);
    let stream = UnixStream::from_std(ours).map_err(|e| e.to_string())?;
    let mut link: BrokerLink = Link::new(stream, MAX_BROKER_FRAME);
    let hello = tokio::time::timeout(std::time::Duration::from_secs(10), link.accept_handshake(Role::Supervisor))
        .await
        .map_err(|_| "the broker did not say hello within 10 s".to_owned())?
        .map_err(|e| format!("broker handshake: {e}"))?;
    tracing::info!(pid, hello_pid = hello.pid, "broker started");
    Ok((handoff, link, child))
}
