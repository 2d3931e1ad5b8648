//! Prompt caching across real processes (issue 13): the broker puts Anthropic `cache_control` breakpoints where the
//! API allows — the last tool, the system prompt, the latest messages, never more than four — and the LLM double
//! bills each request by the documented caching rules (a cached prefix is a cache read, a new one a cache write).
//! A 40-turn task is billed at least 5× fewer uncached input tokens with caching on than with `prompt-caching:
//! false`, and the cache tokens are priced. "Uncached input tokens" here are `input_tokens` +
//! `cache_creation_input_tokens` (what is billed at or above the full input price); cache reads are not counted.

use std::time::{Duration, Instant};

use neuraphage_llm_double::{DoubleConfig, LlmDouble, RecordedRequest, Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(180);
/// Tool turns before the summary.
const TOOL_TURNS: usize = 39;

fn keys_yaml(double: &LlmDouble) -> String {
    format!(
        "pools:\n  main:\n    provider: anthropic\n    base-url: {}\n    keys:\n      - api-key: sk-caching-test\n",
        double.anthropic_base_url()
    )
}

/// 39 tool turns (Read and Bash in turn, each with a result of a few hundred tokens), then a summary.
fn forty_turns() -> Model {
    Model::start_with(DoubleConfig {
        policy: Some(policy(|r| {
            let n = r.tool_result_count();
            if n >= TOOL_TURNS {
                return Step::Reply(Reply::text("Summary: read and listed, 39 times.").stop(StopReason::EndTurn));
            }
            let reply = if n % 2 == 0 {
                Reply::tool("Read", json!({"file_path": "notes.txt"}))
            } else {
                Reply::tool("Bash", json!({"command": format!("seq {} {}", n * 1000, n * 1000 + 150)}))
            };
            Step::Reply(reply.with_text(format!("Turn {n}: looking further.")))
        })),
        ..DoubleConfig::default()
    })
}

/// `task show --json` once its cost has `responses` responses.
fn cost_after(home: &TestHome, id: &str, responses: u64) -> Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        let shown = home.show(id);
        if shown["cost"]["responses"] == responses {
            return shown["cost"].clone();
        }
        assert!(Instant::now() < deadline, "usage never recorded: {shown:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn n(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} in {v:#}"))
}

/// The `cache_control` marks of a recorded Messages request, as `tools[i]`, `system[i]`, `messages[i].content[j]`.
fn marks(r: &RecordedRequest) -> Vec<String> {
    let body = &r.body;
    let mut found = Vec::new();
    for (i, t) in body["tools"].as_array().into_iter().flatten().enumerate() {
        if t.get("cache_control").is_some() {
            found.push(format!("tools[{i}]"));
        }
    }
    for (i, b) in body["system"].as_array().into_iter().flatten().enumerate() {
        if b.get("cache_control").is_some() {
            found.push(format!("system[{i}]"));
        }
    }
    for (i, m) in body["messages"].as_array().into_iter().flatten().enumerate() {
        for (j, b) in m["content"].as_array().into_iter().flatten().enumerate() {
            if b.get("cache_control").is_some() {
                assert!(b["type"] != "thinking" && b["type"] != "redacted_thinking", "a mark on thinking: {b}");
                assert!(b["type"] != "text" || b["text"] != "", "a mark on an empty text: {b}");
                found.push(format!("messages[{i}].content[{j}]"));
            }
        }
    }
    found
}

/// Where the marks must be: the last tool, the system prompt, the last block of the last message and of the last
/// user message before it.
fn expected_marks(r: &RecordedRequest) -> Vec<String> {
    let tools = r.body["tools"].as_array().map_or(0, Vec::len);
    let messages = r.messages();
    let last_block =
        |i: usize| format!("messages[{i}].content[{}]", messages[i]["content"].as_array().unwrap().len() - 1);
    let mut want = vec![format!("tools[{}]", tools - 1), "system[0]".to_owned()];
    let last = messages.len() - 1;
    if let Some(user) = messages[..last].iter().rposition(|m| m["role"] == "user") {
        want.push(last_block(user));
    }
    want.push(last_block(last));
    want
}

#[test]
fn forty_turns_cost_five_times_fewer_uncached_tokens_with_caching_and_breakpoints_sit_where_the_api_allows() {
    let model = forty_turns();
    let mut home = TestHome::new();
    home.write_keys(&keys_yaml(&model.double));
    // The Watcher off: the task repeats one Read by design (a pass inside a slow run would judge it).
    home.write_config(
        "watcher:\n  enabled: false\nmodel-tiers:\n  worker: { provider: anthropic, model: claude-sonnet-4-5, pool: main }\n  expert: { provider: anthropic, model: claude-sonnet-4-5, pool: main, prompt-caching: false }\n",
    );
    home.start_supervisor();
    let repo = home.git_repo("app");
    std::fs::write(repo.join("notes.txt"), "a line of notes that the task reads again and again\n".repeat(40)).unwrap();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git").args(args).current_dir(&repo).output().unwrap().status.success();
        assert!(ok, "git {args:?}");
    };
    git(&["add", "notes.txt"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "notes"]);
    let repo = repo.to_str().unwrap();
    let new = |what: &str, tier: &str| {
        home.json(&["task", "new", what, "--repo", repo, "--tier", tier, "--json"])["id"].as_str().unwrap().to_owned()
    };
    // One after the other, so each task's requests are its own in the double's record.
    let cached = new("forty turns, cached", "worker");
    assert_eq!(home.wait_ended(&[&cached], WITHIN)[0]["status"], "Completed");
    let cached_requests = model.double.requests();
    let uncached = new("forty turns, uncached", "expert");
    assert_eq!(home.wait_ended(&[&uncached], WITHIN)[0]["status"], "Completed");
    let uncached_requests: Vec<RecordedRequest> = model.double.requests()[cached_requests.len()..].to_vec();
    let turns = (TOOL_TURNS + 1) as u64;
    assert_eq!((cached_requests.len() as u64, uncached_requests.len() as u64), (turns, turns));

    // Breakpoints: exactly where the docs put them, at most four; none when caching is off.
    for r in &cached_requests {
        let marks = marks(r);
        assert!(marks.len() <= 4, "{marks:?}");
        assert_eq!(marks, expected_marks(r));
    }
    for r in &uncached_requests {
        assert!(marks(r).is_empty(), "caching off, yet {:?}", marks(r));
        assert!(r.body["system"].is_string(), "system as a plain string when caching is off");
    }
    // The system prompt is the same on every turn of a task (else nothing after it could be read from the cache),
    // whether sent as a string or as marked blocks.
    for requests in [&cached_requests, &uncached_requests] {
        assert!(!requests[0].system_text().is_empty());
        assert!(requests.iter().all(|r| r.system_text() == requests[0].system_text()));
    }

    let on = cost_after(&home, &cached, turns);
    let off = cost_after(&home, &uncached, turns);
    let uncached_tokens = |c: &Value| n(c, "input_tokens") + n(c, "cache_write_tokens");
    assert!(n(&on, "cache_read_tokens") > 0 && n(&on, "cache_write_tokens") > 0, "{on:#}");
    assert_eq!((n(&off, "cache_read_tokens"), n(&off, "cache_write_tokens")), (0, 0), "{off:#}");
    assert!(
        uncached_tokens(&on) * 5 <= uncached_tokens(&off),
        "caching on: {} uncached input tokens; off: {} (want ≥ 5× fewer)\non {on:#}\noff {off:#}",
        uncached_tokens(&on),
        uncached_tokens(&off)
    );
    // Every prompt token is billed once, one way or another: the same task's prompts, billed two ways.
    let prompt = |c: &Value| n(c, "input_tokens") + n(c, "cache_write_tokens") + n(c, "cache_read_tokens");
    assert!(prompt(&on).abs_diff(prompt(&off)) * 20 < prompt(&off), "on {on:#}\noff {off:#}");
    // Priced by the table: Sonnet 4.5 is $3 in, $15 out, $0.30 cache read, $3.75 cache write per million.
    for c in [&on, &off] {
        let nano = n(c, "input_tokens") * 3000
            + n(c, "output_tokens") * 15000
            + n(c, "cache_read_tokens") * 300
            + n(c, "cache_write_tokens") * 3750;
        assert_eq!(n(c, "cost_nano_usd"), nano, "{c:#}");
    }
    assert!(n(&on, "cost_nano_usd") * 2 < n(&off, "cost_nano_usd"), "on {on:#}\noff {off:#}");
    let total = home.json(&["cost", "--json"])["total"].clone();
    assert_eq!(n(&total, "cache_read_tokens"), n(&on, "cache_read_tokens"));
}
