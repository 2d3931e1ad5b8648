//! Every screen and state of the dashboard, drawn into ratatui's `TestBackend` and kept as `insta` snapshots
//! (`tests/snapshots/`): empty, tasks in every status, the waiting banner, the attached view, help, the diff, the
//! filter, the kill confirmation, the new-task line, a lost link, 80×24 and 500 tasks; and what the snapshots
//! cannot show — the colours by depth and NO_COLOR — asserted on the cells.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use neuraphage_ipc::events::StreamItem;
use neuraphage_ipc::llm::StreamDelta;
use neuraphage_ipc::status::{PoolHeadroom, StatusLine};
use neuraphage_ipc::task::{PlanItem, PlanStatus};
use neuraphage_ipc::{ControlReply, EventKind, Priority, RunningPhase, Task, TaskEvent, TaskId, TaskState, TaskStatus};
use neuraphage_tui::app::{App, Link, ReplyTo};
use neuraphage_tui::keys::Command;
use neuraphage_tui::theme::{ColorDepth, Theme};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 14, 30, 0).single().unwrap()
}

fn task(n: u64, description: &str, status: TaskStatus, secs_ago: i64) -> Task {
    Task {
        id: TaskId::from_bits(0xab_c000_0000 + n),
        status,
        priority: Priority::DEFAULT,
        description: description.to_owned(),
        repo: None,
        profile: None,
        parent: None,
        base_commit: None,
        branch: None,
        tier: None,
        persona: None,
        no_watch: false,
        created_at: t0() - Duration::seconds(3600),
        updated_at: t0() - Duration::seconds(secs_ago),
    }
}

fn id(n: u64) -> TaskId {
    TaskId::from_bits(0xab_c000_0000 + n)
}

fn running(tool: Option<&str>) -> TaskStatus {
    TaskStatus::Running {
        phase: match tool {
            Some(t) => RunningPhase::ToolExecution { tool: t.into() },
            None => RunningPhase::LlmRequest,
        },
    }
}

fn ev(seq: u64, n: u64, kind: EventKind) -> StreamItem {
    StreamItem::Event(TaskEvent { seq, task: id(n), at: t0() - Duration::seconds(100 - seq as i64), kind })
}

fn text(n: u64, text: &str) -> StreamItem {
    StreamItem::Delta { task: id(n), delta: StreamDelta::Text { index: 0, text: text.into() } }
}

/// A dashboard with tasks in every status, the first running one streaming, a plan, stats and notifications.
fn busy() -> App {
    let mut app = App::new(t0());
    app.stream(StreamItem::CaughtUp { seq: 0 });
    let mut child = task(7, "write the token tests", TaskStatus::Queued, 30);
    child.parent = Some(id(1));
    app.tasks_listed(vec![
        task(1, "implement auth", running(Some("Bash")), 75),
        task(
            2,
            "fix login bug",
            TaskStatus::WaitingForUser { prompt: "Allow Bash `git push --force`? (request #3)".into() },
            320,
        ),
        task(3, "update docs", TaskStatus::Completed { summary: Some("Updated README".into()) }, 900),
        task(4, "add tests", TaskStatus::Queued, 12),
        task(5, "migrate schema", TaskStatus::Blocked { on: "np-abc0000004".into() }, 45),
        task(6, "refactor cli", TaskStatus::Paused, 4000),
        child,
        task(
            8,
            "flaky ci",
            TaskStatus::Failed { error: "model refused: 3 failures".into(), recoverable: true },
            200_000,
        ),
        task(9, "drop old api", TaskStatus::Cancelled { reason: None }, 600),
        task(
            10,
            "which auth provider",
            TaskStatus::WaitingForUser { prompt: "Which auth provider? [OAuth/JWT/Session]".into() },
            30,
        ),
    ]);
    // Select task 1 (j from the top: waiting ones first).
    app.selected = Some(id(1));
    app.reply(
        ReplyTo::Detail(id(1)),
        Ok(ControlReply::Detail(Box::new(neuraphage_ipc::TaskDetail {
            task: task(1, "implement auth", running(Some("Bash")), 75),
            blocked_by: vec![],
            blocks: vec![],
            children: vec![],
            tree_cost: Default::default(),
            events: vec![],
            cost: Default::default(),
            plan: vec![
                PlanItem { content: "read the user model".into(), status: PlanStatus::Done },
                PlanItem { content: "add JWT generation".into(), status: PlanStatus::InProgress },
                PlanItem { content: "wire the login route".into(), status: PlanStatus::Pending },
            ],
        }))),
    );
    app.stream(text(1, "I'll start by examining the existing user model to understand the authentication flow.\n"));
    app.stream(ev(
        1,
        1,
        EventKind::ToolCall {
            tool: "Read".into(),
            tool_use_id: "t1".into(),
            input: r#"{"file_path":"src/models/user.rs"}"#.into(),
        },
    ));
    app.stream(ev(
        2,
        1,
        EventKind::ToolResult {
            tool: "Read".into(),
            tool_use_id: "t1".into(),
            is_error: false,
            result: "pub struct User {\n".into(),
        },
    ));
    app.stream(ev(
        3,
        1,
        EventKind::ToolCall {
            tool: "Bash".into(),
            tool_use_id: "t2".into(),
            input: r#"{"command":"cargo test auth"}"#.into(),
        },
    ));
    app.stream(ev(
        4,
        1,
        EventKind::ToolResult {
            tool: "Bash".into(),
            tool_use_id: "t2".into(),
            is_error: true,
            result: "error[E0425]: cannot find value `jwt`".into(),
        },
    ));
    app.stream(text(
        1,
        "Found User struct with email and password_hash fields. I'll add JWT token generation \u{1b}]2;pwned\u{7}",
    ));
    for seq in 10..40 {
        app.stream(ev(
            seq,
            1,
            EventKind::Cost {
                model: "m".into(),
                input_tokens: 1,
                output_tokens: 1,
                cache_tokens: 0,
                cost_nano_usd: 0,
                priced: true,
            },
        ));
    }
    app.stream(ev(
        50,
        3,
        EventKind::StatusChanged {
            from: TaskState::Running,
            to: TaskStatus::Completed { summary: Some("Updated README with API documentation".into()) },
        },
    ));
    app.stream(ev(
        51,
        8,
        EventKind::StatusChanged {
            from: TaskState::Running,
            to: TaskStatus::Failed { error: "model refused: 3 failures".into(), recoverable: true },
        },
    ));
    app.stream(ev(52, 8, EventKind::KeyRevoked { pool: "main".into(), key: "key-2".into(), reason: "401".into() }));
    app.stream(ev(
        53,
        2,
        EventKind::StatusChanged {
            from: TaskState::Running,
            to: TaskStatus::WaitingForUser { prompt: "Allow Bash `git push --force`? (request #3)".into() },
        },
    ));
    app.status(StatusLine {
        at: t0(),
        counts: Default::default(),
        waiting: vec![],
        tokens_today: 45_200,
        cost_today_usd: 1.24,
        pools: vec![
            PoolHeadroom { pool: "main".into(), requests: Some(0.8), input_tokens: Some(0.62), output_tokens: None },
            PoolHeadroom { pool: "backup".into(), requests: None, input_tokens: None, output_tokens: None },
        ],
        muted: false,
    });
    app.take_effects();
    app.notices.take_alerts();
    app
}

fn screen(app: &App, width: u16, height: u16, depth: ColorDepth) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| neuraphage_tui::ui::draw(f, app, &Theme::new(depth))).unwrap();
    terminal
}

fn snap(app: &App, width: u16, height: u16) -> String {
    screen(app, width, height, ColorDepth::TrueColor).backend().to_string()
}

#[test]
fn empty() {
    let mut app = App::new(t0());
    app.stream(StreamItem::CaughtUp { seq: 0 });
    app.tasks_listed(vec![]);
    insta::assert_snapshot!(snap(&app, 120, 40));
}

#[test]
fn tasks_in_every_status_with_the_waiting_banner() {
    insta::assert_snapshot!(snap(&busy(), 120, 40));
}

#[test]
fn a_waiting_task_selected_shows_what_it_asks() {
    let mut app = busy();
    app.command(Command::Top);
    insta::assert_snapshot!(snap(&app, 120, 40));
}

#[test]
fn attached() {
    let mut app = busy();
    app.command(Command::Attach);
    app.command(Command::Send);
    for c in "use JWT".chars() {
        app.command(Command::Input(c));
    }
    insta::assert_snapshot!(snap(&app, 120, 40));
}

/// Attaching asks for the conversation so far (`TaskLog`, as `task attach`), once; it shows its last messages
/// within the bounds with a note of what was left out, then what arrived live after the request, escaped.
#[test]
fn attaching_shows_the_conversation_so_far_then_the_live_tail() {
    use neuraphage_ipc::ControlRequest;
    use neuraphage_ipc::llm::{ContentBlock, Message, Speaker};
    use neuraphage_tui::app::Effect;
    use neuraphage_tui::live::{Entry, MAX_BACKLOG_BYTES, MAX_BACKLOG_MESSAGES};
    let mut app = busy();
    app.selected = Some(id(2));
    app.stream(text(2, "streaming when you came: "));
    app.command(Command::Attach);
    let effects = app.take_effects();
    let mark = match &effects[..] {
        [Effect::Call(ControlRequest::TaskLog { task }, ReplyTo::Conversation { task: t, mark })]
            if *task == id(2).to_string() && *t == id(2) =>
        {
            *mark
        }
        other => panic!("{other:?}"),
    };
    // While the conversation is read: more of the streamed text, then a tool call.
    app.stream(text(2, "still streaming"));
    app.stream(ev(
        60,
        2,
        EventKind::ToolCall {
            tool: "Bash".into(),
            tool_use_id: "live-1".into(),
            input: r#"{"command":"git push"}"#.into(),
        },
    ));
    let mut messages = vec![Message::user_text("fix login bug")];
    for n in 0..100 {
        messages.push(Message {
            role: Speaker::Assistant,
            content: vec![
                ContentBlock::Text { text: format!("turn {n}: looking \u{1b}]2;pwned\u{7} at it") },
                ContentBlock::ToolUse {
                    id: format!("t{n}"),
                    name: "Read".into(),
                    input: serde_json::json!({"file_path": format!("src/f{n}.rs")}),
                },
            ],
        });
        messages.push(Message {
            role: Speaker::User,
            content: vec![ContentBlock::ToolResult {
                tool_use_id: format!("t{n}"),
                content: format!("fn f{n}() {{}}\n"),
                is_error: false,
            }],
        });
    }
    messages.push(Message {
        role: Speaker::Assistant,
        content: vec![ContentBlock::Text { text: "I need to push: may I?".into() }],
    });
    app.reply(
        ReplyTo::Conversation { task: id(2), mark },
        Ok(ControlReply::Log { task: id(2), messages: messages.clone() }),
    );
    let log = app.logs.get(&id(2)).unwrap();
    let entries: Vec<&Entry> = log.entries().iter().collect();
    let Entry::Note(_, note) = entries[0] else { panic!("{entries:?}") };
    assert!(
        note.starts_with("… ") && note.ends_with(&format!("not shown; all of it: `neuraphage task log {}`", id(2))),
        "{note}"
    );
    let shown: usize = note[4..].split(' ').next().unwrap().parse().unwrap();
    assert!(messages.len() - shown <= MAX_BACKLOG_MESSAGES, "{shown} left out");
    let text_bytes: usize = entries.iter().map(|e| if let Entry::Text(t) = e { t.len() } else { 0 }).sum();
    assert!(text_bytes <= MAX_BACKLOG_BYTES + 64, "{text_bytes}");
    // The live tail last: the text streaming when attaching (whole), then the call made since.
    let n = entries.len();
    assert_eq!(entries[n - 2], &Entry::Text("streaming when you came: still streaming".into()));
    assert!(matches!(entries[n - 1], Entry::Tool { id, .. } if id == "live-1"));
    // Attaching again does not ask again.
    app.command(Command::Detach);
    app.command(Command::Attach);
    assert!(app.take_effects().iter().all(|e| !matches!(e, Effect::Call(ControlRequest::TaskLog { .. }, _))));
    insta::assert_snapshot!(snap(&app, 120, 40));
}

#[test]
fn attached_typing_a_deny_reason() {
    let mut app = busy();
    app.selected = Some(id(2));
    app.command(Command::Attach);
    app.command(Command::Deny);
    for c in "force-push rewrites \u{1b}[2J main".chars() {
        app.command(Command::Input(c));
    }
    insta::assert_snapshot!(snap(&app, 120, 40));
}

#[test]
fn help() {
    let mut app = busy();
    app.command(Command::Help);
    insta::assert_snapshot!(snap(&app, 120, 40));
}

#[test]
fn diff_view() {
    let mut app = busy();
    app.command(Command::Diff);
    assert!(snap(&app, 80, 24).contains("reading the diff"));
    let patch = "diff --git a/src/auth.rs b/src/auth.rs\n--- a/src/auth.rs\n+++ b/src/auth.rs\n@@ -1,3 +1,4 @@\n fn login() {\n-    todo!()\n+    let token = jwt::sign(user)?;\n+    Ok(token) \u{1b}[2J\n }\n";
    app.reply(
        ReplyTo::Diff(id(1)),
        Ok(ControlReply::Diff { task: id(1), base_commit: Some("abc".into()), patch: patch.into() }),
    );
    app.command(Command::ScrollDown(1));
    insta::assert_snapshot!(snap(&app, 120, 40));
}

#[test]
fn a_huge_diff_is_cut_to_its_bounds_with_a_note_saying_where_to_see_it() {
    use neuraphage_tui::app::{MAX_DIFF_BYTES, MAX_DIFF_LINE_BYTES, MAX_DIFF_LINES, Mode};
    let mut app = busy();
    app.command(Command::Diff);
    // A minified file's 8 MiB line (with an escape in it), then 300 000 short lines.
    let mut patch = String::from("diff --git a/min.js b/min.js\n+");
    patch.push_str(&"x\u{1b}]2;pwned\u{7}".repeat(8 * 1024 * 1024 / 12));
    patch.push('\n');
    for n in 0..300_000 {
        patch.push_str(&format!("+line {n}\n"));
    }
    app.reply(ReplyTo::Diff(id(1)), Ok(ControlReply::Diff { task: id(1), base_commit: Some("abc".into()), patch }));
    let Mode::Diff(view) = &app.mode else { panic!("{:?}", app.mode) };
    assert!(view.lines.len() <= MAX_DIFF_LINES + 1, "{} lines kept", view.lines.len());
    let kept: usize = view.lines.iter().map(String::len).sum();
    assert!(kept <= MAX_DIFF_BYTES + 200, "{kept} bytes kept");
    assert!(view.lines.iter().all(|l| l.len() <= MAX_DIFF_LINE_BYTES), "every line cut");
    let shown = view.lines.len() - 3; // the header, the long line and the note around the `+line N` kept
    assert_eq!(view.cut, 300_000 - shown);
    assert_eq!(view.lines.last().unwrap(), &format!("… {} more lines, see `neuraphage task diff {}`", view.cut, id(1)));
    app.command(Command::Bottom);
    app.command(Command::ScrollUp(3));
    insta::assert_snapshot!(snap(&app, 120, 12));
    // The long line, escaped, cut to the width.
    app.command(Command::Top);
    let top = snap(&app, 120, 12);
    assert!(top.contains("+x\\u{1b}]2;pwned\\u{7}x") && !top.contains('\u{1b}'), "{top}");
}

#[test]
fn filter() {
    let mut app = busy();
    app.command(Command::CycleState); // Queued
    app.command(Command::Filter);
    for c in "tok".chars() {
        app.command(Command::Input(c));
    }
    insta::assert_snapshot!(snap(&app, 120, 40));
}

#[test]
fn kill_confirmation() {
    let mut app = busy();
    app.command(Command::Kill);
    insta::assert_snapshot!(snap(&app, 120, 40));
}

#[test]
fn new_task_input() {
    let mut app = busy();
    app.command(Command::NewTask);
    for c in "add rate limiting to the login route".chars() {
        app.command(Command::Input(c));
    }
    insta::assert_snapshot!(snap(&app, 120, 40));
}

#[test]
fn no_status_socket_and_a_lost_link() {
    let mut app = busy();
    app.stats.status = None;
    app.link = Link::Lost("the supervisor closed the connection".into());
    insta::assert_snapshot!(snap(&app, 120, 40));
}

#[test]
fn small_terminal_80x24() {
    insta::assert_snapshot!(snap(&busy(), 80, 24));
}

#[test]
fn five_hundred_tasks() {
    let mut app = App::new(t0());
    app.stream(StreamItem::CaughtUp { seq: 0 });
    let states = [running(None), TaskStatus::Queued, TaskStatus::Completed { summary: None }, TaskStatus::Paused];
    let mut tasks: Vec<Task> =
        (0..500).map(|n| task(n, &format!("task number {n}"), states[n as usize % 4].clone(), n as i64)).collect();
    tasks.push(task(900, "needs you", TaskStatus::WaitingForUser { prompt: "ok?".into() }, 5));
    app.tasks_listed(tasks);
    app.take_effects();
    for _ in 0..250 {
        app.command(Command::Down);
    }
    let shown = snap(&app, 120, 40);
    assert!(shown.contains("Tasks 501/501"));
    insta::assert_snapshot!(shown);
}

#[test]
fn no_color_draws_no_colour_and_depths_agree() {
    let app = busy();
    let plain = screen(&app, 120, 40, ColorDepth::None);
    let buffer = plain.backend().buffer();
    assert!(
        buffer.content.iter().all(|c| c.fg == Color::Reset && (c.bg == Color::Reset)),
        "NO_COLOR: no colour at all"
    );
    assert_eq!(plain.backend().to_string(), snap(&app, 120, 40), "the same text at every depth");
    // The running task's glyph, at each depth.
    let glyph_colour = |depth| {
        let t = screen(&app, 120, 40, depth);
        let b = t.backend().buffer().clone();
        let row = (0..40).find(|y| (0..50).any(|x| b[(x, *y)].symbol() == "●")).unwrap();
        let x = (0..50).find(|x| b[(*x, row)].symbol() == "●").unwrap();
        b[(x, row)].fg
    };
    assert_eq!(glyph_colour(ColorDepth::TrueColor), Color::Rgb(80, 200, 120));
    assert_eq!(glyph_colour(ColorDepth::Indexed256), Color::Indexed(78));
    assert_eq!(glyph_colour(ColorDepth::Ansi16), Color::Green);
}

#[test]
fn nothing_a_task_wrote_reaches_the_screen_as_a_control() {
    let shown = snap(&busy(), 120, 40);
    assert!(!shown.contains('\u{1b}') && !shown.contains('\u{7}'));
    assert!(shown.contains("\\u{1b}]2;pwned\\u{7}"), "shown as text:\n{shown}");
}

#[test]
fn any_size_draws_without_a_panic() {
    let mut app = busy();
    for (w, h) in [(1, 1), (10, 5), (40, 10), (79, 23), (300, 100)] {
        for mode in [Command::Help, Command::Kill, Command::Attach, Command::Diff, Command::NewTask] {
            app.command(Command::Cancel);
            app.command(Command::Detach);
            app.command(mode);
            screen(&app, w, h, ColorDepth::Ansi16);
        }
    }
}

/// Red team (helper E): a plan (TodoWrite), advice and a notice full of terminal escapes, drawn in the live pane.
#[test]
fn attack_a_hostile_plan_advice_and_notice_draw_as_text() {
    let mut app = busy();
    let hostile = [
        "osc52 \u{1b}]52;c;ZXZpbA==\u{7}",
        "c1 csi \u{9b}2J",
        "bidi \u{202e}gnp.exe",
        "line\nbreak\u{2028}sep \u{85}nel",
        &"w".repeat(4000),
    ];
    let items: Vec<PlanItem> =
        hostile.iter().map(|c| PlanItem { content: (*c).to_owned(), status: PlanStatus::Pending }).collect();
    app.stream(ev(90, 1, EventKind::PlanUpdated { items: items.clone() }));
    app.stream(ev(91, 1, EventKind::Advice { id: 1, from: "task\u{1b}[31m x".into(), text: hostile[0].into() }));
    app.stream(ev(92, 1, EventKind::Notice { notice: "n\u{9b}".into(), message: hostile[2].into() }));
    let shown = snap(&app, 160, 60);
    let raw: Vec<char> = shown
        .chars()
        .filter(|c| (c.is_control() && *c != '\n') || ('\u{202a}'..='\u{202e}').contains(c) || *c == '\u{2028}')
        .collect();
    assert_eq!(raw, Vec::<char>::new(), "{shown}");
    // Control: the plan is drawn (so its items could have reached the screen).
    assert!(shown.contains("osc52 \\u{1b}]52;c;ZXZpbA==\\u{7}"), "{shown}");
}
