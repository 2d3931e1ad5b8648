//! The supervisor's side of the broker: spawn it, hand it each worker's link, collect what it reports.
//!
//! The broker gets two inherited sockets: the framed broker link and a SOCK_SEQPACKET socket over which each
//! worker's broker end travels with SCM_RIGHTS, its packet's data being the task id. The supervisor, not the worker,
//! says which task is on a link.
//!
//! [`keep_alive`] watches the broker: when it dies it is started again, and every running worker is handed a fresh
//! broker link (over the worker's own handoff socket, SCM_RIGHTS), so no task fails because the broker crashed.
//!
//! Each handoff carries a [`LinkGrant`]: the task's id, priority and model tier, from the store. The broker gets the
//! model tiers of `neuraphage.yaml` ([`BrokerSettings`]) at each start and at each reload ([`Broker::reload`]); it
//! reports queued requests (shown in the task's status), escalations (stored as the task's tier) and revoked keys.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::{HashMap, VecDeque};

use neuraphage_ipc::broker::{
    ARG_CONTROL_FD, ARG_HANDOFF_FD, ARG_LOCK_GRACE_MS, BrokerSettings, BrokerToSupervisor, LOCK_RESTART_GRACE_MS,
    LinkGrant, MAX_BROKER_FRAME, SupervisorToBroker,
};
use neuraphage_ipc::llm::{ChatRequest, ChatResponse, LlmErrorKind, LlmFailure};
use neuraphage_ipc::lock::LockTableView;
use neuraphage_ipc::{EventKind, Link, Role, TaskId};
use tokio::sync::{mpsc, oneshot};

use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::requests::Daemon;

use crate::spawn::{fd_arg, seqpacket_pair, sibling_binary, spawn_with_fds, stream_pair};

/// Name of the broker binary.
pub const BROKER_BIN: &str = "neuraphage-broker";

/// The broker, whichever process currently is it.
#[derive(Debug)]
pub struct Broker {
    handoff: Mutex<OwnedFd>,
    home: std::path::PathBuf,
    log: std::path::PathBuf,
    /// The settings in force, sent to every new broker process.
    settings: Mutex<BrokerSettings>,
    reloads: mpsc::UnboundedSender<Reload>,
    reloads_rx: Mutex<Option<mpsc::UnboundedReceiver<Reload>>>,
    calls: mpsc::UnboundedSender<SideCall>,
    calls_rx: Mutex<Option<mpsc::UnboundedReceiver<SideCall>>>,
}

/// Where the broker's answer to a supervisor's model call goes.
type CallAnswer = oneshot::Sender<Result<Box<ChatResponse>, LlmFailure>>;

/// A model call the supervisor makes on a task's behalf, and where its answer goes.
type SideCall = (LinkGrant, Box<ChatRequest>, CallAnswer);

/// Where the broker's answer to a reload goes: its pools, or why it kept the last good configuration.
type ReloadAnswer = oneshot::Sender<Result<Vec<String>, String>>;

/// New settings for the broker, and where its answer goes.
type Reload = (BrokerSettings, ReloadAnswer);

/// What the supervisor tells the broker about a task's worker link (or a call on its behalf): the task as stored
/// now — its priority, its tier (an escalation moves it) and its tree's top-level task (fair queuing counts trees).
pub fn grant(daemon: &Daemon, id: &TaskId) -> crate::error::Result<LinkGrant> {
    let (task, (_, tree)) = daemon.with_store(|s| Ok((s.task(id)?, s.depth_and_root(id)?)))?;
    Ok(LinkGrant { priority: task.priority.get(), tier: task.tier.clone(), tree: Some(tree), task: task.id })
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
        settings: BrokerSettings,
    ) -> Result<(Broker, BrokerLink, tokio::process::Child), String> {
        let (handoff, link, child) = start(home, log, 0).await?;
        let (reloads, reloads_rx) = mpsc::unbounded_channel();
        let (calls, calls_rx) = mpsc::unbounded_channel();
        let broker = Broker {
            handoff: Mutex::new(handoff),
            home: home.to_path_buf(),
            log: log.to_path_buf(),
            settings: Mutex::new(settings),
            reloads,
            reloads_rx: Mutex::new(Some(reloads_rx)),
            calls,
            calls_rx: Mutex::new(Some(calls_rx)),
        };
        Ok((broker, link, child))
    }

    /// Hand the broker the broker end of a task's worker link, with what the supervisor says of the task.
    pub fn hand_over(&self, grant: &LinkGrant, link: OwnedFd) -> Result<(), String> {
        let task = &grant.task;
        let data = neuraphage_ipc::frame::encode(grant).map_err(|e| format!("cannot encode {task}'s grant: {e}"))?;
        let handoff = self.handoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        neuraphage_ipc::inherit::send_fd(&handoff, &data, link)
            .map_err(|e| format!("cannot hand the broker {task}'s link: {e}"))
    }

    /// Have the broker apply new settings and re-read `api-keys.yaml`; its pools, or why it kept the last good
    /// configuration.
    pub async fn reload(&self, settings: BrokerSettings) -> Result<Vec<String>, String> {
        let (tx, rx) = oneshot::channel();
        self.reloads.send((settings, tx)).map_err(|_| "the broker is not running".to_owned())?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err("the broker restarted before answering; it has the new settings".to_owned()),
            Err(_) => Err("the broker did not answer within 10 s".to_owned()),
        }
    }
}

impl Broker {
    /// One model call on behalf of `grant.task` (the Watcher's judgement, knowledge extraction): queued, limited and
    /// priced as that task's own calls, on `request.tier` (else the task's tier), never escalating the task, not
    /// streamed. Fails when the broker does not answer `within`, or restarts meanwhile (nothing is retried here).
    pub async fn complete(
        &self,
        grant: LinkGrant,
        request: ChatRequest,
        within: Duration,
    ) -> Result<ChatResponse, LlmFailure> {
        let failure = |message: String| LlmFailure {
            kind: LlmErrorKind::Transport,
            message,
            status: None,
            retryable: true,
            retry_after_ms: None,
        };
        let (tx, rx) = oneshot::channel();
        self.calls.send((grant, Box::new(request), tx)).map_err(|_| failure("the broker is not running".to_owned()))?;
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(answer)) => answer.map(|r| *r),
            Ok(Err(_)) => Err(failure("the broker restarted before answering".to_owned())),
            Err(_) => Err(failure(format!("the broker did not answer within {} s", within.as_secs()))),
        }
    }
}

/// What is waiting for the broker's answers on one link.
#[derive(Default)]
struct Pending {
    /// Lock-table questions by request id (dropped when the broker dies, so the asker is told).
    locks: HashMap<u64, LockQuery>,
    next_id: u64,
    /// Reload answers, in the order the `Configure`s were sent (`None`: the one sent at the broker's start).
    reloads: VecDeque<Option<ReloadAnswer>>,
    /// The supervisor's own model calls by request id (dropped when the broker dies, so the caller is told).
    calls: HashMap<u64, CallAnswer>,
}

/// Act on one report of the broker.
fn report(msg: BrokerToSupervisor, daemon: &Daemon, pending: &mut Pending) {
    match msg {
        BrokerToSupervisor::Ready { providers, warnings } => {
            for w in warnings {
                tracing::warn!("broker: {w}");
            }
            if providers.is_empty() {
                tracing::warn!("the broker has no model provider: set ANTHROPIC_API_KEY or OPENAI_API_KEY");
            } else {
                tracing::info!(?providers, "broker ready");
            }
        }
        BrokerToSupervisor::Configured { providers, error } => {
            let answer = match error {
                Some(error) => {
                    tracing::error!(%error, "the broker refused its configuration and keeps the last good one");
                    Err(error)
                }
                None => {
                    tracing::info!(?providers, "broker configured");
                    Ok(providers)
                }
            };
            if let Some(Some(tx)) = pending.reloads.pop_front() {
                let _ = tx.send(answer);
            }
        }
        BrokerToSupervisor::Usage { task, model, usage } => {
            tracing::info!(%task, %model, input = usage.input_tokens, output = usage.output_tokens, "usage");
            daemon.record_usage(&task, &model, &usage);
        }
        BrokerToSupervisor::Completed { id, result } => {
            if let Some(answer) = pending.calls.remove(&id) {
                let _ = answer.send(result);
            }
        }
        BrokerToSupervisor::Headroom { pools } => daemon.status.set_pools(pools),
        BrokerToSupervisor::Locks { id, table } => {
            if let Some(query) = pending.locks.remove(&id) {
                let _ = query.send(table);
            }
        }
        BrokerToSupervisor::Queued { task, detail } => {
            if let Err(e) = daemon.with_store(|s| s.set_queued(&task, detail)) {
                tracing::warn!(%task, error = %e, "cannot show the task as queued");
            }
        }
        BrokerToSupervisor::Escalated { task, from, to, reason } => {
            tracing::warn!(%task, %from, %to, %reason, "task escalated to a more capable model tier");
            if let Err(e) = daemon.with_store(|s| s.escalate(&task, &from, &to, &reason)) {
                tracing::error!(%task, error = %e, "cannot store the task's escalation");
            }
        }
        BrokerToSupervisor::KeyRevoked { task, pool, key, reason } => {
            tracing::error!(%pool, %key, %reason, "an API key was refused and taken out of its pool");
            daemon.record(&task, EventKind::KeyRevoked { pool, key, reason });
        }
    }
}

/// Keep a broker running until `shutdown`: when it dies, start a new one (with a growing pause if starting fails),
/// send it the settings, and hand every running worker a fresh link to it. Meanwhile relay what it reports, forward
/// lock-table questions and reloads. At shutdown, ask it to stop.
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
    let Some(mut reloads) = broker.reloads_rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else {
        return tracing::error!("the broker watch started twice");
    };
    let Some(mut calls) = broker.calls_rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else {
        return tracing::error!("the broker watch started twice");
    };
    loop {
        let mut pending = Pending::default();
        let settings = broker.settings.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if link.send(&SupervisorToBroker::Configure(settings)).await.is_ok() {
            pending.reloads.push_back(None);
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = link.send(&SupervisorToBroker::Shutdown).await;
                    if tokio::time::timeout(Duration::from_secs(3), child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                    return;
                }
                received = link.recv() => match received {
                    Ok(Some(msg)) => report(msg, &workers, &mut pending),
                    Ok(None) => break,
                    Err(e) => { tracing::error!(error = %e, "broker link failed"); break; }
                },
                Some(query) = queries.recv() => {
                    pending.next_id += 1;
                    let id = pending.next_id;
                    if link.send(&SupervisorToBroker::ListLocks { id }).await.is_ok() {
                        pending.locks.insert(id, query);
                    }
                }
                Some((grant, request, answer)) = calls.recv() => {
                    pending.next_id += 1;
                    let id = pending.next_id;
                    if link.send(&SupervisorToBroker::Complete { id, grant, request }).await.is_ok() {
                        pending.calls.insert(id, answer);
                    }
                }
                Some((settings, answer)) = reloads.recv() => {
                    *broker.settings.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = settings.clone();
                    match link.send(&SupervisorToBroker::Configure(settings)).await {
                        Ok(()) => pending.reloads.push_back(Some(answer)),
                        Err(e) => { let _ = answer.send(Err(format!("broker link: {e}"))); }
                    }
                }
            }
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
        let grant_of = |id: &TaskId| {
            grant(&workers, id).unwrap_or_else(|_| LinkGrant { task: id.clone(), priority: 2, tier: None, tree: None })
        };
        workers.workers.relink_all(&broker, grant_of);
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
