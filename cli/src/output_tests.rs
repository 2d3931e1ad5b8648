//! The text output, with hostile values: whatever a model or a task chose is printed escaped, whole outputs compared.

use chrono::TimeZone;
use neuraphage_ipc::cost::{CostGrouping, CostLine, CostTotals};
use neuraphage_ipc::llm::{ContentBlock, Message, Speaker};
use neuraphage_ipc::lock::{LockInfo, LockTableView};
use neuraphage_ipc::{EventKind, Priority, RunningPhase, Task, TaskDetail, TaskEvent, TaskId, TaskStatus};
use pretty_assertions::assert_eq;

use super::*;

#[test]
fn descriptions_are_cut_to_one_line() {
    assert_eq!(short("fix it", 10), "fix it");
    assert_eq!(short("first\nsecond", 10), "first …");
    assert_eq!(short("abcdefghijkl", 5), "abcd…");
    assert_eq!(short("ééééééé", 3), "éé…");
    assert_eq!(short("\n\nlater line", 20), "later line");
    assert_eq!(short("evil\u{1b}[2J", 20), "evil\\u{1b}[2J");
}

#[test]
fn ages_are_short() {
    let t = Utc::now();
    assert_eq!(age(t, t + chrono::Duration::seconds(59)), "59s");
    assert_eq!(age(t, t + chrono::Duration::seconds(3600 * 5)), "5h");
    assert_eq!(age(t, t - chrono::Duration::seconds(5)), "0s");
}

/// Every character a terminal could act on, in one hostile string.
const HOSTILE: &str = "x\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}1m\u{202e}\u{200b}\u{feff}\u{7f}\ny";
const SHOWN: &str = "x\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{9b}1m\\u{202e}\\u{200b}\\u{feff}\\u{7f}\\u{a}y";

fn assert_clean(text: &str) {
    let bad = text.chars().find(|c| (c.is_control() && *c != '\n') || ('\u{2000}'..='\u{206f}').contains(c));
    assert_eq!(bad, None, "{text}");
}

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().unwrap()
}

#[test]
fn task_show_prints_model_and_task_values_escaped() {
    let id = TaskId::from_bits(0xab);
    let event = |seq, kind| TaskEvent { seq, task: id.clone(), at: at(), kind };
    let detail = TaskDetail {
        task: Task {
            id: id.clone(),
            status: TaskStatus::Running { phase: RunningPhase::ToolExecution { tool: HOSTILE.into() } },
            priority: Priority::default(),
            description: format!("do {HOSTILE}"),
            repo: Some(HOSTILE.into()),
            profile: Some(HOSTILE.into()),
            parent: None,
            base_commit: None,
            branch: None,
            tier: Some(HOSTILE.into()),
            persona: None,
            no_watch: false,
            created_at: at(),
            updated_at: at(),
        },
        blocked_by: Vec::new(),
        blocks: Vec::new(),
        children: Vec::new(),
        tree_cost: Default::default(),
        events: vec![
            event(
                1,
                EventKind::ProxyDecision { host: HOSTILE.into(), port: 443, allowed: false, reason: HOSTILE.into() },
            ),
            event(2, EventKind::Checkpoint { seq: 3, point: HOSTILE.into(), commit: "é\u{1b}[31mabcdefghij".into() }),
            event(3, EventKind::Committed { branch: HOSTILE.into(), commit: "0123456789abcdef".into() }),
            event(4, EventKind::Escalated { from: HOSTILE.into(), to: "big".into(), reason: HOSTILE.into() }),
        ],
        cost: CostTotals { unpriced_responses: 1, unpriced_models: vec![HOSTILE.into()], ..CostTotals::default() },
        plan: Vec::new(),
    };
    let text = task_detail(&detail, at());
    assert_clean(&text);
    let description = SHOWN.replace("\\u{a}", "\n    ");
    let expected = format!(
        "{id}  Running: {SHOWN}\n  priority     {}\n  tier         {SHOWN}\n  created      2026-01-02 03:04:05 UTC (0s ago)\n  \
         repo         {SHOWN}\n  profile      {SHOWN}\n  tokens       0 in, 0 out, 0 cache read, 0 cache write (0 responses)\n  \
         cost         $0.000000 + 1 unpriced responses ({SHOWN}: not in the price table, counted as $0)\n  \
         description\n    do {description}\n  events\n    \
         #1      03:04:05.000  proxy refused {SHOWN}:443 ({SHOWN})\n    \
         #2      03:04:05.000  checkpoint 3 {SHOWN} (é\\u{{1b}}[31mabcd)\n    \
         #3      03:04:05.000  committed 0123456789 to {SHOWN}\n    \
         #4      03:04:05.000  escalated from tier {SHOWN} to big: {SHOWN}\n",
        Priority::default()
    );
    assert_eq!(text, expected);
}

#[test]
fn the_plan_prints_its_progress_and_marks_escaped() {
    use neuraphage_ipc::task::{PlanItem, PlanStatus};
    let plan = [
        PlanItem { content: "read".into(), status: PlanStatus::Done },
        PlanItem { content: HOSTILE.into(), status: PlanStatus::InProgress },
        PlanItem { content: "test".into(), status: PlanStatus::Pending },
    ];
    let text = crate::output::plan_text(&plan);
    assert_clean(&text);
    assert_eq!(text, format!("  Plan: 1/3 done\n    [x] read\n    [>] {SHOWN}\n    [ ] test\n"));
    assert_eq!(crate::output::plan_text(&[]), "");
}

#[test]
fn task_log_prints_tool_names_text_and_results_escaped() {
    let messages = vec![
        Message { role: Speaker::User, content: vec![ContentBlock::Text { text: format!("hi\n{HOSTILE}") }] },
        Message {
            role: Speaker::Assistant,
            content: vec![ContentBlock::ToolUse {
                id: "t1".into(),
                name: HOSTILE.into(),
                input: serde_json::json!({ "command": "echo \u{9b}\u{202e}" }),
            }],
        },
        Message {
            role: Speaker::User,
            content: vec![ContentBlock::ToolResult {
                tool_use_id: "t1".into(),
                content: "out\u{1b}[2J".into(),
                is_error: false,
            }],
        },
    ];
    let text = conversation(&messages);
    assert_clean(&text);
    let multi_line = SHOWN.replace("\\u{a}", "\n");
    assert_eq!(
        text,
        format!(
            "[user] hi\n{multi_line}\n[model] → {SHOWN} {{\"command\":\"echo \\u{{9b}}\\u{{202e}}\"}}\n[tool] out\\u{{1b}}[2J\n"
        )
    );
}

#[test]
fn cost_and_locks_print_model_names_and_resources_escaped() {
    let totals = CostTotals {
        responses: 1,
        unpriced_responses: 1,
        unpriced_models: vec!["m\u{1b}[8m".into()],
        ..CostTotals::default()
    };
    let lines = vec![CostLine { key: "m\u{1b}[8m".into(), totals: totals.clone() }];
    let text = cost_report(CostGrouping::Model, &lines, &totals);
    assert_clean(&text);
    assert_eq!(
        text,
        "MODEL                             RESPONSES         INPUT        OUTPUT    COST (USD)\n\
         m\\u{1b}[8m                                1             0             0      0.000000  (unpriced: counted as $0)\n\
         total                                     1             0             0      0.000000  (unpriced: counted as $0)\n\
         unpriced models (add them under prices: in neuraphage.yaml): m\\u{1b}[8m\n"
    );
    let id = TaskId::from_bits(1);
    let table = LockTableView {
        locks: vec![LockInfo {
            resource: format!("file:{HOSTILE}"),
            holder: id.clone(),
            held_ms: 1500,
            waiters: vec![],
        }],
        grace_remaining_ms: None,
    };
    let text = lock_table(&table);
    assert_clean(&text);
    assert!(text.contains(&format!("file:{SHOWN}")), "{text}");
}

#[test]
fn task_list_and_status_lines_print_descriptions_and_errors_escaped() {
    let failed = TaskStatus::Failed { error: HOSTILE.into(), recoverable: false };
    assert_eq!(status_line(&failed), "Failed: x\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{9b}1m\\u…");
    assert_eq!(status_line(&TaskStatus::Blocked { on: HOSTILE.into() }), format!("Blocked on {SHOWN}"));
    let task = Task {
        id: TaskId::from_bits(2),
        status: TaskStatus::Queued,
        priority: Priority::default(),
        description: "\u{202e}gnp.exe".into(),
        repo: None,
        profile: None,
        parent: None,
        base_commit: None,
        branch: None,
        tier: None,
        persona: None,
        no_watch: false,
        created_at: at(),
        updated_at: at(),
    };
    let text = task_table(&[task], at());
    assert_clean(&text);
    assert!(text.ends_with("  \\u{202e}gnp.exe\n"), "{text}");
}

#[test]
fn task_list_tree_indents_sub_tasks_under_their_parents() {
    let task = |n: u64, parent: Option<u64>, description: &str| Task {
        id: TaskId::from_bits(n),
        status: TaskStatus::Queued,
        priority: Priority::default(),
        description: description.into(),
        repo: None,
        profile: None,
        parent: parent.map(TaskId::from_bits),
        base_commit: None,
        branch: None,
        tier: None,
        persona: None,
        no_watch: false,
        created_at: at(),
        updated_at: at(),
    };
    // Children listed before their parent, a grandchild, a parent not listed (its child is a root).
    let tasks =
        [task(2, Some(1), "child"), task(3, Some(2), HOSTILE), task(1, None, "top"), task(4, Some(9), "orphan")];
    let shown = task_tree(&tasks, at());
    assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "{shown}");
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[1].starts_with("np-0000000001") && lines[1].ends_with("top"), "{shown}");
    assert!(lines[2].starts_with("  np-0000000002") && lines[2].ends_with("child"), "{shown}");
    assert!(lines[3].starts_with("    np-0000000003") && lines[3].contains("x\\u{1b}"), "{shown}");
    assert!(lines[4].starts_with("np-0000000004"), "{shown}");
    assert_eq!(lines.len(), 5);
    assert_eq!(task_tree(&[], at()), "no tasks\n");
}
