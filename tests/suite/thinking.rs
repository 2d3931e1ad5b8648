//! Model turns to the letter (issue 13), across real processes: extended thinking per tier — `thinking` blocks
//! (with their signatures) and `redacted_thinking` blocks go back to the model unchanged across tool turns and
//! across a `kill -9` of the worker (the LLM double refuses, as the API does, a tool turn whose thinking is missing
//! or changed); `pause_turn` sends the turn back as it is and the task completes; `refusal` fails the task with the
//! model's reason.

use std::time::{Duration, Instant};

use neuraphage_llm_double::{DoubleConfig, LlmDouble, RecordedRequest, Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome, alive};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(90);

fn keys_yaml(double: &LlmDouble) -> String {
    format!(
        "pools:\n  main:\n    provider: anthropic\n    base-url: {}\n    keys:\n      - api-key: sk-thinking-test\n",
        double.anthropic_base_url()
    )
}

const THINKING_TIER: &str = "model-tiers:\n  worker: { provider: anthropic, model: claude-sonnet-4-5, pool: main, thinking: { budget-tokens: 2048 } }\n";

/// Thinks (a scripted signature the first turn, one the double issues the second), calls a tool, twice; then ends.
fn thinking_model() -> Model {
    Model::start_with(DoubleConfig {
        policy: Some(policy(|r| match r.tool_result_count() {
            0 => Step::Reply(
                Reply::new()
                    .with_thinking("First I list the folder.", Some("sig-first/+==".into()))
                    .with_redacted_thinking("REDACTED-BLOB-1")
                    .with_tool("Bash", json!({"command": "echo one"})),
            ),
            1 => Step::Reply(
                Reply::new().with_thinking("Now count again.", None).with_tool("Bash", json!({"command": "echo two"})),
            ),
            _ => Step::Reply(Reply::text("both done").stop(StopReason::EndTurn)),
        })),
        ..DoubleConfig::default()
    })
}

/// The assistant turns of a request, as sent.
fn assistant_turns(r: &RecordedRequest) -> Vec<Value> {
    r.messages().iter().filter(|m| m["role"] == "assistant").map(|m| m["content"].clone()).collect()
}

fn check_thinking_requests(requests: &[RecordedRequest]) {
    for r in requests {
        assert_eq!(r.body["thinking"], json!({"type": "enabled", "budget_tokens": 2048}), "{}", r.raw_body);
        assert!(r.body["max_tokens"].as_u64().unwrap() > 2048);
    }
    let last = requests.last().unwrap();
    let turns = assistant_turns(last);
    assert_eq!(turns.len(), 2, "{}", last.raw_body);
    assert_eq!(
        turns[0][0],
        json!({"type": "thinking", "thinking": "First I list the folder.", "signature": "sig-first/+=="})
    );
    assert_eq!(turns[0][1], json!({"type": "redacted_thinking", "data": "REDACTED-BLOB-1"}));
    assert_eq!(turns[0][2]["type"], "tool_use");
    assert_eq!(turns[1][0]["type"], "thinking");
    assert_eq!(turns[1][0]["thinking"], "Now count again.");
    // The signature the double issued in its stream, byte for byte.
    assert!(turns[1][0]["signature"].as_str().unwrap().starts_with("EqDouble"), "{}", turns[1][0]);
}

#[test]
fn thinking_blocks_go_back_unchanged_across_tool_turns() {
    let model = thinking_model();
    let mut home = TestHome::new();
    home.write_keys(&keys_yaml(&model.double));
    home.write_config(THINKING_TIER);
    home.start_supervisor();
    let id = home.json(&["task", "new", "think and run", "--json"])["id"].as_str().unwrap().to_owned();
    let done = &home.wait_ended(&[&id], WITHIN)[0];
    assert_eq!(done["status"], "Completed", "{done:#}");
    let requests = model.double.requests();
    assert_eq!(requests.len(), 3);
    check_thinking_requests(&requests);
    // The stored conversation keeps them too.
    let log = home.json(&["task", "log", &id, "--json"]);
    assert!(log.to_string().contains("sig-first/+=="), "{log:#}");
}

#[test]
fn thinking_blocks_survive_a_kill_9_of_the_worker_after_the_response() {
    let model = thinking_model();
    let mut home = TestHome::new();
    home.write_keys(&keys_yaml(&model.double));
    home.write_config(THINKING_TIER);
    let mut env = model.env();
    env.push(("NEURAPHAGE_TEST_PAUSE_AFTER".to_owned(), "response_received".to_owned()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    home.start_supervisor_with(&pairs);
    let id = home.json(&["task", "new", "think and run", "--json"])["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + WITHIN;
    let worker = loop {
        let shown = home.show(&id);
        let events = shown["events"].as_array().unwrap();
        if events
            .iter()
            .any(|e| e["kind"] == "checkpoint" && e["data"]["point"].as_str().unwrap().starts_with("response_received"))
        {
            let started = events.iter().rev().find(|e| e["kind"] == "worker_started").unwrap();
            break started["data"]["pid"].as_u64().unwrap() as i32;
        }
        assert!(Instant::now() < deadline, "response_received never reached: {shown:#}");
        std::thread::sleep(Duration::from_millis(20));
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), nix::sys::signal::Signal::SIGKILL).unwrap();
    let done = &home.wait_ended(&[&id], WITHIN)[0];
    assert_eq!(done["status"], "Completed", "{done:#}");
    assert!(!alive(worker as u32));
    let started = done["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "worker_started").count();
    assert!(started >= 2, "a second worker went on: {done:#}");
    let requests = model.double.requests();
    assert_eq!(requests.len(), 3, "the response kept at response_received is not asked for again");
    check_thinking_requests(&requests);
}

#[test]
fn pause_turn_goes_back_as_it_is_and_the_task_completes() {
    let model = Model::start(policy(|r| {
        let last = r.messages().last().cloned().unwrap_or_default();
        if last["role"] == "assistant" {
            Step::Reply(Reply::text("finished after the pause").stop(StopReason::EndTurn))
        } else {
            Step::Reply(Reply::text("working on it").stop(StopReason::PauseTurn))
        }
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let id = home.json(&["task", "new", "a long turn", "--json"])["id"].as_str().unwrap().to_owned();
    let done = &home.wait_ended(&[&id], WITHIN)[0];
    assert_eq!(done["status"], "Completed", "{done:#}");
    let requests = model.double.requests();
    assert_eq!(requests.len(), 2);
    // The paused turn is sent back as the last message, unchanged, with no user message after it.
    let messages = requests[1].messages();
    assert_eq!(messages.len(), 2, "{}", requests[1].raw_body);
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"][0]["text"], "working on it");
    assert!(done.to_string().contains("finished after the pause"), "{done:#}");
}

#[test]
fn a_refusal_fails_the_task_with_the_reason() {
    let model =
        Model::start(policy(|_| Step::Reply(Reply::text("I can't help with that request.").stop(StopReason::Refusal))));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let id = home.json(&["task", "new", "something refused", "--json"])["id"].as_str().unwrap().to_owned();
    let done = &home.wait_ended(&[&id], WITHIN)[0];
    assert_eq!(done["status"], "Failed", "{done:#}");
    let error = done["status_detail"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("refused") && error.contains("I can't help with that request."), "{done:#}");
    assert_eq!(model.double.requests().len(), 1);
}
