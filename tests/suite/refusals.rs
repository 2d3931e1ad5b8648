//! Every refusal of the task commands: a clear message on stderr, a non-zero exit, and nothing stored.

use neuraphage_ipc::{ControlReply, ControlRequest, ErrorCode, NewTask};
use neuraphage_tests::{RawClient, TestHome};
use pretty_assertions::assert_eq;

/// Run a command that must be refused; check the message and that the store is unchanged.
fn refused(home: &TestHome, args: &[&str], says: &[&str]) {
    let before = home.json(&["task", "list", "--json"]);
    let events_before: i64 = home.open_store().query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap();
    let (code, stderr) = home.fails(args);
    assert_ne!(code, 0);
    for s in says {
        assert!(stderr.contains(s), "neuraphage {args:?}: stderr does not say {s:?}:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(home.json(&["task", "list", "--json"]), before, "neuraphage {args:?} changed the tasks");
    let events_after: i64 = home.open_store().query_row("SELECT count(*) FROM events", [], |r| r.get(0)).unwrap();
    assert_eq!(events_after, events_before, "neuraphage {args:?} added events");
}

#[test]
fn bad_task_commands_are_refused_and_store_nothing() {
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    let a = home.ok(&["task", "new", "a"]).trim().to_owned();
    let b = home.ok(&["task", "new", "b", "--after", &a]).trim().to_owned();
    let not_git = home.root().join("plain");
    std::fs::create_dir(&not_git).unwrap();
    let repo = home.git_repo("repo");
    std::fs::create_dir(repo.join("sub")).unwrap();
    let big = "x".repeat(64 * 1024 + 1);

    refused(&home, &["task", "new", ""], &["description is empty"]);
    refused(&home, &["task", "new", "  \n "], &["description is empty"]);
    refused(&home, &["task", "new", &big], &["65537 bytes", "64 KiB"]);
    refused(&home, &["task", "new", "x", "--repo", not_git.to_str().unwrap()], &["not a git repository", "plain"]);
    refused(&home, &["task", "new", "x", "--repo", repo.join("sub").to_str().unwrap()], &["inside the repository"]);
    refused(&home, &["task", "new", "x", "--repo", "/no/such/folder"], &["--repo /no/such/folder"]);
    refused(&home, &["task", "new", "x", "--priority", "5"], &["--priority", "5"]);
    refused(&home, &["task", "new", "x", "--priority", "-1"], &["-1"]);
    refused(&home, &["task", "new", "x", "--after", "np-fffffffff0"], &["no task has the id np-fffffffff0"]);
    refused(&home, &["task", "new", "x", "--profile", "../../etc"], &["profile name"]);
    refused(&home, &["task", "show", "np-zz"], &["not a task id"]);
    refused(&home, &["task", "kill", "0000000000"], &["no task has the id"]);
    refused(&home, &["task", "depend", &a, "--on", &a], &["cannot depend on itself"]);
    refused(&home, &["task", "depend", &a, "--on", &b], &["cycle", &format!("{b} → {a}")]);
    refused(&home, &["task", "list", "--status", "sleeping"], &["unknown status"]);
    refused(&home, &["task", "show", "np-"], &["not a task id"]);
    // With 17 tasks, two share their first hex digit: that prefix is ambiguous, and the candidates are named.
    for i in 0..15 {
        home.ok(&["task", "new", &format!("filler {i}")]);
    }
    let ids = home.task_ids();
    let shared = (0..16u8)
        .map(|d| format!("np-{d:x}"))
        .find(|p| ids.iter().filter(|id| id.starts_with(p.as_str())).count() > 1)
        .unwrap();
    let matching: Vec<&str> = ids.iter().filter(|id| id.starts_with(&shared)).map(String::as_str).collect();
    let mut says = vec!["matches several tasks"];
    says.extend(&matching);
    refused(&home, &["task", "show", &shared], &says);
    refused(&home, &["task", "kill", &shared[3..]], &["matches several tasks"]);
}

#[test]
fn the_supervisor_checks_requests_itself() {
    // A client that skips the CLI's own checks is refused by the supervisor, and nothing is stored.
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    let mut client = RawClient::connect(&home.paths).unwrap();
    client.handshake().unwrap();
    let cases = [
        (NewTask { priority: 9, ..NewTask::described("x") }, "priority 9 is outside 0..4"),
        (NewTask::described(""), "description is empty"),
        (NewTask::described("x".repeat(70_000)), "70000 bytes"),
        (NewTask { repo: Some("relative/path".into()), ..NewTask::described("x") }, "absolute path"),
        (NewTask { after: vec!["np-".into()], ..NewTask::described("x") }, "not a task id"),
        (NewTask { after: vec!["np-fffffffff0".into()], ..NewTask::described("x") }, "no task has the id"),
    ];
    for (i, (new, says)) in cases.into_iter().enumerate() {
        match client.call(i as u64, ControlRequest::CreateTask(new)).unwrap() {
            ControlReply::Error(e) => {
                assert!(e.message.contains(says), "{} does not say {says:?}", e.message);
                assert_ne!(e.code, ErrorCode::Internal);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    assert!(home.task_ids().is_empty());
}

#[test]
fn commands_without_a_supervisor_say_so() {
    let home = TestHome::queue_only();
    let (code, stderr) = home.fails(&["task", "list"]);
    assert_eq!(code, 3);
    assert!(stderr.contains("not running") && stderr.contains("neuraphage daemon start"), "{stderr}");
    let (code, _) = home.fails(&["daemon", "status"]);
    assert_eq!(code, 3);
}
