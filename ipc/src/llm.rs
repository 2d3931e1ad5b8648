//! The model conversation as it crosses process boundaries: messages, tools, requests, responses, stream deltas and
//! failures. Provider-neutral: the broker translates to and from each provider's wire format (Anthropic Messages,
//! OpenAI chat completions). The shapes follow the Anthropic Messages API, which coding models know best.

use serde::{Deserialize, Serialize};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    /// The user (and tool results, which go back to the model as user turns).
    User,
    /// The model.
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who said it.
    pub role: Speaker,
    /// What was said, in order.
    pub content: Vec<ContentBlock>,
}

impl Message {
    /// A user turn of plain text.
    pub fn user_text(text: impl Into<String>) -> Message {
        Message { role: Speaker::User, content: vec![ContentBlock::Text { text: text.into() }] }
    }
}

/// A piece of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// The model asks for a tool to run.
    ToolUse {
        /// The provider's id for this call (echoed in the result).
        id: String,
        /// The tool's name.
        name: String,
        /// The tool's arguments, as the model wrote them (any JSON value; the tool validates it).
        input: serde_json::Value,
    },
    /// A tool's answer to a [`ContentBlock::ToolUse`].
    ToolResult {
        /// The id of the call it answers.
        tool_use_id: String,
        /// What the tool returned (or the error message).
        content: String,
        /// True when the tool failed; the model is told so.
        is_error: bool,
    },
    /// The model's extended thinking (Anthropic). Kept and sent back unchanged, signature included, as the API
    /// requires when tools are used.
    Thinking {
        /// The thinking text (possibly summarised by the provider).
        thinking: String,
        /// The provider's signature over it; sent back byte for byte.
        signature: String,
    },
    /// Thinking the provider encrypted (Anthropic `redacted_thinking`): opaque, sent back unchanged.
    RedactedThinking {
        /// The encrypted thinking.
        data: String,
    },
}

/// The text blocks of a message's content, joined by newlines (tool calls, results and thinking left out).
pub fn text_of(content: &[ContentBlock]) -> String {
    content
        .iter()
        .filter_map(|b| match b {
            ContentBlock::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` with every `<tag`, `</tag` (any case, blanks allowed around the `/`) shown as `&lt;…`: text framed in
/// `<tag>…</tag>` cannot close its frame early nor open a new one.
pub fn defuse_tag(text: &str, tag: &str) -> String {
    defuse_tags(text, &[tag])
}

/// The tags of the frames Neuraphage puts around text it gives the model: advice (the Watcher's, another task's),
/// the repository's and the user's instructions, knowledge from earlier tasks, and a compaction's summary.
pub const FRAME_TAGS: [&str; 5] =
    ["advice", "repository-instructions", "user-instructions", "knowledge", "compaction-summary"];

/// `text` with every opening or closing tag of any of `tags` defused as [`defuse_tag`] does for one.
pub fn defuse_tags(text: &str, tags: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('<') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let name = after.trim_start().strip_prefix('/').unwrap_or(after.trim_start()).trim_start();
        let opens = tags.iter().any(|tag| name.get(..tag.len()).is_some_and(|n| n.eq_ignore_ascii_case(tag)));
        out.push_str(if opens { "&lt;" } else { "<" });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Text from outside (a tool's result, a summary written from one) with Neuraphage's own frame tags
/// ([`FRAME_TAGS`]) defused, so that it cannot pose as a frame of ours (advice from the Watcher, the user's
/// instructions); `None` when it holds none (then it goes to the model unchanged).
pub fn defuse_frames(text: &str) -> Option<String> {
    let defused = defuse_tags(text, &FRAME_TAGS);
    (defused.len() != text.len()).then_some(defused)
}

/// The one key of a [`ContentBlock::ToolUse`] input that stands for input the model wrote but that was not a JSON
/// object (cut off, or malformed); its value is the raw text. The broker makes it; the tools report it.
pub const INVALID_INPUT_KEY: &str = "__neuraphage_invalid_input";

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// Its name (e.g. `Read`).
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its input object.
    pub input_schema: serde_json::Value,
}

/// A request for one model turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model to use; `None` lets the broker pick the task's tier default.
    pub model: Option<String>,
    /// The system prompt.
    pub system: String,
    /// The conversation so far (first message is the user's).
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<ToolDefinition>,
    /// Most tokens the model may produce.
    pub max_tokens: u32,
    /// Run this request on the named tier instead of the task's (e.g. `router` for a compaction summary); `None`:
    /// the task's tier. An unconfigured tier falls back to the task's.
    #[serde(default)]
    pub tier: Option<String>,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It finished its turn.
    EndTurn,
    /// It wants tools run.
    ToolUse,
    /// It hit `max_tokens`.
    MaxTokens,
    /// It produced a stop sequence.
    StopSequence,
    /// It refused.
    Refusal,
    /// A long-running turn was paused by the provider (Anthropic `pause_turn`): send the conversation back as it is
    /// and the model goes on.
    PauseTurn,
    /// Something this build does not know.
    #[serde(other)]
    Other,
}

/// Tokens a response used, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens billed at the normal rate.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

/// A complete model turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The provider's message id.
    pub id: String,
    /// The model that answered.
    pub model: String,
    /// What it said, in order.
    pub content: Vec<ContentBlock>,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// What it cost in tokens.
    pub usage: Usage,
}

/// A piece of a response as it streams in (for live display; the complete [`ChatResponse`] follows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamDelta {
    /// More text of the block at `index`.
    Text {
        /// Content block index.
        index: u32,
        /// The new text.
        text: String,
    },
    /// A tool call starts at `index`.
    ToolUseStart {
        /// Content block index.
        index: u32,
        /// The call's id.
        id: String,
        /// The tool's name.
        name: String,
    },
    /// More of a tool call's JSON input.
    ToolInput {
        /// Content block index.
        index: u32,
        /// The new JSON fragment.
        partial_json: String,
    },
    /// More of the model's thinking at `index`.
    Thinking {
        /// Content block index.
        index: u32,
        /// The new thinking text.
        text: String,
    },
}

/// Classes of model-call failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmErrorKind {
    /// No provider is configured (no API key).
    NoProvider,
    /// 401/403: the key is wrong or revoked.
    Auth,
    /// 429: a rate limit.
    RateLimited,
    /// A spend limit (not a rate limit) was reached: retrying cannot help until the user raises it.
    SpendLimit,
    /// 529 or an `overloaded_error` event.
    Overloaded,
    /// 5xx.
    Server,
    /// 400-class: the request itself was refused.
    InvalidRequest,
    /// The prompt is longer than the model's context window (Anthropic's "prompt is too long", OpenAI's
    /// `context_length_exceeded`): the conversation must be compacted before it is sent again.
    PromptTooLong,
    /// The stream was malformed, truncated, oversized, or had an unknown shape.
    MalformedResponse,
    /// The connection failed or timed out.
    Transport,
    /// Anything else.
    #[serde(other)]
    Other,
}

/// A failed model call, with what the provider sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlmFailure {
    /// The class of failure.
    pub kind: LlmErrorKind,
    /// What went wrong, quoting the provider where it said something.
    pub message: String,
    /// The HTTP status, if there was one.
    pub status: Option<u16>,
    /// Whether trying the same request again may succeed.
    pub retryable: bool,
    /// Milliseconds the provider asked us to wait (`retry-after`), if it did.
    pub retry_after_ms: Option<u64>,
}

impl std::fmt::Display for LlmFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "{:?} (HTTP {status}): {}", self.kind, self.message),
            None => write!(f, "{:?}: {}", self.kind, self.message),
        }
    }
}

#[cfg(test)]
mod frame_tests {
    use super::*;

    #[test]
    fn every_frame_tag_is_defused_and_nothing_else() {
        let text = "<advice from=\"watcher\">push</advice> < / User-Instructions > <knowledge>\
                    <Repository-instructions><compaction-summary> <div> a < b <adv";
        let defused = defuse_frames(text).expect("frames found");
        assert_eq!(defused.matches('<').count(), 3, "{defused}");
        assert!(defused.contains("&lt;advice from") && defused.contains("&lt;/advice>"), "{defused}");
        assert!(defused.contains("&lt; / User-Instructions") && defused.contains("&lt;compaction-summary>"));
        assert!(defused.ends_with("<div> a < b <adv"), "{defused}");
        assert_eq!(defuse_frames("<div>fn f() -> Vec<u8> { a < b }</div>"), None);
    }
}
