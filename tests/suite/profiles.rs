//! Sandbox profiles as data: refused at `task new` with file, line and reason; each shipped profile runs a task and
//! reports its layers; a profile's minimum Landlock ABI refuses the task on an older kernel, while a lower minimum
//! runs it and reports what is missing; the `Commit` tool commits through the supervisor, running no hook.

use std::time::Duration;

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome, file_on_branch};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(90);

/// A model that runs `command` with Bash once, then ends the task.
fn bash_once(command: String) -> Model {
    Model::start(policy(move |r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({ "command": command }))),
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }))
}

/// The `sandboxed` events of a task.
fn sandbox_events(home: &TestHome, id: &str) -> Vec<Value> {
    let shown = home.show(id);
    shown["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "sandboxed").map(|e| e["data"].clone()).collect()
}

fn new_task(home: &TestHome, args: &[&str]) -> String {
    let mut all = vec!["task", "new", "probe", "--json"];
    all.extend_from_slice(args);
    home.json(&all)["id"].as_str().unwrap().to_owned()
}

#[test]
fn a_bad_profile_is_refused_at_task_new_with_file_line_and_reason_and_nothing_is_stored() {
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    let profiles = home.paths.home.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("typo.toml"), "description = \"x\"\n[filesystem]\nread-only = [\"/usr\"]\n").unwrap();
    std::fs::write(profiles.join("peek.toml"), "[filesystem]\nread = [\n  \"/usr\",\n  \"{home}\",\n]\n").unwrap();
    std::fs::write(
        profiles.join("keys.toml"),
        format!("[filesystem]\nread = [{:?}]\n", home.paths.home.display().to_string()),
    )
    .unwrap();
    std::fs::write(profiles.join("sys.toml"), "[syscalls]\ndeny = [\"teleport\"]\n").unwrap();
    for (profile, wanted) in [
        ("typo", vec!["typo.toml:3", "unknown field `read-only`"]),
        ("peek", vec!["peek.toml:4", "user's home"]),
        ("keys", vec!["keys.toml:2", "Neuraphage home"]),
        ("sys", vec!["sys.toml:2", "unknown system call \"teleport\""]),
        ("nope", vec!["no profile \"nope\"", "default", "networked", "untrusted", "typo"]),
    ] {
        let (code, stderr) = home.fails(&["task", "new", "x", "--profile", profile]);
        assert_eq!(code, 1, "{profile}: {stderr}");
        for w in wanted {
            assert!(stderr.contains(w), "{profile}: {w:?} missing from: {stderr}");
        }
    }
    assert!(home.task_ids().is_empty(), "a refused task was stored");
    // A good user profile is accepted, and a user file overrides a shipped name.
    std::fs::write(profiles.join("ok.toml"), "description = \"fine\"\n[filesystem]\nread-exec = [\"/usr\"]\n").unwrap();
    let id = new_task(&home, &["--profile", "ok"]);
    assert_eq!(home.show(&id)["profile"], "ok");
}

#[test]
fn each_shipped_profile_runs_a_task_and_reports_what_it_enforces() {
    // `setarch -R` calls personality(2), which only `untrusted` refuses; /opt is readable only outside `untrusted`.
    let probe = "ulimit -n; ulimit -f; setarch x86_64 -R true 2>/dev/null && echo personality=ok || echo personality=refused; \
                 ls /opt >/dev/null 2>&1 && echo opt=readable || echo opt=refused";
    let outside = std::process::Command::new("bash").args(["-c", probe]).output().unwrap();
    let outside = String::from_utf8_lossy(&outside.stdout).into_owned();
    assert!(outside.contains("personality=ok") && outside.contains("opt=readable"), "control: {outside}");
    let mut seen = Vec::new();
    for (profile, files, fsize, personality, opt) in [
        ("default", "4096", "8388608", "personality=ok", "opt=readable"),
        ("untrusted", "1024", "1048576", "personality=refused", "opt=refused"),
    ] {
        let mut home = TestHome::new();
        let model = bash_once(probe.to_owned());
        home.start_with_model(&model);
        let id = new_task(&home, &["--profile", profile]);
        let ended = home.wait_ended(&[&id], WITHIN).remove(0);
        assert_eq!(ended["status"], "Completed", "{profile}: {ended:#}");
        let out = home.first_tool_output(&id);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.first().copied(), Some(files), "{profile} open files: {out}");
        // ulimit -f counts 1024-byte blocks.
        assert_eq!(lines.get(1).copied(), Some(fsize), "{profile} file size: {out}");
        assert!(out.contains(personality) && out.contains(opt), "{profile}: {out}");
        let events = sandbox_events(&home, &id);
        assert_eq!(events.len(), 1, "{profile}: {events:?}");
        let e = &events[0];
        assert_eq!(e["profile"], profile);
        assert!(e["kernel_abi"].as_u64().unwrap() >= 6, "{e}");
        // Only a uid of its own is missing (not made here: the task runs as the supervisor's uid).
        let missing = e["missing"].as_array().unwrap();
        assert!(missing.len() == 1 && missing[0].as_str().unwrap().starts_with("a uid of its own"), "{e}");
        let enforced = e["enforced"].to_string();
        for layer in [
            "namespaces (bubblewrap)",
            "landlock filesystem",
            "landlock network",
            "landlock scopes",
            "seccomp",
            "capabilities",
        ] {
            assert!(enforced.contains(layer), "{profile}: {layer} not reported: {enforced}");
        }
        seen.push(enforced);
    }
    assert!(seen[1].contains("personality"), "untrusted's extra syscalls are reported: {}", seen[1]);
}

#[test]
fn below_a_profiles_minimum_landlock_abi_the_task_is_refused_and_above_it_what_is_missing_is_reported() {
    let mut home = TestHome::new();
    let model = bash_once("echo ran".to_owned());
    let mut env = model.env();
    // The worker believes the kernel offers Landlock ABI 3 (it can only lower what it enforces).
    env.push((neuraphage_sandbox_profiles::ENV_TEST_LANDLOCK_ABI.to_owned(), "3".to_owned()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    home.start_supervisor_with(&pairs);

    let strict = new_task(&home, &["--profile", "untrusted"]);
    let ended = home.wait_ended(&[&strict], WITHIN).remove(0);
    assert_eq!(ended["status"], "Failed", "{ended:#}");
    let error = ended["status_detail"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("Landlock ABI 3") && error.contains("at least 6"), "{ended:#}");
    assert_eq!(model.double.requests().len(), 0, "a refused task must not reach the model");

    let lenient = new_task(&home, &[]);
    let ended = home.wait_ended(&[&lenient], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    assert!(home.first_tool_output(&lenient).contains("ran"));
    let events = sandbox_events(&home, &lenient);
    let missing = events[0]["missing"].to_string();
    for gap in ["TCP", "ioctl", "scopes"] {
        assert!(missing.contains(gap), "{gap} not reported missing: {missing}");
    }
    assert_eq!(events[0]["kernel_abi"], 3);
    let text = home.ok(&["task", "show", &lenient]);
    assert!(text.contains("NOT ENFORCED"), "{text}");
}

#[test]
fn the_commit_tool_commits_to_the_tasks_branch_through_the_supervisor_and_runs_no_hook() {
    let mut home = TestHome::new();
    let repo = home.git_repo("repo");
    let marker = home.root().join("hook-ran");
    let hook = repo.join(".git/hooks/pre-commit");
    std::fs::write(&hook, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let model = Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Write", json!({"file_path": "a.txt", "content": "first\n"}))),
        1 => Step::Reply(Reply::tool("Commit", json!({"message": "Add a.txt"}))),
        2 => Step::Reply(Reply::tool("Commit", json!({"message": "Again"}))),
        3 => {
            Step::Reply(Reply::tool("Bash", json!({"command": "git commit --allow-empty -m sneaky 2>&1; echo rc=$?"})))
        }
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }));
    home.start_with_model(&model);
    let repo_arg = repo.display().to_string();
    let id = new_task(&home, &["--repo", &repo_arg]);
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let results = home.tool_outputs(&id);
    assert!(results[1].starts_with("Committed ") && results[1].contains(&format!("neuraphage/{id}")), "{results:?}");
    assert!(results[2].contains("Nothing to commit"), "{results:?}");
    assert!(!results[3].contains("rc=0"), "git commit inside the sandbox must fail: {results:?}");
    let branch = format!("neuraphage/{id}");
    assert_eq!(file_on_branch(&repo, &branch, "a.txt").as_deref(), Some("first\n"));
    let git = git2::Repository::open(&repo).unwrap();
    let mut walk = git.revwalk().unwrap();
    walk.push(git.refname_to_id(&format!("refs/heads/{branch}")).unwrap()).unwrap();
    let messages: Vec<String> =
        walk.map(|oid| git.find_commit(oid.unwrap()).unwrap().message().unwrap_or("").to_owned()).collect();
    assert!(messages.iter().any(|m| m.starts_with("Add a.txt")), "{messages:?}");
    assert!(!messages.iter().any(|m| m.contains("sneaky")), "{messages:?}");
    assert!(!marker.exists(), "the repository's pre-commit hook ran");
    let committed = home.show(&id)["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "committed").count();
    assert!(committed >= 1);
}

#[test]
fn sandbox_check_reports_every_layer_of_each_shipped_profile_and_what_an_older_kernel_lacks() {
    let home = TestHome::new();
    for profile in ["default", "untrusted", "networked"] {
        let report = home.json(&["sandbox", "check", "--profile", profile, "--json"]);
        assert_eq!(report["profile"], profile);
        assert!(report["refused"].is_null(), "{report:#}");
        let layers = report["layers"].as_array().unwrap();
        let names: Vec<&str> = layers.iter().map(|l| l["layer"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["namespaces", "landlock filesystem", "network", "landlock scopes", "seccomp", "capabilities", "rlimits"]
        );
        assert!(layers.iter().all(|l| l["enforced"] == true), "{profile}: {report:#}");
    }
    // The probes can fail: on a kernel without scopes the signal probe gets through, and `untrusted` is refused.
    let older = |args: &[&str]| {
        let mut cmd = home.cli();
        cmd.args(args).env(neuraphage_sandbox_profiles::ENV_TEST_LANDLOCK_ABI, "3");
        cmd.output().unwrap()
    };
    let out = older(&["sandbox", "check", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scopes = report["layers"].as_array().unwrap().iter().find(|l| l["layer"] == "landlock scopes").unwrap().clone();
    assert_eq!(scopes["enforced"], false, "{report:#}");
    assert!(report["missing"].to_string().contains("scopes"));
    let out = older(&["sandbox", "check", "--profile", "untrusted"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("REFUSED"), "{out:?}");
}
