//! A worker's lock calls on its link: `Lock`, `Unlock` and `Reclaim` answered from the shared [`LockTable`] through
//! the link's [`Lease`] (which frees the task's locks when the link closes).

use std::time::Duration;

use neuraphage_broker::locks::Lease;
use neuraphage_ipc::worker::{BrokerToWorker, WorkerToBroker};

use crate::serve::WorkerLink;

/// Answer one lock call. While a `Lock` waits the link is still read, so a worker that dies while waiting is seen at
/// once. `false` when the link is gone.
pub async fn handle(lease: &Lease, message: WorkerToBroker, link: &mut WorkerLink) -> bool {
    let (id, outcome) = match message {
        WorkerToBroker::Lock { id, resources, wait_ms } => {
            let outcome = tokio::select! {
                outcome = lease.acquire(resources, Duration::from_millis(wait_ms)) => outcome,
                // The worker waits for this answer and sends nothing meanwhile: anything here is the link closing.
                closed = link.recv() => {
                    tracing::info!(task = %lease.task(), ?closed, "the worker went away while waiting for a lock");
                    return false;
                }
            };
            (id, outcome)
        }
        WorkerToBroker::Unlock { id, resources } => (id, lease.release(resources)),
        WorkerToBroker::Reclaim { id, resources } => (id, lease.reclaim(resources)),
        WorkerToBroker::Complete { .. } => return true,
    };
    tracing::info!(task = %lease.task(), ?outcome, "lock call");
    link.send(&BrokerToWorker::Lock { id, outcome }).await.is_ok()
}
