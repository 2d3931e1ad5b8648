//! Tasks running for real, against the LLM test double: the time from an acknowledged `task new` to the worker's
//! first model request (supervisor scheduling, worktree, worker spawn, sandbox, handshakes, broker, HTTP), and the
//! resident memory (RSS) of the supervisor, the broker and each idle worker, with 1 and 20 tasks at once.
//!
//! A worker is "idle" while it waits for a model reply that the double holds back. Run with `bench/run.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neuraphage_bench::Run;
use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome, children_named};

fn main() {
    println!("{}", Run::header());
    for tasks in [1usize, 20] {
        measure(tasks);
    }
}

fn measure(tasks: usize) {
    let first_request: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = first_request.clone();
    // Hold every first reply for 5 s so the workers sit idle (waiting on the model) while memory is read.
    let model = Model::start(policy(move |r| {
        let task = r.first_user_text().unwrap_or_default();
        seen.lock().unwrap().entry(task).or_insert_with(Instant::now);
        Step::Reply(Reply::text("thinking").stop(StopReason::EndTurn).delay(Duration::from_secs(5)))
    }));
    let mut home = TestHome::new();
    home.write_config(&format!("max-concurrent: {tasks}\n"));
    let supervisor = home.start_with_model(&model);
    let repo = home.git_repo("app");
    let mut created = HashMap::new();
    for i in 0..tasks {
        let description = format!("bench task {i}");
        let t = Instant::now();
        home.ok(&["task", "new", &description, "--repo", repo.to_str().unwrap()]);
        created.insert(description, t);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while first_request.lock().unwrap().len() < tasks {
        assert!(Instant::now() < deadline, "not every task reached the model");
        std::thread::sleep(Duration::from_millis(5));
    }
    let latencies: Vec<Duration> = {
        let seen = first_request.lock().unwrap();
        created.iter().map(|(d, t)| seen[d].duration_since(*t)).collect()
    };
    let wall = latencies.iter().max().copied().unwrap_or_default();
    let run = Run { label: "task new → first LLM request".into(), clients: tasks, latencies, wall };
    println!("{}", run.row());

    // Memory while every worker waits on the model.
    let broker = children_named(supervisor, "neuraphage-brok");
    // Each worker runs inside the bubblewrap the supervisor started: it is pid 2 of that sandbox's pid namespace.
    let workers: Vec<u32> = children_named(supervisor, "bwrap")
        .into_iter()
        .filter_map(neuraphage_tests::task_pid_namespace)
        .filter_map(|ns| neuraphage_tests::pids_in_namespace(&ns).into_iter().find(|(_, inner)| *inner == 2))
        .map(|(host, _)| host)
        .chain(children_named(supervisor, "neuraphage-work"))
        .collect();
    let kib = |pid: u32| rss_kib(pid).unwrap_or(0);
    let worker_rss: Vec<u64> = workers.iter().map(|p| kib(*p)).collect();
    let avg = worker_rss.iter().sum::<u64>() / worker_rss.len().max(1) as u64;
    println!(
        "  RSS with {tasks} task(s): supervisor {} KiB, broker {} KiB, {} workers avg {avg} KiB (max {} KiB)",
        kib(supervisor),
        broker.first().map(|p| kib(*p)).unwrap_or(0),
        workers.len(),
        worker_rss.iter().max().copied().unwrap_or(0)
    );
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}
