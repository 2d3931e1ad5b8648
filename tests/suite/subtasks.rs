//! Sub-tasks (issue 16, "Sub-tasks"), against the LLM double: a parent's `Task` calls make children on branches from
//! the parent's branch as it stands (its uncommitted work committed first), the children run in parallel while the
//! parent waits without a worker, and their outcomes (summary, branch, diff stat) are the calls' results; depth and
//! the live-descendant cap are refused with the limit named; killing a parent cancels its children; a parent waiting
//! across a supervisor `kill -9` resumes when its child ends and nothing runs twice; a child's permission request
//! names its parent. Every check reads what the double was sent or what the store and the CLI say.

use std::time::{Duration, Instant};

use neuraphage_llm_double::{RecordedRequest, Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome, file_on_branch};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(120);

fn new_task(home: &TestHome, description: &str, repo: Option<&std::path::Path>) -> String {
    let mut args = vec!["task", "new", description, "--json"];
    let repo = repo.map(|r| r.to_str().unwrap().to_owned());
    if let Some(r) = &repo {
        args.extend(["--repo", r.as_str()]);
    }
    home.json(&args)["id"].as_str().unwrap().to_owned()
}

fn task_of(r: &RecordedRequest) -> String {
    r.first_user_text().unwrap_or_default()
}

/// The requests the double received for the task whose description starts with `prefix`, in order.
fn requests_of(model: &Model, prefix: &str) -> Vec<RecordedRequest> {
    model.double.requests().into_iter().filter(|r| task_of(r).starts_with(prefix)).collect()
}

fn children(home: &TestHome, parent: &str) -> Vec<String> {
    home.show(parent)["children"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WITHIN;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until the task has ended (Completed, Failed, Cancelled: a waiting parent is Blocked meanwhile); its show.
fn wait_done(home: &TestHome, id: &str) -> Value {
    let mut shown = Value::Null;
    wait_for(&format!("{id} to end"), || {
        shown = home.show(id);
        matches!(shown["status"].as_str(), Some("Completed" | "Failed" | "Cancelled"))
    });
    shown
}

fn end(text: impl Into<String>) -> Step {
    Step::Reply(Reply::text(text).stop(StopReason::EndTurn))
}

#[test]
fn a_parent_waits_for_two_parallel_children_on_its_branch_and_gets_their_outcomes() {
    let model = Model::start(policy(|r| {
        let task = task_of(r);
        let n = r.tool_result_count();
        if task.starts_with("parent") {
            match n {
                0 => Step::Reply(Reply::tool(
                    "Write",
                    json!({"file_path": "from-parent.txt", "content": "parent wrote this\n"}),
                )),
                1 => Step::Reply(
                    Reply::new()
                        .with_tool("Task", json!({"description": "child A: add a.txt"}))
                        .with_tool("Task", json!({"description": "child B: add b.txt"})),
                ),
                _ => end(format!("both done: {}", r.tool_results()[1..].join(" | "))),
            }
        } else {
            let name = if task.starts_with("child A") { "a" } else { "b" };
            match n {
                // Slow enough that both children are on the double at once.
                0 => Step::Reply(
                    Reply::tool("Read", json!({"file_path": "from-parent.txt"})).delay(Duration::from_secs(2)),
                ),
                1 => {
                    Step::Reply(Reply::tool("Write", json!({"file_path": format!("{name}.txt"), "content": "x\ny\n"})))
                }
                _ => end(format!("child {name} finished")),
            }
        }
    }));
    let mut home = TestHome::new();
    let repo = home.git_repo("repo");
    home.start_with_model(&model);
    let parent = new_task(&home, "parent: split the work", Some(&repo));
    let done = &wait_done(&home, &parent);
    assert_eq!(done["status"], "Completed", "{done:#}");

    let kids = children(&home, &parent);
    assert_eq!(kids.len(), 2, "{kids:?}");
    for kid in &kids {
        let shown = home.show(kid);
        assert_eq!(shown["status"], "Completed", "{shown:#}");
        assert_eq!(shown["parent"], parent.as_str());
        // Made from the parent's branch as it stood: the parent's uncommitted file is on the child's branch.
        let branch = format!("neuraphage/{kid}");
        assert_eq!(file_on_branch(&repo, &branch, "from-parent.txt").as_deref(), Some("parent wrote this\n"));
    }
    // Each child read the parent's file in its own worktree.
    for prefix in ["child A", "child B"] {
        let reqs = requests_of(&model, prefix);
        assert!(reqs.last().unwrap().tool_results()[0].contains("parent wrote this"), "{prefix}");
    }
    // In parallel: each child's first request came before the other's last.
    let all = model.double.requests();
    let first = |p: &str| all.iter().position(|r| task_of(r).starts_with(p)).unwrap();
    let last = |p: &str| all.iter().rposition(|r| task_of(r).starts_with(p)).unwrap();
    assert!(
        first("child B") < last("child A") && first("child A") < last("child B"),
        "the children ran one after the other"
    );

    // The parent's last request holds both outcomes as the Task calls' results.
    let parent_reqs = requests_of(&model, "parent");
    assert_eq!(parent_reqs.len(), 3, "the parent's turns: write, two Task calls, and the one with the outcomes");
    let results = parent_reqs.last().unwrap().tool_results();
    assert_eq!(results.len(), 3, "{results:?}");
    for (result, name) in results[1..].iter().zip(["a", "b"]) {
        assert!(result.contains("completed") && result.contains(&format!("child {name} finished")), "{result}");
        assert!(result.contains("Branch: neuraphage/np-"), "{result}");
        assert!(result.contains("Changes: 1 file changed, +2 \u{2212}0"), "{result}");
    }
    // The parent waited Blocked (no worker, no WaitingForUser), and its events name its children.
    let shown = home.show(&parent);
    let kinds: Vec<&str> = shown["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "subtask_created").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "subtask_ended").count(), 2, "{kinds:?}");
    let blocked = shown["events"].as_array().unwrap().iter().any(|e| e["data"]["to"]["status"] == "Blocked");
    let asked = shown["events"].as_array().unwrap().iter().any(|e| e["data"]["to"]["status"] == "WaitingForUser");
    assert!(blocked && !asked, "{:#}", shown["events"]);
    // Costs roll up: the tree's cost counts all three tasks' responses.
    assert_eq!(shown["cost"]["responses"], 3);
    assert_eq!(shown["tree_cost"]["responses"], 9, "{:#}", shown["tree_cost"]);
    // `task list --tree` indents the children under their parent.
    let tree = home.ok(&["task", "list", "--tree"]);
    let at = |id: &str| tree.lines().position(|l| l.contains(id)).unwrap();
    assert!(kids.iter().all(|k| at(k) > at(&parent)), "{tree}");
    assert!(kids.iter().all(|k| tree.lines().nth(at(k)).unwrap().starts_with("  ")), "{tree}");
}

/// Each `level N` task starts `level N+1` and waits; it ends with what its Task call returned.
fn nesting_model() -> Model {
    Model::start(policy(|r| {
        let task = task_of(r);
        let level: u32 = task.trim_start_matches("level ").parse().unwrap_or(0);
        match r.tool_result_count() {
            0 => Step::Reply(Reply::tool("Task", json!({"description": format!("level {}", level + 1)}))),
            _ => end(format!("level {level} got: {}", r.tool_results()[0])),
        }
    }))
}

#[test]
fn depth_four_is_refused_with_the_limit_named() {
    let model = nesting_model();
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let top = new_task(&home, "level 1", None);
    let done = &wait_done(&home, &top);
    assert_eq!(done["status"], "Completed", "{done:#}");
    // Level 3's call was refused; levels 2 and 3 exist, level 4 never did.
    let refused = requests_of(&model, "level 3").last().unwrap().tool_results()[0].clone();
    assert!(refused.contains("depth 4") && refused.contains("max-subtask-depth 3"), "{refused}");
    assert!(requests_of(&model, "level 4").is_empty());
    let two = children(&home, &top);
    assert_eq!(two.len(), 1);
    let three = children(&home, &two[0]);
    assert_eq!(three.len(), 1);
    assert!(children(&home, &three[0]).is_empty());
    assert_eq!(home.task_ids().len(), 3);
    // The top's outcome carries its child's, which carries the refusal.
    let summary = done["status_detail"]["summary"].as_str().unwrap();
    assert!(summary.starts_with("level 1 got: Sub-task np-") && summary.contains("max-subtask-depth 3"), "{summary}");
}

#[test]
fn the_live_subtask_cap_is_refused_with_the_limit_named_and_a_result_can_be_asked() {
    let model = Model::start(policy(|r| {
        let task = task_of(r);
        if task.starts_with("capped") {
            match r.tool_result_count() {
                0 => Step::Reply(
                    Reply::new()
                        .with_tool("Task", json!({"description": "worker one", "wait": false}))
                        .with_tool("Task", json!({"description": "worker two", "wait": false})),
                ),
                _ => end("enough"),
            }
        } else {
            end("worker done")
        }
    }));
    let mut home = TestHome::new();
    home.write_config("max-subtasks: 1\n");
    home.start_with_model(&model);
    let top = new_task(&home, "capped parent", None);
    let done = &wait_done(&home, &top);
    assert_eq!(done["status"], "Completed", "{done:#}");
    let results = requests_of(&model, "capped").last().unwrap().tool_results();
    assert!(results[0].starts_with("Sub-task np-") && results[0].contains("TaskResult"), "{results:?}");
    assert!(results[1].contains("max-subtasks is 1"), "{results:?}");
    let kids = children(&home, &top);
    assert_eq!(kids.len(), 1);
    // A child not waited for ends with its parent: done first, or cancelled when its parent completed (a task's end
    // cancels its live sub-tasks) — which one is a race between the two tasks.
    let kid = &wait_done(&home, &kids[0]);
    match kid["status"].as_str() {
        Some("Completed") => {}
        Some("Cancelled") => {
            let reason = kid["status_detail"].to_string();
            assert!(reason.contains(&format!("its parent {top} ended (Completed)")), "{kid:#}");
        }
        _ => panic!("{kid:#}"),
    }
}

#[test]
fn killing_the_parent_cancels_its_children() {
    let model = Model::start(policy(|r| {
        let task = task_of(r);
        match (task.starts_with("boss"), r.tool_result_count()) {
            (true, 0) => Step::Reply(Reply::tool("Task", json!({"description": "slow child"}))),
            (true, _) => end("boss done"),
            (false, 0) => Step::Reply(Reply::tool("Bash", json!({"command": "sleep 60"}))),
            (false, _) => end("child done"),
        }
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let boss = new_task(&home, "boss", None);
    home.wait_status(&boss, "Blocked", WITHIN);
    wait_for("the child's first request", || !requests_of(&model, "slow child").is_empty());
    let kid = children(&home, &boss).remove(0);
    home.wait_status(&kid, "Running", WITHIN);
    home.ok(&["task", "kill", &boss]);
    let ended = [wait_done(&home, &kid)];
    assert_eq!(ended[0]["status"], "Cancelled", "{:#}", ended[0]);
    let reason = ended[0]["status_detail"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&boss), "the cancellation names the parent: {reason}");
    // The kill's own reason (the blocked parent had no session: its end's cascade must not come first).
    assert_eq!(reason, format!("its parent {boss} was killed"));
    assert_eq!(home.show(&boss)["status"], "Cancelled");
    assert_eq!(requests_of(&model, "slow child").len(), 1, "the child never went on");
}

#[test]
fn a_waiting_parent_survives_kill_9_and_resumes_once_its_child_ends_running_nothing_twice() {
    let model = Model::start(policy(|r| {
        let task = task_of(r);
        match (task.starts_with("durable parent"), r.tool_result_count()) {
            (true, 0) => Step::Reply(Reply::tool("Task", json!({"description": "durable child"}))),
            (true, _) => end(format!("parent got: {}", r.tool_results()[0])),
            (false, 0) => Step::Reply(Reply::tool("Write", json!({"file_path": "c.txt", "content": "c\n"}))),
            // The child's second turn is slow: the supervisor dies while it is in flight.
            (false, _) => {
                Step::Reply(Reply::text("child finished").stop(StopReason::EndTurn).delay(Duration::from_secs(3)))
            }
        }
    }));
    let mut home = TestHome::new();
    let repo = home.git_repo("repo");
    home.start_with_model(&model);
    let parent = new_task(&home, "durable parent", Some(&repo));
    home.wait_status(&parent, "Blocked", WITHIN);
    wait_for("the child's second request", || requests_of(&model, "durable child").len() == 2);
    home.kill9_supervisors();
    home.start_with_model(&model);
    let done = &wait_done(&home, &parent);
    assert_eq!(done["status"], "Completed", "{done:#}");
    let summary = done["status_detail"]["summary"].as_str().unwrap();
    assert!(summary.contains("completed") && summary.contains("child finished"), "{summary}");
    // One child, made once; the parent asked the model twice (before and after waiting), the child's unanswered
    // request was sent again once and its Write did not run again.
    let kids = children(&home, &parent);
    assert_eq!(kids.len(), 1, "{kids:?}");
    assert_eq!(requests_of(&model, "durable parent").len(), 2);
    let child_reqs = requests_of(&model, "durable child");
    assert_eq!(child_reqs.len(), 3, "two before the kill, the unanswered one again after");
    assert_eq!(child_reqs.last().unwrap().tool_results().len(), 1, "the Write ran once");
    assert_eq!(file_on_branch(&repo, &format!("neuraphage/{}", kids[0]), "c.txt").as_deref(), Some("c\n"));
}

#[test]
fn a_childs_permission_request_names_its_parent() {
    let model = Model::start(policy(|r| {
        let task = task_of(r);
        match (task.starts_with("asking parent"), r.tool_result_count()) {
            (true, 0) => Step::Reply(Reply::tool("Task", json!({"description": "deploying child"}))),
            (true, _) => end("parent done"),
            (false, 0) => Step::Reply(Reply::tool("Bash", json!({"command": "echo DEPLOY prod"}))),
            (false, _) => end("deployed"),
        }
    }));
    let mut home = TestHome::new();
    home.write_config("security:\n  permissions:\n    ask-commands: [\"echo DEPLOY *\"]\n");
    home.start_with_model(&model);
    let parent = new_task(&home, "asking parent", None);
    wait_for("the child", || !children(&home, &parent).is_empty());
    let kid = children(&home, &parent).remove(0);
    home.wait_status(&kid, "WaitingForUser", WITHIN);
    let waiting = home.json(&["waiting", "--json"]);
    let entry = waiting.as_array().unwrap().iter().find(|w| w["id"] == kid.as_str()).cloned().unwrap_or(Value::Null);
    assert_eq!(entry["parent"], parent.as_str(), "{waiting:#}");
    let text = home.ok(&["waiting"]);
    assert!(text.contains(&format!("sub-task of {parent}")), "{text}");
    home.ok(&["task", "approve", &kid]);
    let done = &wait_done(&home, &parent);
    assert_eq!(done["status"], "Completed", "{done:#}");
}

#[test]
fn a_child_not_waited_for_reports_through_task_result_and_as_advice_in_the_next_turn() {
    let model = Model::start(policy(|r| {
        let task = task_of(r);
        if !task.starts_with("free parent") {
            return end("quick child says hello");
        }
        let results = r.tool_results();
        let child = |text: &str| text.split_whitespace().nth(1).unwrap_or("").to_owned();
        match results.len() {
            0 => Step::Reply(Reply::tool("Task", json!({"description": "quick child", "wait": false}))),
            1 => Step::Reply(Reply::tool("TaskResult", json!({"task": child(&results[0])}))),
            // Until the child's outcome came in as advice: wait a little, as a model doing other work would.
            _ if !r.raw_body.contains("quick child says hello") => {
                Step::Reply(Reply::tool("Bash", json!({"command": "sleep 1"})))
            }
            _ => end("heard from the child"),
        }
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let parent = new_task(&home, "free parent", None);
    let done = wait_done(&home, &parent);
    assert_eq!(done["status"], "Completed", "{done:#}");
    let kid = children(&home, &parent).remove(0);
    let reqs = requests_of(&model, "free parent");
    // The Task call returned at once with the child's id; TaskResult told how it stood (or its outcome).
    let results = reqs[1].tool_results();
    assert!(results[0].starts_with(&format!("Sub-task {kid} is ")), "{results:?}");
    let asked = reqs[2].tool_results()[1].clone();
    assert!(asked.starts_with(&format!("Sub-task {kid} ")), "{asked}");
    // The outcome came as advice from the child, not as a user message.
    let last = &reqs.last().unwrap().raw_body;
    assert!(last.contains(&format!("advice from=\\\"task {kid}\\\"")), "{last}");
    assert!(last.contains("quick child says hello") && last.contains("completed"), "{last}");
    let shown = home.show(&parent);
    let ended: Vec<&Value> =
        shown["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "subtask_ended").collect();
    assert_eq!(ended.len(), 1, "{ended:#?}");
    assert_eq!(ended[0]["data"]["child"], kid.as_str());
}

/// Issue 16 follow-up: a child's end and the parent's being told of it are separate steps; the supervisor is killed
/// (SIGKILL, at a test crash point) right after the child's terminal status is stored and before its parent is told.
/// After a restart the parent gets `SubtaskEnded` exactly once and, not waiting for the child, its outcome as advice.
#[test]
fn a_childs_end_lost_to_kill_9_before_its_parent_was_told_is_told_once_after_restart() {
    let model = Model::start(policy(|r| {
        let task = task_of(r);
        if !task.starts_with("told parent") {
            return end("crash child says hello");
        }
        let results = r.tool_results();
        match results.len() {
            0 => Step::Reply(Reply::tool("Task", json!({"description": "crash child", "wait": false}))),
            _ if r.raw_body.contains("crash child says hello") => end("heard from the child"),
            // Other work until the child's outcome comes in (bounded: never hearing fails the test, not hangs it).
            n if n < 25 => Step::Reply(Reply::tool("Bash", json!({"command": format!("sleep 1; echo step {n}")}))),
            _ => end("never heard from the child"),
        }
    }));
    let mut home = TestHome::new();
    let mut env = model.env();
    env.push(("NEURAPHAGE_TEST_CRASH_AT".into(), "subtask_ended".into()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    home.start_supervisor_with(&pairs);
    let parent = new_task(&home, "told parent", None);
    // The supervisor kills itself at the crash point once the child's end is stored.
    let exits = home.wait_supervisors_within(WITHIN);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(exits[0].signal(), Some(9), "the supervisor died at the crash point: {exits:?}");
    let db = home.open_store();
    let kid: String = db.query_row("SELECT id FROM tasks WHERE parent = ?1", [&parent], |r| r.get(0)).unwrap();
    let (state, told): (String, Option<i64>) = db
        .query_row("SELECT state, parent_told FROM tasks WHERE id = ?1", [&kid], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((state.as_str(), told), ("Completed", Some(0)), "ended, its parent not told yet");
    drop(db);

    home.start_with_model(&model);
    let done = wait_done(&home, &parent);
    assert_eq!(done["status_detail"]["summary"], "heard from the child", "{done:#}");
    let shown = home.show(&parent);
    let events = shown["events"].as_array().unwrap();
    let ended: Vec<&Value> = events.iter().filter(|e| e["kind"] == "subtask_ended").collect();
    assert_eq!(ended.len(), 1, "{ended:#?}");
    assert_eq!(ended[0]["data"]["child"], kid.as_str());
    let from = format!("task {kid}");
    let advice: Vec<&Value> = events.iter().filter(|e| e["kind"] == "advice" && e["data"]["from"] == from).collect();
    assert_eq!(advice.len(), 1, "{advice:#?}");
    let reqs = requests_of(&model, "told parent");
    let last = &reqs.last().unwrap().raw_body;
    assert!(last.contains(&format!("advice from=\\\"task {kid}\\\"")), "{last}");
}
