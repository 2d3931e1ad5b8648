//! What a task waiting on the user costs (issue 12, "Waiting costs nothing and blocks no one"): 20 tasks ask a
//! question (`AskUser`) and wait; once they all wait, no worker process is left, and the supervisor's resident
//! memory grew by the figure printed per waiting task (against a home where one task already waited, so the
//! store's and the runtime's first-use allocations are not counted). Run with `bench/run.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome, children_named};
use serde_json::json;

const TASKS: usize = 20;

fn main() {
    let model = Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("AskUser", json!({"question": "Which colour?", "options": ["red", "blue"]}))),
        _ => Step::Reply(Reply::text("thanks").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    home.write_config(&format!("max-concurrent: {TASKS}\n"));
    let supervisor = home.start_with_model(&model);
    let workers = || children_named(supervisor, "bwrap").len() + children_named(supervisor, "neuraphage-work").len();
    let wait_all = |count: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let waiting = home.json(&["waiting", "--json"]).as_array().map(Vec::len).unwrap_or(0);
            if waiting == count && workers() == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{waiting} of {count} tasks wait, {} workers left", workers());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    home.ok(&["task", "new", "warm-up question"]);
    wait_all(1);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(supervisor).unwrap_or(0);
    let started = Instant::now();
    for i in 0..TASKS {
        home.ok(&["task", "new", &format!("question {i}")]);
    }
    wait_all(TASKS + 1);
    let parked_in = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(supervisor).unwrap_or(0);
    let per_task = after.saturating_sub(before) as f64 / TASKS as f64;
    println!(
        "{TASKS} tasks asked and wait (all parked in {parked_in:?}): worker processes left {}, supervisor RSS \
         {before} KiB → {after} KiB, {per_task:.1} KiB per waiting task",
        workers()
    );
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}
