//! Crash torture: tasks run against the LLM double while, in a loop with a fixed seed and a bounded count, a random
//! one of the three processes — a worker, the broker, the supervisor, or all of them — is killed with SIGKILL at a
//! random moment. After every restart the store is intact and every acknowledged task is there; at the end every
//! task completes, every tool call has exactly one result, no Bash call ran twice, and every conversation
//! repository passes `git fsck`.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome, children_named, file_on_branch};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// Bash calls each task makes before it ends.
const STEPS: usize = 4;
const TASKS: usize = 5;
const ROUNDS: usize = 8;

/// A small deterministic generator (xorshift), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn sigkill(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

#[test]
fn kill_any_process_at_any_moment_and_nothing_acknowledged_is_lost() {
    let model = Model::start(policy(|r| {
        let task = r.first_user_text().unwrap_or_default();
        let step = r.tool_result_count();
        if step < STEPS {
            let line = format!("{}-{step}", task.replace(' ', "_"));
            Step::Reply(Reply::tool(
                "Bash",
                json!({"command": format!("echo {line} >> runs.txt; sleep 0.15; echo ok")}),
            ))
        } else {
            Step::Reply(Reply::text("all steps done").stop(StopReason::EndTurn))
        }
    }));
    let mut home = TestHome::new();
    home.write_config("max-concurrent: 3\n");
    let repo = home.git_repo("app");
    let mut supervisor = home.start_with_model(&model);
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let t = home.json(&["task", "new", &format!("torture task {i}"), "--repo", repo.to_str().unwrap(), "--json"]);
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    let mut rng = Rng(0x5eed_2026_1124);
    let mut kills: HashMap<&str, usize> = HashMap::new();
    for _round in 0..ROUNDS {
        std::thread::sleep(Duration::from_millis(150 + rng.next(450)));
        let victim = ["worker", "broker", "supervisor", "all"][rng.next(4) as usize];
        match victim {
            "worker" => {
                // A worker is the bubblewrap the supervisor started (its whole sandbox dies with it); without
                // namespaces, the worker itself.
                let mut workers = children_named(supervisor, "bwrap");
                workers.extend(children_named(supervisor, "neuraphage-work"));
                if let Some(pid) = workers.get(rng.next(workers.len().max(1) as u64) as usize) {
                    sigkill(*pid);
                    *kills.entry(victim).or_default() += 1;
                }
            }
            "broker" => {
                for pid in children_named(supervisor, "neuraphage-brok") {
                    sigkill(pid);
                    *kills.entry(victim).or_default() += 1;
                }
            }
            _ => {
                let mut all = vec![supervisor];
                if victim == "all" {
                    all.extend(children_named(supervisor, "neuraphage-"));
                    all.extend(children_named(supervisor, "bwrap"));
                }
                for pid in all {
                    sigkill(pid);
                }
                home.kill9_supervisors();
                *kills.entry(victim).or_default() += 1;
                // Every acknowledged task is there and the store is intact before the restart.
                let stored: BTreeSet<String> = home
                    .open_store()
                    .prepare("SELECT id FROM tasks")
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                assert_eq!(stored, ids.iter().cloned().collect::<BTreeSet<_>>());
                let ok: String = home.open_store().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
                assert_eq!(ok, "ok");
                supervisor = home.start_with_model(&model);
            }
        }
    }
    eprintln!("kills: {kills:?}");
    // Everything completes.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let states: Vec<String> = ids.iter().map(|id| home.show(id)["status"].as_str().unwrap().to_owned()).collect();
        if states.iter().all(|s| s == "Completed") {
            break;
        }
        if let Some(i) = states.iter().position(|s| s == "Failed" || s == "Cancelled") {
            panic!("{states:?}: {:#}", home.show(&ids[i]));
        }
        assert!(Instant::now() < deadline, "not every task completed: {states:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for id in &ids {
        let log = home.json(&["task", "log", id, "--json"]);
        let blocks: Vec<Value> =
            log["messages"].as_array().unwrap().iter().flat_map(|m| m["content"].as_array().unwrap().clone()).collect();
        // Every tool call has exactly one result.
        let uses: Vec<&str> =
            blocks.iter().filter(|b| b["type"] == "tool_use").map(|b| b["id"].as_str().unwrap()).collect();
        for u in &uses {
            let results = blocks.iter().filter(|b| b["type"] == "tool_result" && b["tool_use_id"] == *u).count();
            assert_eq!(results, 1, "{id}: tool call {u} has {results} results");
        }
        assert_eq!(uses.len(), STEPS, "{id}");
        // No Bash call ran twice: each step's line is in the work at most once.
        let runs = file_on_branch(&repo, &format!("neuraphage/{id}"), "runs.txt").unwrap_or_default();
        let lines: Vec<&str> = runs.lines().collect();
        let unique: BTreeSet<&str> = lines.iter().copied().collect();
        assert_eq!(lines.len(), unique.len(), "{id}: a Bash call ran twice: {runs}");
        // The conversation repository is sound.
        let conversation = home.paths.home.join("tasks").join(id).join("conversation");
        let fsck = Command::new("git").arg("-C").arg(&conversation).args(["fsck", "--strict"]).output().unwrap();
        assert!(fsck.status.success(), "{id}: git fsck: {}", String::from_utf8_lossy(&fsck.stderr));
    }
}
