//! Recovery time: with N tasks running (each waiting on the model), `kill -9` the supervisor, start it again, and
//! time until every task has a new worker whose model request reached the provider — the supervisor restart
//! (store, broker), re-queueing, worktrees reused, N worker spawns with sandbox, handshakes, resumed conversations.
//! N = 10 and 50. Run with `bench/run.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};

fn main() {
    for tasks in [10usize, 50] {
        measure(tasks);
    }
}

fn measure(tasks: usize) {
    // Requests per task description, with the time of the latest.
    let seen: Arc<Mutex<HashMap<String, (usize, Instant)>>> = Arc::default();
    let record = seen.clone();
    let model = Model::start(policy(move |r| {
        let task = r.first_user_text().unwrap_or_default();
        let mut map = record.lock().unwrap();
        let entry = map.entry(task).or_insert((0, Instant::now()));
        *entry = (entry.0 + 1, Instant::now());
        // Hold the answer: every task stays waiting on the model.
        Step::Reply(Reply::text("thinking").stop(StopReason::EndTurn).delay(Duration::from_secs(30)))
    }));
    let mut home = TestHome::new();
    home.write_config(&format!("max-concurrent: {tasks}\n"));
    home.start_with_model(&model);
    let repo = home.git_repo("app");
    for i in 0..tasks {
        home.ok(&["task", "new", &format!("recover {i}"), "--repo", repo.to_str().unwrap()]);
    }
    let wait_for = |count: usize| {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let map = seen.lock().unwrap();
            if map.len() == tasks && map.values().all(|(n, _)| *n >= count) {
                return map.values().map(|(_, t)| *t).max().unwrap();
            }
            drop(map);
            assert!(Instant::now() < deadline, "not every task reached the model");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    wait_for(1);
    home.kill9_supervisors();
    let restart = Instant::now();
    home.start_with_model(&model);
    let serving = restart.elapsed();
    let all_back = wait_for(2).duration_since(restart);
    println!(
        "recovery with {tasks:>2} running tasks: supervisor serving again after {:.1} ms; every task's new worker at the \
         model after {:.1} ms",
        serving.as_secs_f64() * 1000.0,
        all_back.as_secs_f64() * 1000.0
    );
}
