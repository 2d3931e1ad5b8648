//! The knowledge store (issue 17): search latency p50 / p99 over 10 000 learnings (with the mtime/size rescan that
//! precedes every search, and without), the index rebuild at start for 10 000 files, and — across the real
//! processes — the time from a `Learn` call leaving the model to the relayed advice reaching another running task's
//! model request (that task polls with `sleep 0.2` turns, so up to 0.2 s of it is the receiving task's own turn).
//! Run with `bench/run.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use neuraphage_ipc::knowledge::Learning;
use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_supervisor::knowledge::Knowledge;
use neuraphage_supervisor::knowledge::files;
use neuraphage_supervisor::knowledge::index::{self, Query};
use neuraphage_supervisor::store::Store;
use neuraphage_tests::{Model, TestHome};
use serde_json::json;

const LEARNINGS: usize = 10_000;
const QUERIES: usize = 300;
const RELAYS: usize = 5;

const WORDS: &[&str] = &[
    "parser",
    "tokenizer",
    "cache",
    "lock",
    "socket",
    "retry",
    "timeout",
    "migration",
    "schema",
    "index",
    "build",
    "feature",
    "linker",
    "allocator",
    "buffer",
    "stream",
    "codec",
    "frame",
    "handshake",
    "config",
    "reload",
    "signal",
    "worker",
    "broker",
    "sandbox",
    "landlock",
    "seccomp",
    "cgroup",
    "proxy",
    "bridge",
    "commit",
    "branch",
];

fn word(i: usize) -> &'static str {
    WORDS[i % WORDS.len()]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn in_process() {
    let home = tempfile::tempdir().unwrap();
    let k = Knowledge::new(home.path());
    files::ensure(k.root()).unwrap();
    for i in 0..LEARNINGS {
        let id = format!("k-bench-{i:06}");
        let l = Learning {
            id: id.clone(),
            kind: "learning".into(),
            title: format!("The {} {} needs care {i}", word(i), word(i / 7)),
            tags: vec![word(i / 3).into()],
            source_task: None,
            repository: Some(format!("/repo/{}", i % 20)),
            files: vec![format!("src/{}.rs", word(i / 11))],
            created: Utc::now(),
            confidence: 0.5,
            body: format!(
                "When the {} meets the {} the {} fails; the fix was to {} first. Case {i}.",
                word(i),
                word(i / 5),
                word(i / 13),
                word(i / 17)
            ),
            path: String::new(),
        };
        files::write(&files::folder(k.root(), "learning").join(format!("{id}.md")), &l).unwrap();
    }
    let store = Mutex::new(Store::open(&home.path().join("neuraphage.db")).unwrap());
    let started = Instant::now();
    let (indexed, skipped) = index::rebuild(&k, &store).unwrap();
    let rebuild = started.elapsed();
    assert_eq!((indexed, skipped.len()), (LEARNINGS, 0));
    println!("index rebuild at start: {LEARNINGS} files in {rebuild:?}");

    for (label, rescan) in [("with the rescan before it", true), ("index only", false)] {
        let mut times = Vec::with_capacity(QUERIES);
        for i in 0..QUERIES {
            let text = format!("{} {} problem", word(i), word(i / 3));
            let repo = format!("/repo/{}", i % 20);
            let files = vec![format!("src/{}.rs", word(i))];
            let q = Query { text: &text, repository: Some(&repo), files: &files, limit: 5 };
            let t = Instant::now();
            let hits = if rescan { index::search(&k, &store, &q) } else { index::search_indexed(&store, &q) };
            times.push(t.elapsed());
            assert!(!hits.unwrap().is_empty());
        }
        times.sort();
        println!(
            "search over {LEARNINGS} learnings ({label}): p50 {:?}, p99 {:?} ({QUERIES} queries)",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
}

fn relay_latency() {
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; RELAYS]));
    let seen: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; RELAYS]));
    let (sent_, seen_) = (sent.clone(), seen.clone());
    let done = || Step::Reply(Reply::text("finished").stop(StopReason::EndTurn));
    let sleep = || Step::Reply(Reply::tool("Bash", json!({"command": "sleep 0.2"})));
    let model = Model::start(policy(move |r| {
        let system = r.system_text();
        let now = Instant::now();
        if r.tool_result_count() > 190 {
            return done();
        }
        if system.contains("TASK-B") {
            let mut seen = seen_.lock().unwrap();
            for (i, s) in seen.iter_mut().enumerate() {
                if s.is_none() && r.raw_body.contains(&format!("MARK-RELAY-{i}-")) {
                    *s = Some(now);
                }
            }
            if seen.iter().all(Option::is_some) {
                return done();
            }
            if r.tool_result_count() == 0 {
                return Step::Reply(Reply::tool("Read", json!({"file_path": "src/lib.rs"})));
            }
            return sleep();
        }
        // TASK-A: one learning at a time, each once the previous reached B.
        let mut sent = sent_.lock().unwrap();
        let seen = seen_.lock().unwrap();
        let next = sent.iter().position(Option::is_none);
        match next {
            None => done(),
            Some(i) if r.tool_result_count() >= 1 && (i == 0 || seen[i - 1].is_some()) => {
                sent[i] = Some(now);
                Step::Reply(Reply::tool(
                    "Learn",
                    json!({"title": format!("MARK-RELAY-{i}- {} {} quirk", word(i * 5), word(i * 9)),
                           "body": format!("Round {i}: {} must run before {}; see note{i}a, note{i}b, note{i}c.", word(i * 3), word(i * 7)),
                           "files": ["src/lib.rs"]}),
                ))
            }
            Some(_) => sleep(),
        }
    }));
    let mut home = TestHome::new();
    let repo = home.git_repo("app");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(repo.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    home.write_config("");
    home.start_with_model(&model);
    let repo_s = repo.to_str().unwrap();
    let b = home.json(&["task", "new", "TASK-B tune the lexer", "--repo", repo_s, "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = home.json(&["task", "new", "TASK-A fix the lexer", "--repo", repo_s, "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    home.wait_ended(&[&a, &b], Duration::from_secs(300));
    let (sent, seen) = (sent.lock().unwrap(), seen.lock().unwrap());
    let mut times: Vec<Duration> =
        sent.iter().zip(seen.iter()).filter_map(|(s, r)| Some(r.as_ref()?.duration_since(*s.as_ref()?))).collect();
    times.sort();
    if times.is_empty() {
        println!("relay latency: no relay reached the other task");
        return;
    }
    println!(
        "learning recorded → relayed advice in another running task's request: min {:?}, median {:?}, max {:?} ({} \
         relays)",
        times[0],
        percentile(&times, 0.5),
        times[times.len() - 1],
        times.len()
    );
}

fn main() {
    in_process();
    relay_latency();
}
