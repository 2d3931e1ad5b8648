//! LLM provider clients: one streamed model turn over HTTP, translated between the provider-neutral
//! [`neuraphage_ipc::llm`] types and each provider's wire format.
//!
//! - [`anthropic`]: the Anthropic Messages API (`POST {base}/v1/messages`, SSE events).
//! - [`openai`]: OpenAI-compatible chat completions (`POST {base}/chat/completions`, `data:` chunks, `[DONE]`); also
//!   Ollama, vLLM and llama.cpp server.
//! - [`sse`]: reading a response body with a size cap and an idle timeout, as SSE events (eventsource-stream) or as
//!   one JSON document.
//!
//! [`Provider::complete`] makes exactly one attempt: retries, backoff and key pools are the broker's job. Every
//! failure is an [`LlmFailure`] whose kind and `retryable` flag tell the caller what to do; no input makes it panic.
//! Configuration comes from [`ProviderConfig`], usually built by [`from_env`].

pub mod anthropic;
pub mod openai;
pub mod sse;

#[cfg(test)]
mod tests;

use std::time::Duration;

use neuraphage_ipc::llm::{ChatRequest, ChatResponse, LlmErrorKind, LlmFailure, StreamDelta};
use reqwest::header::{HeaderMap, HeaderValue};

/// Environment variable: the Anthropic API key (enables the Anthropic provider).
pub const ANTHROPIC_API_KEY_ENV: &str = "ANTHROPIC_API_KEY";
/// Environment variable: the Anthropic base URL, without `/v1` (default [`DEFAULT_ANTHROPIC_BASE_URL`]).
pub const ANTHROPIC_BASE_URL_ENV: &str = "ANTHROPIC_BASE_URL";
/// Environment variable: the OpenAI API key (enables the OpenAI-compatible provider).
pub const OPENAI_API_KEY_ENV: &str = "OPENAI_API_KEY";
/// Environment variable: the OpenAI base URL, with `/v1` (default [`DEFAULT_OPENAI_BASE_URL`]).
pub const OPENAI_BASE_URL_ENV: &str = "OPENAI_BASE_URL";
/// Environment variable: the model every provider uses by default (overrides the per-provider defaults).
pub const MODEL_ENV: &str = "NEURAPHAGE_MODEL";

/// The Anthropic API's address (the client appends `/v1/messages`).
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The OpenAI API's address (the client appends `/chat/completions`).
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// The default Anthropic model.
pub const DEFAULT_ANTHROPIC_MODEL: &str = "claude-sonnet-4-5";
/// The default OpenAI model.
pub const DEFAULT_OPENAI_MODEL: &str = "gpt-4.1";
/// The `anthropic-version` header sent with every Anthropic request.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The default cap on a response body.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// The default wait for response headers, and for each event of a stream.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Key of the object that stands in for a tool call's input when the model's JSON could not be parsed (or was not
/// an object): `{"__neuraphage_invalid_input": "<the raw text>"}`. The call is kept, so the tool reports an error to
/// the model instead of the whole response failing.
pub use neuraphage_ipc::llm::INVALID_INPUT_KEY;

/// Most bytes of an error response body read for its message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// The Anthropic Messages API.
    Anthropic,
    /// OpenAI-compatible chat completions.
    OpenAi,
}

impl ProviderKind {
    /// `anthropic` or `openai`.
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAi => "openai",
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How to reach one provider. Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// The wire format.
    pub kind: ProviderKind,
    /// The base URL, as the official SDKs take it: Anthropic's without `/v1`, OpenAI's with it.
    pub base_url: String,
    /// The API key.
    pub api_key: String,
    /// The model used when a request names none.
    pub model: String,
    /// The largest response body accepted; beyond it the call fails with `MalformedResponse`.
    pub max_response_bytes: usize,
    /// The longest wait for the response headers, and then for each stream event.
    pub request_timeout: Duration,
}

impl ProviderConfig {
    /// A configuration with the kind's default base URL and model, and the default limits.
    pub fn new(kind: ProviderKind, api_key: impl Into<String>) -> ProviderConfig {
        let (base_url, model) = match kind {
            ProviderKind::Anthropic => (DEFAULT_ANTHROPIC_BASE_URL, DEFAULT_ANTHROPIC_MODEL),
            ProviderKind::OpenAi => (DEFAULT_OPENAI_BASE_URL, DEFAULT_OPENAI_MODEL),
        };
        ProviderConfig {
            kind,
            base_url: base_url.to_string(),
            api_key: api_key.into(),
            model: model.to_string(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &redacted_url(&self.base_url))
            .field("api_key", &"<redacted>")
            .field("model", &self.model)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// The provider configurations the environment enables: Anthropic first when [`ANTHROPIC_API_KEY_ENV`] is set,
/// then OpenAI when [`OPENAI_API_KEY_ENV`] is set. Empty values count as unset. `get` reads one variable (e.g.
/// `|name| std::env::var(name).ok()`).
pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Vec<ProviderConfig> {
    let read = |name: &str| get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let model = read(MODEL_ENV);
    let mut configs = Vec::new();
    for (kind, key_env, url_env) in [
        (ProviderKind::Anthropic, ANTHROPIC_API_KEY_ENV, ANTHROPIC_BASE_URL_ENV),
        (ProviderKind::OpenAi, OPENAI_API_KEY_ENV, OPENAI_BASE_URL_ENV),
    ] {
        let Some(key) = read(key_env) else { continue };
        let mut config = ProviderConfig::new(kind, key);
        if let Some(url) = read(url_env) {
            config.base_url = url;
        }
        if let Some(model) = &model {
            config.model = model.clone();
        }
        configs.push(config);
    }
    configs
}

/// Why a [`Provider`] could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The base URL is not an absolute `http` or `https` URL.
    #[error("{kind} base URL {url:?} is not an http(s) URL: {reason}")]
    BaseUrl {
        /// The provider.
        kind: ProviderKind,
        /// The URL (credentials removed).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API key is empty or cannot be sent in a header.
    #[error("{kind} API key is empty or contains characters that cannot be sent in an HTTP header")]
    ApiKey {
        /// The provider.
        kind: ProviderKind,
    },
    /// The model name is empty.
    #[error("{kind} model name is empty")]
    Model {
        /// The provider.
        kind: ProviderKind,
    },
    /// `max_response_bytes` or `request_timeout` is zero.
    #[error("{kind} limits must be positive (max_response_bytes, request_timeout)")]
    Limits {
        /// The provider.
        kind: ProviderKind,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// A client of one provider: a connection pool and its configuration. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct Provider {
    client: reqwest::Client,
    config: ProviderConfig,
    endpoint: String,
    headers: HeaderMap,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("config", &self.config)
            .field("endpoint", &redacted_url(&self.endpoint))
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Checks the configuration and builds the HTTP client (no request is made).
    pub fn new(config: ProviderConfig) -> Result<Provider, ProviderError> {
        let kind = config.kind;
        let base = config.base_url.trim().trim_end_matches('/').to_string();
        let bad_url = |reason: String| ProviderError::BaseUrl { kind, url: redacted_url(&config.base_url), reason };
        let mut endpoint = reqwest::Url::parse(&base).map_err(|e| bad_url(e.to_string()))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(bad_url("the scheme must be http or https, with a host".into()));
        }
        // As the SDKs do: the API path goes after the base URL's path, before any query it has.
        let path = endpoint.path().trim_end_matches('/').to_string();
        endpoint.set_path(&match kind {
            ProviderKind::Anthropic => format!("{path}/v1/messages"),
            ProviderKind::OpenAi => format!("{path}/chat/completions"),
        });
        let endpoint = endpoint.to_string();
        if config.model.trim().is_empty() {
            return Err(ProviderError::Model { kind });
        }
        if config.max_response_bytes == 0 || config.request_timeout.is_zero() {
            return Err(ProviderError::Limits { kind });
        }
        let mut headers = HeaderMap::new();
        let key = config.api_key.trim();
        let secret = |value: String| {
            let mut value = HeaderValue::from_str(&value).map_err(|_| ProviderError::ApiKey { kind })?;
            value.set_sensitive(true);
            Ok::<_, ProviderError>(value)
        };
        if key.is_empty() {
            return Err(ProviderError::ApiKey { kind });
        }
        match kind {
            ProviderKind::Anthropic => {
                headers.insert("x-api-key", secret(key.to_string())?);
                headers.insert("anthropic-version", HeaderValue::from_static(ANTHROPIC_VERSION));
            }
            ProviderKind::OpenAi => {
                headers.insert(reqwest::header::AUTHORIZATION, secret(format!("Bearer {key}"))?);
            }
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("neuraphage-broker/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.request_timeout)
            .build()
            .map_err(ProviderError::Client)?;
        Ok(Provider { client, config, endpoint, headers })
    }

    /// The configuration.
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// The URL requests are posted to (it may hold credentials from the base URL: do not log it).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `"anthropic claude-sonnet-4-5 at https://api.anthropic.com"`: kind, default model, base URL (without any
    /// credentials or query). Never the key.
    pub fn describe(&self) -> String {
        format!("{} {} at {}", self.config.kind, self.config.model, redacted_url(&self.config.base_url))
    }

    /// One model turn, streamed: `on_delta` sees text and tool-call pieces as they arrive, in order, and the
    /// complete response is returned at the end. One attempt only; the failure says whether a retry may succeed.
    pub async fn complete(
        &self,
        request: &ChatRequest,
        on_delta: &mut (dyn FnMut(StreamDelta) + Send),
    ) -> Result<ChatResponse, LlmFailure> {
        self.complete_observed(request, on_delta, &mut |_| {}).await
    }

    /// [`Provider::complete`], also showing `on_headers` the response's headers (of an error response too), for
    /// the rate limiter to learn from.
    pub async fn complete_observed(
        &self,
        request: &ChatRequest,
        on_delta: &mut (dyn FnMut(StreamDelta) + Send),
        on_headers: &mut (dyn FnMut(&HeaderMap) + Send),
    ) -> Result<ChatResponse, LlmFailure> {
        let model = request.model.clone().filter(|m| !m.trim().is_empty()).unwrap_or_else(|| self.config.model.clone());
        let body = match self.config.kind {
            ProviderKind::Anthropic => anthropic::request_body(request, &model),
            ProviderKind::OpenAi => openai::request_body(request, &model, openai::max_tokens_field(&self.endpoint)),
        };
        let timeout = self.config.request_timeout;
        let send = self.client.post(&self.endpoint).headers(self.headers.clone()).json(&body).send();
        let response = match tokio::time::timeout(timeout, send).await {
            Err(_) => {
                return Err(failure(
                    LlmErrorKind::Transport,
                    format!("no response from {} within {timeout:?}", self.config.kind),
                    None,
                    true,
                ));
            }
            Ok(Err(error)) => return Err(transport_failure(error)),
            Ok(Ok(response)) => response,
        };
        on_headers(response.headers());
        let status = response.status();
        if !status.is_success() {
            return Err(self.http_failure(response).await);
        }
        let is_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
        let limit = self.config.max_response_bytes;
        if is_json {
            // Some OpenAI-compatible servers ignore `"stream": true`; a JSON body is a whole response.
            let body = sse::read_body(response, limit, timeout).await?;
            return match self.config.kind {
                ProviderKind::Anthropic => anthropic::parse_message(&body, &model, on_delta),
                ProviderKind::OpenAi => openai::parse_completion(&body, &model, on_delta),
            };
        }
        let mut events = sse::Events::new(response, limit, timeout);
        match self.config.kind {
            ProviderKind::Anthropic => anthropic::read_stream(&mut events, &model, on_delta).await,
            ProviderKind::OpenAi => openai::read_stream(&mut events, &model, on_delta).await,
        }
    }

    /// The failure for a non-2xx response, quoting the provider's JSON error message.
    async fn http_failure(&self, response: reqwest::Response) -> LlmFailure {
        let status = response.status().as_u16();
        let retry_after_ms = retry_after_ms(response.headers(), chrono::Utc::now());
        let request_id = ["request-id", "x-request-id"]
            .iter()
            .find_map(|name| response.headers().get(*name).and_then(|v| v.to_str().ok()).map(str::to_string));
        let limit = self.config.max_response_bytes.min(MAX_ERROR_BODY_BYTES);
        let body = sse::read_body_truncated(response, limit, self.config.request_timeout).await;
        let (mut kind, mut retryable) = classify_status(status);
        if is_spend_limit(&body) {
            (kind, retryable) = (LlmErrorKind::SpendLimit, false);
        } else if is_prompt_too_long(status, &body) {
            (kind, retryable) = (LlmErrorKind::PromptTooLong, false);
        }
        let mut message = error_message(&body);
        if let Some(id) = request_id {
            message.push_str(&format!(" (request id {id})"));
        }
        LlmFailure { kind, message, status: Some(status), retryable, retry_after_ms }
    }
}

/// The failure kind of an HTTP status, and whether retrying may help.
pub fn classify_status(status: u16) -> (LlmErrorKind, bool) {
    match status {
        401 | 403 => (LlmErrorKind::Auth, false),
        429 => (LlmErrorKind::RateLimited, true),
        529 => (LlmErrorKind::Overloaded, true),
        500..=599 => (LlmErrorKind::Server, true),
        // Request Timeout and Conflict: the official SDKs retry these.
        408 | 409 => (LlmErrorKind::InvalidRequest, true),
        400..=499 => (LlmErrorKind::InvalidRequest, false),
        _ => (LlmErrorKind::Other, false),
    }
}

/// The failure for a provider's error type (Anthropic's `error.type`, also used for mid-stream `error` events).
pub fn classify_error_type(error_type: &str) -> (LlmErrorKind, bool) {
    match error_type {
        "overloaded_error" => (LlmErrorKind::Overloaded, true),
        "rate_limit_error" | "requests" | "tokens" | "rate_limit_exceeded" => (LlmErrorKind::RateLimited, true),
        "api_error" | "timeout_error" | "server_error" => (LlmErrorKind::Server, true),
        "authentication_error" | "permission_error" | "invalid_api_key" => (LlmErrorKind::Auth, false),
        "invalid_request_error" | "not_found_error" | "request_too_large" | "billing_error" => {
            (LlmErrorKind::InvalidRequest, false)
        }
        _ => (LlmErrorKind::Other, true),
    }
}

/// Whether an error body reports a spend limit (not a rate limit): Anthropic's
/// `error.details.error_code: enforced_spend_limit_reached` or a message saying the usage limits were reached,
/// OpenAI's `error.code` `organization_spend_limit_exceeded` / `project_spend_limit_exceeded` / `insufficient_quota`.
pub fn is_spend_limit(body: &[u8]) -> bool {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else { return false };
    let Some(error) = json.get("error") else { return false };
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let code = text(error.pointer("/details/error_code"));
    let openai = text(error.get("code"));
    let kind = text(error.get("type"));
    let message = text(error.get("message")).to_ascii_lowercase();
    code == "enforced_spend_limit_reached"
        || matches!(openai.as_str(), "organization_spend_limit_exceeded" | "project_spend_limit_exceeded")
        || kind == "insufficient_quota"
        || openai == "insufficient_quota"
        || message.contains("spend limit")
        || message.contains("specified api usage limits")
}

/// Whether a 400 / 413 error body says the prompt is over the model's context window: Anthropic's
/// `invalid_request_error` "prompt is too long: N tokens > M maximum", OpenAI's `error.code`
/// `context_length_exceeded`.
pub fn is_prompt_too_long(status: u16, body: &[u8]) -> bool {
    if !matches!(status, 400 | 413) {
        return false;
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else { return false };
    let Some(error) = json.get("error") else { return false };
    let code = error.get("code").and_then(|c| c.as_str()).unwrap_or("");
    let message = error.get("message").and_then(|m| m.as_str()).unwrap_or("").to_ascii_lowercase();
    code == "context_length_exceeded" || message.starts_with("prompt is too long")
}

/// `type: message` from a provider's JSON error body (`{"error": {"type", "message"}}`, both providers), or the
/// start of the body when it is not that.
pub fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(error) = json.get("error")
    {
        if let Some(message) = error.as_str() {
            return truncate(message, 1000);
        }
        let message = error.get("message").and_then(|m| m.as_str()).unwrap_or("(no message)");
        let kind = error
            .get("type")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .or_else(|| error.get("code").and_then(|c| c.as_str()));
        return match kind {
            Some(kind) => format!("{kind}: {}", truncate(message, 1000)),
            None => truncate(message, 1000),
        };
    }
    let text = text.trim();
    if text.is_empty() { "(empty body)".to_string() } else { truncate(text, 300) }
}

/// Milliseconds to wait from `retry-after-ms` (OpenAI) or `retry-after` (seconds, possibly fractional, or an HTTP
/// date), as the official SDKs read them.
pub fn retry_after_ms(headers: &HeaderMap, now: chrono::DateTime<chrono::Utc>) -> Option<u64> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(ms.round() as u64);
    }
    let value = header("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| (secs * 1000.0).round() as u64);
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - now;
    Some(u64::try_from(wait.num_milliseconds()).unwrap_or(0))
}

/// A failure value.
pub(crate) fn failure(
    kind: LlmErrorKind,
    message: impl Into<String>,
    status: Option<u16>,
    retryable: bool,
) -> LlmFailure {
    LlmFailure { kind, message: message.into(), status, retryable, retry_after_ms: None }
}

/// Unparseable or impossible data from the provider.
pub(crate) fn malformed(message: impl Into<String>) -> LlmFailure {
    failure(LlmErrorKind::MalformedResponse, message, None, false)
}

/// A stream that stopped before its end: retrying may well succeed.
pub(crate) fn cut(message: impl Into<String>) -> LlmFailure {
    failure(LlmErrorKind::MalformedResponse, message, None, true)
}

/// A connection failure or timeout.
pub(crate) fn transport_failure(error: reqwest::Error) -> LlmFailure {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    failure(LlmErrorKind::Transport, format!("{what}: {}", error_chain(&error.without_url())), None, true)
}

/// An error and its sources, joined by `: `.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let next = inner.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = inner.source();
    }
    text
}

/// At most `max` characters of `text`, with `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// A tool call's input from the model's JSON text: `{}` when empty, the object when it parses to one, else the raw
/// text under [`INVALID_INPUT_KEY`].
pub(crate) fn tool_input(raw: &str) -> serde_json::Value {
    if raw.trim().is_empty() {
        return serde_json::Value::Object(serde_json::Map::new());
    }
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(value @ serde_json::Value::Object(_)) => value,
        _ => {
            tracing::warn!(bytes = raw.len(), "the model's tool input is not a JSON object; keeping it as raw text");
            serde_json::json!({ INVALID_INPUT_KEY: raw })
        }
    }
}

/// A URL for display: no user, password, query or fragment.
fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(mut parsed) => {
            // Both setters only fail for URLs that cannot have credentials, which then have none to hide.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.as_str().trim_end_matches('/').to_string()
        }
        Err(_) => "<invalid URL>".to_string(),
    }
}
