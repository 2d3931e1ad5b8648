//! Tasks run for real: the supervisor starts the broker and one sandboxed worker per task, each in its own worktree,
//! with the LLM test double answering over real HTTP.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use neuraphage_llm_double::{DemoPolicy, NOTES_FILE, Reply, Step, StopReason, StreamFault, policy};
use neuraphage_tests::{Model, TEST_API_KEY, TestHome, alive, file_on_branch};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(90);

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[test]
fn a_task_edits_its_worktree_completes_and_its_work_is_on_its_branch() {
    let model = Model::start(DemoPolicy.policy());
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let repo = home.git_repo("app");
    let task = home.json(&["task", "new", "write the notes", "--repo", repo.to_str().unwrap(), "--json"]);
    let id = id_of(&task);
    let done = &home.wait_ended(&[&id], WITHIN)[0];
    assert_eq!(done["status"], "Completed", "{done:#}");
    let branch = format!("neuraphage/{id}");
    assert_eq!(done["branch"], branch.as_str());
    // The work is committed on the task's branch; the user's checkout is untouched.
    let notes = file_on_branch(&repo, &branch, NOTES_FILE).expect("the notes file is on the branch");
    assert!(notes.contains("write the notes"), "{notes}");
    assert!(!repo.join(NOTES_FILE).exists(), "the user's checkout must not change");
    let head = git2::Repository::open(&repo).unwrap().head().unwrap().shorthand().unwrap().to_owned();
    assert_eq!(head, "master", "the user's HEAD stays on its branch");
    // task diff shows the change; task log shows the conversation.
    let diff = home.ok(&["task", "diff", &id]);
    assert!(diff.contains(&format!("+++ b/{NOTES_FILE}")), "{diff}");
    let log = home.json(&["task", "log", &id, "--json"]);
    let messages = log["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "user");
    let tools_used: BTreeSet<&str> = messages
        .iter()
        .flat_map(|m| m["content"].as_array().unwrap())
        .filter(|b| b["type"] == "tool_use")
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools_used, BTreeSet::from(["Bash", "Glob", "Grep", "Read", "Write"]));
    // The broker called the provider with the key; each request carried the tools.
    let requests = model.double.requests();
    assert!(requests.len() >= 6);
    assert!(requests.iter().all(|r| r.header("x-api-key") == Some(TEST_API_KEY)));
}

#[test]
fn the_conversation_repository_has_one_commit_per_checkpoint() {
    let model = Model::start(DemoPolicy.policy());
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let repo = home.git_repo("app");
    let id = id_of(&home.json(&["task", "new", "count the commits", "--repo", repo.to_str().unwrap(), "--json"]));
    home.wait_ended(&[&id], WITHIN);
    let conversation = git2::Repository::open(home.paths.home.join("tasks").join(&id).join("conversation")).unwrap();
    let mut walk = conversation.revwalk().unwrap();
    walk.push_head().unwrap();
    let commits = walk.count() as i64;
    let checkpoints: i64 =
        home.open_store().query_row("SELECT count(*) FROM checkpoints WHERE task = ?1", [&id], |r| r.get(0)).unwrap();
    // 6 model turns (request + response each), 5 tools (start + end each), and the end.
    assert_eq!(checkpoints, 6 * 2 + 5 * 2 + 1);
    assert_eq!(commits, checkpoints);
    let kinds: Vec<String> = home
        .open_store()
        .prepare("SELECT kind FROM checkpoints WHERE task = ?1 ORDER BY seq")
        .unwrap()
        .query_map([&id], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(&kinds[..4], ["request_sent", "response_received", "tool_started", "tool_completed"]);
    assert_eq!(kinds.last().unwrap(), "task_ended");
}

#[test]
fn five_tasks_on_one_repo_run_at_once_and_none_sees_anothers_files() {
    // Each task writes a file named after itself, then tries to read every other task's worktree through Bash.
    let model = Model::start(policy(|r| {
        let task = r.first_user_text().unwrap_or_default();
        let me = task.split_whitespace().last().unwrap_or("x").to_owned();
        match r.tool_result_count() {
            0 => Step::Reply(Reply::tool("Write", json!({"file_path": format!("{me}.txt"), "content": me}))),
            1 => Step::Reply(Reply::tool(
                "Bash",
                json!({"command": "for f in ../../*/worktree/*.txt; do cat \"$f\" && echo \" READ:$f\"; done; echo done"}),
            )),
            _ => Step::Reply(Reply::text("finished").stop(StopReason::EndTurn)),
        }
    }));
    let mut home = TestHome::new();
    home.write_config("max-concurrent: 5\n");
    home.start_with_model(&model);
    let repo = home.git_repo("app");
    let ids: Vec<String> = (0..5)
        .map(|i| {
            id_of(&home.json(&[
                "task",
                "new",
                &format!("isolated task t{i}"),
                "--repo",
                repo.to_str().unwrap(),
                "--json",
            ]))
        })
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for t in home.wait_ended(&refs, WITHIN) {
        assert_eq!(t["status"], "Completed", "{t:#}");
    }
    for (i, id) in ids.iter().enumerate() {
        let log = home.json(&["task", "log", id, "--json"]);
        let results: Vec<String> = log["messages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["content"].as_array().unwrap().clone())
            .filter(|b| b["type"] == "tool_result")
            .map(|b| b["content"].as_str().unwrap().to_owned())
            .collect();
        let listing = &results[1];
        assert!(listing.contains("done"), "{listing}");
        for j in (0..5).filter(|j| *j != i) {
            assert!(!listing.contains(&format!("t{j} READ")), "task t{i} read task t{j}'s worktree: {listing}");
        }
        let mine = file_on_branch(&repo, &format!("neuraphage/{id}"), &format!("t{i}.txt"));
        assert_eq!(mine.as_deref(), Some(format!("t{i}").as_str()));
    }
    // The control: outside the sandbox, the same files are plainly readable.
    let readable = std::fs::read_dir(home.paths.home.join("tasks")).unwrap().count();
    assert_eq!(readable, 5);
}

#[test]
fn max_concurrent_is_respected_and_after_orders_tasks() {
    let model = Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({"command": "sleep 0.3; echo slept"}))),
        _ => Step::Reply(Reply::text("ok").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    home.write_config("max-concurrent: 2\n");
    home.start_with_model(&model);
    let first = id_of(&home.json(&["task", "new", "first", "--json"]));
    let mut ids = vec![first.clone()];
    for i in 0..4 {
        ids.push(id_of(&home.json(&["task", "new", &format!("task {i}"), "--json"])));
    }
    let after = id_of(&home.json(&["task", "new", "after the first", "--after", &first, "--priority", "0", "--json"]));
    ids.push(after.clone());
    let deadline = Instant::now() + WITHIN;
    let mut most = 0;
    loop {
        let running = home.json(&["task", "list", "--status", "running", "--json"]).as_array().unwrap().len();
        most = most.max(running);
        let done = home.json(&["task", "list", "--status", "completed", "--json"]).as_array().unwrap().len();
        if done == ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "tasks did not complete");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(most <= 2, "{most} tasks ran at once with max-concurrent: 2");
    assert!(most >= 1);
    // `after` started only once `first` had completed (event sequence numbers are global).
    let completed_seq = home.show(&first)["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "status_changed" && e["data"]["to"]["status"] == "Completed")
        .map(|e| e["seq"].as_u64().unwrap())
        .unwrap();
    let started_seq = home.show(&after)["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "worker_started")
        .map(|e| e["seq"].as_u64().unwrap())
        .unwrap();
    assert!(started_seq > completed_seq, "started at #{started_seq}, its blocker completed at #{completed_seq}");
}

#[test]
fn a_task_that_runs_env_sees_no_api_key() {
    let model = Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({"command": "env; cat /proc/self/environ | tr '\\0' '\\n'"}))),
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let id = id_of(&home.json(&["task", "new", "print the environment", "--json"]));
    assert_eq!(home.wait_ended(&[&id], WITHIN)[0]["status"], "Completed");
    let log = home.ok(&["task", "log", &id, "--json"]);
    assert!(log.contains("NEURAPHAGE_TASK="), "the control: env did run and print: {log}");
    assert!(!log.contains(TEST_API_KEY), "the API key reached the task: {log}");
    assert!(!log.contains("ANTHROPIC"), "{log}");
}

#[test]
fn malformed_streams_and_bad_tool_arguments_end_in_clear_messages() {
    let model = Model::start(policy(|r| {
        let task = r.first_user_text().unwrap_or_default();
        if task.contains("garbage") {
            let reply = Reply::text("this stream breaks");
            return Step::Fault { reply, fault: StreamFault::Malformed { after_events: 2, raw: None } };
        }
        match r.tool_result_count() {
            0 => Step::Reply(Reply::tool("Read", json!({"file_path": 42}))),
            1 => Step::Reply(Reply::tool("NoSuchTool", json!({}))),
            _ => Step::Reply(Reply::text("recovered").stop(StopReason::EndTurn)),
        }
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let bad_stream = id_of(&home.json(&["task", "new", "garbage stream", "--json"]));
    let bad_args = id_of(&home.json(&["task", "new", "bad arguments", "--json"]));
    let ended = home.wait_ended(&[&bad_stream, &bad_args], WITHIN);
    assert_eq!(ended[0]["status"], "Failed", "{:#}", ended[0]);
    let error = ended[0]["status_detail"]["error"].as_str().unwrap();
    assert!(error.contains("model call failed") && error.to_lowercase().contains("malformed"), "{error}");
    assert_eq!(ended[1]["status"], "Completed", "{:#}", ended[1]);
    let log = home.json(&["task", "log", &bad_args, "--json"]);
    let errors: Vec<&Value> = log["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().unwrap())
        .filter(|b| b["type"] == "tool_result")
        .collect();
    assert_eq!(errors.len(), 2);
    assert!(errors.iter().all(|b| b["is_error"] == true), "{errors:#?}");
    assert!(errors[0]["content"].as_str().unwrap().contains("file_path"), "{:#}", errors[0]);
    assert!(errors[1]["content"].as_str().unwrap().contains("NoSuchTool"), "{:#}", errors[1]);
}

#[test]
fn kill_9_of_one_worker_leaves_the_others_running_and_a_new_worker_resumes_it() {
    let model = Model::start(policy(|r| {
        let task = r.first_user_text().unwrap_or_default();
        match r.tool_result_count() {
            0 if task.contains("victim") => Step::Reply(Reply::tool("Bash", json!({"command": "sleep 60"}))),
            0 => Step::Reply(Reply::tool("Bash", json!({"command": "sleep 1; echo survived"}))),
            _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
        }
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let victim = id_of(&home.json(&["task", "new", "victim", "--json"]));
    let others: Vec<String> =
        (0..2).map(|i| id_of(&home.json(&["task", "new", &format!("other {i}"), "--json"]))).collect();
    // Wait for the victim's worker, then kill -9 it.
    let pid = home.worker_in_tool(&victim, WITHIN) as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let refs: Vec<&str> = others.iter().map(String::as_str).collect();
    for t in home.wait_ended(&refs, WITHIN) {
        assert_eq!(t["status"], "Completed", "{t:#}");
    }
    // The victim's worker is replaced and resumes from its last checkpoint: told the killed Bash call's outcome is
    // unknown (it is not re-run), it then finishes.
    let v = &home.wait_ended(&[&victim], WITHIN)[0];
    assert_eq!(v["status"], "Completed", "{v:#}");
    assert!(!alive(pid as u32));
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.iter().filter(|e| e["kind"] == "worker_lost").count(), 1, "{events:#?}");
    assert_eq!(events.iter().filter(|e| e["kind"] == "worker_started").count(), 2);
    let log = home.ok(&["task", "log", &victim, "--json"]);
    assert!(log.contains("outcome of this Bash call is unknown"), "{log}");
}

#[test]
fn keys_come_from_a_private_api_keys_yaml_and_a_readable_one_is_refused() {
    let model =
        Model::start(policy(|_| Step::Reply(Reply::text("hello from the file's key").stop(StopReason::EndTurn))));
    let keys = format!(
        "providers:\n  - provider: anthropic\n    api-key: {TEST_API_KEY}\n    base-url: {}\n",
        model.double.anthropic_base_url()
    );
    for (mode, works) in [(0o600, true), (0o644, false)] {
        let mut home = TestHome::new();
        home.write_config("");
        let path = home.paths.home.join("api-keys.yaml");
        std::fs::write(&path, &keys).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        home.start_supervisor(); // no key in the environment
        let id = id_of(&home.json(&["task", "new", "say hello", "--json"]));
        let t = &home.wait_ended(&[&id], WITHIN)[0];
        if works {
            assert_eq!(t["status"], "Completed", "{t:#}");
            assert!(t["status_detail"]["summary"].as_str().unwrap().contains("file's key"));
        } else {
            assert_eq!(t["status"], "Failed", "{t:#}");
            let error = t["status_detail"]["error"].as_str().unwrap();
            assert!(error.contains("no model provider"), "{error}");
            let log = std::fs::read_to_string(home.paths.home.join("logs/broker.log")).unwrap();
            assert!(log.contains("chmod 600"), "{log}");
        }
    }
}

#[test]
fn killing_a_running_task_stops_its_worker() {
    let model = Model::start(policy(|_| Step::Reply(Reply::tool("Bash", json!({"command": "sleep 30"})))));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let id = id_of(&home.json(&["task", "new", "run long", "--json"]));
    let pid = home.worker_in_tool(&id, WITHIN);
    assert!(alive(pid));
    let killed = home.json(&["task", "kill", &id, "--json"]);
    assert_eq!(killed["status"], "Cancelled");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "the worker outlived its cancelled task");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The supervisor records the exit just after the process is gone: wait for the event, not for the process.
    let exited =
        |shown: &serde_json::Value| shown["events"].as_array().unwrap().iter().any(|e| e["kind"] == "worker_exited");
    let mut shown = home.show(&id);
    while !exited(&shown) {
        assert!(Instant::now() < deadline, "no worker_exited event: {shown:#}");
        std::thread::sleep(Duration::from_millis(20));
        shown = home.show(&id);
    }
    assert_eq!(shown["status"], "Cancelled", "the worker's end must not overwrite Cancelled");
}

#[test]
fn a_graceful_restart_requeues_running_tasks_and_they_resume() {
    // First turn: a slow Bash call; after it, the task ends. The supervisor stops while the tool runs.
    let model = Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({"command": "sleep 2; echo first"}))),
        _ => Step::Reply(Reply::text("resumed and finished").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    let pid = home.start_with_model(&model);
    let id = id_of(&home.json(&["task", "new", "survive a restart", "--json"]));
    let deadline = Instant::now() + WITHIN;
    while !home.show(&id)["status_detail"]["phase"]["ToolExecution"].is_object() {
        assert!(Instant::now() < deadline, "the task never reached its tool");
        std::thread::sleep(Duration::from_millis(20));
    }
    TestHome::terminate(pid);
    assert!(home.wait_supervisors()[0].success());
    assert_eq!(home.show_offline(&id), "Queued", "a running task goes back to the queue on a graceful stop");
    home.start_with_model(&model);
    let t = &home.wait_ended(&[&id], WITHIN)[0];
    assert_eq!(t["status"], "Completed", "{t:#}");
    // The interrupted Bash call was not silently re-run: the model was told its outcome is unknown.
    let log = home.ok(&["task", "log", &id, "--json"]);
    assert!(log.contains("outcome of this Bash call is unknown"), "{log}");
}

#[test]
fn a_failed_task_can_be_retried_and_its_dependents_follow() {
    // The first model call is refused (HTTP 400: not retried), so the task fails; the retry finishes. The
    // dependent waits, blocked, then runs.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let model = Model::start(policy(move |r| {
        let task = r.first_user_text().unwrap_or_default();
        if task.contains("flaky") && calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return Step::HttpError(neuraphage_llm_double::HttpError::new(400).message("scripted refusal"));
        }
        Step::Reply(Reply::text("done").stop(StopReason::EndTurn))
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let flaky = id_of(&home.json(&["task", "new", "flaky", "--json"]));
    let after = id_of(&home.json(&["task", "new", "after it", "--after", &flaky, "--json"]));
    let ended = home.wait_ended(&[&flaky, &after], WITHIN);
    assert_eq!(ended[0]["status"], "Failed", "{:#}", ended[0]);
    assert!(ended[0]["status_detail"]["error"].as_str().unwrap().contains("scripted refusal"), "{:#}", ended[0]);
    assert_eq!(ended[1]["status"], "Blocked", "{:#}", ended[1]);
    let (code, stderr) = home.fails(&["task", "retry", &after]);
    assert_eq!(code, 1);
    assert!(stderr.contains("only a Failed, WaitingForUser or Paused task can be retried"), "{stderr}");
    assert_eq!(home.json(&["task", "retry", &flaky, "--json"])["status"], "Queued");
    let ended = home.wait_ended(&[&flaky], WITHIN);
    assert_eq!(ended[0]["status"], "Completed", "{:#}", ended[0]);
    let deadline = Instant::now() + WITHIN;
    while home.show(&after)["status"] != "Completed" {
        assert!(Instant::now() < deadline, "the dependent never ran: {:#}", home.show(&after));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_broker_crash_fails_no_task() {
    // Replies trickle out slowly, so the first call is in flight when the broker is killed.
    let model = Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(
            Reply::text("a slow answer that streams in many small pieces")
                .chunk_chars(2)
                .delay(Duration::from_millis(100)),
        ),
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    let supervisor = home.start_with_model(&model);
    let id = id_of(&home.json(&["task", "new", "outlive the broker", "--json"]));
    let deadline = Instant::now() + WITHIN;
    while model.double.requests().is_empty() {
        assert!(Instant::now() < deadline, "the task never called the model");
        std::thread::sleep(Duration::from_millis(10));
    }
    let old = neuraphage_tests::children_named(supervisor, "neuraphage-brok");
    assert_eq!(old.len(), 1, "{old:?}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old[0] as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let t = &home.wait_ended(&[&id], WITHIN)[0];
    assert_eq!(t["status"], "Completed", "{t:#}");
    let new = neuraphage_tests::children_named(supervisor, "neuraphage-brok");
    assert_eq!(new.len(), 1);
    assert_ne!(new, old, "a new broker runs");
    assert!(model.double.requests().len() >= 2, "the interrupted call was sent again");
    // A task created after the restart runs too.
    let later = id_of(&home.json(&["task", "new", "after the restart", "--json"]));
    assert_eq!(home.wait_ended(&[&later], WITHIN)[0]["status"], "Completed");
}

#[test]
fn after_a_crash_mid_tool_only_the_started_call_is_unknown_and_later_calls_run() {
    let model = Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(
            Reply::tool("Bash", json!({"command": "echo a >> a.txt; sleep 30"}))
                .with_tool("Bash", json!({"command": "echo b >> b.txt"})),
        ),
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let repo = home.git_repo("app");
    let id = id_of(&home.json(&["task", "new", "two calls", "--repo", repo.to_str().unwrap(), "--json"]));
    let pid = home.worker_in_tool(&id, WITHIN) as i32;
    std::thread::sleep(Duration::from_millis(200)); // let `echo a` run
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let t = &home.wait_ended(&[&id], WITHIN)[0];
    assert_eq!(t["status"], "Completed", "{t:#}");
    let log = home.json(&["task", "log", &id, "--json"]);
    let results: Vec<Value> = log["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().unwrap().clone())
        .filter(|b| b["type"] == "tool_result")
        .collect();
    assert_eq!(results.len(), 2, "{results:#?}");
    assert!(results[0]["content"].as_str().unwrap().contains("unknown"), "{:#}", results[0]);
    assert_eq!(results[1]["is_error"], false, "the call that never started runs normally: {:#}", results[1]);
    let branch = format!("neuraphage/{id}");
    assert_eq!(file_on_branch(&repo, &branch, "a.txt").as_deref(), Some("a\n"), "the started call ran once");
    assert_eq!(file_on_branch(&repo, &branch, "b.txt").as_deref(), Some("b\n"), "the later call ran once");
}
