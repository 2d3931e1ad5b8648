//! The TEST DOUBLE's loopback HTTP server: [`LlmDouble`] binds `127.0.0.1:0` inside the caller's tokio runtime,
//! records every request, checks auth headers and the caching / thinking rules, enforces per-key rate limits
//! (`limits`), takes the next [`Step`] from the [`Script`] (or asks the [`Policy`]), computes its usage from the
//! request when the step does not fix it (`caching`), and renders it in the addressed provider's wire format.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::caching::PromptCache;
use crate::limits::{DoubleKey, KeyRate, RateInfo, RateState, WINDOW, rate_headers};
use crate::record::{Endpoint, RecordedRequest};
use crate::script::{HttpError, Policy, Reply, ReplyBlock, Script, Step, StreamFault, TokenUsage, default_policy};
use crate::thinking::Issued;
use crate::{anthropic, openai};

/// The largest request body the double accepts.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// How long `shutdown` waits for streams in flight before it aborts the server.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the double could not start.
#[derive(Debug, thiserror::Error)]
pub enum DoubleError {
    /// Binding `127.0.0.1:0` failed.
    #[error("llm-double: cannot bind 127.0.0.1:0: {0}")]
    Bind(#[source] std::io::Error),
    /// The bound address could not be read.
    #[error("llm-double: cannot read the bound address: {0}")]
    LocalAddr(#[source] std::io::Error),
}

/// How to start the double.
#[derive(Clone, Default)]
pub struct DoubleConfig {
    /// Enforce this many requests per rolling minute (both endpoints together); beyond it, answer 429 with
    /// `retry-after`. `None`: no limit.
    pub requests_per_minute: Option<u32>,
    /// Accept only this API key (`x-api-key` / `Authorization: Bearer`); `None`: any non-empty key.
    pub api_key: Option<String>,
    /// The policy for an empty script; `None`: [`default_policy`].
    pub policy: Option<Policy>,
    /// Steps queued before the first request.
    pub script: Vec<Step>,
    /// The keys the double knows, with their limits; when not empty, any other key is answered 401.
    pub keys: Vec<(String, DoubleKey)>,
    /// The length of the rate-limit window (the providers' is a minute; tests shorten it). `None`: 60 s.
    pub window: Option<Duration>,
    /// The model's context window in tokens ([`crate::tokens`]' count of the prompt): a request whose prompt is over
    /// it is refused as the providers do (400, Anthropic's "prompt is too long", OpenAI's `context_length_exceeded`).
    /// `None`: no window.
    pub context_window: Option<u64>,
}

impl std::fmt::Debug for DoubleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoubleConfig")
            .field("requests_per_minute", &self.requests_per_minute)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("policy", &self.policy.as_ref().map(|_| "<fn>"))
            .field("script", &self.script)
            .field("keys", &self.keys.len())
            .field("window", &self.window)
            .field("context_window", &self.context_window)
            .finish()
    }
}

struct Shared {
    script: Script,
    policy: Mutex<Policy>,
    requests: Mutex<Vec<RecordedRequest>>,
    rate: Mutex<RateState>,
    api_key: Option<String>,
    next_id: AtomicU64,
    cache: Mutex<PromptCache>,
    thinking: Mutex<Issued>,
    /// See [`DoubleConfig::context_window`] (0: none).
    context_window: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}{:06}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// A running TEST DOUBLE of the Anthropic and OpenAI HTTP APIs on a loopback port.
///
/// It stops when dropped or when [`LlmDouble::shutdown`] is awaited.
pub struct LlmDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LlmDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmDouble").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl LlmDouble {
    /// Starts a double with the default configuration (no rate limit, any key, the default policy).
    pub async fn start() -> Result<LlmDouble, DoubleError> {
        LlmDouble::start_with(DoubleConfig::default()).await
    }

    /// Starts a double on `127.0.0.1:0`, served by a task of the current tokio runtime.
    pub async fn start_with(config: DoubleConfig) -> Result<LlmDouble, DoubleError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.map_err(DoubleError::Bind)?;
        let addr = listener.local_addr().map_err(DoubleError::LocalAddr)?;
        let script = Script::new();
        script.extend(config.script);
        let shared = Arc::new(Shared {
            script,
            policy: Mutex::new(config.policy.unwrap_or_else(default_policy)),
            requests: Mutex::new(Vec::new()),
            rate: Mutex::new(RateState {
                window: config.window.filter(|w| !w.is_zero()).unwrap_or(WINDOW),
                default_requests: config.requests_per_minute,
                strict: !config.keys.is_empty(),
                keys: config.keys.into_iter().map(|(k, key)| (k, KeyRate { key, ..KeyRate::default() })).collect(),
                rejected: 0,
            }),
            api_key: config.api_key,
            next_id: AtomicU64::new(0),
            cache: Mutex::new(PromptCache::default()),
            thinking: Mutex::new(Issued::default()),
            context_window: AtomicU64::new(config.context_window.unwrap_or(0)),
        });
        let router = Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(Arc::clone(&shared));
        let cancel = CancellationToken::new();
        let serve = axum::serve(listener, router).with_graceful_shutdown(cancel.clone().cancelled_owned());
        let task = tokio::spawn(async move {
            if let Err(error) = serve.await {
                tracing::warn!(%error, "llm-double: server stopped with an error");
            }
        });
        tracing::debug!(%addr, "llm-double (TEST DOUBLE) listening");
        Ok(LlmDouble { addr, shared, cancel, task: Some(task) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The value for `ANTHROPIC_BASE_URL` (no `/v1`: clients append `/v1/messages`).
    pub fn anthropic_base_url(&self) -> String {
        self.base_url()
    }

    /// The value for `OPENAI_BASE_URL` (with `/v1`: clients append `/chat/completions`).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// The script (a shared handle: steps pushed on it are served by this double).
    pub fn script(&self) -> Script {
        self.shared.script.clone()
    }

    /// Queues a step.
    pub fn push(&self, step: impl Into<Step>) {
        self.shared.script.push(step);
    }

    /// Replaces the policy used when the script is empty.
    pub fn set_policy(&self, policy: Policy) {
        *lock(&self.shared.policy) = policy;
    }

    /// Sets (or, with `None`, removes) the model's context window from now on (see [`DoubleConfig::context_window`]).
    pub fn set_context_window(&self, tokens: Option<u64>) {
        self.shared.context_window.store(tokens.unwrap_or(0), Ordering::Relaxed);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The latest request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.requests).last().cloned()
    }

    /// How many requests addressed `endpoint` (refused ones included).
    pub fn request_count(&self, endpoint: Endpoint) -> usize {
        lock(&self.shared.requests).iter().filter(|r| r.endpoint == endpoint).count()
    }

    /// Enforces (or, with `None`, stops enforcing) a per-minute request limit from now on, on every key not
    /// configured one by one.
    pub fn set_requests_per_minute(&self, limit: Option<u32>) {
        let mut rate = lock(&self.shared.rate);
        rate.default_requests = limit;
        let configured: Vec<String> = rate.keys.keys().cloned().collect();
        for k in configured {
            if let Some(r) = rate.keys.get_mut(&k) {
                r.key.limits.requests = limit.map(u64::from);
            }
        }
    }

    /// How many requests the double refused with 429 because they exceeded its own limits (every key).
    pub fn rate_limited_count(&self) -> u64 {
        lock(&self.shared.rate).rejected
    }

    /// Requests the double served on `key` (accepted by its limits), and those it refused for exceeding them.
    pub fn key_counts(&self, key: &str) -> (u64, u64) {
        lock(&self.shared.rate).keys.get(key).map_or((0, 0), |r| (r.served, r.rejected))
    }

    /// Changes what the double does with `key` from now on (adding it if new).
    pub fn set_key(&self, key: &str, config: DoubleKey) {
        let mut rate = lock(&self.shared.rate);
        let entry = rate.keys.entry(key.to_owned()).or_default();
        entry.key = config;
    }

    /// Stops accepting connections, lets streams in flight finish (up to a few seconds), and waits for the server.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for LlmDouble {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Splits `text` into pieces of at most `chars` characters (an empty text gives no piece).
pub(crate) fn split_chunks(text: &str, chars: usize) -> Vec<String> {
    let chars = chars.max(1);
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, c) in text.chars().enumerate() {
        if i > 0 && i % chars == 0 {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// What one request is answered with, before it becomes a [`Response`].
struct Ctx {
    endpoint: Endpoint,
    stream: bool,
    include_usage: bool,
    model: String,
    message_id: String,
    request_id: String,
    created: i64,
    rate: Option<RateInfo>,
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string());
    let endpoint = match (method == Method::POST, uri.path()) {
        (true, "/v1/messages") => Endpoint::AnthropicMessages,
        (true, "/v1/chat/completions") => Endpoint::OpenAiChat,
        _ => Endpoint::Other,
    };
    let recorded = RecordedRequest {
        endpoint,
        method: method.to_string(),
        path,
        headers: headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw_body: String::from_utf8_lossy(&body).into_owned(),
    };
    lock(&shared.requests).push(recorded.clone());

    let mut ctx = Ctx {
        endpoint,
        stream: recorded.is_stream(),
        include_usage: recorded.body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false),
        model: recorded.model().unwrap_or("llm-double").to_string(),
        message_id: String::new(),
        request_id: shared.id(if endpoint == Endpoint::OpenAiChat { "req_double_oai_" } else { "req_double_" }),
        created: chrono::Utc::now().timestamp(),
        rate: None,
    };

    if let Err(refusal) = gate(&shared, &ctx, &recorded) {
        return error_response(&ctx, &refusal);
    }

    let (step, scripted) = match shared.script.pop() {
        Some(step) => (step, true),
        None => {
            let policy = Arc::clone(&*lock(&shared.policy));
            (policy(&recorded), false)
        }
    };
    let key = api_key(endpoint, &recorded).unwrap_or_default();
    // Usage the reply does not fix: computed from the request (the cache is written only once it is admitted).
    let now = Instant::now();
    let computed = match &step {
        Step::Reply(reply) | Step::Fault { reply, .. } if reply.usage.is_none() => {
            let plan = {
                let cache = lock(&shared.cache);
                match endpoint {
                    Endpoint::OpenAiChat => cache.plan_openai(&key, &recorded.body, now),
                    _ => cache.plan_anthropic(&key, &recorded.body, now),
                }
            };
            let usage = TokenUsage { output_tokens: output_tokens(reply), ..plan.usage };
            Some((plan, usage))
        }
        _ => None,
    };
    let (input, output) = match (&step, &computed) {
        (_, Some((_, u))) => (u.input_tokens.saturating_add(u.cache_creation_input_tokens), u.output_tokens),
        (Step::Reply(reply) | Step::Fault { reply, .. }, None) => {
            let u = reply.reported_usage();
            (u.input_tokens.saturating_add(u.cache_creation_input_tokens), u.output_tokens)
        }
        (Step::HttpError(_), None) => (0, 0),
    };
    let admitted = {
        let mut rate = lock(&shared.rate);
        let window = rate.window;
        match rate.key(&key) {
            None => Err(HttpError::new(401).message("invalid x-api-key")),
            Some(k) if k.key.revoked => Err(HttpError::new(401).message("invalid x-api-key (revoked)")),
            Some(k) if k.key.spend_limited => Err(HttpError::new(429)
                .message(
                    "You have reached your specified API usage limits. You will regain access on the first day of \
                     next month at 00:00 UTC.",
                )
                .code(if endpoint == Endpoint::OpenAiChat {
                    "organization_spend_limit_exceeded"
                } else {
                    "enforced_spend_limit_reached"
                })),
            Some(k) => match k.admit(Instant::now(), window, input, output) {
                Ok(info) => {
                    ctx.rate = Some(info);
                    Ok(())
                }
                Err(info) => {
                    rate.rejected += 1;
                    ctx.rate = Some(info);
                    let secs = info.retry.as_secs_f64().ceil().max(1.0);
                    Err(HttpError::new(429).retry_after(format!("{secs:.0}")))
                }
            },
        }
    };
    if let Err(error) = admitted {
        if scripted {
            shared.script.unpop(step);
        }
        return error_response(&ctx, &error);
    }
    ctx.message_id = shared.id(if endpoint == Endpoint::OpenAiChat { "chatcmpl-double" } else { "msg_double_" });
    let computed = computed.map(|(plan, usage)| {
        lock(&shared.cache).commit(plan, now);
        usage
    });
    match step {
        Step::HttpError(error) => error_response(&ctx, &error),
        Step::Reply(mut reply) => {
            assign_tool_ids(&shared, endpoint, &mut reply);
            sign_thinking(&shared, &mut reply);
            reply.usage = reply.usage.or(computed);
            reply_response(&ctx, &reply, None)
        }
        Step::Fault { mut reply, fault } => {
            assign_tool_ids(&shared, endpoint, &mut reply);
            sign_thinking(&shared, &mut reply);
            reply.usage = reply.usage.or(computed);
            reply_response(&ctx, &reply, Some(&fault))
        }
    }
}

/// The API key a request carries.
fn api_key(endpoint: Endpoint, recorded: &RecordedRequest) -> Option<String> {
    match endpoint {
        Endpoint::OpenAiChat => {
            recorded.header("authorization").and_then(|v| v.strip_prefix("Bearer ")).map(|k| k.trim().to_owned())
        }
        _ => recorded.header("x-api-key").map(str::to_owned),
    }
}

/// Refuses requests to unknown paths, without credentials, with bodies missing required fields, or whose prompt is
/// over the context window.
fn gate(shared: &Shared, ctx: &Ctx, recorded: &RecordedRequest) -> Result<(), Box<HttpError>> {
    well_formed(shared, ctx, recorded)?;
    let window = shared.context_window.load(Ordering::Relaxed);
    if window == 0 {
        return Ok(());
    }
    let refusal =
        match ctx.endpoint {
            Endpoint::AnthropicMessages => {
                let tokens = crate::tokens::count_anthropic(&recorded.body);
                (tokens > window).then(|| {
                    HttpError::new(400)
                        .error_type("invalid_request_error")
                        .message(format!("prompt is too long: {tokens} tokens > {window} maximum"))
                })
            }
            Endpoint::OpenAiChat => {
                let tokens = crate::tokens::count_openai(&recorded.body);
                (tokens > window).then(|| {
                HttpError::new(400).error_type("invalid_request_error").code("context_length_exceeded").message(format!(
                    "This model's maximum context length is {window} tokens. However, your messages resulted in \
                     {tokens} tokens. Please reduce the length of the messages."
                ))
            })
            }
            Endpoint::Other => None,
        };
    refusal.map_or(Ok(()), |e| Err(Box::new(e)))
}

/// Refuses requests to unknown paths, without credentials, or with bodies missing required fields.
fn well_formed(shared: &Shared, ctx: &Ctx, recorded: &RecordedRequest) -> Result<(), Box<HttpError>> {
    let refuse = |status: u16, message: &str| Err(Box::new(HttpError::new(status).message(message)));
    match ctx.endpoint {
        Endpoint::Other => refuse(404, "llm-double serves only POST /v1/messages and POST /v1/chat/completions"),
        Endpoint::AnthropicMessages => {
            match recorded.header("x-api-key").filter(|k| !k.is_empty()) {
                None => return refuse(401, "x-api-key header is required"),
                Some(key) if shared.api_key.as_deref().is_some_and(|expected| expected != key) => {
                    return refuse(401, "invalid x-api-key");
                }
                Some(_) => {}
            }
            if recorded.header("anthropic-version").is_none_or(str::is_empty) {
                return refuse(400, "anthropic-version: header is required");
            }
            let body = &recorded.body;
            if !body.is_object() {
                return refuse(400, "The request body is not valid JSON.");
            }
            if !body.get("model").is_some_and(Value::is_string) {
                return refuse(400, "model: Field required");
            }
            if !body.get("max_tokens").is_some_and(Value::is_u64) {
                return refuse(400, "max_tokens: Field required");
            }
            if !body.get("messages").is_some_and(Value::is_array) {
                return refuse(400, "messages: Field required");
            }
            crate::caching::check_breakpoints(body)?;
            lock(&shared.thinking).check(body)?;
            Ok(())
        }
        Endpoint::OpenAiChat => {
            let key = recorded.header("authorization").and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
            match key.filter(|k| !k.is_empty()) {
                None => {
                    return refuse(
                        401,
                        "You didn't provide an API key. You need to provide your API key in an Authorization header \
                         using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    );
                }
                Some(key) if shared.api_key.as_deref().is_some_and(|expected| expected != key) => {
                    return refuse(401, openai::stock_message(401));
                }
                Some(_) => {}
            }
            let body = &recorded.body;
            if !body.is_object() {
                return refuse(400, "We could not parse the JSON body of your request.");
            }
            if !body.get("model").is_some_and(Value::is_string) {
                return refuse(400, "you must provide a model parameter");
            }
            if !body.get("messages").is_some_and(Value::is_array) {
                return refuse(400, "Missing required parameter: 'messages'.");
            }
            Ok(())
        }
    }
}

/// Output tokens of a reply whose usage is computed: every block's text by the one estimate, at least 1.
fn output_tokens(reply: &Reply) -> u64 {
    let tokens: u64 = reply
        .blocks
        .iter()
        .map(|block| match block {
            ReplyBlock::Text(text) => crate::tokens::count_text(text),
            ReplyBlock::ToolCall { name, input, .. } => {
                crate::tokens::count_text(name).saturating_add(crate::tokens::count_json(input))
            }
            ReplyBlock::Thinking { text, .. } => crate::tokens::count_text(text),
            ReplyBlock::RedactedThinking { data } => crate::tokens::count_text(data),
        })
        .sum();
    tokens.max(1)
}

/// Signs the reply's thinking blocks (a scripted signature is kept) and remembers its redacted thinking, so a later
/// request must send them back unchanged.
fn sign_thinking(shared: &Shared, reply: &mut Reply) {
    let mut issued = lock(&shared.thinking);
    for block in &mut reply.blocks {
        match block {
            ReplyBlock::Thinking { text, signature } => {
                *signature = Some(issued.sign(text, signature.as_deref()));
            }
            ReplyBlock::RedactedThinking { data } => issued.redact(data),
            _ => {}
        }
    }
}

fn assign_tool_ids(shared: &Shared, endpoint: Endpoint, reply: &mut Reply) {
    let prefix = if endpoint == Endpoint::OpenAiChat { "call_double_" } else { "toolu_double_" };
    for block in &mut reply.blocks {
        if let ReplyBlock::ToolCall { id: id @ None, .. } = block {
            *id = Some(shared.id(prefix));
        }
    }
}

pub(crate) fn set_header(headers: &mut HeaderMap, name: &str, value: &str) {
    match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
        (Ok(name), Ok(value)) => {
            headers.insert(name, value);
        }
        _ => tracing::warn!(name, value, "llm-double: skipping an invalid scripted header"),
    }
}

/// The request id and (see [`rate_headers`]) rate-limit headers of a provider.
fn common_headers(ctx: &Ctx, headers: &mut HeaderMap) {
    match ctx.endpoint {
        Endpoint::OpenAiChat => {
            set_header(headers, "x-request-id", &ctx.request_id);
            set_header(headers, "openai-version", "2020-10-01");
            set_header(headers, "openai-processing-ms", "1");
        }
        Endpoint::AnthropicMessages | Endpoint::Other => set_header(headers, "request-id", &ctx.request_id),
    }
    if let Some(rate) = ctx.rate {
        rate_headers(ctx.endpoint, &rate, headers);
    }
}

fn error_response(ctx: &Ctx, error: &HttpError) -> Response {
    let body = match ctx.endpoint {
        Endpoint::OpenAiChat => {
            let error_type = error.error_type.as_deref().unwrap_or(openai::error_type_for(error.status));
            let message = error.message.as_deref().unwrap_or(openai::stock_message(error.status));
            let mut body = openai::error_body(error.status, error_type, message);
            if let (Some(code), Some(e)) = (&error.error_code, body.get_mut("error")) {
                e["code"] = Value::String(code.clone());
            }
            body
        }
        Endpoint::AnthropicMessages | Endpoint::Other => {
            let error_type = error.error_type.as_deref().unwrap_or(anthropic::error_type_for(error.status));
            let message = error.message.as_deref().unwrap_or(anthropic::stock_message(error.status));
            let mut body = anthropic::error_body(error_type, message, &ctx.request_id);
            if let (Some(code), Some(e)) = (&error.error_code, body.get_mut("error")) {
                e["details"] = serde_json::json!({ "error_code": code });
            }
            body
        }
    };
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    set_header(headers, header::CONTENT_TYPE.as_str(), "application/json");
    common_headers(ctx, headers);
    let should_retry = matches!(error.status, 408 | 409 | 429 | 500..=599);
    set_header(headers, "x-should-retry", if should_retry { "true" } else { "false" });
    if let Some(retry_after) = &error.retry_after {
        set_header(headers, "retry-after", retry_after);
    }
    for (name, value) in &error.headers {
        set_header(headers, name, value);
    }
    response
}

enum Frame {
    Data(Bytes),
    Abort,
}

/// `bytes` with [`crate::SEND_TIME_MARKER`] replaced by the time it is sent (microseconds since the Unix epoch).
fn stamp_send_time(bytes: Bytes) -> Bytes {
    let marker = crate::SEND_TIME_MARKER.as_bytes();
    let Some(at) = bytes.windows(marker.len()).position(|w| w == marker) else { return bytes };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(now.to_string().as_bytes());
    out.extend_from_slice(&bytes[at + marker.len()..]);
    Bytes::from(out)
}

fn frames_body(frames: Vec<Frame>, delay: Duration) -> Body {
    let stream = futures::stream::unfold((frames.into_iter(), true), move |(mut frames, first)| async move {
        let frame = frames.next()?;
        if !first && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match frame {
            Frame::Data(bytes) => Some((Ok(stamp_send_time(bytes)), (frames, false))),
            Frame::Abort => {
                // Give the connection a moment to flush what was sent, then fail the body: hyper closes the
                // connection without ending the chunked body, as a provider whose connection drops would.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Err(std::io::Error::other("llm-double: stream cut on purpose")), (frames, false)))
            }
        }
    });
    Body::from_stream(stream)
}

fn reply_response(ctx: &Ctx, reply: &Reply, fault: Option<&StreamFault>) -> Response {
    let model = reply.model.clone().unwrap_or_else(|| ctx.model.clone());
    let openai = ctx.endpoint == Endpoint::OpenAiChat;
    let (content_type, frames) = if ctx.stream {
        let mut events = if openai {
            openai::events(reply, &ctx.message_id, &model, ctx.created, ctx.include_usage)
        } else {
            anthropic::events(reply, &ctx.message_id, &model)
        };
        let mut abort = false;
        match fault {
            None => {}
            Some(StreamFault::Cut { after_events }) => {
                events.truncate(*after_events);
                abort = true;
            }
            Some(StreamFault::EndEarly { after_events }) => events.truncate(*after_events),
            Some(StreamFault::Malformed { after_events, raw }) => {
                let default = if openai { openai::MALFORMED } else { anthropic::MALFORMED };
                let raw = raw.clone().unwrap_or_else(|| default.to_string());
                events.insert((*after_events).min(events.len()), raw);
            }
            Some(StreamFault::UnknownEvent { after_events }) => {
                let event = if openai {
                    openai::unknown_event(&ctx.message_id, &model, ctx.created)
                } else {
                    anthropic::unknown_event()
                };
                events.insert((*after_events).min(events.len()), event);
            }
            Some(StreamFault::ErrorEvent { after_events, error_type, message }) => {
                events.truncate(*after_events);
                events.push(if openai {
                    openai::error_event(error_type, message)
                } else {
                    anthropic::error_event(error_type, message)
                });
            }
        }
        let mut frames: Vec<Frame> = events.into_iter().map(|e| Frame::Data(Bytes::from(e))).collect();
        if abort {
            frames.push(Frame::Abort);
        }
        ("text/event-stream; charset=utf-8", frames)
    } else {
        if let Some(StreamFault::ErrorEvent { error_type, message, .. }) = fault {
            let status = if openai { openai::status_for(error_type) } else { anthropic::status_for(error_type) };
            return error_response(ctx, &HttpError::new(status).error_type(error_type).message(message));
        }
        let json = if openai {
            openai::completion(reply, &ctx.message_id, &model, ctx.created)
        } else {
            anthropic::message(reply, &ctx.message_id, &model)
        };
        let text = json.to_string();
        let frames = match fault {
            Some(StreamFault::Cut { .. }) => {
                let half: String = text.chars().take(text.chars().count() / 2).collect();
                vec![Frame::Data(Bytes::from(half)), Frame::Abort]
            }
            Some(StreamFault::EndEarly { .. }) => {
                vec![Frame::Data(Bytes::from(text.chars().take(text.chars().count() / 2).collect::<String>()))]
            }
            Some(StreamFault::Malformed { raw, .. }) => {
                let raw = raw.clone().unwrap_or_else(|| "{\"id\": \"this is not JSON".to_string());
                vec![Frame::Data(Bytes::from(raw))]
            }
            _ => vec![Frame::Data(Bytes::from(text))],
        };
        ("application/json", frames)
    };
    let mut response = Response::new(frames_body(frames, reply.event_delay));
    let headers = response.headers_mut();
    set_header(headers, header::CONTENT_TYPE.as_str(), content_type);
    if ctx.stream {
        set_header(headers, header::CACHE_CONTROL.as_str(), "no-cache");
    }
    common_headers(ctx, headers);
    for (name, value) in &reply.headers {
        set_header(headers, name, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_chunks_respects_char_boundaries() {
        assert_eq!(split_chunks("héllo wörld", 4), vec!["héll", "o wö", "rld"]);
        assert!(split_chunks("", 4).is_empty());
        assert_eq!(split_chunks("ab", 0), vec!["a", "b"]);
    }
}
