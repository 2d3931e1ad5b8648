//! The lock table across real processes: sandboxed workers call `Lock` as the LLM double scripts them, the broker
//! answers, and `neuraphage locks` shows the table.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome, alive, children_named};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(120);

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

fn end(text: &str) -> Step {
    Step::Reply(Reply::text(text).stop(StopReason::EndTurn))
}

/// Tool results of a task's conversation (`task log --json`).
fn logged_results(home: &TestHome, id: &str) -> Vec<String> {
    let log = home.json(&["task", "log", id, "--json"]);
    log["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().unwrap())
        .filter(|b| b["type"] == "tool_result")
        .map(|b| b["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Poll `neuraphage locks --json` until `ok` holds for it.
fn wait_locks(home: &TestHome, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        // While the broker restarts the supervisor may answer that it is unavailable: ask again.
        let out = home.run(&["locks", "--json"]);
        let table: Value =
            if out.status.success() { serde_json::from_slice(&out.stdout).unwrap() } else { Value::Null };
        if ok(&table) {
            return table;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {table:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_request_that_would_close_a_cycle_is_refused_with_the_cycle_and_the_other_task_gets_its_lock() {
    // Task a takes name:x then asks for name:y; task b takes name:y then asks for name:x. Neither asks for its second
    // lock before both hold their first (until then each runs a short Bash, polling), so the second request to reach
    // the broker closes the cycle.
    let holding: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let model = Model::start(policy(move |r| {
        let me = r.first_user_text().unwrap_or_default().split_whitespace().last().unwrap_or("?").to_owned();
        let (first, second, other) = if me == "a" { ("name:x", "name:y", "b") } else { ("name:y", "name:x", "a") };
        let results = r.tool_results();
        let granted = results.iter().filter(|c| c.starts_with("Granted:")).count();
        if results.iter().any(|c| c.starts_with("Refused:")) || granted >= 2 {
            return end("done");
        }
        if granted == 0 {
            return Step::Reply(Reply::tool("Lock", json!({"resources": [first]})));
        }
        let mut holding = holding.lock().unwrap();
        holding.insert(me);
        if holding.contains(other) {
            Step::Reply(Reply::tool("Lock", json!({"resources": [second], "timeout_secs": 300})))
        } else {
            Step::Reply(Reply::tool("Bash", json!({"command": "sleep 0.1"})))
        }
    }));
    let mut home = TestHome::new();
    home.write_config("max-concurrent: 2\nmax-iterations: 1000\n");
    home.start_with_model(&model);
    let a = id_of(&home.json(&["task", "new", "deadlock task a", "--json"]));
    let b = id_of(&home.json(&["task", "new", "deadlock task b", "--json"]));
    for t in home.wait_ended(&[&a, &b], WITHIN) {
        assert_eq!(t["status"], "Completed", "{t:#}");
    }
    let (ra, rb) = (logged_results(&home, &a), logged_results(&home, &b));
    let refused: Vec<&String> = ra.iter().chain(&rb).filter(|c| c.starts_with("Refused:")).collect();
    assert_eq!(refused.len(), 1, "exactly one request closes the cycle: {ra:#?} {rb:#?}");
    let (loser, winner, winner_results) =
        if ra.iter().any(|c| c.starts_with("Refused:")) { (&a, &b, &rb) } else { (&b, &a, &ra) };
    let cycle = format!("{loser} → {winner} → {loser}");
    assert!(refused[0].contains("deadlock") && refused[0].contains(&cycle), "{}", refused[0]);
    // The other task waited for the refused one's lock and got it when that task ended (its link closed).
    assert_eq!(winner_results.iter().filter(|c| c.starts_with("Granted:")).count(), 2, "{winner_results:#?}");
    wait_locks(&home, "the table emptying", |t| t["locks"].as_array().is_some_and(Vec::is_empty));
}

#[test]
fn a_kill_9_workers_locks_are_freed_at_once_and_the_waiter_gets_them() {
    // Task "holder" takes name:db and then sits in a long Bash; task "waiter" asks for name:db and waits.
    let model = Model::start(policy(|r| {
        let me = r.first_user_text().unwrap_or_default();
        let results = r.tool_results();
        match (me.ends_with("holder"), results.len()) {
            (_, 0) => Step::Reply(Reply::tool("Lock", json!({"resources": ["name:db"], "timeout_secs": 300}))),
            (true, 1) => Step::Reply(Reply::tool("Bash", json!({"command": "sleep 600"}))),
            _ => end("done"),
        }
    }));
    let mut home = TestHome::new();
    home.write_config("max-concurrent: 2\n");
    home.start_with_model(&model);
    let holder = id_of(&home.json(&["task", "new", "lock holder", "--json"]));
    let held = wait_locks(&home, "the holder taking name:db", |t| t["locks"][0]["holder"] == holder.as_str());
    assert_eq!(held["locks"][0]["resource"], "name:db");
    let waiter = id_of(&home.json(&["task", "new", "lock waiter", "--json"]));
    wait_locks(&home, "the waiter queueing", |t| t["locks"][0]["waiters"] == json!([waiter]));
    // The text listing says the same.
    let text = home.ok(&["locks"]);
    assert!(text.contains("name:db") && text.contains(&holder) && text.contains(&waiter), "{text}");
    let shown = home.show(&holder);
    let events = shown["events"].as_array().unwrap();
    let pid = events.iter().rev().find(|e| e["kind"] == "worker_started").unwrap()["data"]["pid"].as_u64().unwrap();
    let pid = pid as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    // The waiter's Lock is granted (it waits up to 300 s; the holder's Bash would run 600 s).
    let done = &home.wait_ended(&[&waiter], WITHIN)[0];
    assert_eq!(done["status"], "Completed", "{done:#}");
    let results = logged_results(&home, &waiter);
    assert_eq!(
        results,
        vec![
            "Granted: you hold name:db. Other tasks asking for them wait until you Unlock them or your task ends."
                .to_owned()
        ]
    );
    assert!(!alive(pid as u32), "the killed worker is gone");
    // The holder's replacement worker resumes and ends; nothing stays locked.
    home.wait_ended(&[&holder], WITHIN);
    wait_locks(&home, "the table emptying", |t| t["locks"].as_array().is_some_and(Vec::is_empty));
}

#[test]
fn bad_resource_names_are_refused_to_the_model_with_the_reason() {
    let model = Model::start(policy(|r| match r.tool_results().len() {
        0 => Step::Reply(Reply::tool("Lock", json!({"resources": ["/etc/passwd"]}))),
        _ => end("done"),
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let id = id_of(&home.json(&["task", "new", "bad lock name", "--json"]));
    home.wait_ended(&[&id], WITHIN);
    let results = logged_results(&home, &id);
    assert_eq!(results.len(), 1);
    assert!(results[0].starts_with("Refused:") && results[0].contains("no kind"), "{results:?}");
    assert_eq!(home.json(&["locks", "--json"])["locks"], json!([]));
}

#[test]
fn after_a_broker_kill_9_the_holder_reclaims_its_lock_from_the_new_broker_in_the_grace_period() {
    // The holder takes name:db and sits in a long Bash: it re-claims from the new broker while its tool still runs.
    let model = Model::start(policy(|r| match r.tool_results().len() {
        0 => Step::Reply(Reply::tool("Lock", json!({"resources": ["name:db"]}))),
        1 => Step::Reply(Reply::tool("Bash", json!({"command": "sleep 600"}))),
        _ => end("done"),
    }));
    let mut home = TestHome::new();
    let supervisor = home.start_with_model(&model);
    let holder = id_of(&home.json(&["task", "new", "lock holder", "--json"]));
    wait_locks(&home, "the holder taking name:db", |t| t["locks"][0]["holder"] == holder.as_str());
    let brokers = children_named(supervisor, "neuraphage-brok");
    assert_eq!(brokers.len(), 1, "{brokers:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(brokers[0] as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    // A new broker (another pid) lists the lock again, held by the same task, while in its grace period.
    let table = wait_locks(&home, "the lock re-claimed from a new broker", |t| {
        t["grace_remaining_ms"].is_u64() && t["locks"][0]["holder"] == holder.as_str()
    });
    assert_eq!(table["locks"][0]["resource"], "name:db");
    assert!(!alive(brokers[0]), "the old broker is gone");
    let text = home.ok(&["locks"]);
    assert!(text.contains("broker restarted") && text.contains("name:db"), "{text}");
    home.ok(&["task", "kill", &holder]);
    wait_locks(&home, "the table emptying", |t| t["locks"].as_array().is_some_and(Vec::is_empty));
}
