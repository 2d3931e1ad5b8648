//! A long task against a small window (issue 13, "a long task dies when its context overflows"): a scripted
//! 200-turn task (each turn reads a 6 KiB file, so its tool results total about seven times the window) against a
//! model with a 50 000-token context window, enforced by the LLM double. Printed: whether it completed, the number of
//! compactions (and of router-tier summary calls), the largest request in tokens (the double's count, which must stay
//! under the window), the input tokens sent in all, and the wall time. Run with `bench/run.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use neuraphage_llm_double::tokens::count_anthropic;
use neuraphage_llm_double::{DoubleConfig, Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use serde_json::json;

const TURNS: usize = 200;
const WINDOW: u64 = 50_000;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let turns = if quick { 40 } else { TURNS };
    let answered = Arc::new(AtomicUsize::new(0));
    let model = Model::start_with(DoubleConfig {
        policy: Some(policy(move |r| {
            if r.model() == Some("m-router") {
                return Step::Reply(Reply::text(
                    "1. Done: read notes.txt many times.\n2. Learnt: it does not change.\n3. Files: notes.txt.\n\
                     4. Remains: the rest of the reads.",
                ));
            }
            let n = answered.fetch_add(1, Ordering::SeqCst);
            if n < turns {
                Step::Reply(Reply::text(format!("Turn {n}.")).with_tool("Read", json!({"file_path": "notes.txt"})))
            } else {
                Step::Reply(Reply::text("All read.").stop(StopReason::EndTurn))
            }
        })),
        context_window: Some(WINDOW),
        ..DoubleConfig::default()
    });
    let mut home = TestHome::new();
    // The task reads the same file with the same result every turn by design: the Watcher would rightly pause it
    // (same action and result), so it is off here; this measures compaction alone.
    home.write_config(&format!(
        "max-iterations: 1000\nwatcher:\n  enabled: false\nmodel-tiers:\n  router: {{ provider: anthropic, model: m-router, pool: anthropic }}\n  \
         worker: {{ provider: anthropic, model: m-worker, pool: anthropic, context-tokens: {WINDOW} }}\n"
    ));
    let repo = home.git_repo("app");
    let line = "a line of notes that the task reads again and again, 64 bytes.\n";
    std::fs::write(repo.join("notes.txt"), line.repeat(6 * 1024 / line.len())).unwrap();
    commit(&repo, "notes.txt");
    home.start_with_model(&model);
    let started = Instant::now();
    let task = home.json(&["task", "new", "read notes.txt over and over", "--repo", repo.to_str().unwrap(), "--json"]);
    let id = task["id"].as_str().unwrap().to_owned();
    let shown = home.wait_ended(&[&id], Duration::from_secs(1800)).remove(0);
    let wall = started.elapsed();
    let requests = model.double.requests();
    let summaries = requests.iter().filter(|r| r.model() == Some("m-router")).count();
    let sizes: Vec<u64> = requests.iter().map(|r| count_anthropic(&r.body)).collect();
    let largest = sizes.iter().max().copied().unwrap_or(0);
    let total: u64 = sizes.iter().sum();
    let compactions: i64 = home
        .open_store()
        .query_row("SELECT count(*) FROM checkpoints WHERE task = ?1 AND kind = 'compacted'", [&id], |r| r.get(0))
        .unwrap();
    println!(
        "{turns}-turn task against a {WINDOW}-token window: {} in {wall:.1?}; {compactions} compactions \
         ({summaries} router summaries); {} requests, the largest {largest} tokens ({:.0} % of the window), \
         {total} input tokens sent in all",
        shown["status"].as_str().unwrap_or("?"),
        requests.len(),
        largest as f64 * 100.0 / WINDOW as f64,
    );
}

fn commit(repo: &Path, file: &str) {
    let repo = git2::Repository::open(repo).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new(file)).unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
    let parent = repo.head().unwrap().peel_to_commit().unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "notes", &tree, &[&parent]).unwrap();
}
