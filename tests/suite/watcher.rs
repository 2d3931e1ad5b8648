//! The Watcher (issue 16), across real processes against the LLM double, looking every second: a task repeating the
//! same failing Bash is flagged, judged by the watcher persona on the router tier (through the broker, priced as the
//! task's), and the verdict acts — a nudge reaches the task's next request (and helped), `pause` makes it wait for
//! the user with the diagnosis, `abort` fails it, `escalate` resumes it on the next tier; a router tier that cannot answer pauses it with the rules'
//! finding; a healthy 100-turn varied task and a `--no-watch` task are never flagged.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use neuraphage_llm_double::{RecordedRequest, Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(120);

/// A router tier of its own (the judge), a worker tier; the Watcher every second; no drift limit on failures (the
/// Watcher must be the one that acts).
const CONFIG: &str = "model-tiers:\n  router: { provider: anthropic, model: m-router, pool: anthropic }\n  \
                      worker: { provider: anthropic, model: m-worker, pool: anthropic }\n\
                      max-iterations: 1000\ndrift:\n  max-consecutive-failures: 0\n\
                      watcher:\n  interval-secs: 1\n";

/// [`CONFIG`] with an expert tier too (the tier lines end just before `max-iterations`).
fn config_with_expert() -> String {
    let expert = "  expert: { provider: anthropic, model: m-expert, pool: anthropic }\nmax-iterations";
    CONFIG.replacen("max-iterations", expert, 1)
}

const NUDGE: &str = "WATCHER-NUDGE: stop running that command, list the folder first";

fn is_judge(r: &RecordedRequest) -> bool {
    r.model() == Some("m-router")
}

fn verdict(recommendation: &str) -> Step {
    let answer = json!({
        "status": "stuck",
        "confidence": 0.9,
        "diagnosis": format!("DIAG-{recommendation}: the same failing command again and again"),
        "recommendation": recommendation,
        "nudge_message": NUDGE,
    });
    Step::Reply(Reply::text(answer.to_string()).stop(StopReason::EndTurn))
}

/// The worker's side: the same failing Bash, forever.
fn failing() -> Step {
    Step::Reply(Reply::tool("Bash", json!({"command": "echo nope; exit 3"})))
}

fn start(model: &Model) -> (TestHome, String) {
    let mut home = TestHome::new();
    home.write_config(CONFIG);
    home.start_with_model(model);
    let id = home.json(&["task", "new", "make the build pass", "--json"])["id"].as_str().unwrap().to_owned();
    (home, id)
}

fn interventions(home: &TestHome) -> Vec<serde_json::Value> {
    home.json(&["watcher", "log", "--json"]).as_array().unwrap().clone()
}

#[test]
fn a_failing_loop_is_flagged_and_the_nudge_reaches_the_next_request_and_helps() {
    let model = Model::start(policy(|r| {
        if is_judge(r) {
            verdict("nudge")
        } else if r.raw_body.contains("slept-2") {
            Step::Reply(Reply::text("done after the nudge").stop(StopReason::EndTurn))
        } else if r.raw_body.contains("WATCHER-NUDGE") {
            // Something new, and long enough for the Watcher to see it.
            Step::Reply(Reply::tool("Bash", json!({"command": "sleep 3; echo slept-$((1+1))"})))
        } else {
            failing()
        }
    }));
    let (home, id) = start(&model);
    let done = home.wait_status(&id, "Completed", WITHIN);
    assert_eq!(done["status_detail"]["summary"], "done after the nudge", "{done:#}");

    let requests = model.double.requests();
    let judged: Vec<&RecordedRequest> = requests.iter().filter(|r| is_judge(r)).collect();
    assert_eq!(judged.len(), 1, "one judgment: the flag is not raised again while fresh");
    let judge = judged[0];
    assert!(judge.system_text().contains("You are a task watcher"), "{}", judge.system_text());
    assert!(judge.raw_body.contains("same_failing_action") && judge.raw_body.contains("exit 3"), "{}", judge.raw_body);
    assert!(judge.body["tools"].as_array().is_none_or(|t| t.is_empty()), "the judge gets no tools");
    // The nudge is in a worker request, framed as advice from the Watcher, not the user.
    let nudged =
        requests.iter().find(|r| !is_judge(r) && r.raw_body.contains(NUDGE)).expect("no request with the nudge");
    assert!(nudged.raw_body.contains("advice from=\\\"watcher\\\""), "{}", nudged.raw_body);
    // Flagged at the rule's threshold: the loop had run at least 3 failing calls, and no more failing calls ran after
    // the advice was delivered.
    let failures_before = nudged.tool_result_count();
    assert!(failures_before >= 3, "{failures_before}");

    let log = interventions(&home);
    assert_eq!(log.len(), 1, "{log:#?}");
    let entry = &log[0];
    assert_eq!((entry["task"].as_str(), entry["rule"].as_str()), (Some(id.as_str()), Some("same_failing_action")));
    assert_eq!((entry["recommendation"].as_str(), entry["confidence"].as_u64()), (Some("nudge"), Some(90)));
    assert_eq!(entry["helped"], true, "the pattern was gone at the next look: {entry:#}");
    let text = home.ok(&["watcher", "log"]);
    assert!(text.contains("same_failing_action nudge (90%) [helped]"), "{text}");

    // The judgment was priced as the task's own: a cost row of the router's model on this task.
    let db = home.open_store();
    let router_costs: i64 =
        db.query_row("SELECT count(*) FROM costs WHERE task = ?1 AND model = 'm-router'", [&id], |r| r.get(0)).unwrap();
    assert_eq!(router_costs, 1);
}

#[test]
fn pause_makes_the_task_wait_with_the_diagnosis() {
    let model = Model::start(policy(|r| if is_judge(r) { verdict("pause") } else { failing() }));
    let (home, id) = start(&model);
    let waiting = home.wait_status(&id, "WaitingForUser", WITHIN);
    let prompt = waiting["status_detail"]["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("Paused by the Watcher (same_failing_action)") && prompt.contains("DIAG-pause"),
        "{prompt}"
    );
    let listed = home.ok(&["waiting"]);
    assert!(listed.contains("Paused by the Watcher"), "{listed}");
    assert_eq!(interventions(&home)[0]["recommendation"], "pause");
}

#[test]
fn abort_fails_the_task_with_the_diagnosis() {
    let model = Model::start(policy(|r| if is_judge(r) { verdict("abort") } else { failing() }));
    let (home, id) = start(&model);
    let failed = home.wait_status(&id, "Failed", WITHIN);
    let error = failed["status_detail"]["error"].as_str().unwrap();
    assert!(error.contains("Aborted by the Watcher (same_failing_action)") && error.contains("DIAG-abort"), "{error}");
    assert_eq!(interventions(&home)[0]["recommendation"], "abort");
}

#[test]
fn escalate_resumes_the_task_on_the_next_tier() {
    let model = Model::start(policy(|r| {
        if is_judge(r) {
            verdict("escalate")
        } else if r.model() == Some("m-expert") {
            Step::Reply(Reply::text("the expert fixed it").stop(StopReason::EndTurn))
        } else {
            failing()
        }
    }));
    let mut home = TestHome::new();
    home.write_config(&config_with_expert());
    home.start_with_model(&model);
    let id = home.json(&["task", "new", "make the build pass", "--json"])["id"].as_str().unwrap().to_owned();
    let done = home.wait_status(&id, "Completed", WITHIN);
    assert_eq!(done["status_detail"]["summary"], "the expert fixed it", "{done:#}");
    assert_eq!(done["tier"], "expert");
    let entry = &interventions(&home)[0];
    assert_eq!(entry["recommendation"], "escalate");
}

#[test]
fn escalate_never_lifts_a_sub_task_above_its_parents_tier_it_pauses_it() {
    // The parent (worker tier) makes one child and waits; the child loops on a failing command; the judge says
    // escalate (as hostile tool output could talk it into). Control: the test above, where a top-level task escalates.
    let model = Model::start(policy(|r| {
        let task = r.first_user_text().unwrap_or_default();
        if is_judge(r) {
            verdict("escalate")
        } else if r.model() == Some("m-expert") {
            Step::Reply(Reply::text("the expert ran").stop(StopReason::EndTurn))
        } else if task.contains("make a child") && r.tool_result_count() == 0 {
            Step::Reply(Reply::tool("Task", json!({"description": "child: make the build pass"})))
        } else if task.contains("make a child") {
            Step::Reply(Reply::text("parent done").stop(StopReason::EndTurn))
        } else {
            failing()
        }
    }));
    let mut home = TestHome::new();
    home.write_config(&config_with_expert());
    home.start_with_model(&model);
    let parent =
        home.json(&["task", "new", "make a child", "--tier", "worker", "--json"])["id"].as_str().unwrap().to_owned();
    let child = loop {
        let listed = home.json(&["task", "list", "--json"]);
        if let Some(c) = listed.as_array().unwrap().iter().find(|t| t["parent"].as_str() == Some(parent.as_str())) {
            break c["id"].as_str().unwrap().to_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let waiting = home.wait_status(&child, "WaitingForUser", WITHIN);
    let prompt = waiting["status_detail"]["prompt"].as_str().unwrap();
    assert!(prompt.contains("does not go above its parent's tier, worker"), "{prompt}");
    assert_ne!(waiting["tier"], "expert", "{waiting:#}");
    assert!(model.double.requests().iter().all(|r| r.model() != Some("m-expert")), "the expert tier was used");
    assert_eq!(interventions(&home)[0]["recommendation"], "pause");
}

#[test]
fn a_router_tier_that_cannot_answer_pauses_the_task_with_the_rules_finding() {
    let model = Model::start(policy(|r| if is_judge(r) { Step::http_error(400) } else { failing() }));
    let (home, id) = start(&model);
    let waiting = home.wait_status(&id, "WaitingForUser", WITHIN);
    let prompt = waiting["status_detail"]["prompt"].as_str().unwrap();
    assert!(prompt.contains("the same failing Bash call 3 times in a row") && prompt.contains("unjudged"), "{prompt}");
    let entry = &interventions(&home)[0];
    assert_eq!((entry["recommendation"].as_str(), entry["confidence"].as_u64()), (Some("pause"), Some(0)));
}

#[test]
fn a_healthy_varied_task_of_100_turns_and_a_no_watch_task_are_never_flagged() {
    let turns = Arc::new(AtomicUsize::new(0));
    let counted = turns.clone();
    let model = Model::start(policy(move |r| {
        if is_judge(r) {
            return verdict("abort");
        }
        if r.raw_body.contains("fail quietly") {
            return failing();
        }
        let n = counted.fetch_add(1, Ordering::SeqCst);
        let reply = match n % 4 {
            _ if n >= 100 => Reply::text("all done").stop(StopReason::EndTurn),
            0 => Reply::tool("Bash", json!({"command": format!("echo step {n} > f{n}.txt")})),
            1 => Reply::tool("Read", json!({"file_path": format!("f{}.txt", n - 1)})),
            2 => Reply::tool("Glob", json!({"pattern": format!("f{}*", n - 2)})),
            _ => Reply::tool("Bash", json!({"command": format!("echo {n}; exit {}", n % 3)})),
        };
        Step::Reply(reply)
    }));
    let mut home = TestHome::new();
    home.write_config(CONFIG);
    home.start_with_model(&model);
    let id = home.json(&["task", "new", "do varied work", "--json"])["id"].as_str().unwrap().to_owned();
    home.wait_status(&id, "Completed", WITHIN);
    assert!(turns.load(Ordering::SeqCst) > 100);
    assert!(interventions(&home).is_empty());
    assert!(!model.double.requests().iter().any(is_judge), "no judgment asked");

    // The same failing loop as above, with --no-watch: the Watcher leaves it alone (the drift guard has no failure
    // limit here), so it is killed after a few seconds' worth of failures.
    let args = ["task", "new", "fail quietly", "--no-watch", "--json"];
    let quiet = home.json(&args)["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + WITHIN;
    while home.show(&quiet)["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "tool_result").count() < 4 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    home.ok(&["task", "kill", &quiet]);
    assert!(interventions(&home).is_empty(), "a --no-watch task is not looked at");
}

/// The task's `worker_started` events, read from the store (`task show` lists only the newest events).
fn worker_starts(home: &TestHome, id: &str) -> i64 {
    home.open_store()
        .query_row("SELECT count(*) FROM events WHERE task = ?1 AND kind = 'worker_started'", [id], |r| r.get(0))
        .unwrap()
}

/// Issue 16 follow-up: a Watcher pause is stored when it is decided. The supervisor is killed (SIGKILL, at a test
/// crash point) after the pause is decided and before the worker's session ended; after a restart the task waits for
/// the user with the Watcher's diagnosis, and no worker runs it again (the old code queued it again).
#[test]
fn a_pause_survives_kill_9_before_the_session_ended() {
    let model = Model::start(policy(|r| if is_judge(r) { verdict("pause") } else { failing() }));
    let mut home = TestHome::new();
    home.write_config(CONFIG);
    let mut env = model.env();
    env.push(("NEURAPHAGE_TEST_CRASH_AT".into(), "watcher_stopped".into()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    home.start_supervisor_with(&pairs);
    let id = home.json(&["task", "new", "make the build pass", "--json"])["id"].as_str().unwrap().to_owned();
    let exits = home.wait_supervisors_within(WITHIN);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(exits[0].signal(), Some(9), "the supervisor died at the crash point: {exits:?}");
    let state: String =
        home.open_store().query_row("SELECT state FROM tasks WHERE id = ?1", [&id], |r| r.get(0)).unwrap();
    assert_eq!(state, "Running", "the session had not ended");
    let starts = worker_starts(&home, &id);
    let sent_before = model.double.requests().len();

    home.start_with_model(&model);
    let waiting = home.wait_status(&id, "WaitingForUser", WITHIN);
    let prompt = waiting["status_detail"]["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("Paused by the Watcher (same_failing_action)") && prompt.contains("DIAG-pause"),
        "{prompt}"
    );
    // Long enough for the scheduler (every 2 s) and the Watcher (every 1 s) to have run a re-queued task again.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(home.show(&id)["status"], "WaitingForUser");
    assert_eq!(worker_starts(&home, &id), starts, "no worker ran the task after the restart");
    assert_eq!(model.double.requests().len(), sent_before, "nothing was asked of the model after the restart");
    let log = interventions(&home);
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["recommendation"], "pause");
}

/// Issue 16 follow-up: a task's judgements are budgeted (`watcher.max-judgements-per-hour`). With a budget of 1 and
/// no cooldown, a task that ignores the nudge is flagged again at the next look and paused with the rules' finding,
/// without a second router call; the intervention says why.
#[test]
fn past_its_judgement_budget_a_flagged_task_is_paused_without_a_router_call() {
    let model = Model::start(policy(|r| if is_judge(r) { verdict("nudge") } else { failing() }));
    let mut home = TestHome::new();
    home.write_config(&format!("{CONFIG}  cooldown-secs: 0\n  max-judgements-per-hour: 1\n"));
    home.start_with_model(&model);
    let id = home.json(&["task", "new", "make the build pass", "--json"])["id"].as_str().unwrap().to_owned();
    let waiting = home.wait_status(&id, "WaitingForUser", WITHIN);
    let prompt = waiting["status_detail"]["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("the same failing Bash call") && prompt.contains("watcher.max-judgements-per-hour is 1"),
        "{prompt}"
    );
    let judged = model.double.requests().iter().filter(|r| is_judge(r)).count();
    assert_eq!(judged, 1, "one judgement, then the budget");
    let log = interventions(&home);
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!((log[0]["recommendation"].as_str(), log[0]["confidence"].as_u64()), (Some("pause"), Some(0)));
    assert_eq!(log[1]["recommendation"], "nudge");
}
