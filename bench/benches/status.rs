//! The status socket's latency (issue 15, "The status socket"): from a task starting to wait on the user (its
//! `WaitingForUser` commit, the `since` the line carries, milliseconds) to the status socket's line showing it at a
//! connected client, over 20 runs (5 with `--quick`), one task at a time: p50 / p99 / max. The line is coalesced
//! (at most one per 200 ms), so up to that is by design. The model is the LLM double (`AskUser`). Run with
//! `bench/run.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use chrono::Utc;
use neuraphage_bench::Run;
use neuraphage_ipc::status::StatusLine;
use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use serde_json::json;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 5 } else { 20 };
    let model = Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("AskUser", json!({"question": "Which colour?", "options": ["red", "blue"]}))),
        _ => Step::Reply(Reply::text("thanks").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let stream = UnixStream::connect(home.paths.status_socket()).expect("connect to status.sock");
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut reader = BufReader::new(stream);
    let mut next = || {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the status socket closed");
        let received = Utc::now();
        (serde_json::from_str::<StatusLine>(&line).unwrap(), received)
    };
    next();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(runs);
    for i in 0..runs {
        let id = home.json(&["task", "new", &format!("question {i}"), "--json"])["id"].as_str().unwrap().to_owned();
        let latency = loop {
            let (line, received) = next();
            if let Some(w) = line.waiting.iter().find(|w| w.id.as_str() == id) {
                break (received - w.since).to_std().unwrap_or(Duration::ZERO);
            }
        };
        latencies.push(latency);
        home.ok(&["task", "send", &id, "1"]);
        // The next run starts once this task is no longer waiting (and its line has gone out).
        loop {
            let (line, _) = next();
            if !line.waiting.iter().any(|w| w.id.as_str() == id) {
                break;
            }
        }
    }
    let run = Run { label: "waiting → status line".into(), clients: 1, latencies, wall: started.elapsed() };
    println!(
        "status socket: a task's WaitingForUser commit → its line at a client, {runs} runs: p50 {:?}, p99 {:?}, \
         max {:?} (coalescing holds a line up to 200 ms; `since` has millisecond resolution)",
        run.percentile(50.0),
        run.percentile(99.0),
        run.percentile(100.0),
    );
}
