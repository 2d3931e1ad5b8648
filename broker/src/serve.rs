//! Serving one worker's link: each model call goes through the [`Routes`] in force (queue, limits, retries,
//! failover, escalation), its stream deltas relayed to the worker as they come; lock calls go to `lock_serve.rs`.

use std::sync::{Arc, RwLock};

use neuraphage_broker::locks::LockTable;
use neuraphage_broker::router::{Caller, Notice, Routes};
use neuraphage_ipc::broker::{BrokerToSupervisor, LinkGrant};
use neuraphage_ipc::llm::StreamDelta;
use neuraphage_ipc::worker::{BrokerToWorker, MAX_WORKER_FRAME, WorkerToBroker};
use neuraphage_ipc::{Link, Role};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// A worker's link, as the broker sees it.
pub type WorkerLink = Link<UnixStream, WorkerToBroker, BrokerToWorker>;

/// The routes in force; a reload swaps them, calls under way keep theirs.
pub type Current = Arc<RwLock<Arc<Routes>>>;

/// Serve the worker of `grant.task` until it closes its link.
#[tracing::instrument(skip_all, fields(task = %grant.task))]
pub async fn worker(
    grant: LinkGrant,
    stream: UnixStream,
    routes: Current,
    events: mpsc::UnboundedSender<BrokerToSupervisor>,
    locks: Arc<LockTable>,
) {
    let mut link: WorkerLink = Link::new(stream, MAX_WORKER_FRAME);
    if let Err(e) = link.accept_handshake(Role::Broker).await {
        return tracing::warn!(error = %e, "worker handshake failed");
    }
    // Dropped when this function returns (the link closed): the task's locks are freed at once.
    let lease = locks.lease(grant.task.clone());
    // The task as the supervisor described it; escalation moves its tier for the rest of this link's life.
    let mut caller = Caller::of(&grant);
    loop {
        let (id, request) = match link.recv().await {
            Ok(Some(WorkerToBroker::Complete { id, request })) => (id, request),
            Ok(Some(lock_call)) => match crate::lock_serve::handle(&lease, lock_call, &mut link).await {
                true => continue,
                false => return,
            },
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "worker link closed"),
        };
        let routes = routes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let (tx, mut rx) = mpsc::unbounded_channel::<StreamDelta>();
        let mut on_delta = move |d: StreamDelta| {
            let _ = tx.send(d);
        };
        let task = caller.task.clone();
        let notices = events.clone();
        let mut on_notice = move |notice: Notice| {
            let message = match notice {
                Notice::Queued(detail) => BrokerToSupervisor::Queued { task: task.clone(), detail },
                Notice::Escalated { from, to, reason } => {
                    BrokerToSupervisor::Escalated { task: task.clone(), from, to, reason }
                }
                Notice::KeyRevoked { pool, key, reason } => {
                    BrokerToSupervisor::KeyRevoked { task: task.clone(), pool, key, reason }
                }
            };
            let _ = notices.send(message);
        };
        let result = {
            let call = routes.complete(&mut caller, &request, &mut on_delta, &mut on_notice);
            tokio::pin!(call);
            loop {
                tokio::select! {
                    result = &mut call => break result,
                    Some(delta) = rx.recv() => {
                        let _ = link.send(&BrokerToWorker::Delta { id, delta }).await;
                    }
                }
            }
        };
        while let Ok(delta) = rx.try_recv() {
            let _ = link.send(&BrokerToWorker::Delta { id, delta }).await;
        }
        let answer = match result {
            Ok(response) => {
                let _ = events.send(BrokerToSupervisor::Usage {
                    task: caller.task.clone(),
                    model: response.model.clone(),
                    usage: response.usage,
                });
                BrokerToWorker::Done { id, response: Box::new(response) }
            }
            Err(error) => BrokerToWorker::Failed { id, error },
        };
        if let Err(e) = link.send(&answer).await {
            return tracing::warn!(error = %e, "cannot answer the worker");
        }
    }
}

/// One model call the supervisor makes on a task's behalf ([`SupervisorToBroker::Complete`]): through the same
/// routes, limits and queue as the task's own calls, never escalating it (the request always names a tier), its
/// usage reported for the task; the answer goes up as [`BrokerToSupervisor::Completed`].
///
/// [`SupervisorToBroker::Complete`]: neuraphage_ipc::broker::SupervisorToBroker::Complete
#[tracing::instrument(skip_all, fields(task = %grant.task, id))]
pub async fn supervisor_call(
    id: u64,
    grant: LinkGrant,
    mut request: neuraphage_ipc::llm::ChatRequest,
    routes: Current,
    events: mpsc::UnboundedSender<BrokerToSupervisor>,
) {
    let routes = routes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    if request.tier.is_none() {
        request.tier = Some(grant.tier.clone().unwrap_or_else(|| neuraphage_ipc::broker::DEFAULT_TIER.to_owned()));
    }
    let mut caller = Caller::of(&grant);
    let task = grant.task.clone();
    let notices = events.clone();
    let mut on_notice = move |notice: Notice| {
        let message = match notice {
            Notice::Queued(detail) => BrokerToSupervisor::Queued { task: task.clone(), detail },
            // A side call never escalates; a notice of one is not the task's.
            Notice::Escalated { .. } => return,
            Notice::KeyRevoked { pool, key, reason } => {
                BrokerToSupervisor::KeyRevoked { task: task.clone(), pool, key, reason }
            }
        };
        let _ = notices.send(message);
    };
    let result = routes.complete(&mut caller, &request, &mut |_| {}, &mut on_notice).await;
    if let Ok(response) = &result {
        let _ = events.send(BrokerToSupervisor::Usage {
            task: grant.task.clone(),
            model: response.model.clone(),
            usage: response.usage,
        });
    }
    let _ = events.send(BrokerToSupervisor::Completed { id, result: result.map(Box::new) });
}
