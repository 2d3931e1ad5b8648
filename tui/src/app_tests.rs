//! The dashboard's state without a terminal: ordering, selection, actions and the effects they ask for.

use chrono::{Duration, TimeZone, Utc};
use neuraphage_ipc::events::StreamItem;
use neuraphage_ipc::{
    ControlReply, ControlRequest, EventKind, Priority, Task, TaskEvent, TaskId, TaskState, TaskStatus,
};
use pretty_assertions::assert_eq;

use super::*;
use crate::keys::Command;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).single().unwrap()
}

fn task(n: u64, status: TaskStatus, changed: i64) -> Task {
    Task {
        id: TaskId::from_bits(n),
        status,
        priority: Priority::DEFAULT,
        description: format!("task {n}"),
        repo: None,
        profile: None,
        parent: None,
        base_commit: None,
        branch: None,
        tier: None,
        persona: None,
        no_watch: false,
        created_at: t0(),
        updated_at: t0() + Duration::seconds(changed),
    }
}

fn event(seq: u64, n: u64, kind: EventKind) -> StreamItem {
    StreamItem::Event(TaskEvent { seq, task: TaskId::from_bits(n), at: t0() + Duration::seconds(seq as i64), kind })
}

fn listed(app: &mut App, tasks: Vec<Task>) {
    app.stream(StreamItem::CaughtUp { seq: 0 });
    assert_eq!(app.take_effects(), vec![Effect::ListTasks]);
    app.tasks_listed(tasks);
}

#[test]
fn a_task_that_starts_waiting_floats_to_the_top_after_older_waits_and_raises_an_alert() {
    let mut app = App::new(t0());
    listed(
        &mut app,
        vec![
            task(1, TaskStatus::Running { phase: neuraphage_ipc::RunningPhase::LlmRequest }, 0),
            task(2, TaskStatus::WaitingForUser { prompt: "old".into() }, 1),
        ],
    );
    app.take_effects();
    app.stream(event(
        10,
        1,
        EventKind::StatusChanged {
            from: TaskState::Running,
            to: TaskStatus::WaitingForUser { prompt: "Allow Bash `rm x`?".into() },
        },
    ));
    let order: Vec<TaskId> = app.tasks.rows().map(|r| r.task.id.clone()).collect();
    assert_eq!(order, [2, 1].map(TaskId::from_bits));
    let alerts = app.notices.take_alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].text, "needs input: Allow Bash `rm x`?");
    assert_eq!(app.title(), "np ⏳2 ▶0 ✓0");
}

#[test]
fn events_that_arrive_while_the_list_is_read_are_applied_after_it() {
    let mut app = App::new(t0());
    app.stream(StreamItem::CaughtUp { seq: 5 });
    assert_eq!(app.take_effects(), vec![Effect::ListTasks, Effect::History { since: 0 }]);
    // Task 1 completes while the (older) list is on its way.
    app.stream(event(
        6,
        1,
        EventKind::StatusChanged { from: TaskState::Running, to: TaskStatus::Completed { summary: None } },
    ));
    assert!(app.take_effects().is_empty(), "no fetch while listing");
    app.tasks_listed(vec![task(1, TaskStatus::Running { phase: neuraphage_ipc::RunningPhase::LlmRequest }, 0)]);
    assert_eq!(app.tasks.get(&TaskId::from_bits(1)).unwrap().status.state(), TaskState::Completed);
    // A later unknown task is fetched once.
    app.take_effects();
    app.stream(event(7, 9, EventKind::Created { priority: Priority::DEFAULT }));
    app.stream(event(8, 9, EventKind::StatusChanged { from: TaskState::Queued, to: TaskStatus::Queued }));
    let fetches = app.take_effects();
    assert_eq!(
        fetches,
        vec![Effect::Call(
            ControlRequest::ShowTask { task: TaskId::from_bits(9).to_string() },
            ReplyTo::Detail(TaskId::from_bits(9))
        )]
    );
}

#[test]
fn keys_become_the_control_requests_the_cli_makes() {
    let mut app = App::new(t0());
    listed(
        &mut app,
        vec![task(1, TaskStatus::WaitingForUser { prompt: "ok?".into() }, 0), task(2, TaskStatus::Paused, 0)],
    );
    app.take_effects();
    let id = TaskId::from_bits(1).to_string();
    app.command(Command::Approve);
    app.command(Command::ApproveAlways);
    // x asks why first (optional): Enter on an empty line denies without a reason, a typed one is sent as the CLI's
    // `task deny --reason`, and Esc keeps the request.
    app.command(Command::Deny);
    app.command(Command::Submit);
    app.command(Command::Deny);
    for c in " not on prod ".chars() {
        app.command(Command::Input(c));
    }
    app.command(Command::Submit);
    app.command(Command::Deny);
    app.command(Command::Input('n'));
    app.command(Command::Cancel);
    assert_eq!(app.mode, Mode::Dashboard);
    app.command(Command::PauseResume);
    app.command(Command::Retry);
    let requests: Vec<ControlRequest> = app
        .take_effects()
        .into_iter()
        .map(|e| match e {
            Effect::Call(r, _) => r,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        requests,
        vec![
            ControlRequest::DecidePermission {
                task: id.clone(),
                allow: true,
                save: false,
                reason: None,
                request: None
            },
            ControlRequest::DecidePermission { task: id.clone(), allow: true, save: true, reason: None, request: None },
            ControlRequest::DecidePermission {
                task: id.clone(),
                allow: false,
                save: false,
                reason: None,
                request: None
            },
            ControlRequest::DecidePermission {
                task: id.clone(),
                allow: false,
                save: false,
                reason: Some("not on prod".into()),
                request: None
            },
            ControlRequest::PauseTask { task: id.clone() },
            ControlRequest::RetryTask { task: id.clone() },
        ]
    );
    // j selects the paused task: p resumes it.
    app.command(Command::Down);
    app.take_effects();
    app.command(Command::PauseResume);
    assert!(matches!(&app.take_effects()[..], [Effect::Call(ControlRequest::ResumeTask { .. }, _)]));
    // K asks first; only y kills.
    app.command(Command::Kill);
    app.command(Command::Cancel);
    assert!(app.take_effects().is_empty());
    assert_eq!(app.mode, Mode::Dashboard);
    app.command(Command::Kill);
    app.command(Command::Yes);
    assert!(matches!(&app.take_effects()[..], [Effect::Call(ControlRequest::KillTask { .. }, _)]));
    // s types a message; Enter sends it; an empty one is refused without a request.
    app.command(Command::Send);
    for c in "hello".chars() {
        app.command(Command::Input(c));
    }
    app.command(Command::Submit);
    assert!(
        matches!(&app.take_effects()[..], [Effect::Call(ControlRequest::SendMessage { text, .. }, _)] if text == "hello")
    );
    app.command(Command::NewTask);
    app.command(Command::Input(' '));
    app.command(Command::Submit);
    assert!(app.take_effects().is_empty());
    assert!(app.flash.as_ref().is_some_and(|(_, error)| *error));
    // q quits, but not while typing.
    app.command(Command::Filter);
    app.command(Command::Quit);
    assert!(app.take_effects().is_empty());
    app.command(Command::Cancel);
    app.command(Command::Quit);
    assert_eq!(app.take_effects(), vec![Effect::Quit]);
}

#[test]
fn a_refusal_is_said_and_changes_nothing() {
    let mut app = App::new(t0());
    listed(&mut app, vec![task(1, TaskStatus::Queued, 0)]);
    app.reply(ReplyTo::Action("approve".into()), Err("np-0000000001 no longer waits on you".into()));
    assert_eq!(app.flash, Some(("approve: np-0000000001 no longer waits on you".into(), true)));
    assert_eq!(app.tasks.get(&TaskId::from_bits(1)).unwrap().status, TaskStatus::Queued);
    app.reply(ReplyTo::Action("paused".into()), Ok(ControlReply::Task(task(1, TaskStatus::Paused, 5))));
    assert_eq!(app.tasks.get(&TaskId::from_bits(1)).unwrap().status, TaskStatus::Paused);
}

#[test]
fn history_feeds_notifications_but_never_a_status() {
    let mut app = App::new(t0());
    listed(&mut app, vec![task(1, TaskStatus::Running { phase: neuraphage_ipc::RunningPhase::LlmRequest }, 0)]);
    let StreamItem::Event(old) = event(
        1,
        1,
        EventKind::StatusChanged {
            from: TaskState::Running,
            to: TaskStatus::Failed { error: "boom".into(), recoverable: true },
        },
    ) else {
        unreachable!()
    };
    app.history(&old);
    assert_eq!(app.tasks.get(&TaskId::from_bits(1)).unwrap().status.state(), TaskState::Running);
    assert_eq!(app.notices.iter().next().map(|n| n.text.clone()), Some("failed: boom".into()));
    assert!(app.notices.take_alerts().is_empty(), "no alert for the past");
}

#[test]
fn a_deny_reason_typed_attached_returns_to_the_attached_view_and_is_bounded() {
    let mut app = App::new(t0());
    listed(&mut app, vec![task(1, TaskStatus::WaitingForUser { prompt: "ok?".into() }, 0)]);
    app.take_effects();
    app.command(Command::Attach);
    app.take_effects();
    app.command(Command::Deny);
    assert!(
        matches!(&app.mode, Mode::Prompt { purpose: Purpose::DenyReason { attached: true, .. }, .. }),
        "{:?}",
        app.mode
    );
    for _ in 0..MAX_REASON_BYTES {
        app.command(Command::Input('é'));
    }
    app.command(Command::Submit);
    assert_eq!(app.mode, Mode::Attached { input: None });
    let effects = app.take_effects();
    let [Effect::Call(ControlRequest::DecidePermission { allow: false, reason: Some(reason), .. }, _)] = &effects[..]
    else {
        panic!("{effects:?}")
    };
    assert_eq!(reason.len(), MAX_REASON_BYTES, "cut to the supervisor's limit on a character boundary");
    app.command(Command::Deny);
    app.command(Command::Cancel);
    assert_eq!(app.mode, Mode::Attached { input: None });
    assert!(app.take_effects().is_empty());
}

#[test]
fn a_diff_the_supervisor_cut_is_said_to_have_more_than_the_lines_counted() {
    let id = task(1, TaskStatus::Queued, 0).id;
    let body: String = (0..6_000).map(|i| format!("+line {i}\n")).collect();
    // Control: a patch the supervisor sent whole gives the exact count.
    let (_, cut) = bounded_diff(&body, &id);
    assert_eq!(cut, 1_000);
    let (lines, _) = bounded_diff(&body, &id);
    assert_eq!(lines.last().unwrap(), &format!("… 1000 more lines, see `neuraphage task diff {id}`"));
    let sent = format!("{body}[neuraphage: the diff is cut here: 9 more lines (90 bytes) left out; the whole …]\n");
    let (lines, cut) = bounded_diff(&sent, &id);
    assert_eq!(cut, 1_001);
    assert_eq!(lines.last().unwrap(), &format!("… more than 1000 more lines, see `neuraphage task diff {id}`"));
}
