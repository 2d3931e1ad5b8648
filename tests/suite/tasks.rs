//! The task commands through the real CLI: create, list, show, depend, kill, with and without `--json`.

use neuraphage_tests::TestHome;
use pretty_assertions::assert_eq;
use serde_json::Value;

#[test]
fn create_list_show_depend_kill() {
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    let repo = home.git_repo("app");
    let repo_s = repo.to_str().unwrap();

    let a = home.json(&["task", "new", "fix the flaky test", "--repo", repo_s, "--priority", "1", "--json"]);
    assert_eq!(a["status"], "Queued");
    assert_eq!(a["priority"], 1);
    assert_eq!(a["description"], "fix the flaky test");
    assert_eq!(a["repo"], repo_s);
    assert!(a["created_at"].as_str().unwrap().ends_with('Z'), "{a}");
    let a_id = a["id"].as_str().unwrap().to_owned();
    assert!(a_id.starts_with("np-") && a_id.len() == 13, "{a_id}");

    // Plain output is just the id.
    let b_id =
        home.ok(&["task", "new", "write docs", "--after", &a_id[..6], "--profile", "untrusted"]).trim().to_owned();
    assert!(b_id.starts_with("np-") && b_id.len() == 13, "{b_id}");

    let list = home.json(&["task", "list", "--json"]);
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![a_id.as_str(), b_id.as_str()], "priority 1 before priority 2");
    assert_eq!(list[1]["profile"], "untrusted");
    assert_eq!(list[1]["repo"], Value::Null);

    let text = home.ok(&["task", "list"]);
    assert!(text.contains(&a_id) && text.contains("fix the flaky test") && text.contains("Queued"), "{text}");

    // show: the task, what it waits for, its events. Any unique prefix works, with or without np-.
    let show = home.json(&["task", "show", &b_id[3..8], "--json"]);
    assert_eq!(show["id"], b_id.as_str());
    assert_eq!(show["blocked_by"][0]["id"], a_id.as_str());
    let kinds: Vec<&str> = show["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["created", "dependency_added", "persona_selected"]);
    let show_a = home.json(&["task", "show", &a_id, "--json"]);
    assert_eq!(show_a["blocks"][0]["id"], b_id.as_str());

    // depend: c waits for b; adding it again changes nothing.
    let c_id = home.ok(&["task", "new", "release"]).trim().to_owned();
    let dep = home.json(&["task", "depend", &c_id, "--on", &b_id, "--json"]);
    assert_eq!(dep, serde_json::json!({"task": c_id, "on": b_id, "added": true}));
    let again = home.ok(&["task", "depend", &c_id, "--on", &b_id]);
    assert!(again.contains("already waits"), "{again}");

    // kill: the status says Cancelled, and the event log has the change.
    let killed = home.json(&["task", "kill", &c_id, "--reason", "not needed", "--json"]);
    assert_eq!(killed["status"], "Cancelled");
    assert_eq!(killed["status_detail"]["reason"], "not needed");
    let shown = home.json(&["task", "show", &c_id, "--json"]);
    assert_eq!(shown["status"], "Cancelled");
    let last = shown["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "status_changed");
    assert_eq!(last["data"]["from"], "Queued");

    // --status filters.
    let cancelled = home.json(&["task", "list", "--status", "cancelled", "--json"]);
    assert_eq!(cancelled.as_array().unwrap().len(), 1);
    assert_eq!(cancelled[0]["id"], c_id.as_str());
    let queued = home.json(&["task", "list", "--status", "Queued", "--json"]);
    assert_eq!(queued.as_array().unwrap().len(), 2);

    // daemon status counts them.
    let status = home.json(&["daemon", "status", "--json"]);
    assert_eq!(status["tasks"]["Queued"], 2);
    assert_eq!(status["tasks"]["Cancelled"], 1);
    assert_eq!(status["tasks"]["Running"], 0);
}

#[test]
fn show_prints_dependencies_and_events_as_text() {
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    let a = home.ok(&["task", "new", "first"]).trim().to_owned();
    let b = home.ok(&["task", "new", "second\nwith a second line", "--after", &a]).trim().to_owned();
    let text = home.ok(&["task", "show", &b]);
    assert!(text.starts_with(&format!("{b}  Queued")), "{text}");
    assert!(text.contains("waits for") && text.contains(&a), "{text}");
    assert!(text.contains("second\n    with a second line"), "{text}");
    assert!(text.contains("created (priority 2)"), "{text}");
}
