//! The agent's side of sub-tasks: a `Task` or `TaskResult` call is a request to the supervisor (which creates the
//! child once per call id, so a resumed worker asking again gets the same child). A `Task` call that waits for a
//! child still running has no result yet: the turn's other calls go on, then the task parks (a `TaskEnded
//! NeedsUser` checkpoint with the results so far; the supervisor holds it Blocked, without a worker, until its
//! children end) and the next worker asks again, getting each outcome as its call's result.

use anyhow::{Context as _, bail};
use neuraphage_ipc::llm::ContentBlock;
use neuraphage_ipc::worker::{CheckpointKind, SupervisorToWorker, TaskOutcome, WorkerToSupervisor};
use neuraphage_worker::tools::{ToolOutcome, task};

use super::{Agent, Stop};

impl Agent {
    /// A `Task` / `TaskResult` call: its result, or `None` when the task is to wait for the child.
    pub(super) async fn subtask_tool(
        &mut self,
        id: &str,
        name: &str,
        input: &serde_json::Value,
    ) -> anyhow::Result<Result<Option<ToolOutcome>, Stop>> {
        let parsed = if name == task::NAME { task::create(input) } else { task::result(input) };
        let request = match parsed {
            Ok(request) => request,
            Err(outcome) => return Ok(Ok(Some(outcome))),
        };
        self.next_request += 1;
        let rid = self.next_request;
        let ask = WorkerToSupervisor::Subtask { id: rid, tool_use_id: id.to_owned(), request };
        self.supervisor.send(&ask).await.context("supervisor link")?;
        match self.supervisor.recv().await.context("supervisor link")? {
            Some(SupervisorToWorker::Subtask { id: got, result }) if got == rid => {
                if let neuraphage_ipc::worker::SubtaskAnswer::Pending { child, wait: true, .. } = &result {
                    self.waiting_on.push(child.clone());
                }
                Ok(Ok(task::outcome(result)))
            }
            Some(SupervisorToWorker::Cancel { .. }) | None => Ok(Err(Stop::Cancelled)),
            Some(other) => bail!("unexpected message while asking for a sub-task: {other:?}"),
        }
    }

    /// After a turn's calls: when some `Task` call waits for its child, park the task with the results so far.
    pub(super) async fn park_for_subtasks(&mut self, results: &[ContentBlock]) -> anyhow::Result<Result<(), Stop>> {
        if self.waiting_on.is_empty() {
            return Ok(Ok(()));
        }
        let children: Vec<String> = std::mem::take(&mut self.waiting_on).iter().map(|c| c.to_string()).collect();
        let reason = format!("waits for its sub-tasks {}", children.join(", "));
        tracing::info!(%reason, "the task parks until its sub-tasks end");
        let outcome = TaskOutcome::NeedsUser { reason };
        match self.checkpoint(CheckpointKind::TaskEnded { outcome }, Some(results)).await.context("parking")? {
            Ok(()) => Ok(Err(Stop::Parked)),
            Err(stop) => Ok(Err(stop)),
        }
    }
}
