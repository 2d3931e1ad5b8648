//! Token accounting and compaction across the real processes (issue 13): a task whose tool results total ten times
//! a small window completes, compacting as it goes (summaries by the router tier's model, every request within the
//! double's window, the full history in the conversation repository's git log); the double's "prompt is too long"
//! makes the worker compact harder and go on, and a second refusal fails the task with the reason; a worker killed
//! during a compaction's summary call is replaced and the task completes with nothing acknowledged lost.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use neuraphage_llm_double::tokens::count_anthropic;
use neuraphage_llm_double::{DoubleConfig, Policy, RecordedRequest, Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome, children_named};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(240);
const BIG_FILE: &str = "big.txt";

/// The tiers of every test here: a router with its own model (the summaries), a worker with a small window.
fn config(worker_window: u64) -> String {
    format!(
        "watcher:\n  enabled: false\nmodel-tiers:\n  router: {{ provider: anthropic, model: m-router, pool: anthropic }}\n  \
         worker: {{ provider: anthropic, model: m-worker, pool: anthropic, context-tokens: {worker_window} }}\n"
    )
}

// The Watcher is off above: these tasks read the same file with the same result by design (its rule would pause them
// if a pass fell inside a slow run), and the router here answers summaries, not verdicts.

/// A repository holding a 10 KiB file.
fn repo_with_big_file(home: &TestHome) -> std::path::PathBuf {
    let path = home.git_repo("app");
    let line = "0123456789 the quick brown fox jumps over the lazy dog 0123456\n";
    std::fs::write(path.join(BIG_FILE), line.repeat(10 * 1024 / line.len())).unwrap();
    let repo = git2::Repository::open(&path).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new(BIG_FILE)).unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
    let parent = repo.head().unwrap().peel_to_commit().unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "big file", &tree, &[&parent]).unwrap();
    path
}

fn is_summary(r: &RecordedRequest) -> bool {
    r.model() == Some("m-router")
}

/// A model that reads the big file `reads` times, then ends; summary requests (router tier) get `summary()`.
fn reader(reads: usize, summary: impl Fn() -> Reply + Send + Sync + 'static) -> Policy {
    let answered = Arc::new(AtomicUsize::new(0));
    policy(move |r| {
        if is_summary(r) {
            return Step::Reply(summary());
        }
        // The main turns are counted here: a compacted conversation holds fewer results than were read.
        let n = answered.fetch_add(1, Ordering::SeqCst);
        if n < reads {
            Step::Reply(
                Reply::text(format!("Reading it again ({n}).")).with_tool("Read", json!({"file_path": BIG_FILE})),
            )
        } else {
            Step::Reply(Reply::text("I read it all.").stop(StopReason::EndTurn))
        }
    })
}

fn summary_text() -> Reply {
    Reply::text(
        "1. What was done: read big.txt several times.\n2. Learnt: it is 10 KiB of one line.\n3. Files: big.txt.\n4. Remains: more reads.",
    )
}

fn start(home: &mut TestHome, model: &Model, worker_window: u64) -> (String, std::path::PathBuf) {
    home.write_config(&config(worker_window));
    let repo = repo_with_big_file(home);
    home.start_with_model(model);
    let task = home.json(&["task", "new", "read big.txt thirty times", "--repo", repo.to_str().unwrap(), "--json"]);
    (task["id"].as_str().unwrap().to_owned(), repo)
}

/// The store's checkpoints of a task: (seq, kind, data, commit).
fn checkpoints(home: &TestHome, id: &str) -> Vec<(i64, String, Value, String)> {
    let store = home.open_store();
    let mut stmt =
        store.prepare("SELECT seq, kind, data, commit_id FROM checkpoints WHERE task = ?1 ORDER BY seq").unwrap();
    stmt.query_map([id], |r| {
        let data: String = r.get(2)?;
        Ok((r.get(0)?, r.get(1)?, serde_json::from_str(&data).unwrap(), r.get(3)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Events of one kind, their data (a row holds `{kind, data}`).
fn events(home: &TestHome, id: &str, kind: &str) -> Vec<Value> {
    let store = home.open_store();
    let mut stmt = store.prepare("SELECT data FROM events WHERE task = ?1 AND kind = ?2 ORDER BY seq").unwrap();
    stmt.query_map([id, kind], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|d| serde_json::from_str::<Value>(&d.unwrap()).unwrap()["data"].clone())
        .collect()
}

/// Every commit of the task's conversation repository, oldest first, each with its messages (all readable).
fn conversation_log(home: &TestHome, id: &str) -> Vec<(String, Vec<Value>)> {
    let repo = git2::Repository::open(home.paths.home.join("tasks").join(id).join("conversation")).unwrap();
    let mut walk = repo.revwalk().unwrap();
    walk.push_head().unwrap();
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE).unwrap();
    walk.map(|oid| {
        let commit = repo.find_commit(oid.unwrap()).unwrap();
        let tree = commit.tree().unwrap();
        let dir = repo.find_tree(tree.get_name("messages").expect("messages/").id()).unwrap();
        let mut messages = Vec::new();
        for bucket in dir.iter() {
            for entry in repo.find_tree(bucket.id()).unwrap().iter() {
                let blob = repo.find_blob(entry.id()).unwrap();
                messages.push(serde_json::from_slice(blob.content()).expect("a readable message"));
            }
        }
        (commit.id().to_string(), messages)
    })
    .collect()
}

fn tool_results(messages: &[Value]) -> BTreeMap<String, String> {
    messages
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_result")
        .map(|b| (b["tool_use_id"].as_str().unwrap().to_owned(), b["content"].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// The store and the conversation repository agree, and the log holds every result whole at some commit: checkpoints
/// are numbered without a gap, each names a commit of the log, and every tool result event's call has its full
/// result (not cut) in some commit.
fn nothing_lost(home: &TestHome, id: &str) -> Vec<(String, Vec<Value>)> {
    let cps = checkpoints(home, id);
    let seqs: Vec<i64> = cps.iter().map(|c| c.0).collect();
    assert_eq!(seqs, (1..=cps.len() as i64).collect::<Vec<_>>(), "checkpoints without a gap");
    let log = conversation_log(home, id);
    let commits: BTreeSet<&str> = log.iter().map(|(c, _)| c.as_str()).collect();
    for (seq, kind, _, commit) in &cps {
        assert!(commits.contains(commit.as_str()), "checkpoint {seq} ({kind}) names {commit}, not in the log");
    }
    let mut whole = BTreeSet::new();
    for (_, messages) in &log {
        for (call, content) in tool_results(messages) {
            if content.len() > 10_000 && !content.contains("cut at compaction") {
                whole.insert(call);
            }
        }
    }
    for result in events(home, id, "tool_result") {
        let call = result["tool_use_id"].as_str().unwrap();
        assert!(whole.contains(call), "the full result of {call} is in no commit of the conversation log");
    }
    log
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WITHIN;
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_task_reading_ten_times_its_window_completes_by_compacting() {
    const WINDOW: u64 = 8000;
    let model = Model::start_with(DoubleConfig {
        policy: Some(reader(30, summary_text)),
        context_window: Some(WINDOW),
        ..DoubleConfig::default()
    });
    let mut home = TestHome::new();
    let (id, _repo) = start(&mut home, &model, WINDOW);
    let shown = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(shown["status"], "Completed", "{shown:#}");

    let requests = model.double.requests();
    // No request over the window: the double refused none, and each prompt counts under it.
    for r in &requests {
        let tokens = count_anthropic(&r.body);
        assert!(tokens <= WINDOW, "a request of {tokens} tokens > {WINDOW} (summary: {})", is_summary(r));
    }
    let read: usize = events(&home, &id, "tool_result").len();
    assert_eq!(read, 30);
    // Their results total ten times the window (each result, whole, is in the conversation log).
    let mut whole: BTreeMap<String, String> = BTreeMap::new();
    for (_, messages) in conversation_log(&home, &id) {
        whole.extend(tool_results(&messages).into_iter().filter(|(_, c)| !c.contains("cut at compaction")));
    }
    let total: u64 = whole.values().map(|c| (c.len() as u64).div_ceil(4)).sum();
    assert_eq!(whole.len(), 30);
    assert!(total >= 10 * WINDOW, "the results total {total} tokens");
    // The compactions are checkpoints, each smaller after than before.
    let compactions: Vec<Value> =
        checkpoints(&home, &id).into_iter().filter(|c| c.1 == "compacted").map(|c| c.2).collect();
    assert!(compactions.len() >= 5, "{} compactions", compactions.len());
    for c in &compactions {
        assert!(c["after_tokens"].as_u64() < c["before_tokens"].as_u64(), "{c}");
    }
    assert!(compactions.iter().any(|c| c["removed"].as_u64() > Some(0)));
    let notices: Vec<Value> = events(&home, &id, "notice").into_iter().filter(|n| n["notice"] == "compacted").collect();
    assert_eq!(notices.len(), compactions.len(), "{notices:#?}");
    // The summaries are asked of the router tier's model, without tools, with the summariser's prompt; the task's
    // own turns of the worker tier's.
    let summaries: Vec<&RecordedRequest> = requests.iter().filter(|r| is_summary(r)).collect();
    assert!(!summaries.is_empty());
    for s in &summaries {
        assert!(s.body.get("tools").is_none_or(|t| t.as_array().is_some_and(Vec::is_empty)), "{}", s.body);
        assert!(s.raw_body.contains("You summarise the earlier part"), "{}", s.raw_body);
    }
    assert!(requests.iter().filter(|r| !is_summary(r)).all(|r| r.model() == Some("m-worker")));
    // `task log` shows the compacted conversation: the task, the summary, the recent turns.
    let log = home.json(&["task", "log", &id, "--json"]);
    let messages = log["messages"].as_array().unwrap();
    assert_eq!(messages[0]["content"][0]["text"], "read big.txt thirty times");
    let second = messages[1]["content"][0]["text"].as_str().unwrap();
    assert!(second.starts_with("Summary of the earlier work") && second.contains("What was done"), "{second}");
    assert!(messages.len() < 20, "{} messages shown", messages.len());
    // The git log keeps the whole history, every result whole somewhere.
    nothing_lost(&home, &id);
    // The summaries' cost is the task's: every answered request is a priced response of the task.
    wait_for("every response's usage recorded", || home.show(&id)["cost"]["responses"] == requests.len());
}

#[test]
fn prompt_too_long_from_the_provider_compacts_harder_and_the_task_goes_on() {
    // The worker believes the window is 8000; the double's is 4500.
    let model = Model::start_with(DoubleConfig {
        policy: Some(reader(8, summary_text)),
        context_window: Some(4500),
        ..DoubleConfig::default()
    });
    let mut home = TestHome::new();
    let (id, _repo) = start(&mut home, &model, 8000);
    let shown = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(shown["status"], "Completed", "{shown:#}");
    let requests = model.double.requests();
    let refused: Vec<usize> =
        requests.iter().enumerate().filter(|(_, r)| count_anthropic(&r.body) > 4500).map(|(i, _)| i).collect();
    assert_eq!(refused.len(), 1, "one refusal, then the worker knows the window");
    let notices = events(&home, &id, "notice");
    let too_long = notices.iter().find(|n| n["notice"] == "prompt_too_long").expect("a prompt_too_long notice");
    assert!(too_long["message"].as_str().unwrap().contains("4500"), "{too_long}");
    let harder = checkpoints(&home, &id).into_iter().filter(|c| c.1 == "compacted").count();
    assert!(harder >= 1);
    nothing_lost(&home, &id);
}

#[test]
fn prompt_too_long_twice_fails_the_task_with_the_reason() {
    // A window smaller than the tools and system prompt alone: nothing compaction does can fit.
    let model = Model::start_with(DoubleConfig {
        policy: Some(reader(3, summary_text)),
        context_window: Some(300),
        ..DoubleConfig::default()
    });
    let mut home = TestHome::new();
    let (id, _repo) = start(&mut home, &model, 8000);
    let shown = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(shown["status"], "Failed", "{shown:#}");
    let error = shown["status_detail"]["error"].as_str().unwrap_or_default().to_owned();
    let error = if error.is_empty() { shown.to_string() } else { error };
    assert!(error.contains("prompt is too long"), "{error}");
    assert_eq!(model.double.requests().len(), 2, "sent, compacted harder and sent once more, then failed");
}

#[test]
fn kill_9_of_the_worker_during_a_compaction_loses_nothing() {
    const WINDOW: u64 = 8000;
    // The first summary takes long (its stream is slow); the worker is killed while it is in flight.
    let slow = Arc::new(AtomicBool::new(true));
    let first = slow.clone();
    let model = Model::start_with(DoubleConfig {
        policy: Some(reader(8, move || {
            if first.swap(false, Ordering::SeqCst) {
                summary_text().chunk_chars(4).delay(Duration::from_millis(500))
            } else {
                summary_text()
            }
        })),
        context_window: Some(WINDOW),
        ..DoubleConfig::default()
    });
    let mut home = TestHome::new();
    home.write_config(&config(WINDOW));
    let repo = repo_with_big_file(&home);
    let supervisor = home.start_with_model(&model);
    let task = home.json(&["task", "new", "read big.txt thirty times", "--repo", repo.to_str().unwrap(), "--json"]);
    let id = task["id"].as_str().unwrap().to_owned();
    wait_for("a summary request", || model.double.requests().iter().any(is_summary));
    let before: Vec<(i64, String, Value, String)> = checkpoints(&home, &id);
    assert!(before.iter().all(|c| c.1 != "compacted"), "the first compaction is in flight (its summary is slow)");
    let mut workers = children_named(supervisor, "bwrap");
    workers.extend(children_named(supervisor, "neuraphage-work"));
    assert!(!workers.is_empty(), "a worker to kill");
    for pid in workers {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    let shown = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(shown["status"], "Completed", "{shown:#}");
    assert!(!events(&home, &id, "worker_lost").is_empty(), "the worker died and was replaced");
    // What was acknowledged before the kill is still there, as it was.
    let after = checkpoints(&home, &id);
    assert_eq!(after[..before.len()], before[..]);
    let compacted = after.iter().filter(|c| c.1 == "compacted").count();
    assert!(compacted >= 1);
    assert!(model.double.requests().iter().filter(|r| is_summary(r)).count() >= 2, "compacted again after the restart");
    nothing_lost(&home, &id);
}

#[test]
fn a_worker_killed_right_after_a_compaction_resumes_from_the_compacted_conversation() {
    const WINDOW: u64 = 8000;
    let model = Model::start_with(DoubleConfig {
        policy: Some(reader(6, summary_text)),
        context_window: Some(WINDOW),
        ..DoubleConfig::default()
    });
    let mut home = TestHome::new();
    home.write_config(&config(WINDOW));
    let repo = repo_with_big_file(&home);
    // The worker pauses once, right after its first `compacted` checkpoint is acknowledged.
    let mut env = model.env();
    env.push(("NEURAPHAGE_TEST_PAUSE_AFTER".to_owned(), "compacted".to_owned()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let supervisor = home.start_supervisor_with(&pairs);
    let task = home.json(&["task", "new", "read big.txt thirty times", "--repo", repo.to_str().unwrap(), "--json"]);
    let id = task["id"].as_str().unwrap().to_owned();
    wait_for("a compacted checkpoint", || checkpoints(&home, &id).iter().any(|c| c.1 == "compacted"));
    let sent_before = model.double.requests().len();
    let mut workers = children_named(supervisor, "bwrap");
    workers.extend(children_named(supervisor, "neuraphage-work"));
    assert!(!workers.is_empty(), "a worker to kill");
    for pid in workers {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    let shown = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(shown["status"], "Completed", "{shown:#}");
    assert!(!events(&home, &id, "worker_lost").is_empty());
    // The new worker went on from the compacted conversation: its first request holds the summary.
    let requests = model.double.requests();
    let first = requests[sent_before..].iter().find(|r| !is_summary(r)).expect("a request after the kill");
    assert!(first.raw_body.contains("Summary of the earlier work"), "{}", first.raw_body);
    // The turn count goes on from where it was, though the compacted conversation holds fewer turns.
    let store = home.open_store();
    let mut stmt = store.prepare("SELECT iteration FROM checkpoints WHERE task = ?1 ORDER BY seq").unwrap();
    let turns: Vec<i64> = stmt.query_map([&id], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    assert!(turns.windows(2).all(|w| w[0] <= w[1]), "{turns:?}");
    assert_eq!(*turns.last().unwrap(), 7, "six reads and the last answer: {turns:?}");
    nothing_lost(&home, &id);
}
