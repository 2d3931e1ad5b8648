//! A person talks to tasks (issue 12, "Send", "Questions", "Waiting costs nothing and blocks no one"): `AskUser`
//! parks a task in WaitingForUser without a worker, its answer (`task send`, `task answer`) is the call's result;
//! a message to a running task reaches its next model request; a message to a finished task is a follow-up on its
//! branch; a waiting task holds no `max-concurrent` slot; questions and answers survive `kill -9`; pause / resume;
//! bad input changes nothing. The model is the LLM double; every check reads what it was sent.

use std::time::{Duration, Instant};

use neuraphage_ipc::{ControlReply, ControlRequest, ErrorCode};
use neuraphage_llm_double::{RecordedRequest, Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, RawClient, TestHome, alive, file_on_branch};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(90);

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// The pid of the task's latest worker.
fn last_worker(shown: &Value) -> u32 {
    let events = shown["events"].as_array().unwrap();
    let started = events.iter().rev().find(|e| e["kind"] == "worker_started").expect("a worker started");
    started["data"]["pid"].as_u64().unwrap() as u32
}

/// Wait until `pid` is gone (the supervisor reaps its workers).
fn wait_gone(pid: u32) {
    let deadline = Instant::now() + WITHIN;
    while alive(pid) {
        assert!(Instant::now() < deadline, "worker {pid} still runs");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn event_kinds(shown: &Value) -> Vec<String> {
    shown["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect()
}

/// The question the tasks of these tests ask, with two options.
fn ask() -> Step {
    Step::Reply(Reply::tool("AskUser", json!({"question": "Which colour?", "options": ["red", "blue"]})))
}

/// A model that asks first, then ends its turn with what it was told.
fn asking_model() -> Model {
    Model::start(policy(|r| match r.tool_result_count() {
        0 => ask(),
        _ => Step::Reply(Reply::text("thanks").stop(StopReason::EndTurn)),
    }))
}

/// Whether some request the double received contains `text` (in its JSON body).
fn sent_to_model(model: &Model, text: &str) -> bool {
    model.double.requests().iter().any(|r: &RecordedRequest| r.raw_body.contains(text))
}

/// A task that asks: WaitingForUser with the question as its prompt; its id and its (gone) worker's pid.
fn asked(home: &TestHome, description: &str) -> (String, u32) {
    let id = id_of(&home.json(&["task", "new", description, "--json"]));
    let shown = home.wait_status(&id, "WaitingForUser", WITHIN);
    let prompt = shown["status_detail"]["prompt"].as_str().unwrap();
    assert_eq!(prompt, "Which colour?\nOptions:\n  1. red\n  2. blue");
    let worker = last_worker(&shown);
    (id, worker)
}

#[test]
fn a_question_parks_the_task_without_a_worker_and_the_answer_is_the_tool_result() {
    let model = asking_model();
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let (id, worker) = asked(&home, "ask me a colour");
    // The question is checkpointed and the worker is gone: waiting costs no process.
    wait_gone(worker);
    let kinds = event_kinds(&home.show(&id));
    assert!(kinds.contains(&"question_asked".to_owned()), "{kinds:?}");
    let waiting = home.json(&["waiting", "--json"]);
    assert_eq!(waiting[0]["id"], id.as_str(), "{waiting:#}");
    assert_eq!(waiting[0]["question"], true);
    assert!(waiting[0]["prompt"].as_str().unwrap().starts_with("Which colour?"));
    let text = home.ok(&["waiting"]);
    assert!(text.contains(&id) && text.contains("    Which colour?") && text.contains("2. blue"), "{text}");
    // The control: before the answer, no request carried it.
    assert!(!sent_to_model(&model, "The user chose option 2: blue"));
    let sent = home.json(&["task", "send", &id, "2", "--json"]);
    assert_eq!(sent["delivery"], "answer to the question", "{sent:#}");
    let done = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(done["status"], "Completed", "{done:#}");
    // The answer is the AskUser call's result in the model's next request (the number named the option).
    let last = model.double.requests().last().cloned().unwrap();
    let result = last
        .messages()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .find(|b| b["type"] == "tool_result")
        .expect("a tool result");
    assert!(result.to_string().contains("The user chose option 2: blue"), "{result}");
    assert_eq!(model.double.requests().len(), 2, "asking cost no extra model call");
    let kinds = event_kinds(&home.show(&id));
    assert!(kinds.contains(&"question_answered".to_owned()) && kinds.contains(&"user_message".to_owned()));
    assert_eq!(home.json(&["waiting", "--json"]), json!([]));
}

#[test]
fn a_message_to_a_running_task_reaches_its_next_request() {
    const NOTE: &str = "also mind the tests, please";
    let model = Model::start(policy(|r| {
        if r.raw_body.contains(NOTE) {
            return Step::Reply(Reply::text("noted").stop(StopReason::EndTurn));
        }
        match r.tool_result_count() {
            0 => Step::Reply(Reply::tool("Bash", json!({"command": "sleep 2; echo slept"}))),
            _ => Step::Reply(Reply::text("done without the note").stop(StopReason::EndTurn)),
        }
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let id = id_of(&home.json(&["task", "new", "work a while", "--json"]));
    home.worker_in_tool(&id, WITHIN);
    assert!(!sent_to_model(&model, NOTE), "the control: no request had the note yet");
    let sent = home.json(&["task", "send", &id, NOTE, "--json"]);
    assert_eq!(sent["delivery"], "next turn");
    let done = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(done["status"], "Completed", "{done:#}");
    assert_eq!(done["status_detail"]["summary"], "noted", "the model saw the note: {done:#}");
    assert!(sent_to_model(&model, NOTE));
    // Delivered once: its inbox row is marked, by the checkpoint that carried it.
    let undelivered: i64 = home
        .open_store()
        .query_row("SELECT count(*) FROM inbox WHERE task = ?1 AND delivered_at IS NULL", [&id], |r| r.get(0))
        .unwrap();
    assert_eq!(undelivered, 0);
}

fn follow_up(keep_worktrees: bool) {
    let model = Model::start(policy(|r| {
        let follow = r.raw_body.contains("now write b.txt");
        match (r.tool_result_count(), follow) {
            (0, _) => Step::Reply(Reply::tool("Write", json!({"file_path": "a.txt", "content": "a\n"}))),
            (1, false) => Step::Reply(Reply::text("first done").stop(StopReason::EndTurn)),
            (1, true) => Step::Reply(Reply::tool("Write", json!({"file_path": "b.txt", "content": "b\n"}))),
            _ => Step::Reply(Reply::text("second done").stop(StopReason::EndTurn)),
        }
    }));
    let mut home = TestHome::new();
    home.write_config(&format!("keep-worktrees: {keep_worktrees}\n"));
    home.start_with_model(&model);
    let repo = home.git_repo("app");
    let id = id_of(&home.json(&["task", "new", "write a", "--repo", repo.to_str().unwrap(), "--json"]));
    assert_eq!(home.wait_ended(&[&id], WITHIN)[0]["status"], "Completed");
    let branch = format!("neuraphage/{id}");
    let git = git2::Repository::open(&repo).unwrap();
    let first = git.revparse_single(&branch).unwrap().id();
    assert_eq!(file_on_branch(&repo, &branch, "b.txt"), None);
    let worktree = home.paths.home.join("tasks").join(&id).join("worktree");
    assert_eq!(worktree.is_dir(), keep_worktrees);
    let sent = home.json(&["task", "send", &id, "now write b.txt", "--json"]);
    assert_eq!(sent["delivery"], "follow-up: queued again");
    let done = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(done["status"], "Completed", "{done:#}");
    assert_eq!(done["status_detail"]["summary"], "second done");
    // The follow-up went on from the conversation (one conversation, the first turn in it) and the branch.
    let second = git.revparse_single(&branch).unwrap().id();
    assert_ne!(first, second);
    assert!(git.graph_descendant_of(second, first).unwrap(), "the first commit is an ancestor of the follow-up's");
    assert_eq!(file_on_branch(&repo, &branch, "a.txt").as_deref(), Some("a\n"));
    assert_eq!(file_on_branch(&repo, &branch, "b.txt").as_deref(), Some("b\n"));
    let log = home.ok(&["task", "log", &id, "--json"]);
    assert!(log.contains("first done") && log.contains("now write b.txt"), "{log}");
}

#[test]
fn a_follow_up_to_a_completed_task_continues_its_branch() {
    follow_up(true);
}

#[test]
fn a_follow_up_continues_its_branch_without_kept_worktrees() {
    follow_up(false);
}

#[test]
fn a_waiting_task_does_not_hold_the_only_slot() {
    let model = Model::start(policy(|r| {
        let asker = r.first_user_text().unwrap_or_default().contains("asker");
        match (asker, r.tool_result_count()) {
            (true, 0) => ask(),
            _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
        }
    }));
    let mut home = TestHome::new();
    home.write_config("max-concurrent: 1\n");
    home.start_with_model(&model);
    let (asker, worker) = asked(&home, "the asker");
    wait_gone(worker);
    // With one slot, held by nobody while the asker waits, a queued task runs to its end.
    let other = id_of(&home.json(&["task", "new", "the other", "--json"]));
    assert_eq!(home.wait_ended(&[&other], WITHIN)[0]["status"], "Completed");
    assert_eq!(home.show(&asker)["status"], "WaitingForUser");
    home.ok(&["task", "answer", &asker, "red"]);
    assert_eq!(home.wait_ended(&[&asker], WITHIN)[0]["status"], "Completed");
    assert!(sent_to_model(&model, "The user chose option 1: red"));
}

#[test]
fn kill_9_of_the_supervisor_while_a_task_waits_loses_neither_question_nor_answer() {
    let model = asking_model();
    let mut home = TestHome::new();
    let supervisor = home.start_with_model(&model);
    let (id, _) = asked(&home, "ask across crashes");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    home.kill9_supervisors();
    let supervisor = home.start_with_model(&model);
    // After the restart the task still waits, with its prompt, and takes its answer.
    let waiting = home.json(&["waiting", "--json"]);
    assert_eq!(waiting[0]["id"], id.as_str());
    assert!(waiting[0]["prompt"].as_str().unwrap().starts_with("Which colour?"));
    let sent = home.json(&["task", "answer", &id, "something green", "--json"]);
    assert_eq!(sent["delivery"], "answer to the question");
    // Acknowledged means stored: killed right after the reply, the answer is still there.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    home.kill9_supervisors();
    home.start_with_model(&model);
    assert_eq!(home.wait_ended(&[&id], WITHIN)[0]["status"], "Completed");
    assert!(sent_to_model(&model, "The user answered: something green"));
}

#[test]
fn kill_9_of_the_worker_as_it_asks_loses_neither_question_nor_answer() {
    let model = asking_model();
    let mut home = TestHome::new();
    let mut env = model.env();
    env.push(("NEURAPHAGE_TEST_PAUSE_AFTER".to_owned(), "tool_started".to_owned()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    home.start_supervisor_with(&pairs);
    let id = id_of(&home.json(&["task", "new", "ask, then die", "--json"]));
    // The worker pauses right after the AskUser call's tool_started checkpoint: kill it there.
    let worker = home.worker_in_tool(&id, WITHIN);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    // A new worker asks again: the question is not lost.
    let shown = home.wait_status(&id, "WaitingForUser", WITHIN);
    assert!(shown["status_detail"]["prompt"].as_str().unwrap().starts_with("Which colour?"));
    assert!(event_kinds(&shown).contains(&"worker_lost".to_owned()), "the control: the worker did die");
    home.ok(&["task", "send", &id, "blue"]);
    assert_eq!(home.wait_ended(&[&id], WITHIN)[0]["status"], "Completed");
    assert!(sent_to_model(&model, "The user chose option 2: blue"));
}

#[test]
fn an_acknowledged_pause_survives_kill_9_of_the_supervisor_before_the_next_checkpoint() {
    let model = Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({"command": "sleep 4; echo slept"}))),
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let id = id_of(&home.json(&["task", "new", "a long command", "--json"]));
    let worker = home.worker_in_tool(&id, WITHIN);
    let out = home.ok(&["task", "pause", &id]);
    assert!(out.contains("pausing at its next checkpoint"), "{out}");
    // Acknowledged, then the supervisor dies while the command still runs (no checkpoint since the pause).
    home.kill9_supervisors();
    wait_gone(worker);
    let requests = model.double.requests().len();
    home.start_with_model(&model);
    let shown = home.wait_status(&id, "Paused", WITHIN);
    assert_eq!(shown["status"], "Paused", "{shown:#}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(model.double.requests().len(), requests, "a paused task makes no model call after the restart");
    // Control: the pause is spent; resume runs the task to its end.
    assert_eq!(home.json(&["task", "resume", &id, "--json"])["status"], "Queued");
    assert_eq!(home.wait_ended(&[&id], WITHIN)[0]["status"], "Completed");
}

#[test]
fn pause_and_resume() {
    let model = Model::start(policy(|r| {
        let asker = r.first_user_text().unwrap_or_default().contains("asker");
        match (asker, r.tool_result_count()) {
            (true, 0) => ask(),
            (false, 0) => Step::Reply(Reply::tool("Bash", json!({"command": "sleep 1; echo slept"}))),
            _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
        }
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    // A running task stops at its next checkpoint, its worker gone; resume goes on from there.
    let id = id_of(&home.json(&["task", "new", "a runner", "--json"]));
    let worker = home.worker_in_tool(&id, WITHIN);
    let out = home.ok(&["task", "pause", &id]);
    assert!(out.contains("pausing at its next checkpoint"), "{out}");
    home.wait_status(&id, "Paused", WITHIN);
    wait_gone(worker);
    let requests = model.double.requests().len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(model.double.requests().len(), requests, "a paused task makes no model call");
    let resumed = home.json(&["task", "resume", &id, "--json"]);
    assert_eq!(resumed["status"], "Queued");
    assert_eq!(home.wait_ended(&[&id], WITHIN)[0]["status"], "Completed");
    let outputs = home.tool_outputs(&id);
    assert!(outputs.len() == 1 && outputs[0].contains("slept"), "the tool ran once: {outputs:?}");
    // A waiting task pauses at once (here by the special message); an answer while paused is kept for the resume.
    let (asker, _) = asked(&home, "the asker");
    let sent = home.json(&["task", "send", &asker, "/pause", "--json"]);
    assert_eq!(sent["delivery"], "paused");
    assert_eq!(home.show(&asker)["status"], "Paused");
    let sent = home.json(&["task", "send", &asker, "red", "--json"]);
    assert!(sent["delivery"].as_str().unwrap().contains("stays Paused"), "{sent:#}");
    assert_eq!(home.show(&asker)["status"], "Paused");
    let (code, err) = home.fails(&["task", "resume", &id]);
    assert!(code != 0 && err.contains("only a Paused task"), "{err}");
    home.ok(&["task", "resume", &asker]);
    assert_eq!(home.wait_ended(&[&asker], WITHIN)[0]["status"], "Completed");
    assert!(sent_to_model(&model, "The user chose option 1: red"));
}

#[test]
fn bad_input_changes_nothing() {
    let model = asking_model();
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let (asker, _) = asked(&home, "ask me");
    let rows = |home: &TestHome| -> (i64, i64) {
        let store = home.open_store();
        let inbox = store.query_row("SELECT count(*) FROM inbox", [], |r| r.get(0)).unwrap();
        let events = store.query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap();
        (inbox, events)
    };
    let before = rows(&home);
    // Unknown task.
    let (_, err) = home.fails(&["task", "send", "np-0000000000", "hello"]);
    assert!(err.contains("no task has the id"), "{err}");
    // Oversized, through the CLI (stdin) and past it (a raw request).
    let big = "x".repeat(64 * 1024 + 1);
    let mut child = home
        .cli()
        .args(["task", "send", &asker, "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), big.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("64 KiB"));
    let mut raw = RawClient::connect(&home.paths).unwrap();
    raw.handshake().unwrap();
    match raw.call(1, ControlRequest::SendMessage { task: asker.clone(), text: big }).unwrap() {
        ControlReply::Error(e) => assert!(e.code == ErrorCode::InvalidArgument && e.message.contains("65537 bytes")),
        other => panic!("an oversized message was accepted: {other:?}"),
    }
    match raw.call(2, ControlRequest::SendMessage { task: asker.clone(), text: " \n".into() }).unwrap() {
        ControlReply::Error(e) => assert_eq!(e.code, ErrorCode::InvalidArgument),
        other => panic!("an empty message was accepted: {other:?}"),
    }
    assert_eq!(rows(&home), before, "nothing was stored");
    assert_eq!(home.show(&asker)["status"], "WaitingForUser");
    let (_, err) = home.fails(&["task", "pause", "np-0000000000"]);
    assert!(err.contains("no task has the id"), "{err}");
    // The control: the same answer, well formed, is taken.
    home.ok(&["task", "answer", &asker, "red"]);
    assert_eq!(home.wait_ended(&[&asker], WITHIN)[0]["status"], "Completed");
    // An answer with no question pending is refused and changes nothing.
    let before = rows(&home);
    let (_, err) = home.fails(&["task", "answer", &asker, "red"]);
    assert!(err.contains("no question pending"), "{err}");
    assert_eq!(rows(&home), before);
    assert_eq!(home.show(&asker)["status"], "Completed");
}

#[test]
fn a_question_asked_beside_another_call_keeps_that_calls_result() {
    // One turn: a Bash call, then the question. The Bash call runs once; its result survives the parking and the
    // new worker, which runs only the question again.
    let model = Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(
            Reply::tool("Bash", json!({"command": "echo run >> runs.txt; echo ran"}))
                .with_tool("AskUser", json!({"question": "Which colour?", "options": ["red", "blue"]})),
        ),
        _ => Step::Reply(Reply::text("thanks").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let repo = home.git_repo("app");
    let id = id_of(&home.json(&["task", "new", "run, then ask", "--repo", repo.to_str().unwrap(), "--json"]));
    home.wait_status(&id, "WaitingForUser", WITHIN);
    home.ok(&["task", "answer", &id, "blue"]);
    assert_eq!(home.wait_ended(&[&id], WITHIN)[0]["status"], "Completed");
    let runs = file_on_branch(&repo, &format!("neuraphage/{id}"), "runs.txt");
    assert_eq!(runs.as_deref(), Some("run\n"), "the Bash call ran exactly once");
    let last = model.double.requests().last().cloned().unwrap();
    let results: Vec<String> = last
        .messages()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_result")
        .map(|b| b["content"].to_string())
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results[0].contains("ran") && results[1].contains("The user chose option 2: blue"), "{results:?}");
}

#[test]
fn a_hostile_question_is_printed_escaped() {
    let model = Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("AskUser", json!({"question": "Pick\u{1b}]0;pwned\u{7} one\u{1b}[2J"}))),
        _ => Step::Reply(Reply::text("thanks").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let id = id_of(&home.json(&["task", "new", "ask something nasty", "--json"]));
    let shown = home.wait_status(&id, "WaitingForUser", WITHIN);
    // The control: the prompt as stored holds the terminal controls.
    assert!(shown["status_detail"]["prompt"].as_str().unwrap().contains('\u{1b}'));
    for args in [&["waiting"][..], &["waiting", "--json"][..], &["task", "show", &id][..]] {
        let out = home.ok(args);
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{args:?} printed a terminal control: {out:?}");
        assert!(out.contains("pwned"), "{args:?}: {out}");
    }
}
