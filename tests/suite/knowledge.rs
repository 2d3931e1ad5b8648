//! The knowledge store (issue 17), against the LLM double: a trigger phrase in a task's conversation becomes a
//! learning file (front matter, FTS hit) refined by the router tier; a later task on the same repository gets it in
//! its system prompt with its source; an edited file's new text is what is injected, a malformed file is skipped
//! with a message; the Syncer relays a `Learn`ed learning to a running task on the same files and not to an
//! unrelated one; the router tier down keeps the tool's learning and fails no task; kill -9 during extraction leaves
//! files and index consistent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use neuraphage_llm_double::{RecordedRequest, Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(180);

/// A router tier with its own model (extraction), and the tasks' worker tier.
const CONFIG: &str = "model-tiers:\n  router: { provider: anthropic, model: m-router, pool: anthropic }\n  \
                      worker: { provider: anthropic, model: m-worker, pool: anthropic }\n";

fn is_router(r: &RecordedRequest) -> bool {
    r.model() == Some("m-router")
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// A repository with `src/lib.rs`.
fn repo(home: &TestHome, name: &str) -> PathBuf {
    let path = home.git_repo(name);
    let repo = git2::Repository::open(&path).unwrap();
    std::fs::create_dir_all(path.join("src")).unwrap();
    std::fs::write(path.join("src/lib.rs"), "pub fn tokenize() {}\n").unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("src/lib.rs")).unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
    let parent = repo.head().unwrap().peel_to_commit().unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "lib", &tree, &[&parent]).unwrap();
    path
}

/// `knowledge list --json`.
fn list(home: &TestHome) -> Value {
    home.json(&["knowledge", "list", "--json"])
}

/// Wait until `knowledge list` holds `n` learnings.
fn wait_learnings(home: &TestHome, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let l = list(home)["learnings"].as_array().unwrap().clone();
        if l.len() >= n {
            return l;
        }
        assert!(Instant::now() < deadline, "{} learnings, waited for {n}", l.len());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stored_events(home: &TestHome, id: &str, kind: &str) -> Vec<String> {
    let db = home.open_store();
    let mut stmt = db.prepare("SELECT data FROM events WHERE task = ?1 AND kind = ?2 ORDER BY seq").unwrap();
    stmt.query_map([id, kind], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
}

/// Wait until the task has `n` events of `kind` (they are recorded just after what the test saw happen).
fn wait_events(home: &TestHome, id: &str, kind: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let events = stored_events(home, id, kind);
        if events.len() >= n {
            return events;
        }
        assert!(Instant::now() < deadline, "{id}: {} {kind} events, waited for {n}", events.len());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The requests of the task whose description holds `marker` (its system prompt ends with the description).
fn requests_of(model: &Model, marker: &str) -> Vec<RecordedRequest> {
    model.double.requests().into_iter().filter(|r| !is_router(r) && r.system_text().contains(marker)).collect()
}

const REFINED: &str = r#"{"keep": true, "title": "The tokenizer needs the MARK-ALPHA feature", "body": "Building without MARK-ALPHA fails in src/lib.rs; enable it.", "tags": ["build"], "files": ["src/lib.rs"]}"#;

#[test]
fn an_extracted_learning_is_injected_into_later_tasks_and_follows_its_file() {
    let model = Model::start(policy(|r| {
        if is_router(r) {
            return Step::Reply(Reply::text(REFINED).stop(StopReason::EndTurn));
        }
        if !r.system_text().contains("FIRST") {
            return Step::Reply(Reply::text("Done.").stop(StopReason::EndTurn));
        }
        Step::Reply(
            Reply::text("Done.\n\nTurns out the tokenizer only builds with the MARK-ALPHA feature on.")
                .stop(StopReason::EndTurn),
        )
    }));
    let mut home = TestHome::new();
    let repo = repo(&home, "app");
    home.write_config(CONFIG);
    home.start_with_model(&model);
    let repo_s = repo.to_str().unwrap();
    let first = id_of(&home.json(&["task", "new", "FIRST fix the build", "--repo", repo_s, "--json"]));
    home.wait_status(&first, "Completed", WITHIN);

    // The router refined the passage into a learning file with its front matter, and the index finds it.
    let learnings = wait_learnings(&home, 1);
    assert_eq!(learnings.len(), 1, "{learnings:?}");
    let l = &learnings[0];
    let path = PathBuf::from(l["path"].as_str().unwrap());
    assert!(path.starts_with(home.paths.home.join("knowledge/learnings")), "{path:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    for part in [
        "---\n",
        &format!("id: {}", l["id"].as_str().unwrap()),
        "kind: learning",
        "title: The tokenizer needs the MARK-ALPHA feature",
        &format!("source_task: {first}"),
        &format!("repository: {repo_s}"),
        "- src/lib.rs",
        "- build",
        "created: ",
        "confidence: 0.7",
        "Building without MARK-ALPHA fails",
    ] {
        assert!(text.contains(part), "{part} missing from the file:\n{text}");
    }
    let router_calls = model.double.requests().iter().filter(|r| is_router(r)).count();
    assert_eq!(router_calls, 1, "one passage, one refinement");
    // The supervisor's own call (CONTRACT 1) is priced as the task's: its one request and the refinement.
    let costs = || -> i64 {
        home.open_store().query_row("SELECT count(*) FROM costs WHERE task = ?1", [&first], |r| r.get(0)).unwrap()
    };
    let deadline = Instant::now() + WITHIN;
    while costs() < 2 {
        assert!(Instant::now() < deadline, "the refinement's cost never landed on the task");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(costs(), 2, "the task's request and the router's refinement");
    let hits = home.json(&["knowledge", "search", "alpha feature", "--json"]);
    assert_eq!(hits[0]["learning"]["id"], l["id"], "{hits}");
    let recorded = wait_events(&home, &first, "knowledge_recorded", 1);
    assert!(recorded.len() == 1 && recorded[0].contains("\"llm\""), "{recorded:?}");

    // A later task on the same repository gets it in its system prompt, with its source.
    let second = id_of(&home.json(&["task", "new", "SECOND speed up tokenizer", "--repo", repo_s, "--json"]));
    home.wait_status(&second, "Completed", WITHIN);
    let system = requests_of(&model, "SECOND speed up")[0].system_text();
    assert!(system.contains("Knowledge from earlier tasks"), "{system}");
    assert!(system.contains("Building without MARK-ALPHA fails"), "{system}");
    assert!(system.contains(&format!("from=\"task {first}\"")), "{system}");
    let injected = stored_events(&home, &second, "knowledge_injected");
    assert!(injected.len() == 1 && injected[0].contains(l["id"].as_str().unwrap()), "{injected:?}");

    // A person edits the file: the new text is what the next task gets. A malformed file is skipped, with its path.
    std::fs::write(&path, text.replace("Building without MARK-ALPHA fails", "Since the edit MARK-EDITED holds"))
        .unwrap();
    let broken = home.paths.home.join("knowledge/learnings/k-broken.md");
    std::fs::write(&broken, "---\ntitle: [unclosed\n---\nbody\n").unwrap();
    let third = id_of(&home.json(&["task", "new", "THIRD tokenizer again", "--repo", repo_s, "--json"]));
    home.wait_status(&third, "Completed", WITHIN);
    let system = requests_of(&model, "THIRD tokenizer")[0].system_text();
    assert!(system.contains("MARK-EDITED") && !system.contains("Building without"), "{system}");
    let shown = home.ok(&["knowledge", "list"]);
    assert!(shown.contains("skipped") && shown.contains("k-broken.md"), "{shown}");
    assert_eq!(list(&home)["skipped"].as_array().unwrap().len(), 1);

    // rm deletes the file and the index entry; show of a bad id is refused.
    let id = l["id"].as_str().unwrap();
    home.ok(&["knowledge", "rm", id]);
    assert!(!path.exists());
    assert!(list(&home)["learnings"].as_array().unwrap().is_empty());
    let (_, err) = home.fails(&["knowledge", "show", "../etc/passwd"]);
    assert!(err.contains("not a learning id"), "{err}");
}

#[test]
fn a_learning_is_relayed_to_a_related_running_task_and_not_to_an_unrelated_one() {
    let b_read = Arc::new(AtomicBool::new(false));
    let b_got = Arc::new(AtomicBool::new(false));
    let (b_read_, b_got_) = (b_read.clone(), b_got.clone());
    let sleep = || Step::Reply(Reply::tool("Bash", json!({"command": "sleep 0.5"})));
    let done = || Step::Reply(Reply::text("finished").stop(StopReason::EndTurn));
    let model = Model::start(policy(move |r| {
        if is_router(r) {
            return Step::Reply(Reply::text(r#"{"keep": false}"#).stop(StopReason::EndTurn));
        }
        let system = r.system_text();
        let turns = r.tool_result_count();
        if turns > 150 {
            return done();
        }
        if system.contains("TASK-B") {
            if r.raw_body.contains("MARK-RELAY") {
                b_got_.store(true, Ordering::SeqCst);
                return done();
            }
            if turns == 0 {
                return Step::Reply(Reply::tool("Read", json!({"file_path": "src/lib.rs"})));
            }
            b_read_.store(true, Ordering::SeqCst);
            return sleep();
        }
        if system.contains("TASK-A") {
            if r.raw_body.contains("Recorded as learning") {
                return done();
            }
            if b_read_.load(Ordering::SeqCst) {
                return Step::Reply(Reply::tool(
                    "Learn",
                    json!({"title": "Tokenizer MARK-RELAY gotcha", "body": "tokenize() must see the whole input.",
                           "files": ["src/lib.rs"], "tags": ["tokenizer"]}),
                ));
            }
            return sleep();
        }
        // TASK-C: unrelated; runs until B has its relay.
        if b_got_.load(Ordering::SeqCst) { done() } else { sleep() }
    }));
    let mut home = TestHome::new();
    let repo = repo(&home, "app");
    home.write_config(CONFIG);
    home.start_with_model(&model);
    let repo_s = repo.to_str().unwrap();
    let c = id_of(&home.json(&["task", "new", "TASK-C write a haiku about autumn", "--json"]));
    let b = id_of(&home.json(&["task", "new", "TASK-B speed up parsing", "--repo", repo_s, "--json"]));
    let a = id_of(&home.json(&["task", "new", "TASK-A repair the lexer", "--repo", repo_s, "--json"]));
    home.wait_ended(&[&a, &b, &c], WITHIN);
    for id in [&a, &b, &c] {
        assert_eq!(home.show(id)["status"], "Completed", "{id}: {}", home.show(id));
    }
    assert!(b_got.load(Ordering::SeqCst), "B never got the relay");

    // B's next request carries it as advice from task A, never as the user's words; C's never does.
    let b_requests = requests_of(&model, "TASK-B");
    let carrying = b_requests.iter().find(|r| r.raw_body.contains("MARK-RELAY")).unwrap();
    let body = &carrying.raw_body;
    assert!(body.contains(&format!("advice from=\\\"task {a}\\\"")), "{body}");
    assert!(body.contains("not a message from the user"), "{body}");
    assert!(requests_of(&model, "TASK-C").iter().all(|r| !r.raw_body.contains("MARK-RELAY")));
    // Never back to its source.
    assert!(requests_of(&model, "TASK-A").iter().all(|r| !r.raw_body.contains("advice from")));

    assert_eq!(wait_events(&home, &a, "knowledge_relayed", 1).len(), 1);
    assert_eq!(wait_events(&home, &b, "knowledge_relayed", 1).len(), 1);
    let relays = home.json(&["knowledge", "relays", "--json"]);
    let relays = relays.as_array().unwrap();
    assert_eq!(relays.len(), 1, "{relays:?}");
    assert_eq!(relays[0]["from"], a.as_str());
    assert_eq!(relays[0]["to"], b.as_str());
    assert!(stored_events(&home, &c, "knowledge_relayed").is_empty());
    assert!(home.ok(&["knowledge", "relays"]).contains(&format!("{a} → {b}")));
}

#[test]
fn the_router_tier_down_keeps_the_tools_learning_and_fails_no_task() {
    let model = Model::start(policy(|r| {
        if is_router(r) {
            return Step::http_error(400);
        }
        if r.raw_body.contains("Recorded as learning") {
            return Step::Reply(
                Reply::text("All set.\n\nNote that MARK-KEYWORD parsing is strict about tabs.")
                    .stop(StopReason::EndTurn),
            );
        }
        Step::Reply(Reply::tool("Learn", json!({"title": "MARK-TOOL lexer rule", "body": "Keep tabs as they are."})))
    }));
    let mut home = TestHome::new();
    let repo = repo(&home, "app");
    home.write_config(CONFIG);
    home.start_with_model(&model);
    let id = id_of(&home.json(&["task", "new", "learn things", "--repo", repo.to_str().unwrap(), "--json"]));
    home.wait_status(&id, "Completed", WITHIN);
    // The tool's learning, and (hybrid: the router is down) the keyword passage kept as it is.
    let learnings = wait_learnings(&home, 2);
    let titles: Vec<&str> = learnings.iter().map(|l| l["title"].as_str().unwrap()).collect();
    assert!(titles.contains(&"MARK-TOOL lexer rule"), "{titles:?}");
    assert!(titles.iter().any(|t| t.contains("MARK-KEYWORD")), "{titles:?}");
    assert!(model.double.requests().iter().any(is_router), "the router was asked");
    assert_eq!(home.show(&id)["status"], "Completed");
}

#[test]
fn kill9_during_extraction_leaves_files_and_index_consistent() {
    let routed = Arc::new(AtomicUsize::new(0));
    let routed_ = routed.clone();
    let model = Model::start(policy(move |r| {
        if is_router(r) {
            let n = routed_.fetch_add(1, Ordering::SeqCst);
            let reply = Reply::text(format!(
                r#"{{"keep": true, "title": "MARK-KILL learning {n}", "body": "Refined passage {n}."}}"#
            ))
            .stop(StopReason::EndTurn);
            // The second refinement hangs: the supervisor is killed while it waits.
            return Step::Reply(if n == 0 { reply } else { reply.delay(Duration::from_secs(120)) });
        }
        Step::Reply(
            Reply::text("Turns out the cache is per user.\n\nThe fix was clearing it on logout.")
                .stop(StopReason::EndTurn),
        )
    }));
    let mut home = TestHome::new();
    let repo = repo(&home, "app");
    home.write_config(CONFIG);
    home.start_with_model(&model);
    let id = id_of(&home.json(&["task", "new", "cache bug", "--repo", repo.to_str().unwrap(), "--json"]));
    home.wait_status(&id, "Completed", WITHIN);
    wait_learnings(&home, 1);
    let deadline = Instant::now() + WITHIN;
    while routed.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the second refinement was never asked");
        std::thread::sleep(Duration::from_millis(50));
    }
    home.kill9_supervisors();
    home.start_with_model(&model);

    // The files are the truth: every file is indexed, nothing else is, no temporary file is left.
    let folder = home.paths.home.join("knowledge/learnings");
    let mut on_disk: Vec<String> =
        std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    on_disk.sort();
    assert!(on_disk.iter().all(|f| f.ends_with(".md")), "{on_disk:?}");
    let listed = list(&home);
    let mut ids: Vec<String> =
        listed["learnings"].as_array().unwrap().iter().map(|l| format!("{}.md", l["id"].as_str().unwrap())).collect();
    ids.sort();
    assert_eq!(ids, on_disk);
    assert_eq!(ids.len(), 1, "only the finished refinement was kept");
    let db = home.open_store();
    let indexed: i64 = db.query_row("SELECT count(*) FROM knowledge", [], |r| r.get(0)).unwrap();
    let fts: i64 = db.query_row("SELECT count(*) FROM knowledge_fts", [], |r| r.get(0)).unwrap();
    assert_eq!((indexed, fts), (1, 1));
    let hits = home.json(&["knowledge", "search", "MARK-KILL", "--json"]);
    assert_eq!(hits.as_array().unwrap().len(), 1);
}
