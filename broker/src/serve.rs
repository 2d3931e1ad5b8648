//! Serving one worker's link: model calls with streaming, retried with backoff when the failure is retryable; lock
//! calls go to `lock_serve.rs`.

use std::sync::Arc;
use std::time::Duration;

use neuraphage_broker::locks::LockTable;
use neuraphage_broker::provider::Provider;
use neuraphage_ipc::broker::BrokerToSupervisor;
use neuraphage_ipc::llm::{ChatRequest, ChatResponse, LlmErrorKind, LlmFailure, StreamDelta};
use neuraphage_ipc::worker::{BrokerToWorker, MAX_WORKER_FRAME, WorkerToBroker};
use neuraphage_ipc::{Link, Role, TaskId};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Attempts of one model call before its failure goes back to the worker.
const ATTEMPTS: u32 = 6;
/// First backoff; doubled each attempt, with jitter, or what the provider's `retry-after` says.
const BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub type WorkerLink = Link<UnixStream, WorkerToBroker, BrokerToWorker>;

/// Serve `task`'s worker until it closes its link.
#[tracing::instrument(skip_all, fields(task = %task))]
pub async fn worker(
    task: TaskId,
    stream: UnixStream,
    providers: Arc<Vec<Provider>>,
    usage: mpsc::UnboundedSender<BrokerToSupervisor>,
    locks: Arc<LockTable>,
) {
    let mut link: WorkerLink = Link::new(stream, MAX_WORKER_FRAME);
    if let Err(e) = link.accept_handshake(Role::Broker).await {
        return tracing::warn!(error = %e, "worker handshake failed");
    }
    // Dropped when this function returns (the link closed): the task's locks are freed at once.
    let lease = locks.lease(task.clone());
    loop {
        let request = match link.recv().await {
            Ok(Some(WorkerToBroker::Complete { id, request })) => (id, request),
            Ok(Some(lock_call)) => match crate::lock_serve::handle(&lease, lock_call, &mut link).await {
                true => continue,
                false => return,
            },
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "worker link closed"),
        };
        let (id, request) = request;
        let answer = match providers.first() {
            None => BrokerToWorker::Failed {
                id,
                error: LlmFailure {
                    kind: LlmErrorKind::NoProvider,
                    message: "no model provider: set ANTHROPIC_API_KEY or OPENAI_API_KEY for the supervisor".into(),
                    status: None,
                    retryable: false,
                    retry_after_ms: None,
                },
            },
            Some(provider) => match complete(provider, &request, id, &mut link).await {
                Ok(response) => {
                    let _ = usage.send(BrokerToSupervisor::Usage {
                        task: task.clone(),
                        model: response.model.clone(),
                        usage: response.usage,
                    });
                    BrokerToWorker::Done { id, response: Box::new(response) }
                }
                Err(error) => BrokerToWorker::Failed { id, error },
            },
        };
        if let Err(e) = link.send(&answer).await {
            return tracing::warn!(error = %e, "cannot answer the worker");
        }
    }
}

/// One model call with retries, relaying stream deltas to the worker as they come.
async fn complete(
    provider: &Provider,
    request: &ChatRequest,
    id: u64,
    link: &mut WorkerLink,
) -> Result<ChatResponse, LlmFailure> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (tx, mut rx) = mpsc::unbounded_channel::<StreamDelta>();
        let mut on_delta = move |d: StreamDelta| {
            let _ = tx.send(d);
        };
        let call = provider.complete(request, &mut on_delta);
        tokio::pin!(call);
        let result = loop {
            tokio::select! {
                result = &mut call => break result,
                Some(delta) = rx.recv() => {
                    let _ = link.send(&BrokerToWorker::Delta { id, delta }).await;
                }
            }
        };
        while let Ok(delta) = rx.try_recv() {
            let _ = link.send(&BrokerToWorker::Delta { id, delta }).await;
        }
        match result {
            Ok(response) => return Ok(response),
            Err(failure) if failure.retryable && attempt < ATTEMPTS => {
                let wait = failure
                    .retry_after_ms
                    .map(Duration::from_millis)
                    .unwrap_or_else(|| BACKOFF * 2u32.pow(attempt - 1) + jitter())
                    .min(MAX_WAIT);
                tracing::warn!(attempt, error = %failure, ?wait, "model call failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Err(failure) => return Err(failure),
        }
    }
}

fn jitter() -> Duration {
    Duration::from_millis(rand::random_range(0..250))
}
