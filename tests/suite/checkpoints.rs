//! Kill a process at each named point of the checkpoint table, deterministically: the worker's test hook
//! (`NEURAPHAGE_TEST_PAUSE_AFTER`) pauses it right after the named checkpoint is acknowledged, once per task, and the
//! test kills the worker or the supervisor there. Each time the task must complete as the recovery matrix says:
//! `request_sent` sends the call again; `response_received` runs the tools; `tool_started` does not run the
//! interrupted (non-idempotent) call again but tells the model its outcome is unknown; `tool_completed` goes on;
//! `task_ended` ends the task the same way.

use std::time::{Duration, Instant};

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome, file_on_branch};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(90);

fn run(point: &str, kill_supervisor: bool) {
    let model = Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({"command": "echo run >> runs.txt"}))),
        _ => Step::Reply(Reply::text("finished").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    let mut env = model.env();
    env.push(("NEURAPHAGE_TEST_PAUSE_AFTER".to_owned(), point.to_owned()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let supervisor = home.start_supervisor_with(&pairs);
    let repo = home.git_repo("app");
    let task = home.json(&["task", "new", "one bash call", "--repo", repo.to_str().unwrap(), "--json"]);
    let id = task["id"].as_str().unwrap().to_owned();
    // Wait until the checkpoint is on disk: the worker now pauses right after it.
    let deadline = Instant::now() + WITHIN;
    let worker = loop {
        let shown = home.show(&id);
        let events = shown["events"].as_array().unwrap();
        let reached =
            events.iter().any(|e| e["kind"] == "checkpoint" && e["data"]["point"].as_str().unwrap().starts_with(point));
        if reached {
            let started = events.iter().rev().find(|e| e["kind"] == "worker_started").unwrap();
            break started["data"]["pid"].as_u64().unwrap() as i32;
        }
        assert!(Instant::now() < deadline, "{point} never reached: {shown:#}");
        std::thread::sleep(Duration::from_millis(10));
    };
    if kill_supervisor {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor as i32), nix::sys::signal::Signal::SIGKILL)
            .unwrap();
        home.kill9_supervisors();
        home.start_supervisor_with(&pairs);
    } else {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{point}: {ended:#}");
    let log = home.ok(&["task", "log", &id, "--json"]);
    let runs = file_on_branch(&repo, &format!("neuraphage/{id}"), "runs.txt");
    if point == "tool_started" {
        // Killed before the call ran: it is not run again; the model is told its outcome is unknown.
        assert_eq!(runs, None, "{point}: the interrupted call ran after all");
        assert!(log.contains("outcome of this Bash call is unknown"), "{point}: {log}");
    } else {
        assert_eq!(runs.as_deref(), Some("run\n"), "{point}: the call must have run exactly once");
        assert!(!log.contains("unknown"), "{point}: {log}");
    }
    // Two model turns in all: the pause comes before a call is sent, so no answer was lost or paid for twice; after
    // `request_sent` the call is made by the new worker, after `response_received` it is not made again.
    assert_eq!(model.double.requests().len(), 2, "{point}: model calls");
}

#[test]
fn worker_killed_after_request_sent() {
    run("request_sent", false);
}

#[test]
fn worker_killed_after_response_received() {
    run("response_received", false);
}

#[test]
fn worker_killed_after_tool_started() {
    run("tool_started", false);
}

#[test]
fn worker_killed_after_tool_completed() {
    run("tool_completed", false);
}

#[test]
fn worker_killed_after_task_ended() {
    run("task_ended", false);
}

#[test]
fn supervisor_killed_after_request_sent() {
    run("request_sent", true);
}

#[test]
fn supervisor_killed_after_response_received() {
    run("response_received", true);
}

#[test]
fn supervisor_killed_after_tool_started() {
    run("tool_started", true);
}

#[test]
fn supervisor_killed_after_tool_completed() {
    run("tool_completed", true);
}

#[test]
fn supervisor_killed_after_task_ended() {
    run("task_ended", true);
}
