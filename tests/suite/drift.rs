//! The drift guard (issue 13, "Drift, not death"), against the LLM double: a task whose tool calls keep failing (11
//! Bash calls exiting non-zero) or that reaches `max-iterations` waits for the user with the reason — it is not
//! failed — and a message (`task send`) resumes it with new budgets, to completion.

use std::time::Duration;

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(120);

fn new_task(home: &TestHome, description: &str) -> String {
    home.json(&["task", "new", description, "--json"])["id"].as_str().unwrap().to_owned()
}

#[test]
fn eleven_failing_commands_make_the_task_wait_and_a_message_resumes_it() {
    // Fails until the user says to stop trying; then one more failure (the counter restarted) and done.
    let model = Model::start(policy(|r| {
        let told = r.raw_body.contains("stop trying");
        let results = r.tool_result_count();
        if !told || results == 11 {
            Step::Reply(Reply::tool("Bash", json!({"command": "echo nope; exit 3"})))
        } else {
            Step::Reply(Reply::text("gave up as told").stop(StopReason::EndTurn))
        }
    }));
    let mut home = TestHome::new();
    // The drift guard alone: the Watcher would judge the same failing command first (its rule holds at 3).
    home.write_config("watcher:\n  enabled: false\n");
    home.start_with_model(&model);
    let id = new_task(&home, "keep failing");
    let waiting = home.wait_status(&id, "WaitingForUser", WITHIN);
    let prompt = waiting["status_detail"]["prompt"].as_str().unwrap().to_owned();
    assert!(prompt.contains("11 tool failures in a row"), "{prompt}");
    assert!(prompt.contains("Bash failed") && prompt.contains("model turns"), "{prompt}");
    // Exactly 11 calls ran: it stopped at the first failure past the limit (10).
    let requests = model.double.requests();
    assert_eq!(requests.last().unwrap().tool_result_count(), 10, "the 11th result was not sent to the model");
    assert_eq!(requests.len(), 11);

    home.ok(&["task", "send", &id, "stop trying and finish"]);
    let done = home.wait_status(&id, "Completed", WITHIN);
    assert_eq!(done["status_detail"]["summary"], "gave up as told", "{done:#}");
    let last = model.double.requests().last().unwrap().clone();
    assert_eq!(last.tool_result_count(), 12, "one more call after the message");
}

#[test]
fn max_iterations_makes_the_task_wait_and_a_message_gives_it_a_new_budget() {
    // Five reads, then done: with max-iterations 3 that takes a message in between.
    let model = Model::start(policy(|r| match r.tool_result_count() {
        n if n < 5 => Step::Reply(Reply::tool("Read", json!({"file_path": format!("missing-{n}.txt")}))),
        _ => Step::Reply(Reply::text("finished").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    home.write_config("max-iterations: 3\nwatcher:\n  enabled: false\n");
    home.start_with_model(&model);
    let id = new_task(&home, "take many turns");
    let waiting = home.wait_status(&id, "WaitingForUser", WITHIN);
    let prompt = waiting["status_detail"]["prompt"].as_str().unwrap().to_owned();
    assert!(prompt.contains("after 3 model turns") && prompt.contains("max-iterations is 3"), "{prompt}");
    assert_eq!(model.double.requests().len(), 3);

    home.ok(&["task", "send", &id, "go on"]);
    let done = home.wait_status(&id, "Completed", WITHIN);
    assert_eq!(done["status_detail"]["summary"], "finished", "{done:#}");
    assert_eq!(model.double.requests().len(), 6, "three more turns after the message, within the new budget");
}

#[test]
fn a_worker_killed_mid_task_goes_on_counting_its_turns() {
    let model = Model::start(policy(|r| {
        let n = r.tool_result_count();
        Step::Reply(Reply::tool("Read", json!({"file_path": format!("missing-{n}.txt")})))
    }));
    let mut home = TestHome::new();
    home.write_config("max-iterations: 3\nwatcher:\n  enabled: false\n");
    let mut env = model.env();
    env.push(("NEURAPHAGE_TEST_PAUSE_AFTER".to_owned(), "tool_completed".to_owned()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    home.start_supervisor_with(&pairs);
    let id = new_task(&home, "never finishes");
    // The first turn's tool is done and checkpointed: the worker pauses there; kill it.
    let deadline = std::time::Instant::now() + WITHIN;
    let worker = loop {
        let shown = home.show(&id);
        let events = shown["events"].as_array().unwrap();
        if events.iter().any(|e| e["kind"] == "checkpoint" && e["data"]["point"] == "tool_completed:Read") {
            let started = events.iter().rev().find(|e| e["kind"] == "worker_started").unwrap();
            break started["data"]["pid"].as_u64().unwrap() as i32;
        }
        assert!(std::time::Instant::now() < deadline, "no tool_completed: {shown:#}");
        std::thread::sleep(Duration::from_millis(10));
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), nix::sys::signal::Signal::SIGKILL).unwrap();
    let waiting = home.wait_status(&id, "WaitingForUser", WITHIN);
    let prompt = waiting["status_detail"]["prompt"].as_str().unwrap();
    assert!(prompt.contains("after 3 model turns"), "{prompt}");
    // One turn before the kill and two after: the new worker did not get a fresh budget.
    assert_eq!(model.double.requests().len(), 3);
}
