//! The agent loop's permission check: before a tool's `ToolStarted` checkpoint the worker asks the supervisor, which
//! decides by the layered rules (supervisor `permissions/`). Allowed: the tool runs. Denied: the model gets an error
//! result naming the rule and nothing runs. Asked: the task parks on the user — a `TaskEnded { NeedsUser }`
//! checkpoint with the results of this turn so far, then the worker exits; the answer queues the task again and the
//! resumed worker asks again for the same call, getting the stored answer.

use anyhow::{Context, bail};
use neuraphage_ipc::llm::ContentBlock;
use neuraphage_ipc::permission::PermissionAnswer;
use neuraphage_ipc::worker::{CheckpointKind, SupervisorToWorker, TaskOutcome, WorkerToSupervisor};

use super::{Agent, Stop};

/// What the supervisor said about a call.
pub(super) enum Gate {
    /// Run it.
    Run,
    /// It was refused: its error result and `ToolCompleted` checkpoint are written; go on with the next call.
    Refused,
}

impl Agent {
    /// Ask the supervisor whether this call may run. On a refusal the call's error result is added to `results` and
    /// checkpointed; on an ask the task is parked and `Stop::Parked` returned.
    pub(super) async fn permission(
        &mut self,
        id: &str,
        name: &str,
        input: &serde_json::Value,
        results: &mut Vec<ContentBlock>,
    ) -> anyhow::Result<Result<Gate, Stop>> {
        self.next_request += 1;
        let rid = self.next_request;
        let ask = WorkerToSupervisor::Permission {
            id: rid,
            tool_use_id: id.to_owned(),
            tool: name.to_owned(),
            input: input.clone(),
        };
        self.supervisor.send(&ask).await.context("supervisor link")?;
        let answer = match self.supervisor.recv().await.context("supervisor link")? {
            Some(SupervisorToWorker::Permission { id: got, answer }) if got == rid => answer,
            Some(SupervisorToWorker::Cancel { .. }) | None => return Ok(Err(Stop::Cancelled)),
            Some(other) => bail!("unexpected message while waiting for a permission answer: {other:?}"),
        };
        match answer {
            PermissionAnswer::Allow => Ok(Ok(Gate::Run)),
            PermissionAnswer::Deny { reason } => {
                results.push(ContentBlock::ToolResult { tool_use_id: id.to_owned(), content: reason, is_error: true });
                let done =
                    CheckpointKind::ToolCompleted { tool: name.to_owned(), tool_use_id: id.to_owned(), is_error: true };
                Ok(self.checkpoint(done, Some(results)).await?.map(|()| Gate::Refused))
            }
            PermissionAnswer::Ask { prompt } => {
                tracing::info!(tool = name, "waiting for the user's permission: parking the task");
                let ended = CheckpointKind::TaskEnded { outcome: TaskOutcome::NeedsUser { reason: prompt } };
                match self.checkpoint(ended, Some(results)).await? {
                    Ok(()) => Ok(Err(Stop::Parked)),
                    Err(stop) => Ok(Err(stop)),
                }
            }
        }
    }
}
