//! What the TEST DOUBLE answers: [`Step`]s queued in a [`Script`] (one consumed per request, shared by both
//! endpoints), and the [`Policy`] that decides when the script is empty.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use crate::record::RecordedRequest;

/// Why the scripted model stopped. Rendered per provider (`end_turn` / `stop`, `tool_use` / `tool_calls`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Anthropic `end_turn`, OpenAI `stop`.
    EndTurn,
    /// Anthropic `tool_use`, OpenAI `tool_calls`.
    ToolUse,
    /// Anthropic `max_tokens`, OpenAI `length`.
    MaxTokens,
    /// Anthropic `stop_sequence`, OpenAI `stop`.
    StopSequence,
    /// Anthropic `refusal`, OpenAI `content_filter`.
    Refusal,
    /// Anthropic `pause_turn` (a long turn paused; the client sends it back to go on), OpenAI `stop`.
    PauseTurn,
}

impl StopReason {
    /// The Anthropic Messages API spelling.
    pub fn anthropic(self) -> &'static str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::ToolUse => "tool_use",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopSequence => "stop_sequence",
            StopReason::Refusal => "refusal",
            StopReason::PauseTurn => "pause_turn",
        }
    }

    /// The OpenAI chat completions `finish_reason` spelling.
    pub fn openai(self) -> &'static str {
        match self {
            StopReason::EndTurn | StopReason::StopSequence | StopReason::PauseTurn => "stop",
            StopReason::ToolUse => "tool_calls",
            StopReason::MaxTokens => "length",
            StopReason::Refusal => "content_filter",
        }
    }
}

/// One piece of a scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBlock {
    /// Text, streamed in chunks of [`Reply::chunk_chars`] characters.
    Text(String),
    /// A tool call; its JSON input is streamed in chunks of [`Reply::chunk_chars`] characters.
    ToolCall {
        /// The call id; `None` lets the double number it (`toolu_double_000001`, `call_double_000001`).
        id: Option<String>,
        /// The tool's name.
        name: String,
        /// The tool's input.
        input: Value,
    },
    /// Anthropic extended thinking, streamed as `thinking_delta`s then one `signature_delta` (OpenAI: not sent).
    Thinking {
        /// The thinking text.
        text: String,
        /// Its signature; `None` lets the double issue one. Either way the double remembers it, and refuses a later
        /// request that sends this block back changed.
        signature: Option<String>,
    },
    /// Anthropic `redacted_thinking`: opaque data, whole in its start event (OpenAI: not sent). The double remembers
    /// it as issued.
    RedactedThinking {
        /// The encrypted thinking.
        data: String,
    },
}

/// Token counts the double reports, in Anthropic's terms (OpenAI's `prompt_tokens` is the sum of the input ones;
/// `prompt_tokens_details.cached_tokens` is `cache_read_input_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Input tokens at the normal rate.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

/// A successful scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// What the model says, in order.
    pub blocks: Vec<ReplyBlock>,
    /// Why it stops; `None` means `ToolUse` when there is a tool call, else `EndTurn`.
    pub stop_reason: Option<StopReason>,
    /// Tokens reported; `None`: computed from the request as the provider would bill it — prompt caching included
    /// (see `caching`) — and the output from the reply's blocks (`tokens`).
    pub usage: Option<TokenUsage>,
    /// Extra response headers (they replace the double's own headers of the same name).
    pub headers: Vec<(String, String)>,
    /// Pause before each stream event after the first.
    pub event_delay: Duration,
    /// The model named in the answer; `None` echoes the request's `model`.
    pub model: Option<String>,
    /// Characters per text or JSON delta (at least 1).
    pub chunk_chars: usize,
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            blocks: Vec::new(),
            stop_reason: None,
            usage: None,
            headers: Vec::new(),
            event_delay: Duration::ZERO,
            model: None,
            chunk_chars: 16,
        }
    }
}

impl Reply {
    /// An empty reply (add blocks with the `with_*` methods).
    pub fn new() -> Reply {
        Reply::default()
    }

    /// A reply of one text block.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::new().with_text(text)
    }

    /// A reply of one tool call.
    pub fn tool(name: impl Into<String>, input: Value) -> Reply {
        Reply::new().with_tool(name, input)
    }

    /// Appends a text block.
    pub fn with_text(mut self, text: impl Into<String>) -> Reply {
        self.blocks.push(ReplyBlock::Text(text.into()));
        self
    }

    /// Appends a tool call with an id the double assigns.
    pub fn with_tool(mut self, name: impl Into<String>, input: Value) -> Reply {
        self.blocks.push(ReplyBlock::ToolCall { id: None, name: name.into(), input });
        self
    }

    /// Appends a tool call with a chosen id.
    pub fn with_tool_id(mut self, id: impl Into<String>, name: impl Into<String>, input: Value) -> Reply {
        self.blocks.push(ReplyBlock::ToolCall { id: Some(id.into()), name: name.into(), input });
        self
    }

    /// Sets the stop reason.
    pub fn stop(mut self, reason: StopReason) -> Reply {
        self.stop_reason = Some(reason);
        self
    }

    /// Appends a thinking block (`signature` `None`: the double issues one).
    pub fn with_thinking(mut self, text: impl Into<String>, signature: Option<String>) -> Reply {
        self.blocks.push(ReplyBlock::Thinking { text: text.into(), signature });
        self
    }

    /// Appends a `redacted_thinking` block.
    pub fn with_redacted_thinking(mut self, data: impl Into<String>) -> Reply {
        self.blocks.push(ReplyBlock::RedactedThinking { data: data.into() });
        self
    }

    /// Fixes the input and output token counts (no cache tokens).
    pub fn usage(mut self, input_tokens: u64, output_tokens: u64) -> Reply {
        self.usage = Some(TokenUsage { input_tokens, output_tokens, ..TokenUsage::default() });
        self
    }

    /// Fixes every token count.
    pub fn with_usage(mut self, usage: TokenUsage) -> Reply {
        self.usage = Some(usage);
        self
    }

    /// The usage that will be reported (computed ones are set by the server before rendering).
    pub fn reported_usage(&self) -> TokenUsage {
        self.usage.unwrap_or_default()
    }

    /// Adds a response header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Pauses this long before each stream event after the first.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.event_delay = delay;
        self
    }

    /// Names this model in the answer.
    pub fn model(mut self, model: impl Into<String>) -> Reply {
        self.model = Some(model.into());
        self
    }

    /// Sets the characters per delta.
    pub fn chunk_chars(mut self, chars: usize) -> Reply {
        self.chunk_chars = chars.max(1);
        self
    }

    /// The stop reason that will be sent.
    pub fn effective_stop_reason(&self) -> StopReason {
        self.stop_reason.unwrap_or_else(|| {
            if self.blocks.iter().any(|b| matches!(b, ReplyBlock::ToolCall { .. })) {
                StopReason::ToolUse
            } else {
                StopReason::EndTurn
            }
        })
    }
}

/// A scripted HTTP error, answered with the provider's JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The status (429, 529, 500, 400, 401, ...).
    pub status: u16,
    /// The provider's error type; `None` picks the one the provider documents for the status (Anthropic
    /// `rate_limit_error`, `overloaded_error`, `api_error`, ...; OpenAI `requests`, `server_error`, ...).
    pub error_type: Option<String>,
    /// The error message; `None` picks a stock one.
    pub message: Option<String>,
    /// The `retry-after` header value (seconds or an HTTP date), if any.
    pub retry_after: Option<String>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// A finer code: Anthropic's `error.details.error_code` (e.g. `enforced_spend_limit_reached`), OpenAI's
    /// `error.code` (e.g. `organization_spend_limit_exceeded`).
    pub error_code: Option<String>,
}

impl HttpError {
    /// An error with the given status and the provider's stock type and message.
    pub fn new(status: u16) -> HttpError {
        HttpError { status, error_type: None, message: None, retry_after: None, headers: Vec::new(), error_code: None }
    }

    /// Sets the finer error code (see [`HttpError::error_code`]).
    pub fn code(mut self, code: impl Into<String>) -> HttpError {
        self.error_code = Some(code.into());
        self
    }

    /// Sets the message.
    pub fn message(mut self, message: impl Into<String>) -> HttpError {
        self.message = Some(message.into());
        self
    }

    /// Sets the provider's error type.
    pub fn error_type(mut self, error_type: impl Into<String>) -> HttpError {
        self.error_type = Some(error_type.into());
        self
    }

    /// Sets `retry-after` (e.g. `"7"` or `"Wed, 21 Oct 2015 07:28:00 GMT"`).
    pub fn retry_after(mut self, value: impl Into<String>) -> HttpError {
        self.retry_after = Some(value.into());
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> HttpError {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Something wrong with a stream, placed after the first `after_events` events of the reply.
///
/// For a request without `"stream": true`: `Cut` sends half the JSON body then closes the connection, `EndEarly`
/// sends half of it and ends the body, `Malformed`
/// sends a body that is not JSON, `ErrorEvent` becomes the matching HTTP error, `UnknownEvent` changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFault {
    /// Close the connection abruptly after `after_events` events (no `message_stop`, no `[DONE]`).
    Cut {
        /// Events sent before the cut.
        after_events: usize,
    },
    /// End the body cleanly after `after_events` events (no `message_stop`, no `[DONE]`): a connection that closes
    /// in good order too early.
    EndEarly {
        /// Events sent before the end.
        after_events: usize,
    },
    /// Insert raw text (`None`: a `data:` line of truncated JSON) after `after_events` events; the rest follows.
    Malformed {
        /// Events sent before it.
        after_events: usize,
        /// The raw text, sent as is (include the blank line that ends an event).
        raw: Option<String>,
    },
    /// Insert an event of a type no client knows after `after_events` events; the rest follows.
    UnknownEvent {
        /// Events sent before it.
        after_events: usize,
    },
    /// Send the provider's mid-stream error event after `after_events` events, then end the stream.
    ErrorEvent {
        /// Events sent before it.
        after_events: usize,
        /// The error type (e.g. `overloaded_error`).
        error_type: String,
        /// The error message.
        message: String,
    },
}

/// What the double does with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Answer normally.
    Reply(Reply),
    /// Answer with a damaged stream.
    Fault {
        /// The answer being damaged.
        reply: Reply,
        /// The damage.
        fault: StreamFault,
    },
    /// Answer with an HTTP error.
    HttpError(HttpError),
}

impl Step {
    /// A text answer that ends the turn.
    pub fn text(text: impl Into<String>) -> Step {
        Step::Reply(Reply::text(text))
    }

    /// One tool call.
    pub fn tool(name: impl Into<String>, input: Value) -> Step {
        Step::Reply(Reply::tool(name, input))
    }

    /// An HTTP error with the provider's stock body.
    pub fn http_error(status: u16) -> Step {
        Step::HttpError(HttpError::new(status))
    }

    /// The connection closes after `after_events` events of `reply`.
    pub fn cut(reply: Reply, after_events: usize) -> Step {
        Step::Fault { reply, fault: StreamFault::Cut { after_events } }
    }

    /// The body ends cleanly after `after_events` events of `reply`, before the stream's last event.
    pub fn end_early(reply: Reply, after_events: usize) -> Step {
        Step::Fault { reply, fault: StreamFault::EndEarly { after_events } }
    }

    /// A `data:` line of invalid JSON after `after_events` events of `reply`.
    pub fn malformed(reply: Reply, after_events: usize) -> Step {
        Step::Fault { reply, fault: StreamFault::Malformed { after_events, raw: None } }
    }

    /// An event of an unknown type after `after_events` events of `reply`.
    pub fn unknown_event(reply: Reply, after_events: usize) -> Step {
        Step::Fault { reply, fault: StreamFault::UnknownEvent { after_events } }
    }

    /// A mid-stream error event after `after_events` events of `reply`.
    pub fn error_event(
        reply: Reply,
        after_events: usize,
        error_type: impl Into<String>,
        message: impl Into<String>,
    ) -> Step {
        Step::Fault {
            reply,
            fault: StreamFault::ErrorEvent { after_events, error_type: error_type.into(), message: message.into() },
        }
    }

    /// A mid-stream `overloaded_error` after `after_events` events of `reply`.
    pub fn overloaded_mid_stream(reply: Reply, after_events: usize) -> Step {
        Step::error_event(reply, after_events, "overloaded_error", "Overloaded")
    }
}

impl From<Reply> for Step {
    fn from(reply: Reply) -> Step {
        Step::Reply(reply)
    }
}

impl From<HttpError> for Step {
    fn from(error: HttpError) -> Step {
        Step::HttpError(error)
    }
}

/// Decides the answer to a request when the script is empty.
pub type Policy = Arc<dyn Fn(&RecordedRequest) -> Step + Send + Sync>;

/// Wraps a closure as a [`Policy`].
pub fn policy(f: impl Fn(&RecordedRequest) -> Step + Send + Sync + 'static) -> Policy {
    Arc::new(f)
}

/// The policy used when none is set: a short text that ends the turn and says it came from the double.
pub fn default_policy() -> Policy {
    policy(|_| Step::text("llm-double (TEST DOUBLE): the script is empty, so this is the default reply."))
}

/// A queue of steps, consumed one per request across both endpoints. Cloning shares the queue.
#[derive(Debug, Clone, Default)]
pub struct Script {
    steps: Arc<Mutex<VecDeque<Step>>>,
}

impl Script {
    /// An empty script.
    pub fn new() -> Script {
        Script::default()
    }

    fn steps(&self) -> MutexGuard<'_, VecDeque<Step>> {
        self.steps.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a step.
    pub fn push(&self, step: impl Into<Step>) {
        self.steps().push_back(step.into());
    }

    /// Queues several steps, in order.
    pub fn extend(&self, steps: impl IntoIterator<Item = Step>) {
        self.steps().extend(steps);
    }

    /// Takes the next step, if any.
    pub fn pop(&self) -> Option<Step> {
        self.steps().pop_front()
    }

    /// Puts a step back in front (a request refused before its step was served).
    pub(crate) fn unpop(&self, step: Step) {
        self.steps().push_front(step);
    }

    /// Steps left.
    pub fn len(&self) -> usize {
        self.steps().len()
    }

    /// True when no step is left.
    pub fn is_empty(&self) -> bool {
        self.steps().is_empty()
    }

    /// Drops every step left.
    pub fn clear(&self) {
        self.steps().clear();
    }
}

impl FromIterator<Step> for Script {
    fn from_iter<I: IntoIterator<Item = Step>>(iter: I) -> Script {
        let script = Script::new();
        script.extend(iter);
        script
    }
}
