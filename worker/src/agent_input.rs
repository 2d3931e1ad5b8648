//! The agent's side of user input: messages the user sent (kept until the next model turn, then added to the
//! conversation, their ids named in the next checkpoint's `delivered`), and the `AskUser` tool, which parks the task
//! until the user answers (the worker exits; the answer comes back in a new worker's `Start`).

use anyhow::Context as _;
use neuraphage_ipc::llm::{ContentBlock, Message, Speaker};
use neuraphage_ipc::worker::{CheckpointKind, TaskOutcome, UserInput};
use neuraphage_worker::tools::{ToolOutcome, ask};

use super::{Agent, Stop};

impl Agent {
    /// Move the user messages the supervisor sent meanwhile into the inbox (each id once).
    fn absorb_user_messages(&mut self) {
        for (id, text) in self.supervisor.take_user_messages() {
            if self.seen_input.insert(id) {
                self.inbox.push(UserInput { id, text, answers: None });
            }
        }
    }

    /// Whether user input waits to be added to the conversation.
    pub(super) fn has_user_input(&mut self) -> bool {
        self.absorb_user_messages();
        !self.inbox.is_empty()
    }

    /// At a model turn: add every waiting user message (and any answer no pending call took) to the conversation,
    /// after what is there, and name them in the next checkpoint.
    pub(super) fn deliver_user_input(&mut self) {
        self.absorb_user_messages();
        if self.inbox.is_empty() {
            return;
        }
        let mut blocks = Vec::new();
        for input in std::mem::take(&mut self.inbox) {
            self.delivered.push(input.id);
            blocks.push(ContentBlock::Text { text: input.text });
        }
        tracing::info!(count = blocks.len(), "user messages added to the conversation");
        match self.messages.last_mut() {
            Some(last) if last.role == Speaker::User => last.content.extend(blocks),
            _ => self.messages.push(Message { role: Speaker::User, content: blocks }),
        }
    }

    /// The `AskUser` call `id`: its result when the user has answered it, else park the task on the question (a
    /// `TaskEnded NeedsUser` checkpoint carrying the results so far; the caller ends the session).
    pub(super) async fn ask_user(
        &mut self,
        id: &str,
        input: &serde_json::Value,
        results: &[ContentBlock],
    ) -> anyhow::Result<Result<ToolOutcome, Stop>> {
        let question = match ask::parse(input) {
            Ok(q) => q,
            Err(outcome) => return Ok(Ok(outcome)),
        };
        self.absorb_user_messages();
        if let Some(at) = self.inbox.iter().position(|i| i.answers.as_deref() == Some(id)) {
            let answer = self.inbox.remove(at);
            self.delivered.push(answer.id);
            return Ok(Ok(ask::result(&question, &answer.text)));
        }
        let reason = ask::prompt(&question);
        tracing::info!("asking the user; the task waits without a worker");
        let outcome = TaskOutcome::NeedsUser { reason };
        match self.checkpoint(CheckpointKind::TaskEnded { outcome }, Some(results)).await.context("parking")? {
            Ok(()) => Ok(Err(Stop::Parked)),
            Err(stop) => Ok(Err(stop)),
        }
    }
}
