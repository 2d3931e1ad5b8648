//! The TEST DOUBLE's wire shapes, checked over real HTTP with reqwest: event order, field names, headers, errors,
//! damaged streams, the script / policy / recording, the rate limit and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use neuraphage_llm_double::{
    DemoPolicy, DoubleConfig, Endpoint, HttpError, LlmDouble, Reply, Step, StopReason, TokenUsage, policy,
};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn anthropic_body(stream: bool) -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 1024,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}],
        "stream": stream,
    })
}

fn openai_body(stream: bool, include_usage: bool) -> Value {
    let mut body = json!({
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Say hi"}],
        "stream": stream,
    });
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

async fn post_anthropic(double: &LlmDouble, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/messages", double.anthropic_base_url()))
        .header("x-api-key", "test-key")
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn post_openai(double: &LlmDouble, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", double.openai_base_url()))
        .bearer_auth("sk-test")
        .json(body)
        .send()
        .await
        .expect("request")
}

/// SSE frames as (event name, data), split the simple way (the double writes one `data:` line per event).
fn sse(text: &str) -> Vec<(Option<String>, String)> {
    text.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let mut event = None;
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (event, data)
        })
        .collect()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[tokio::test]
async fn anthropic_stream_has_the_documented_events_in_order() {
    let double = LlmDouble::start().await.expect("start");
    double.push(
        Reply::text("Hello from the double")
            .with_tool_id("toolu_1", "Read", json!({"file_path": "src/main.rs", "limit": 20}))
            .with_usage(TokenUsage {
                input_tokens: 42,
                output_tokens: 17,
                cache_read_input_tokens: 3,
                ..Default::default()
            })
            .chunk_chars(8),
    );
    let response = post_anthropic(&double, &anthropic_body(true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type").as_deref(), Some("text/event-stream; charset=utf-8"));
    assert!(header(&response, "request-id").is_some_and(|id| id.starts_with("req_")));
    for name in [
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ] {
        assert!(header(&response, name).is_some(), "{name} missing");
    }
    let events = sse(&response.text().await.expect("body"));
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap_or("")).collect();
    assert_eq!(
        names,
        vec![
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let data: Vec<Value> = events.iter().map(|(_, d)| serde_json::from_str(d).expect("json data")).collect();
    for ((name, _), value) in events.iter().zip(&data) {
        assert_eq!(value["type"].as_str(), name.as_deref(), "the data's type names the event");
    }
    let start = &data[0]["message"];
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["model"], "claude-test");
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["input_tokens"], 42);
    assert_eq!(start["usage"]["cache_read_input_tokens"], 3);
    assert_eq!(data[1]["content_block"], json!({"type": "text", "text": ""}));
    let text: String = data
        .iter()
        .filter(|d| d["delta"]["type"] == "text_delta")
        .map(|d| d["delta"]["text"].as_str().expect("text").to_string())
        .collect();
    assert_eq!(text, "Hello from the double");
    assert_eq!(data[7]["index"], 1);
    assert_eq!(data[7]["content_block"], json!({"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}));
    assert_eq!(data[8]["delta"], json!({"type": "input_json_delta", "partial_json": ""}));
    let json_text: String = data
        .iter()
        .filter(|d| d["delta"]["type"] == "input_json_delta")
        .map(|d| d["delta"]["partial_json"].as_str().expect("partial").to_string())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&json_text).expect("tool json"),
        json!({"file_path": "src/main.rs", "limit": 20})
    );
    assert_eq!(data[15]["delta"], json!({"stop_reason": "tool_use", "stop_sequence": null}));
    assert_eq!(data[15]["usage"], json!({"output_tokens": 17}));
    assert_eq!(data[16], json!({"type": "message_stop"}));
}

#[tokio::test]
async fn anthropic_without_stream_answers_one_message() {
    let double = LlmDouble::start().await.expect("start");
    double.push(Reply::text("Hi").with_tool_id("toolu_9", "Bash", json!({"command": "ls"})).usage(5, 7));
    let response = post_anthropic(&double, &anthropic_body(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type").as_deref(), Some("application/json"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({
            "id": body["id"],
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": [
                {"type": "text", "text": "Hi"},
                {"type": "tool_use", "id": "toolu_9", "name": "Bash", "input": {"command": "ls"}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": null,
            "usage": {"input_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 7},
        })
    );
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
}

#[tokio::test]
async fn anthropic_refuses_missing_headers_without_consuming_the_script() {
    let double = LlmDouble::start().await.expect("start");
    double.push(Step::text("scripted"));
    let no_key = client()
        .post(format!("{}/v1/messages", double.base_url()))
        .header("anthropic-version", "2023-06-01")
        .json(&anthropic_body(false))
        .send()
        .await
        .expect("request");
    assert_eq!(no_key.status(), 401);
    let body: Value = no_key.json().await.expect("json");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    let no_version = client()
        .post(format!("{}/v1/messages", double.base_url()))
        .header("x-api-key", "k")
        .json(&anthropic_body(false))
        .send()
        .await
        .expect("request");
    assert_eq!(no_version.status(), 400);
    let body: Value = no_version.json().await.expect("json");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["message"], "anthropic-version: header is required");

    let mut no_max_tokens = anthropic_body(false);
    no_max_tokens.as_object_mut().expect("object").remove("max_tokens");
    let response = post_anthropic(&double, &no_max_tokens).await;
    assert_eq!(response.status(), 400);

    assert_eq!(double.script().len(), 1, "refused requests take no step");
    assert_eq!(double.request_count(Endpoint::AnthropicMessages), 3);
}

#[tokio::test]
async fn the_expected_key_is_enforced_on_both_endpoints() {
    let config = DoubleConfig { api_key: Some("right".into()), ..DoubleConfig::default() };
    let double = LlmDouble::start_with(config).await.expect("start");
    let wrong = post_anthropic(&double, &anthropic_body(false)).await;
    assert_eq!(wrong.status(), 401);
    let wrong = post_openai(&double, &openai_body(false, false)).await;
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let right = client()
        .post(format!("{}/chat/completions", double.openai_base_url()))
        .bearer_auth("right")
        .json(&openai_body(false, false))
        .send()
        .await
        .expect("request");
    assert_eq!(right.status(), 200);
}

#[tokio::test]
async fn anthropic_http_errors_have_the_documented_bodies() {
    let double = LlmDouble::start().await.expect("start");
    let cases = [
        (429, "rate_limit_error"),
        (529, "overloaded_error"),
        (500, "api_error"),
        (400, "invalid_request_error"),
        (401, "authentication_error"),
    ];
    for (status, _) in cases {
        double.push(HttpError::new(status).retry_after("7"));
    }
    for (status, error_type) in cases {
        let response = post_anthropic(&double, &anthropic_body(true)).await;
        assert_eq!(response.status(), status);
        assert_eq!(header(&response, "retry-after").as_deref(), Some("7"));
        assert_eq!(header(&response, "content-type").as_deref(), Some("application/json"));
        assert!(header(&response, "request-id").is_some());
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], error_type);
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(body["request_id"].is_string());
    }
}

#[tokio::test]
async fn anthropic_damaged_streams() {
    let double = LlmDouble::start().await.expect("start");
    let reply = || Reply::text("abcdefghijklmnopqrstuvwxyz").chunk_chars(4);

    // Mid-stream error: the events so far, then `error`, then the end.
    double.push(Step::overloaded_mid_stream(reply(), 3));
    let events = sse(&post_anthropic(&double, &anthropic_body(true)).await.text().await.expect("body"));
    assert_eq!(events.len(), 4);
    assert_eq!(events[3].0.as_deref(), Some("error"));
    let error: Value = serde_json::from_str(&events[3].1).expect("json");
    assert_eq!(error, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));

    // Unknown event: inserted, the rest follows.
    double.push(Step::unknown_event(reply(), 2));
    let events = sse(&post_anthropic(&double, &anthropic_body(true)).await.text().await.expect("body"));
    assert_eq!(events[2].0.as_deref(), Some("llm_double_unknown_event"));
    assert_eq!(events.last().and_then(|e| e.0.as_deref()), Some("message_stop"));

    // Malformed: a data line that is not JSON.
    double.push(Step::malformed(reply(), 4));
    let events = sse(&post_anthropic(&double, &anthropic_body(true)).await.text().await.expect("body"));
    assert!(serde_json::from_str::<Value>(&events[4].1).is_err());

    // End early: the body ends cleanly, without message_stop.
    double.push(Step::end_early(reply(), 5));
    let events = sse(&post_anthropic(&double, &anthropic_body(true)).await.text().await.expect("body"));
    assert_eq!(events.len(), 5);
    assert_eq!(events[4].0.as_deref(), Some("content_block_delta"));

    // Cut: the body ends in an error, without message_stop.
    double.push(Step::cut(reply(), 5));
    let response = post_anthropic(&double, &anthropic_body(true)).await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.is_err(), "a cut stream fails to read to its end");

    // Non-streamed: cut and malformed bodies, and a scripted error event becomes the HTTP error.
    double.push(Step::cut(reply(), 0));
    assert!(post_anthropic(&double, &anthropic_body(false)).await.text().await.is_err());
    double.push(Step::malformed(reply(), 0));
    let text = post_anthropic(&double, &anthropic_body(false)).await.text().await.expect("body");
    assert!(serde_json::from_str::<Value>(&text).is_err());
    double.push(Step::overloaded_mid_stream(reply(), 0));
    assert_eq!(post_anthropic(&double, &anthropic_body(false)).await.status(), 529);
}

#[tokio::test]
async fn openai_stream_has_chunks_usage_and_done() {
    let double = LlmDouble::start().await.expect("start");
    double.push(
        Reply::text("Hi there")
            .with_tool_id("call_1", "Glob", json!({"pattern": "**/*.rs"}))
            .with_tool_id("call_2", "Grep", json!({"pattern": "TODO"}))
            .with_usage(TokenUsage {
                input_tokens: 30,
                output_tokens: 9,
                cache_read_input_tokens: 10,
                ..Default::default()
            })
            .chunk_chars(5),
    );
    let response = post_openai(&double, &openai_body(true, true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type").as_deref(), Some("text/event-stream; charset=utf-8"));
    for name in [
        "x-request-id",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ] {
        assert!(header(&response, name).is_some(), "{name} missing");
    }
    let events = sse(&response.text().await.expect("body"));
    assert!(events.iter().all(|(name, _)| name.is_none()), "OpenAI sends bare data lines");
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|(_, d)| serde_json::from_str(d).expect("chunk json")).collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-test");
        assert!(chunk.get("usage").is_some(), "with include_usage every chunk has a usage field");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hi there");
    let first_call = chunks
        .iter()
        .find(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_1")
        .expect("first tool call chunk");
    assert_eq!(
        first_call["choices"][0]["delta"]["tool_calls"][0],
        json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": "Glob", "arguments": ""}})
    );
    for (index, expected) in [(0, json!({"pattern": "**/*.rs"})), (1, json!({"pattern": "TODO"}))] {
        let args: String = chunks
            .iter()
            .flat_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array().cloned().unwrap_or_default())
            .filter(|call| call["index"] == index)
            .filter_map(|call| call["function"]["arguments"].as_str().map(str::to_string))
            .collect();
        assert_eq!(serde_json::from_str::<Value>(&args).expect("args"), expected);
    }
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 40);
    assert_eq!(usage["usage"]["completion_tokens"], 9);
    assert_eq!(usage["usage"]["total_tokens"], 49);
    assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 10);
}

#[tokio::test]
async fn openai_stream_without_include_usage_has_no_usage_chunk() {
    let double = LlmDouble::start().await.expect("start");
    double.push(Reply::text("ok").stop(StopReason::MaxTokens));
    let events = sse(&post_openai(&double, &openai_body(true, false)).await.text().await.expect("body"));
    let chunks: Vec<Value> =
        events[..events.len() - 1].iter().map(|(_, d)| serde_json::from_str(d).expect("json")).collect();
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(chunks.last().map(|c| c["choices"][0]["finish_reason"].clone()), Some(json!("length")));
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));
}

#[tokio::test]
async fn openai_without_stream_and_errors() {
    let double = LlmDouble::start().await.expect("start");
    double.push(Reply::new().with_tool_id("call_7", "Read", json!({"file_path": "a"})));
    let body: Value = post_openai(&double, &openai_body(false, false)).await.json().await.expect("json");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"],
        json!([{"id": "call_7", "type": "function", "function": {"name": "Read", "arguments": "{\"file_path\":\"a\"}"}}])
    );

    double.push(HttpError::new(429).retry_after("2"));
    let response = post_openai(&double, &openai_body(true, true)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(header(&response, "retry-after").as_deref(), Some("2"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].is_string());

    let no_auth = client()
        .post(format!("{}/chat/completions", double.openai_base_url()))
        .json(&openai_body(true, true))
        .send()
        .await
        .expect("request");
    assert_eq!(no_auth.status(), 401);

    double.push(Step::error_event(Reply::text("partial answer"), 2, "server_error", "boom"));
    let events = sse(&post_openai(&double, &openai_body(true, true)).await.text().await.expect("body"));
    assert_eq!(events.len(), 3);
    let error: Value = serde_json::from_str(&events[2].1).expect("json");
    assert_eq!(error["error"]["message"], "boom");
    assert!(events.iter().all(|(_, d)| d != "[DONE]"));
}

#[tokio::test]
async fn script_is_shared_then_the_policy_decides_and_everything_is_recorded() {
    let double = LlmDouble::start().await.expect("start");
    double.push(Step::text("first"));
    double.push(Step::text("second"));
    double.set_policy(policy(|request| Step::text(format!("policy saw {} messages", request.messages().len()))));

    let a: Value = post_anthropic(&double, &anthropic_body(false)).await.json().await.expect("json");
    assert_eq!(a["content"][0]["text"], "first");
    let b: Value = post_openai(&double, &openai_body(false, false)).await.json().await.expect("json");
    assert_eq!(b["choices"][0]["message"]["content"], "second");
    let c: Value = post_openai(&double, &openai_body(false, false)).await.json().await.expect("json");
    assert_eq!(c["choices"][0]["message"]["content"], "policy saw 2 messages");

    let missing = client().get(format!("{}/v1/models", double.base_url())).send().await.expect("request");
    assert_eq!(missing.status(), 404);

    let requests = double.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].endpoint, Endpoint::AnthropicMessages);
    assert_eq!(requests[0].header("X-Api-Key"), Some("test-key"));
    assert_eq!(requests[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(requests[0].body, anthropic_body(false));
    assert_eq!(requests[1].header("authorization"), Some("Bearer sk-test"));
    assert_eq!(requests[3].method, "GET");
    assert_eq!(requests[3].path, "/v1/models");
    assert_eq!(double.request_count(Endpoint::AnthropicMessages), 1);
    assert_eq!(double.request_count(Endpoint::OpenAiChat), 2);
    assert_eq!(double.request_count(Endpoint::Other), 1);
}

#[tokio::test]
async fn the_per_minute_limit_answers_429_with_retry_after() {
    let config = DoubleConfig { requests_per_minute: Some(2), ..DoubleConfig::default() };
    let double = LlmDouble::start_with(config).await.expect("start");
    let first = post_anthropic(&double, &anthropic_body(false)).await;
    assert_eq!(header(&first, "anthropic-ratelimit-requests-limit").as_deref(), Some("2"));
    assert_eq!(header(&first, "anthropic-ratelimit-requests-remaining").as_deref(), Some("1"));
    // The limit is per key: another key has its own.
    let other = post_openai(&double, &openai_body(false, false)).await;
    assert_eq!(header(&other, "x-ratelimit-remaining-requests").as_deref(), Some("1"));
    let second = post_anthropic(&double, &anthropic_body(false)).await;
    assert_eq!(header(&second, "anthropic-ratelimit-requests-remaining").as_deref(), Some("0"));
    let third = post_anthropic(&double, &anthropic_body(false)).await;
    assert_eq!(third.status(), 429);
    let retry: u64 = header(&third, "retry-after").and_then(|v| v.parse().ok()).expect("retry-after seconds");
    assert!((1..=60).contains(&retry));
    let body: Value = third.json().await.expect("json");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(double.rate_limited_count(), 1);
    double.set_requests_per_minute(None);
    assert_eq!(post_anthropic(&double, &anthropic_body(false)).await.status(), 200);
}

#[tokio::test]
async fn demo_policy_over_http() {
    let config = DoubleConfig { policy: Some(DemoPolicy.policy()), ..DoubleConfig::default() };
    let double = LlmDouble::start_with(config).await.expect("start");
    let body: Value = post_anthropic(&double, &anthropic_body(false)).await.json().await.expect("json");
    assert_eq!(body["content"][0]["type"], "text");
    assert_eq!(body["content"][1]["name"], "Glob");
    assert_eq!(body["content"][1]["input"], json!({"pattern": "**/*"}));
    let body: Value = post_openai(&double, &openai_body(false, false)).await.json().await.expect("json");
    assert_eq!(body["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "Glob");
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let double = LlmDouble::start().await.expect("start");
    let url = format!("{}/v1/messages", double.base_url());
    double.shutdown().await;
    assert!(client().post(&url).send().await.is_err());

    let double = LlmDouble::start().await.expect("start");
    let url = format!("{}/v1/messages", double.base_url());
    drop(double);
    let mut refused = false;
    for _ in 0..100 {
        if client().post(&url).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the port closes once the double is dropped");
}
