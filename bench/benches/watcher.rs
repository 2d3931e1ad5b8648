//! What the Watcher costs and how fast it steps in (issue 16):
//! 1. One pass over 50 running tasks (snapshot from each task's stored events + rules), in process against a real
//!    store of 50 tasks × 100 turns (45 healthy and varied, 5 in a failing loop): CPU and wall time per pass, and the
//!    router-tier calls the pass would make (only the flagged tasks).
//! 2. Real processes, the Watcher every second: 5 tasks start the same failing Bash loop at once; for each, the time
//!    from the loop's first failing call, and from the moment the rule holds (the 3rd failure), to the stored
//!    intervention. Run with `bench/run.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use chrono::Utc;
use neuraphage_ipc::{EventKind, Priority, TaskId, TaskState, TaskStatus};
use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_supervisor::store::Store;
use neuraphage_supervisor::store::tasks::TaskDraft;
use neuraphage_tests::{Model, TestHome};
use serde_json::json;

const TASKS: usize = 50;
const STUCK: usize = 5;
const TURNS: usize = 100;
const PASSES: u32 = 20;

fn main() {
    one_pass();
    time_to_intervene();
}

fn cpu_time() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let tv = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(usage.user_time()) + tv(usage.system_time())
}

fn one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("neuraphage.db");
    let mut store = Store::open(&db).unwrap();
    let mut tasks = Vec::new();
    for n in 0..TASKS {
        let draft = TaskDraft { priority: Priority::try_from(2).unwrap(), ..TaskDraft::new(format!("task {n}")) };
        tasks.push(store.create_task(&draft).unwrap());
    }
    drop(store);
    // The events, written straight into the table in one transaction (the store syncs each of its own writes).
    let mut conn = rusqlite::Connection::open(&db).unwrap();
    let tx = conn.transaction().unwrap();
    let now = Utc::now().timestamp_millis();
    let put = |task: &TaskId, kind: EventKind| {
        tx.execute(
            "INSERT INTO events (task, at, kind, data) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![task.as_str(), now, kind.name(), serde_json::to_string(&kind).unwrap()],
        )
        .unwrap();
    };
    for (n, task) in tasks.iter().enumerate() {
        put(&task.id, EventKind::WorkerStarted { pid: 1, workdir: "/w".into() });
        for turn in 0..TURNS {
            let cp = |point: &str| EventKind::Checkpoint { seq: 0, point: point.into(), commit: "c".into() };
            put(&task.id, cp("request_sent"));
            put(&task.id, cp("response_received"));
            let id = format!("t{turn}");
            let (tool, input, error, result) = if n < STUCK {
                ("Bash", "make".to_owned(), true, "error: no rule".to_owned())
            } else {
                match turn % 4 {
                    0 => ("Read", format!("src/f{turn}.rs"), false, format!("code {turn}")),
                    1 => ("Edit", format!("src/f{turn}.rs"), false, "edited".to_owned()),
                    2 => ("Bash", "cargo test".to_owned(), turn % 8 == 2, format!("{turn} passed")),
                    _ => ("Grep", format!("fn f{turn}"), false, format!("{turn} hits")),
                }
            };
            put(&task.id, EventKind::ToolCall { tool: tool.into(), tool_use_id: id.clone(), input });
            put(&task.id, cp(&format!("tool_started:{tool}")));
            put(&task.id, EventKind::ToolResult { tool: tool.into(), tool_use_id: id, is_error: error, result });
            put(&task.id, cp(&format!("tool_completed:{tool}")));
            put(
                &task.id,
                EventKind::Cost {
                    model: "m".into(),
                    input_tokens: 1000,
                    output_tokens: 100,
                    cache_tokens: 0,
                    cost_nano_usd: 1,
                    priced: true,
                },
            );
        }
    }
    tx.commit().unwrap();
    let store = Store::open(&db).unwrap();
    for t in &mut tasks {
        t.status = TaskStatus::Running { phase: neuraphage_ipc::RunningPhase::AssemblingContext };
    }
    assert!(tasks.iter().all(|t| t.status.state() == TaskState::Running));
    let no_progress = Duration::from_secs(600);
    let mut flagged = 0;
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    for _ in 0..PASSES {
        let looks = neuraphage_supervisor::watcher::scan(&store, &tasks, Utc::now(), no_progress).unwrap();
        flagged = looks.iter().filter(|l| l.finding.is_some()).count();
    }
    let (cpu, wall) = ((cpu_time() - cpu0) / PASSES, wall0.elapsed() / PASSES);
    println!(
        "one Watcher pass over {TASKS} running tasks ({TURNS} turns each, {} events in the store): CPU {cpu:?}, wall \
         {wall:?} (mean of {PASSES}); flagged {flagged} of {TASKS} ({STUCK} stuck): {flagged} router-tier calls, none \
         for the {} healthy ones",
        TASKS * (1 + TURNS * 7),
        TASKS - STUCK,
    );
}

fn time_to_intervene() {
    const LOOPS: usize = 5;
    let model = Model::start(policy(|r| {
        if r.model() == Some("m-router") {
            let answer = json!({"status": "stuck", "confidence": 0.9, "diagnosis": "loop", "recommendation": "pause"});
            Step::Reply(Reply::text(answer.to_string()).stop(StopReason::EndTurn))
        } else {
            Step::Reply(Reply::tool("Bash", json!({"command": "echo nope; exit 3"})))
        }
    }));
    let mut home = TestHome::new();
    home.write_config(&format!(
        "max-concurrent: {LOOPS}\nmodel-tiers:\n  router: {{ provider: anthropic, model: m-router, pool: anthropic }}\n  \
         worker: {{ provider: anthropic, model: m-worker, pool: anthropic }}\ndrift:\n  max-consecutive-failures: 0\n\
         watcher:\n  interval-secs: 1\n"
    ));
    home.start_with_model(&model);
    let ids: Vec<String> = (0..LOOPS)
        .map(|n| home.json(&["task", "new", &format!("loop {n}"), "--json"])["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        home.wait_status(id, "WaitingForUser", Duration::from_secs(180));
    }
    let db = home.open_store();
    let at = |id: &str, kind: &str, nth: i64| -> i64 {
        db.query_row(
            "SELECT at FROM events WHERE task = ?1 AND kind = ?2 ORDER BY seq LIMIT 1 OFFSET ?3",
            rusqlite::params![id, kind, nth],
            |r| r.get(0),
        )
        .unwrap()
    };
    let mut from_start = Vec::new();
    let mut from_rule = Vec::new();
    for id in &ids {
        let intervened = at(id, "watcher_intervened", 0);
        from_start.push(intervened - at(id, "tool_result", 0));
        from_rule.push(intervened - at(id, "tool_result", 2));
    }
    from_start.sort_unstable();
    from_rule.sort_unstable();
    let judged = model.double.requests().iter().filter(|r| r.model() == Some("m-router")).count();
    println!(
        "{LOOPS} failing loops, Watcher every 1 s: first failure → intervention {from_start:?} ms; rule holds (3rd \
         failure) → intervention {from_rule:?} ms; {judged} router-tier calls"
    );
}
