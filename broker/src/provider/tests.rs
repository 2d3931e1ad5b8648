//! Both providers against the llm-double TEST DOUBLE over real loopback HTTP: round trips, deltas, usage, every
//! failure class, and the exact request shape the double recorded. Plus configuration, `retry-after` and redaction.

use std::time::Duration;

use neuraphage_ipc::llm::{
    ChatRequest, ChatResponse, ContentBlock, LlmErrorKind, LlmFailure, Message, Speaker, StopReason, StreamDelta,
    ToolDefinition, Usage,
};
use neuraphage_llm_double::{HttpError, LlmDouble, Reply, Step, StreamFault, TokenUsage};
use pretty_assertions::assert_eq;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;

use super::*;

const KINDS: [ProviderKind; 2] = [ProviderKind::Anthropic, ProviderKind::OpenAi];

fn provider(double: &LlmDouble, kind: ProviderKind) -> Provider {
    provider_with(double, kind, |_| {})
}

fn provider_with(double: &LlmDouble, kind: ProviderKind, tweak: impl FnOnce(&mut ProviderConfig)) -> Provider {
    let (base_url, key) = match kind {
        ProviderKind::Anthropic => (double.anthropic_base_url(), "sk-ant-test"),
        ProviderKind::OpenAi => (double.openai_base_url(), "sk-openai-test"),
    };
    let mut config = ProviderConfig { base_url, model: "test-model".into(), ..ProviderConfig::new(kind, key) };
    tweak(&mut config);
    Provider::new(config).expect("provider")
}

fn read_tool() -> ToolDefinition {
    ToolDefinition {
        name: "Read".into(),
        description: "Reads a file".into(),
        input_schema: json!({
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "offset": {"type": "integer"}, "limit": {"type": "integer"}},
            "required": ["file_path"],
        }),
    }
}

/// A second turn: the task, a tool call, its (failed) result.
fn request() -> ChatRequest {
    ChatRequest {
        model: None,
        system: "You are a coding agent.".into(),
        messages: vec![
            Message::user_text("Summarise src/main.rs"),
            Message {
                role: Speaker::Assistant,
                content: vec![
                    ContentBlock::Text { text: "Reading it.".into() },
                    ContentBlock::ToolUse {
                        id: "tool_1".into(),
                        name: "Read".into(),
                        input: json!({"file_path": "src/main.rs"}),
                    },
                ],
            },
            Message {
                role: Speaker::User,
                content: vec![ContentBlock::ToolResult {
                    tool_use_id: "tool_1".into(),
                    content: "no such file".into(),
                    is_error: true,
                }],
            },
        ],
        tools: vec![read_tool()],
        max_tokens: 2048,
        tier: None,
    }
}

async fn call(provider: &Provider, request: &ChatRequest) -> (Result<ChatResponse, LlmFailure>, Vec<StreamDelta>) {
    let mut deltas = Vec::new();
    let mut on_delta = |d: StreamDelta| deltas.push(d);
    let result = provider.complete(request, &mut on_delta).await;
    (result, deltas)
}

async fn fail(provider: &Provider) -> LlmFailure {
    call(provider, &request()).await.0.expect_err("a failure")
}

fn text_and_tool() -> Reply {
    Reply::text("Let me look.")
        .with_tool_id("call_x", "Grep", json!({"pattern": "fn main", "path": "."}))
        .with_usage(TokenUsage {
            input_tokens: 120,
            output_tokens: 33,
            cache_read_input_tokens: 20,
            ..Default::default()
        })
        .chunk_chars(5)
}

#[tokio::test]
async fn text_and_tool_call_round_trip_with_ordered_deltas_and_usage() {
    for kind in KINDS {
        let double = LlmDouble::start().await.expect("double");
        double.push(text_and_tool());
        let (result, deltas) = call(&provider(&double, kind), &request()).await;
        let response = result.expect("response");
        assert_eq!(
            response.content,
            vec![
                ContentBlock::Text { text: "Let me look.".into() },
                ContentBlock::ToolUse {
                    id: "call_x".into(),
                    name: "Grep".into(),
                    input: json!({"pattern": "fn main", "path": "."})
                },
            ],
            "{kind}"
        );
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        assert_eq!(response.model, "test-model");
        assert!(!response.id.is_empty());
        assert_eq!(
            response.usage,
            Usage { input_tokens: 120, output_tokens: 33, cache_creation_input_tokens: 0, cache_read_input_tokens: 20 },
            "{kind}"
        );
        // Deltas arrive in order: text pieces of 5 characters, then the call, then its JSON pieces.
        let mut expected = vec![
            StreamDelta::Text { index: 0, text: "Let m".into() },
            StreamDelta::Text { index: 0, text: "e loo".into() },
            StreamDelta::Text { index: 0, text: "k.".into() },
            StreamDelta::ToolUseStart { index: 1, id: "call_x".into(), name: "Grep".into() },
        ];
        let json_text = json!({"pattern": "fn main", "path": "."}).to_string();
        let pieces: Vec<char> = json_text.chars().collect();
        for piece in pieces.chunks(5) {
            expected.push(StreamDelta::ToolInput { index: 1, partial_json: piece.iter().collect() });
        }
        assert_eq!(deltas, expected, "{kind}");
    }
}

#[tokio::test]
async fn end_turn_and_the_request_model_override() {
    for kind in KINDS {
        let double = LlmDouble::start().await.expect("double");
        double.push(Reply::text("All done."));
        let mut req = request();
        req.model = Some("other-model".into());
        let response = call(&provider(&double, kind), &req).await.0.expect("response");
        assert_eq!(response.stop_reason, StopReason::EndTurn);
        assert_eq!(response.content, vec![ContentBlock::Text { text: "All done.".into() }]);
        assert_eq!(double.last_request().and_then(|r| r.model().map(str::to_string)).as_deref(), Some("other-model"));
    }
}

#[tokio::test]
async fn anthropic_request_has_the_documented_shape() {
    let double = LlmDouble::start().await.expect("double");
    call(&provider(&double, ProviderKind::Anthropic), &request()).await.0.expect("response");
    let recorded = double.last_request().expect("recorded");
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, "/v1/messages");
    assert_eq!(recorded.header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(recorded.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(recorded.header("content-type"), Some("application/json"));
    assert_eq!(recorded.header("authorization"), None);
    assert_eq!(
        recorded.body,
        json!({
            "model": "test-model",
            "max_tokens": 2048,
            "system": [{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Summarise src/main.rs", "cache_control": {"type": "ephemeral"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Reading it."},
                    {"type": "tool_use", "id": "tool_1", "name": "Read", "input": {"file_path": "src/main.rs"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "tool_1", "content": "no such file", "is_error": true,
                     "cache_control": {"type": "ephemeral"}},
                ]},
            ],
            "tools": [{"name": "Read", "description": "Reads a file", "input_schema": read_tool().input_schema,
                       "cache_control": {"type": "ephemeral"}}],
            "stream": true,
        })
    );
}

#[tokio::test]
async fn openai_request_has_the_documented_shape() {
    let double = LlmDouble::start().await.expect("double");
    call(&provider(&double, ProviderKind::OpenAi), &request()).await.0.expect("response");
    let recorded = double.last_request().expect("recorded");
    assert_eq!(recorded.path, "/v1/chat/completions");
    assert_eq!(recorded.header("authorization"), Some("Bearer sk-openai-test"));
    assert_eq!(recorded.header("x-api-key"), None);
    assert_eq!(
        recorded.body,
        json!({
            "model": "test-model",
            "max_tokens": 2048,
            "messages": [
                {"role": "system", "content": "You are a coding agent."},
                {"role": "user", "content": "Summarise src/main.rs"},
                {"role": "assistant", "content": "Reading it.", "tool_calls": [
                    {"id": "tool_1", "type": "function", "function": {"name": "Read", "arguments": "{\"file_path\":\"src/main.rs\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "tool_1", "content": "Error: no such file"},
            ],
            "tools": [{"type": "function", "function": {
                "name": "Read", "description": "Reads a file", "parameters": read_tool().input_schema,
            }}],
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
}

#[tokio::test]
async fn http_errors_map_to_their_classes() {
    let cases: [(u16, LlmErrorKind, bool); 7] = [
        (401, LlmErrorKind::Auth, false),
        (403, LlmErrorKind::Auth, false),
        (429, LlmErrorKind::RateLimited, true),
        (529, LlmErrorKind::Overloaded, true),
        (500, LlmErrorKind::Server, true),
        (503, LlmErrorKind::Server, true),
        (400, LlmErrorKind::InvalidRequest, false),
    ];
    for kind in KINDS {
        let double = LlmDouble::start().await.expect("double");
        let provider = provider(&double, kind);
        for (status, expected, retryable) in cases {
            double.push(HttpError::new(status).message(format!("scripted {status}")));
            let failure = fail(&provider).await;
            assert_eq!(
                (failure.kind, failure.status, failure.retryable),
                (expected, Some(status), retryable),
                "{kind}"
            );
            assert!(failure.message.contains(&format!("scripted {status}")), "{kind}: {}", failure.message);
            assert!(failure.message.contains("request id req_double"), "{kind}: {}", failure.message);
            assert_eq!(failure.retry_after_ms, None);
        }
        double.push(HttpError::new(429).retry_after("3"));
        let failure = fail(&provider).await;
        assert_eq!(failure.retry_after_ms, Some(3000));
        let rate_type = if kind == ProviderKind::Anthropic { "rate_limit_error" } else { "requests" };
        assert!(failure.message.starts_with(rate_type), "{}", failure.message);
        double.push(HttpError::new(529).retry_after("0.5"));
        assert_eq!(fail(&provider).await.retry_after_ms, Some(500));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        double.push(HttpError::new(429).retry_after(later));
        let ms = fail(&provider).await.retry_after_ms.expect("retry-after from a date");
        assert!((100_000..=121_000).contains(&ms), "{ms}");
        double.push(HttpError::new(429).header("retry-after-ms", "1500").retry_after("9"));
        assert_eq!(fail(&provider).await.retry_after_ms, Some(1500));
    }
}

#[tokio::test]
async fn the_doubles_own_rate_limit_is_reported_as_rate_limited() {
    let config = neuraphage_llm_double::DoubleConfig { requests_per_minute: Some(1), ..Default::default() };
    let double = LlmDouble::start_with(config).await.expect("double");
    let provider = provider(&double, ProviderKind::Anthropic);
    call(&provider, &request()).await.0.expect("first request passes");
    let failure = fail(&provider).await;
    assert_eq!(failure.kind, LlmErrorKind::RateLimited);
    assert!(failure.retry_after_ms.is_some_and(|ms| (1000..=60_000).contains(&ms)));
    assert_eq!(double.rate_limited_count(), 1);
}

#[tokio::test]
async fn a_cut_stream_is_a_retryable_malformed_response_after_its_deltas() {
    for kind in KINDS {
        let double = LlmDouble::start().await.expect("double");
        let provider = provider(&double, kind);
        double.push(Step::cut(Reply::text("abcdefghij").chunk_chars(2), 4));
        let (result, deltas) = call(&provider, &request()).await;
        let failure = result.expect_err("cut");
        assert_eq!((failure.kind, failure.retryable), (LlmErrorKind::MalformedResponse, true), "{kind}: {failure}");
        assert!(!deltas.is_empty(), "{kind}: the deltas before the cut arrived");

        double.push(Step::end_early(Reply::text("abcdefghij").chunk_chars(2), 4));
        let failure = fail(&provider).await;
        assert_eq!((failure.kind, failure.retryable), (LlmErrorKind::MalformedResponse, true), "{kind}: {failure}");
    }
}

#[tokio::test]
async fn a_malformed_stream_is_a_malformed_response() {
    for kind in KINDS {
        let double = LlmDouble::start().await.expect("double");
        let provider = provider(&double, kind);
        double.push(Step::malformed(Reply::text("hello"), 3));
        let failure = fail(&provider).await;
        assert_eq!((failure.kind, failure.retryable), (LlmErrorKind::MalformedResponse, false), "{kind}: {failure}");
        double.push(Step::Fault {
            reply: Reply::text("hello"),
            fault: StreamFault::Malformed { after_events: 1, raw: Some("data: garbage, not JSON\n\n".into()) },
        });
        let failure = fail(&provider).await;
        assert_eq!(failure.kind, LlmErrorKind::MalformedResponse, "{kind}: {failure}");
        assert!(failure.message.contains("garbage"), "{}", failure.message);
    }
}

#[tokio::test]
async fn a_mid_stream_error_event_is_a_failure_of_its_type() {
    for kind in KINDS {
        let double = LlmDouble::start().await.expect("double");
        let provider = provider(&double, kind);
        double.push(Step::overloaded_mid_stream(Reply::text("partial"), 3));
        let failure = fail(&provider).await;
        assert_eq!((failure.kind, failure.retryable), (LlmErrorKind::Overloaded, true), "{kind}: {failure}");
        assert!(failure.message.contains("Overloaded"));
        double.push(Step::error_event(Reply::text("partial"), 2, "server_error", "boom"));
        let failure = fail(&provider).await;
        assert_eq!((failure.kind, failure.retryable), (LlmErrorKind::Server, true), "{kind}: {failure}");
        double.push(Step::error_event(Reply::text("partial"), 2, "invalid_request_error", "bad"));
        assert_eq!(fail(&provider).await.kind, LlmErrorKind::InvalidRequest);
    }
}

#[tokio::test]
async fn unknown_events_are_ignored() {
    for kind in KINDS {
        let double = LlmDouble::start().await.expect("double");
        for after in [0, 1, 3, 5] {
            double.push(Step::unknown_event(Reply::text("still fine").chunk_chars(3), after));
        }
        let provider = provider(&double, kind);
        for _ in 0..4 {
            let response = call(&provider, &request()).await.0.expect("response");
            assert_eq!(response.content, vec![ContentBlock::Text { text: "still fine".into() }], "{kind}");
        }
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    for kind in KINDS {
        let double = LlmDouble::start().await.expect("double");
        let provider = provider_with(&double, kind, |c| c.max_response_bytes = 2048);
        double.push(Reply::text("x".repeat(10_000)).chunk_chars(100));
        let failure = fail(&provider).await;
        assert_eq!((failure.kind, failure.retryable), (LlmErrorKind::MalformedResponse, false), "{kind}");
        assert!(failure.message.contains("larger than 2048 bytes"), "{}", failure.message);
        // A small answer still passes.
        double.push(Reply::text("short"));
        assert!(call(&provider, &request()).await.0.is_ok());
    }
}

#[tokio::test]
async fn invalid_tool_json_keeps_the_call_with_its_raw_input() {
    let double = LlmDouble::start().await.expect("double");
    // Anthropic: message_start, content_block_start, ping, then an extra delta that breaks the tool's JSON.
    let raw = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"oops \"}}\n\n";
    double.push(Step::Fault {
        reply: Reply::new().with_tool_id("t1", "Read", json!({"file_path": "a"})),
        fault: StreamFault::Malformed { after_events: 3, raw: Some(raw.into()) },
    });
    let response = call(&provider(&double, ProviderKind::Anthropic), &request()).await.0.expect("response");
    assert_eq!(
        response.content,
        vec![ContentBlock::ToolUse {
            id: "t1".into(),
            name: "Read".into(),
            input: json!({INVALID_INPUT_KEY: "oops {\"file_path\":\"a\"}"}),
        }]
    );
    // OpenAI: a first arguments piece that breaks the JSON.
    let raw = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"oops \"}}]}}]}\n\n";
    double.push(Step::Fault {
        reply: Reply::new().with_tool_id("t2", "Read", json!({"file_path": "a"})),
        fault: StreamFault::Malformed { after_events: 2, raw: Some(raw.into()) },
    });
    let response = call(&provider(&double, ProviderKind::OpenAi), &request()).await.0.expect("response");
    assert_eq!(
        response.content,
        vec![ContentBlock::ToolUse {
            id: "t2".into(),
            name: "Read".into(),
            input: json!({INVALID_INPUT_KEY: "oops {\"file_path\":\"a\"}"}),
        }]
    );
}

#[tokio::test]
async fn transport_failures_and_stalls() {
    for kind in KINDS {
        let double = LlmDouble::start().await.expect("double");
        let stalled = provider_with(&double, kind, |c| c.request_timeout = Duration::from_millis(300));
        double.push(Reply::text("slow").chunk_chars(1).delay(Duration::from_secs(30)));
        let failure = fail(&stalled).await;
        assert_eq!((failure.kind, failure.retryable), (LlmErrorKind::Transport, true), "{kind}: {failure}");

        let closed = provider(&double, kind);
        double.shutdown().await;
        let failure = fail(&closed).await;
        assert_eq!((failure.kind, failure.retryable, failure.status), (LlmErrorKind::Transport, true, None), "{kind}");
    }
}

#[tokio::test]
async fn whole_json_answers_are_parsed_too() {
    let double = LlmDouble::start().await.expect("double");
    let client = reqwest::Client::new();
    for kind in KINDS {
        double.push(text_and_tool());
        let mut body = match kind {
            ProviderKind::Anthropic => anthropic::request_body(&request(), "m", CallOptions::default()),
            ProviderKind::OpenAi => openai::request_body(&request(), "m", "max_tokens"),
        };
        body["stream"] = json!(false);
        let provider = provider(&double, kind);
        let bytes = client
            .post(provider.endpoint())
            .headers(provider.headers.clone())
            .json(&body)
            .send()
            .await
            .expect("send")
            .bytes()
            .await
            .expect("body");
        let mut deltas = Vec::new();
        let mut on_delta = |d: StreamDelta| deltas.push(d);
        let response = match kind {
            ProviderKind::Anthropic => anthropic::parse_message(&bytes, "m", &mut on_delta),
            ProviderKind::OpenAi => openai::parse_completion(&bytes, "m", &mut on_delta),
        }
        .expect("parsed");
        assert_eq!(response.content.len(), 2, "{kind}");
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        assert_eq!(response.usage.input_tokens, 120, "{kind}");
        assert_eq!(response.usage.cache_read_input_tokens, 20, "{kind}");
        assert_eq!(deltas.len(), 3, "{kind}: text, tool start, tool input");
    }
}

#[test]
fn from_env_reads_keys_urls_and_the_model() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    };
    assert!(from_env(env(&[])).is_empty());
    assert!(from_env(env(&[(ANTHROPIC_API_KEY_ENV, "  ")])).is_empty());

    let both = from_env(env(&[(ANTHROPIC_API_KEY_ENV, "a-key"), (OPENAI_API_KEY_ENV, "o-key")]));
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], ProviderConfig::new(ProviderKind::Anthropic, "a-key"));
    assert_eq!(both[0].base_url, "https://api.anthropic.com");
    assert_eq!(both[0].model, "claude-sonnet-4-5");
    assert_eq!(both[1].kind, ProviderKind::OpenAi);
    assert_eq!(both[1].base_url, "https://api.openai.com/v1");
    assert_eq!(both[1].model, "gpt-4.1");

    let custom = from_env(env(&[
        (OPENAI_API_KEY_ENV, "o-key"),
        (OPENAI_BASE_URL_ENV, "http://localhost:11434/v1/"),
        (MODEL_ENV, "qwen3-coder"),
    ]));
    assert_eq!(custom.len(), 1);
    assert_eq!(custom[0].base_url, "http://localhost:11434/v1/");
    assert_eq!(custom[0].model, "qwen3-coder");
    let provider = Provider::new(custom[0].clone()).expect("provider");
    assert_eq!(provider.endpoint(), "http://localhost:11434/v1/chat/completions");

    let anthropic = from_env(env(&[(ANTHROPIC_API_KEY_ENV, "k"), (ANTHROPIC_BASE_URL_ENV, "http://127.0.0.1:9")]));
    let provider = Provider::new(anthropic[0].clone()).expect("provider");
    assert_eq!(provider.endpoint(), "http://127.0.0.1:9/v1/messages");
}

#[test]
fn the_key_never_shows() {
    let mut config = ProviderConfig::new(ProviderKind::Anthropic, "sk-ant-SECRET");
    config.base_url = "https://user:PASSWORD@proxy.example:8443/anthropic?token=QUERYSECRET".into();
    let provider = Provider::new(config.clone()).expect("provider");
    let shown = [provider.describe(), format!("{config:?}"), format!("{provider:?}")];
    for text in &shown {
        for secret in ["SECRET", "PASSWORD", "QUERYSECRET"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    assert_eq!(shown[0], "anthropic claude-sonnet-4-5 at https://proxy.example:8443/anthropic");
    assert_eq!(
        provider.endpoint(),
        "https://user:PASSWORD@proxy.example:8443/anthropic/v1/messages?token=QUERYSECRET",
        "the API path goes before the base URL's query"
    );
    let openai = Provider::new(ProviderConfig::new(ProviderKind::OpenAi, "k")).expect("provider");
    assert_eq!(openai.describe(), "openai gpt-4.1 at https://api.openai.com/v1");
}

#[test]
fn bad_configurations_are_refused() {
    let with = |tweak: fn(&mut ProviderConfig)| {
        let mut config = ProviderConfig::new(ProviderKind::OpenAi, "key");
        tweak(&mut config);
        Provider::new(config).err()
    };
    assert!(matches!(with(|c| c.base_url = "api.openai.com".into()), Some(ProviderError::BaseUrl { .. })));
    assert!(matches!(with(|c| c.base_url = "ftp://host/v1".into()), Some(ProviderError::BaseUrl { .. })));
    assert!(matches!(with(|c| c.api_key = String::new()), Some(ProviderError::ApiKey { .. })));
    assert!(matches!(with(|c| c.api_key = "line\nbreak".into()), Some(ProviderError::ApiKey { .. })));
    assert!(matches!(with(|c| c.model = " ".into()), Some(ProviderError::Model { .. })));
    assert!(matches!(with(|c| c.max_response_bytes = 0), Some(ProviderError::Limits { .. })));
    assert!(matches!(with(|c| c.request_timeout = Duration::ZERO), Some(ProviderError::Limits { .. })));
    let error = with(|c| c.api_key = "line\nbreak".into()).map(|e| e.to_string()).unwrap_or_default();
    assert!(!error.contains("break"));
}

#[test]
fn retry_after_forms() {
    let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z").expect("date").with_timezone(&chrono::Utc);
    let headers = |pairs: &[(&'static str, &'static str)]| {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    };
    assert_eq!(retry_after_ms(&headers(&[]), now), None);
    assert_eq!(retry_after_ms(&headers(&[("retry-after", "7")]), now), Some(7000));
    assert_eq!(retry_after_ms(&headers(&[("retry-after", "1.25")]), now), Some(1250));
    assert_eq!(retry_after_ms(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]), now), Some(60_000));
    assert_eq!(retry_after_ms(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:00:00 GMT")]), now), Some(0));
    assert_eq!(retry_after_ms(&headers(&[("retry-after-ms", "250"), ("retry-after", "7")]), now), Some(250));
    assert_eq!(retry_after_ms(&headers(&[("retry-after", "soon")]), now), None);
    assert_eq!(retry_after_ms(&headers(&[("retry-after", "-3")]), now), None);
    assert_eq!(retry_after_ms(&headers(&[("retry-after", "NaN")]), now), None);
    assert_eq!(retry_after_ms(&headers(&[("retry-after", "1e400")]), now), None);
}

#[test]
fn error_messages_quote_the_provider() {
    assert_eq!(
        error_message(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
        "overloaded_error: Overloaded"
    );
    assert_eq!(
        error_message(br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#),
        "requests: Rate limit reached"
    );
    assert_eq!(error_message(br#"{"error":"model not found"}"#), "model not found");
    assert_eq!(error_message(b"<html>Bad Gateway</html>"), "<html>Bad Gateway</html>");
    assert_eq!(error_message(b""), "(empty body)");
    assert_eq!(error_message(&[0xff, 0xfe]), "\u{fffd}\u{fffd}");
}

/// Random bytes and shuffled SSE fragments, in random chunks, through both parsers: any result, never a panic.
#[tokio::test]
async fn hostile_streams_never_panic() {
    use rand::{Rng, SeedableRng};
    const FRAGMENTS: [&str; 34] = [
        "event: ",
        "data: ",
        "\n",
        "\n\n",
        "\r\n",
        ":",
        "id: 7\n",
        "retry: x\n",
        "{",
        "}",
        "[",
        "]",
        ",",
        "\"",
        "\"type\":",
        "\"message_start\"",
        "\"content_block_start\"",
        "\"content_block_delta\"",
        "\"content_block_stop\"",
        "\"message_delta\"",
        "\"message_stop\"",
        "\"error\"",
        "\"index\":",
        "4294967296",
        "-1",
        "0",
        "null",
        "[DONE]",
        "\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"X\"}}]",
        "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\"}",
        "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"R\"}",
        "\u{fffd}",
        "é",
        "\u{0}",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6e65_7572);
    for case in 0..3000 {
        let mut input: Vec<u8> = Vec::new();
        for _ in 0..rng.random_range(0..60) {
            if rng.random_bool(0.15) {
                input.push(rng.random());
            } else {
                input.extend_from_slice(FRAGMENTS[rng.random_range(0..FRAGMENTS.len())].as_bytes());
            }
        }
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let mut rest = input.as_slice();
        while !rest.is_empty() {
            let (head, tail) = rest.split_at(rng.random_range(1..=rest.len()));
            chunks.push(head.to_vec());
            rest = tail;
        }
        for kind in KINDS {
            let chunks = chunks.iter().cloned().map(Ok::<_, reqwest::Error>);
            let mut events = sse::Events::from_stream(
                futures::stream::iter(chunks.collect::<Vec<_>>()),
                1 << 20,
                Duration::from_secs(5),
            );
            let mut on_delta = |_: StreamDelta| {};
            let result = match kind {
                ProviderKind::Anthropic => anthropic::read_stream(&mut events, "m", &mut on_delta).await,
                ProviderKind::OpenAi => openai::read_stream(&mut events, "m", &mut on_delta).await,
            };
            if let Err(failure) = result {
                assert!(!failure.message.is_empty(), "case {case}");
            }
        }
    }
}

#[tokio::test]
async fn prompt_too_long_is_its_own_class_and_not_retried() {
    // Anthropic: 400 invalid_request_error "prompt is too long: …"; OpenAI: error.code context_length_exceeded.
    let double = LlmDouble::start().await.expect("double");
    let anthropic = provider(&double, ProviderKind::Anthropic);
    double.push(HttpError::new(400).message("prompt is too long: 208310 tokens > 200000 maximum"));
    let failure = fail(&anthropic).await;
    assert_eq!((failure.kind, failure.retryable, failure.status), (LlmErrorKind::PromptTooLong, false, Some(400)));
    assert!(failure.message.contains("208310 tokens"), "{}", failure.message);
    // Another 400 stays an invalid request.
    double.push(HttpError::new(400).message("messages: text content blocks must be non-empty"));
    assert_eq!(fail(&anthropic).await.kind, LlmErrorKind::InvalidRequest);
    // Mid-stream, too.
    double.push(Step::error_event(Reply::text("x"), 1, "invalid_request_error", "prompt is too long: 9 tokens > 8"));
    assert_eq!(fail(&anthropic).await.kind, LlmErrorKind::PromptTooLong);

    let openai = provider(&double, ProviderKind::OpenAi);
    double.push(HttpError::new(400).code("context_length_exceeded").message(
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
    ));
    let failure = fail(&openai).await;
    assert_eq!((failure.kind, failure.retryable), (LlmErrorKind::PromptTooLong, false));
    double.push(HttpError::new(400).code("invalid_value").message("bad"));
    assert_eq!(fail(&openai).await.kind, LlmErrorKind::InvalidRequest);
    assert!(is_prompt_too_long(br#"{"error":{"code":"context_length_exceeded","message":"m"}}"#));
    assert!(!is_prompt_too_long(br#"{"error":{"type":"api_error","message":"prompt is too long"}}"#));
    assert!(!is_prompt_too_long(b"not json"));
}

#[tokio::test]
async fn thinking_blocks_go_back_to_anthropic_unchanged_and_never_to_openai() {
    let double = LlmDouble::start().await.expect("double");
    let options = CallOptions { prompt_caching: true, thinking_budget: Some(2048) };
    let anthropic = provider(&double, ProviderKind::Anthropic);
    double.push(
        Reply::new()
            .with_thinking("Thinking it over.", Some("sig/+=1".into()))
            .with_redacted_thinking("REDACTED-1")
            .with_tool_id("tool_2", "Read", json!({"file_path": "b"})),
    );
    let mut first = request();
    first.messages.truncate(1);
    let mut deltas = Vec::new();
    let response =
        anthropic.complete_observed(&first, options, &mut |d| deltas.push(d), &mut |_| {}).await.expect("response");
    assert_eq!(
        response.content[..2],
        [
            ContentBlock::Thinking { thinking: "Thinking it over.".into(), signature: "sig/+=1".into() },
            ContentBlock::RedactedThinking { data: "REDACTED-1".into() },
        ]
    );
    assert!(deltas.iter().any(|d| matches!(d, StreamDelta::Thinking { index: 0, .. })), "{deltas:?}");
    let sent = double.last_request().expect("sent").body;
    assert_eq!(sent["thinking"], json!({"type": "enabled", "budget_tokens": 2048}));
    assert_eq!(sent["max_tokens"], 2048 + 2048);

    // The next turn carries the thinking back unchanged, and the double (which checks signatures) takes it.
    let mut next = first.clone();
    next.messages.push(Message { role: Speaker::Assistant, content: response.content.clone() });
    next.messages.push(Message {
        role: Speaker::User,
        content: vec![ContentBlock::ToolResult { tool_use_id: "tool_2".into(), content: "b".into(), is_error: false }],
    });
    double.push(Reply::text("Done."));
    anthropic.complete_observed(&next, options, &mut |_| {}, &mut |_| {}).await.expect("accepted");
    let sent = double.last_request().expect("sent").body;
    assert_eq!(
        sent["messages"][1]["content"],
        json!([
            {"type": "thinking", "thinking": "Thinking it over.", "signature": "sig/+=1"},
            {"type": "redacted_thinking", "data": "REDACTED-1"},
            {"type": "tool_use", "id": "tool_2", "name": "Read", "input": {"file_path": "b"}},
        ])
    );
    // Changed thinking is refused, as the API does.
    let mut forged = next.clone();
    forged.messages[1].content[0] = ContentBlock::Thinking { thinking: "Edited.".into(), signature: "sig/+=1".into() };
    let failure = anthropic.complete_observed(&forged, options, &mut |_| {}, &mut |_| {}).await.expect_err("refused");
    assert_eq!(failure.kind, LlmErrorKind::InvalidRequest);

    // OpenAI: thinking is never sent; a thinking-only turn is left out.
    let openai = provider(&double, ProviderKind::OpenAi);
    next.messages.push(Message {
        role: Speaker::Assistant,
        content: vec![ContentBlock::Thinking { thinking: "only thinking".into(), signature: "s".into() }],
    });
    call(&openai, &next).await.0.expect("response");
    let recorded = double.last_request().expect("sent");
    assert!(
        !recorded.raw_body.contains("thinking") && !recorded.raw_body.contains("REDACTED"),
        "{}",
        recorded.raw_body
    );
    assert_eq!(recorded.messages().len(), 4, "system, user, assistant, tool: no thinking-only turn");
}

#[tokio::test]
async fn openai_cached_tokens_are_a_cache_read_not_billed_twice_and_pause_turn_is_parsed() {
    let double = LlmDouble::start().await.expect("double");
    double.push(Reply::text("ok").with_usage(TokenUsage {
        input_tokens: 200,
        output_tokens: 7,
        cache_read_input_tokens: 1024,
        ..Default::default()
    }));
    let response = call(&provider(&double, ProviderKind::OpenAi), &request()).await.0.expect("response");
    // The double reports prompt_tokens 1224 with cached_tokens 1024.
    assert_eq!((response.usage.input_tokens, response.usage.cache_read_input_tokens), (200, 1024));
    double.push(Reply::text("partial").stop(neuraphage_llm_double::StopReason::PauseTurn));
    let response = call(&provider(&double, ProviderKind::Anthropic), &request()).await.0.expect("response");
    assert_eq!(response.stop_reason, StopReason::PauseTurn);
}

#[tokio::test]
async fn a_prompt_over_the_doubles_context_window_is_prompt_too_long_on_both_providers() {
    for kind in KINDS {
        let double = LlmDouble::start().await.expect("double");
        let provider = provider(&double, kind);
        double.set_context_window(Some(20));
        let failure = fail(&provider).await;
        assert_eq!((failure.kind, failure.status, failure.retryable), (LlmErrorKind::PromptTooLong, Some(400), false));
        let named =
            if kind == ProviderKind::Anthropic { "prompt is too long: " } else { "maximum context length is 20" };
        assert!(failure.message.contains(named), "{kind}: {}", failure.message);
        // The control: under a large enough window the same request is answered.
        double.set_context_window(Some(100_000));
        double.push(Reply::text("fits"));
        let mut on_delta = |_d: StreamDelta| {};
        assert!(provider.complete(&request(), &mut on_delta).await.is_ok(), "{kind}");
    }
}
