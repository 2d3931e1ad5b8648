//! One model turn's tool calls: consecutive read-only calls (Read, Glob, Grep, Skill) run at once — each first
//! through its permission gate and its `tool_started` checkpoint, in call order, then together, then their results
//! and `tool_completed` checkpoints in call order — and every other call alone, in order. After the results, the
//! instructions of sub-folders the calls first touched (see `neuraphage_worker::instructions`). Also what a resumed
//! worker recalls from its conversation: the plan, the sub-folder instructions already given, the results seen.

use anyhow::Context as _;
use neuraphage_ipc::llm::{ContentBlock, Speaker};
use neuraphage_ipc::worker::SupervisorToWorker;
use neuraphage_worker::instructions::{path_of_call, subfolder_block};
use neuraphage_worker::tools::{self, ToolOutcome};

use super::{Agent, MAX_TOOL_CALLS_PER_TURN, Stop, refused_call};

/// A tool call: (id, tool, input).
pub(super) type Call = (String, String, serde_json::Value);

impl Agent {
    /// Run a turn's calls, adding their results to `results` in call order.
    pub(super) async fn run_calls(
        &mut self,
        calls: &[Call],
        results: &mut Vec<ContentBlock>,
    ) -> anyhow::Result<Result<(), Stop>> {
        let mut i = 0;
        while i < calls.len() {
            if i >= MAX_TOOL_CALLS_PER_TURN {
                let (id, name, _) = &calls[i];
                results.push(refused_call(id.clone(), name));
                i += 1;
                continue;
            }
            let end = (i..calls.len().min(MAX_TOOL_CALLS_PER_TURN))
                .find(|&j| !tools::is_read_only(&calls[j].1))
                .unwrap_or(calls.len().min(MAX_TOOL_CALLS_PER_TURN));
            if end - i >= 2 {
                if let Err(stop) = self.run_at_once(&calls[i..end], results).await? {
                    return Ok(Err(stop));
                }
                i = end;
            } else {
                let (id, name, input) = &calls[i];
                if let Err(stop) = self.run_tool(id, name, input, results).await? {
                    return Ok(Err(stop));
                }
                i += 1;
            }
        }
        self.park_for_subtasks(results).await
    }

    /// Read-only calls: gates and `tool_started` checkpoints in order, then all at once, then results and
    /// `tool_completed` checkpoints in order. (A crash meanwhile re-runs them all: they are idempotent.)
    async fn run_at_once(
        &mut self,
        calls: &[Call],
        results: &mut Vec<ContentBlock>,
    ) -> anyhow::Result<Result<(), Stop>> {
        let mut admitted = Vec::new();
        for (id, name, input) in calls {
            match self.begin_tool(id, name, input, results).await? {
                Ok(true) => admitted.push((id, name, input)),
                Ok(false) => {}
                Err(stop) => return Ok(Err(stop)),
            }
        }
        let mut running = Vec::new();
        for (_, name, input) in &admitted {
            let (ctx, name, input) = (self.tools.clone(), (*name).clone(), (*input).clone());
            running.push(tokio::spawn(async move { tools::run(&ctx, &name, &input).await }));
        }
        let mut outcomes = Vec::with_capacity(running.len());
        for handle in running.iter_mut() {
            let outcome = tokio::select! {
                joined = &mut *handle => {
                    joined.unwrap_or_else(|e| ToolOutcome::error(format!("The tool failed internally: {e}")))
                }
                from_supervisor = self.supervisor.recv() => match from_supervisor.context("supervisor link")? {
                    Some(SupervisorToWorker::Cancel { .. }) | None => {
                        running.iter().for_each(|h| h.abort());
                        return Ok(Err(Stop::Cancelled));
                    }
                    Some(other) => anyhow::bail!("unexpected message while tools ran: {other:?}"),
                },
            };
            outcomes.push(outcome);
        }
        for ((id, name, input), outcome) in admitted.into_iter().zip(outcomes) {
            if let Err(stop) = self.complete_tool(id, name, input, outcome, results).await? {
                return Ok(Err(stop));
            }
        }
        Ok(Ok(()))
    }

    /// After a turn's results: the instructions of the sub-folders its calls first touched, each once.
    pub(super) fn add_instructions(&mut self, calls: &[Call], results: &mut Vec<ContentBlock>) {
        for (_, name, input) in calls.iter().take(MAX_TOOL_CALLS_PER_TURN) {
            let Some(path) = path_of_call(name, input) else { continue };
            for loaded in self.instructions.for_path(&path) {
                tracing::info!(path = %loaded.path, "sub-folder instructions added");
                results.push(ContentBlock::Text { text: subfolder_block(&loaded) });
            }
        }
    }

    /// A resumed worker: the plan, the sub-folder instructions already given and the results already seen, from
    /// the conversation.
    pub(super) fn recall(&mut self) {
        let mut texts = Vec::new();
        for message in &self.messages {
            for block in &message.content {
                match block {
                    ContentBlock::Text { text } if message.role == Speaker::User => texts.push(text.clone()),
                    ContentBlock::ToolResult { content, .. } => self.drift.remember_result(content),
                    ContentBlock::ToolUse { name, input, .. } if name == tools::todo::NAME => {
                        if let Ok(items) = tools::todo::parse(input) {
                            self.plan = items;
                        }
                    }
                    _ => {}
                }
            }
        }
        self.instructions.already_given(texts);
    }
}
