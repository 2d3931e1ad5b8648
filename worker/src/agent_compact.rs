//! The loop's side of compaction (the decisions are `neuraphage_worker::compact`, the counting
//! `neuraphage_worker::tokens`): before each request, compact when it would pass the threshold; when the provider
//! still answers that the prompt is too long, compact harder and send once more. The summary is asked of the router
//! tier through the broker like any model call (the broker reports its usage, so it is priced and counted in the
//! task's cost like the task's own turns; it gets no `response_received` checkpoint, as it is not part of the
//! conversation); if that call fails, the summary is made mechanically, and the compaction happens all the same. The
//! compacted conversation is a `compacted` checkpoint, acknowledged before the request goes out.

use anyhow::Context as _;
use neuraphage_ipc::llm::{LlmFailure, Usage, text_of};
use neuraphage_ipc::models::{DEFAULT_CONTEXT_WINDOW, context_window};
use neuraphage_ipc::worker::{CheckpointKind, WorkerStart, WorkerToSupervisor};
use neuraphage_worker::compact::{self, Level};
use neuraphage_worker::tokens::{self, Counter};
use neuraphage_worker::tools;

use super::{Agent, Stop};

/// What the loop knows of its context window.
pub(super) struct ContextState {
    /// The window in tokens (lowered when a provider's refusal names a smaller one).
    window: u64,
    /// Compact past this percentage of it.
    percent: u8,
    /// What the next request holds.
    counter: Counter,
    /// The last request was refused as too long and compacted harder: a second refusal ends the task.
    retried_too_long: bool,
}

impl ContextState {
    /// From the task's `Start`: its window (else its model's, else the default) and threshold.
    pub(super) fn new(start: &WorkerStart) -> ContextState {
        let window = match start.context_tokens {
            0 => start.model.as_deref().map_or(DEFAULT_CONTEXT_WINDOW, context_window),
            n => n,
        };
        ContextState { window, percent: start.compact_at_percent, counter: Counter::new(), retried_too_long: false }
    }

    /// A response arrived; the conversation (with it) has `len` messages.
    pub(super) fn observe(&mut self, usage: &Usage, len: usize) {
        self.counter.observe(usage, len);
        self.retried_too_long = false;
    }
}

impl Agent {
    /// Tokens of the request's fixed part: tools and system prompt.
    fn fixed_tokens(&self) -> u64 {
        tokens::count_fixed(&self.system, &tools::definitions())
    }

    /// Before a request: compact when it would pass the threshold.
    pub(super) async fn compact_if_needed(&mut self) -> anyhow::Result<Result<(), Stop>> {
        let fixed = self.fixed_tokens();
        let next = self.context.counter.next_request(fixed, &self.messages);
        if next <= compact::threshold(self.context.window, self.context.percent) {
            return Ok(Ok(()));
        }
        tracing::info!(next, window = self.context.window, "the next request would pass the threshold: compacting");
        self.compact(Level::Normal, fixed, next).await
    }

    /// The provider refused the request as too long: `Ok(true)` after compacting harder (send it again), `Ok(false)`
    /// when that was already done for this request.
    pub(super) async fn prompt_too_long(&mut self, failure: &LlmFailure) -> anyhow::Result<Result<bool, Stop>> {
        if self.context.retried_too_long {
            return Ok(Ok(false));
        }
        self.context.retried_too_long = true;
        // The refusal names the real window when the provider says it; else the window is smaller than believed.
        let window = compact::window_in_error(&failure.message)
            .filter(|&w| w > 0 && w < self.context.window)
            .unwrap_or(self.context.window * 3 / 4);
        tracing::warn!(%failure, believed = self.context.window, window, "the prompt is too long: compacting harder");
        self.context.window = window;
        let message = format!(
            "the provider refused the prompt as too long ({}); compacting harder for a window of {window} tokens",
            failure.message
        );
        self.notice("prompt_too_long", message).await?;
        let fixed = self.fixed_tokens();
        let before = self.context.counter.next_request(fixed, &self.messages);
        Ok(self.compact(Level::Harder, fixed, before).await?.map(|()| true))
    }

    /// Compact the conversation (see `neuraphage_worker::compact`) and checkpoint it.
    async fn compact(&mut self, level: Level, fixed: u64, before: u64) -> anyhow::Result<Result<(), Stop>> {
        let (window, percent) = (self.context.window, self.context.percent);
        let Some(plan) = compact::plan(&self.messages, fixed, window, percent, level) else { return Ok(Ok(())) };
        let removed = plan.dropped.len();
        let (summary, by) = if removed == 0 {
            (String::new(), String::new())
        } else {
            let request = compact::summary_request(&plan.task, &plan.dropped, window, level);
            let max_bytes = compact::summary_budget(window) as usize * 4;
            match self.call_model(request, false).await? {
                Err(stop) => return Ok(Err(stop)),
                Ok(Ok(response)) if !text_of(&response.content).trim().is_empty() => {
                    let text = compact::cut_middle(text_of(&response.content).trim(), max_bytes);
                    (text, format!("the router tier's model ({})", response.model))
                }
                Ok(answer) => {
                    let why = match answer {
                        Err(failure) => failure.to_string(),
                        Ok(_) => "it answered no text".to_owned(),
                    };
                    tracing::warn!(%why, "the summary call failed: summarising mechanically");
                    (compact::mechanical_summary(&plan.dropped, max_bytes), "Neuraphage, mechanically".to_owned())
                }
            }
        };
        let messages = compact::assemble(plan, &summary, &by);
        if messages == self.messages {
            tracing::warn!("nothing to compact");
            return Ok(Ok(()));
        }
        let after = fixed + tokens::count_messages(&messages);
        self.messages = messages;
        self.context.counter.reset();
        let message = format!(
            "{removed} messages replaced by a summary{}; the next request: about {before} → {after} tokens \
             (window {window})",
            if removed == 0 { " (none: old tool results shortened only)".to_owned() } else { format!(" by {by}") },
        );
        tracing::info!(%message, "compacted");
        self.notice("compacted", message).await?;
        let kind = CheckpointKind::Compacted { removed: removed as u32, before_tokens: before, after_tokens: after };
        self.checkpoint(kind, None).await
    }

    /// A notice for the task's events.
    async fn notice(&mut self, kind: &str, message: String) -> anyhow::Result<()> {
        let notice = WorkerToSupervisor::Notice { kind: kind.to_owned(), message };
        self.supervisor.send(&notice).await.context("supervisor link")
    }
}
