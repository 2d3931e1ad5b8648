//! What prompt caching saves (issue 13): one scripted 40-turn task (39 Read / Bash turns, then a summary) run three
//! times against the LLM double, which bills every request by the providers' documented caching rules — Anthropic
//! with the broker's `cache_control` breakpoints (tier `worker`), Anthropic with `prompt-caching: false` (tier
//! `expert`), and OpenAI-compatible automatic prefix caching (tier `router`). For each: uncached input tokens
//! (`input_tokens` + cache writes), cache reads and writes, output, and the cost priced by the default table
//! (claude-sonnet-4-5; gpt-4.1), as `neuraphage task show --json` reports them. Run with `bench/run.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use serde_json::{Value, json};

const TOOL_TURNS: usize = 39;

fn main() {
    let model = Model::start(policy(|r| {
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
    }));
    let mut home = TestHome::new();
    home.write_keys(&format!(
        "pools:\n  main:\n    provider: anthropic\n    base-url: {}\n    keys:\n      - api-key: sk-bench-caching\n  oai:\n    provider: openai\n    base-url: {}\n    keys:\n      - api-key: sk-bench-caching-oai\n",
        model.double.anthropic_base_url(),
        model.double.openai_base_url()
    ));
    // The Watcher off: the task repeats one Read by design; this measures caching alone.
    home.write_config(
        "watcher:\n  enabled: false\nmodel-tiers:\n  worker: { provider: anthropic, model: claude-sonnet-4-5, pool: main }\n  expert: { provider: anthropic, model: claude-sonnet-4-5, pool: main, prompt-caching: false }\n  router: { provider: openai, model: gpt-4.1, pool: oai }\n",
    );
    home.start_supervisor();
    let repo = home.git_repo("app");
    std::fs::write(repo.join("notes.txt"), "a line of notes that the task reads again and again\n".repeat(40)).unwrap();
    for args in [
        &["add", "notes.txt"][..],
        &["-c", "user.name=b", "-c", "user.email=b@example.invalid", "commit", "-qm", "notes"],
    ] {
        assert!(std::process::Command::new("git").args(args).current_dir(&repo).status().unwrap().success());
    }
    let repo = repo.to_str().unwrap();
    println!("one 40-turn task (39 tool turns + a summary), billed by the double's caching model:");
    println!(
        "{:<34} {:>9} {:>10} {:>10} {:>10} {:>8} {:>11} {:>8}",
        "run", "input", "cache wr", "cache rd", "uncached", "output", "cost USD", "wall"
    );
    let mut uncached = Vec::new();
    for (label, tier) in [
        ("anthropic, caching on", "worker"),
        ("anthropic, prompt-caching: false", "expert"),
        ("openai, automatic", "router"),
    ] {
        let started = Instant::now();
        let id = home.json(&[
            "task",
            "new",
            &format!("forty turns ({label})"),
            "--repo",
            repo,
            "--tier",
            tier,
            "--json",
        ])["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let done = &home.wait_ended(&[&id], Duration::from_secs(600))[0];
        assert_eq!(done["status"], "Completed", "{done:#}");
        let wall = started.elapsed();
        let cost = cost_after(&home, &id, (TOOL_TURNS + 1) as u64);
        let n = |f: &str| cost[f].as_u64().unwrap_or(0);
        let plain = n("input_tokens") + n("cache_write_tokens");
        uncached.push(plain);
        println!(
            "{label:<34} {:>9} {:>10} {:>10} {plain:>10} {:>8} {:>11.6} {:>7.1}s",
            n("input_tokens"),
            n("cache_write_tokens"),
            n("cache_read_tokens"),
            n("output_tokens"),
            n("cost_nano_usd") as f64 / 1e9,
            wall.as_secs_f64()
        );
    }
    println!(
        "uncached input tokens, caching off / on (Anthropic): {:.1}×",
        uncached[1] as f64 / uncached[0].max(1) as f64
    );
}

fn cost_after(home: &TestHome, id: &str, responses: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = home.show(id);
        if shown["cost"]["responses"] == responses || Instant::now() > deadline {
            return shown["cost"].clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
