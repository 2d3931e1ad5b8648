//! Cost metering across real processes: the double reports usage, the broker relays it, the supervisor prices and
//! stores it; `task show --json` and `neuraphage cost --json` report exactly that.

use std::time::{Duration, Instant};

use neuraphage_llm_double::{Reply, Step, StopReason, TokenUsage, policy};
use neuraphage_tests::{Model, TestHome};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(90);

fn usage(input: u64, output: u64, cache_write: u64, cache_read: u64) -> TokenUsage {
    TokenUsage {
        input_tokens: input,
        output_tokens: output,
        cache_creation_input_tokens: cache_write,
        cache_read_input_tokens: cache_read,
    }
}

/// `task show --json` once the supervisor has recorded `responses` responses for the task.
fn show_with_responses(home: &TestHome, id: &str, responses: u64) -> Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        let shown = home.show(id);
        if shown["cost"]["responses"] == responses {
            return shown;
        }
        assert!(Instant::now() < deadline, "usage never recorded: {shown:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn task_show_and_cost_report_the_doubles_usage_priced_by_the_table() {
    // "priced" tasks talk to claude-sonnet-4-5 (the broker's default, echoed by the double); the "mystery" task's
    // answers name a model no price table knows. Two responses each.
    let model = Model::start(policy(|r| {
        let mystery = r.first_user_text().unwrap_or_default().contains("mystery");
        let reply = match r.tool_result_count() {
            0 => Reply::tool("Bash", json!({"command": "true"})).with_usage(usage(1000, 200, 300, 400)),
            _ => Reply::text("done").stop(StopReason::EndTurn).with_usage(usage(1500, 20, 0, 2000)),
        };
        Step::Reply(if mystery { reply.model("mystery-model-1") } else { reply })
    }));
    let mut home = TestHome::new();
    // An override replaces a default: the table in force is what prices.
    home.write_config("prices:\n  claude-sonnet-4-5: {input: 3, output: 15, cache-read: 0.3, cache-write: 3.75}\n");
    home.start_with_model(&model);
    let priced = home.json(&["task", "new", "priced work", "--json"])["id"].as_str().unwrap().to_owned();
    let mystery = home.json(&["task", "new", "mystery work", "--json"])["id"].as_str().unwrap().to_owned();
    for t in home.wait_ended(&[&priced, &mystery], WITHIN) {
        assert_eq!(t["status"], "Completed", "{t:#}");
    }
    // Sonnet: $3 in, $15 out, $0.30 cache read, $3.75 cache write per million = 3000, 15000, 300, 3750 n$/token.
    let nano = (1000 + 1500) * 3000 + (200 + 20) * 15000 + (400 + 2000) * 300 + 300 * 3750;
    let cost = show_with_responses(&home, &priced, 2)["cost"].clone();
    assert_eq!(
        cost,
        json!({
            "responses": 2, "input_tokens": 2500, "output_tokens": 220, "cache_write_tokens": 300,
            "cache_read_tokens": 2400, "cost_nano_usd": nano, "unpriced_responses": 0, "unpriced_models": [],
            "cost_usd": nano as f64 / 1e9,
        })
    );
    let cost = show_with_responses(&home, &mystery, 2)["cost"].clone();
    assert_eq!((cost["cost_nano_usd"].as_u64(), cost["unpriced_responses"].as_u64()), (Some(0), Some(2)));
    assert_eq!(cost["unpriced_models"], json!(["mystery-model-1"]));
    let text = home.ok(&["task", "show", &mystery]);
    assert!(text.contains("2 unpriced responses") && text.contains("mystery-model-1"), "{text}");

    let by_task = home.json(&["cost", "--json"]);
    assert_eq!(by_task["by"], "task");
    let keys: Vec<&str> = by_task["lines"].as_array().unwrap().iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(keys, [priced.as_str(), mystery.as_str()], "largest cost first");
    assert_eq!(by_task["total"]["cost_nano_usd"], nano);
    assert_eq!(by_task["total"]["responses"], 4);
    let by_model = home.json(&["cost", "--by", "model", "--json"]);
    let lines = by_model["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0]["key"].as_str(), lines[0]["cost_nano_usd"].as_u64()), (Some("claude-sonnet-4-5"), Some(nano)));
    assert_eq!((lines[1]["key"].as_str(), lines[1]["unpriced_responses"].as_u64()), (Some("mystery-model-1"), Some(2)));
    let by_day = home.json(&["cost", "--by", "day", "--json"]);
    assert_eq!(by_day["lines"].as_array().unwrap().len(), 1);
    assert_eq!(by_day["lines"][0]["cost_nano_usd"], nano);
    let text = home.ok(&["cost", "--by", "model"]);
    assert!(text.contains("unpriced models") && text.contains("mystery-model-1"), "{text}");
    let (_, err) = home.fails(&["cost", "--by", "week"]);
    assert!(err.contains("week"), "{err}");
}
