//! The agent loop's lock calls: `Lock` and `Unlock` go to the broker over the broker link, and what the task holds
//! is remembered so that, on a new link after a broker restart, it is re-claimed first.

use std::collections::BTreeSet;

use anyhow::Context;
use neuraphage_ipc::lock::LockOutcome;
use neuraphage_ipc::worker::{BrokerToWorker, SupervisorToWorker, WorkerToBroker};
use neuraphage_worker::tools::ToolOutcome;
use neuraphage_worker::tools::lock::{self, LockCall};

use super::{Agent, Stop};

impl Agent {
    /// Run a `Lock` or `Unlock` call: ask the broker and wait for its answer (re-sending it on a new link if the
    /// broker restarts meanwhile).
    pub(super) async fn lock_tool(
        &mut self,
        name: &str,
        input: &serde_json::Value,
    ) -> anyhow::Result<Result<ToolOutcome, Stop>> {
        let call = match lock::parse_call(name, input) {
            Ok(call) => call,
            Err(outcome) => return Ok(Ok(outcome)),
        };
        loop {
            let id = self.next_request;
            self.next_request += 1;
            let message = match &call {
                LockCall::Lock { resources, wait_ms } => {
                    WorkerToBroker::Lock { id, resources: resources.clone(), wait_ms: *wait_ms }
                }
                LockCall::Unlock { resources } => WorkerToBroker::Unlock { id, resources: resources.clone() },
            };
            let answer = match self.broker.send(&message).await {
                Ok(()) => self.await_lock_answer(id).await?,
                Err(_) => Ok(None),
            };
            match answer {
                Err(stop) => return Ok(Err(stop)),
                Ok(Some(outcome)) => {
                    match &outcome {
                        LockOutcome::Granted { resources } => self.held.extend(resources.iter().cloned()),
                        LockOutcome::Released { resources } => resources.iter().for_each(|r| {
                            self.held.remove(r);
                        }),
                        LockOutcome::Refused { .. } => {}
                    }
                    return Ok(Ok(lock::describe(&outcome)));
                }
                Ok(None) => {
                    tracing::warn!("lost the broker during a lock call; waiting for a new link");
                    if let Err(stop) = self.relink().await? {
                        return Ok(Err(stop));
                    }
                }
            }
        }
    }

    /// On a new broker link: re-claim what the task held (the new broker's table starts empty, in its grace period).
    /// What cannot be re-claimed is forgotten, with a warning in the worker's log.
    pub(super) async fn reclaim_locks(&mut self) -> anyhow::Result<Result<(), Stop>> {
        if self.held.is_empty() {
            return Ok(Ok(()));
        }
        let id = self.next_request;
        self.next_request += 1;
        let resources: Vec<String> = self.held.iter().cloned().collect();
        self.broker.send(&WorkerToBroker::Reclaim { id, resources }).await.context("new broker link")?;
        match self.await_lock_answer(id).await? {
            Err(stop) => Ok(Err(stop)),
            Ok(Some(LockOutcome::Granted { resources })) => {
                tracing::info!(?resources, "re-claimed the task's locks");
                Ok(Ok(()))
            }
            Ok(other) => {
                tracing::warn!(?other, held = ?self.held, "could not re-claim the task's locks; they are lost");
                self.held = BTreeSet::new();
                Ok(Ok(()))
            }
        }
    }

    /// Wait for the broker's answer to lock call `id`; `Ok(Ok(None))` when the link went away.
    async fn await_lock_answer(&mut self, id: u64) -> anyhow::Result<Result<Option<LockOutcome>, Stop>> {
        loop {
            tokio::select! {
                from_broker = self.broker.recv() => match from_broker {
                    Ok(Some(BrokerToWorker::Lock { id: rid, outcome })) if rid == id => return Ok(Ok(Some(outcome))),
                    Ok(Some(other)) => tracing::warn!(?other, "an answer to another request; ignored"),
                    Ok(None) | Err(_) => return Ok(Ok(None)),
                },
                from_supervisor = self.supervisor.recv() => match from_supervisor.context("supervisor link")? {
                    Some(SupervisorToWorker::Cancel { .. }) | None => return Ok(Err(Stop::Cancelled)),
                    Some(other) => tracing::warn!(?other, "unexpected message while waiting for a lock"),
                },
            }
        }
    }
}
