//! **TEST DOUBLE** of the LLM providers' HTTP APIs, for tests and the demo. Not a model, not a proxy: it answers
//! what it is scripted to answer, in the providers' own wire formats, over real HTTP on a loopback port.
//!
//! [`LlmDouble`] serves, on `127.0.0.1:0` inside the caller's tokio runtime:
//! - the Anthropic Messages API, `POST /v1/messages`, streamed (SSE events) or not, with `x-api-key` and
//!   `anthropic-version` checks, `anthropic-ratelimit-*` headers and `request-id`;
//! - OpenAI chat completions, `POST /v1/chat/completions`, streamed (`data:` chunks, `[DONE]`) or not, with Bearer
//!   auth and `x-ratelimit-*` headers.
//!
//! Each request takes the next [`Step`] of the [`Script`] (shared by both endpoints); when the script is empty a
//! [`Policy`] decides from the [`RecordedRequest`]. Steps are replies (text, tool calls, usage, headers, delays),
//! HTTP errors (429 / 529 / 5xx / 4xx with the provider's JSON body and `retry-after`), and damaged streams
//! ([`StreamFault`]: cut, malformed, unknown event, mid-stream `error`). [`DemoPolicy`] is a deterministic
//! scripted model for the demo. Every request is recorded for assertions, and an optional per-minute request
//! limit answers 429 beyond it.
//!
//! ```no_run
//! # async fn example() -> Result<(), neuraphage_llm_double::DoubleError> {
//! use neuraphage_llm_double::{LlmDouble, Reply, Step};
//! let double = LlmDouble::start().await?;
//! double.push(Reply::text("Looking.").with_tool("Read", serde_json::json!({"file_path": "README.md"})));
//! double.push(Step::http_error(529));
//! // point a client at double.anthropic_base_url() or double.openai_base_url() ...
//! assert!(double.requests().is_empty());
//! # Ok(()) }
//! ```
//!
//! Usage a reply does not fix is computed from the request as the provider bills it, prompt caching included
//! ([`caching`]: Anthropic's `cache_control` breakpoints, OpenAI's automatic prefix caching); scripted thinking
//! blocks are signed and must come back unchanged ([`thinking`]); `pause_turn` can be scripted.
//!
//! Modules: [`script`] (steps, script, policy), [`record`] (recorded requests), [`demo`] (the demo model),
//! [`tokens`] (the one token estimate), [`caching`], [`thinking`], and the server itself; `limits` holds the per-key
//! rate limits and their headers; `anthropic` and `openai` render each wire format.
#![deny(missing_docs)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod anthropic;
mod bucket;
pub mod caching;
pub mod demo;
mod limits;
mod openai;
pub mod record;
pub mod script;
mod server;
pub mod thinking;
pub mod tokens;

pub use demo::{DemoPolicy, NOTES_FILE};
pub use limits::{DoubleKey, KeyLimits};
pub use record::{Endpoint, RecordedRequest};
pub use script::{
    HttpError, Policy, Reply, ReplyBlock, Script, Step, StopReason, StreamFault, TokenUsage, default_policy, policy,
};
pub use server::{DoubleConfig, DoubleError, LlmDouble};

/// A streamed frame that contains this text has it replaced by the time the double sends the frame (microseconds
/// since the Unix epoch, in decimal), for latency measurements: put it in a reply's text with `chunk_chars` equal
/// to its length so each text delta carries one stamp.
pub const SEND_TIME_MARKER: &str = "@@SENT_US@@";
