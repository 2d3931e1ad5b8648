//! Exhaustion of shared resources (issue 11, class 8), each attack run from inside a real sandboxed task: a worker
//! stopped by its own task is replaced; hundreds of tool calls in one turn run at most the cap; a task over its
//! profile's disk bound, or filling the home's filesystem, is paused with the reason while the supervisor answers and
//! its acknowledged conversation is intact.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome, file_on_branch};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(120);

/// A model that runs `command` in Bash, then ends the task.
fn one_bash(command: &str) -> Model {
    let command = command.to_owned();
    Model::start(policy(move |r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({ "command": command }))),
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }))
}

fn events_of(home: &TestHome, id: &str, kind: &str) -> Vec<Value> {
    let shown = home.show(id);
    shown["events"].as_array().unwrap().iter().filter(|e| e["kind"] == kind).cloned().collect()
}

#[test]
fn a_worker_stopped_by_its_own_task_is_killed_and_the_task_resumes_in_a_new_one() {
    let model = one_bash("kill -STOP $PPID; echo stopped");
    let mut home = TestHome::new();
    let mut env = model.env();
    // Debug builds only: a stuck worker is one silent for 3 s instead of a minute.
    env.push(("NEURAPHAGE_TEST_STUCK_AFTER_MS".to_owned(), "3000".to_owned()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    home.start_supervisor_with(&pairs);
    let repo = home.git_repo("app");
    let id = home.json(&["task", "new", "stop yourself", "--repo", repo.to_str().unwrap(), "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let lost = events_of(&home, &id, "worker_lost");
    assert_eq!(lost.len(), 1, "{ended:#}");
    assert!(lost[0]["data"]["reason"].as_str().unwrap().contains("sent nothing for 3 s"), "{lost:#?}");
    let pids: Vec<u64> =
        events_of(&home, &id, "worker_started").iter().map(|e| e["data"]["pid"].as_u64().unwrap()).collect();
    assert!(pids.len() == 2 && pids[0] != pids[1], "a new worker resumed the task: {pids:?}");
    // The stopped worker was in its Bash call: the new one tells the model that call's outcome is unknown.
    let log = home.ok(&["task", "log", &id, "--json"]);
    assert!(log.contains("outcome of this Bash call is unknown"), "{log}");
}

#[test]
fn hundreds_of_tool_calls_in_one_turn_run_at_most_the_cap() {
    let model = Model::start(policy(|r| match r.tool_result_count() {
        0 => {
            let mut reply = Reply::new();
            for i in 0..300 {
                reply = reply.with_tool("Bash", json!({ "command": format!("echo {i} >> calls.txt") }));
            }
            Step::Reply(reply)
        }
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let repo = home.git_repo("app");
    let id = home.json(&["task", "new", "call a lot", "--repo", repo.to_str().unwrap(), "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ended = home.wait_ended(&[&id], Duration::from_secs(300)).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    // The control: the calls under the cap ran (in order); none past it did.
    let calls = file_on_branch(&repo, &format!("neuraphage/{id}"), "calls.txt").unwrap();
    let expected: String = (0..64).map(|i| format!("{i}\n")).collect();
    assert_eq!(calls, expected);
    let log = home.ok(&["task", "log", &id, "--json"]);
    assert_eq!(log.matches("not run: at most 64 tool calls").count(), 300 - 64);
}

/// A home with a profile `small-disk`: the default one with `disk-mb = 50`.
fn small_disk_home() -> TestHome {
    let home = TestHome::new();
    let default = include_str!("../../sandbox-profiles/profiles/default.toml");
    let small = default.replace("disk-mb = 20480", "disk-mb = 50");
    assert_ne!(small, default, "the default profile's disk bound changed: update this test");
    let profiles = home.paths.home.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("small-disk.toml"), small).unwrap();
    std::fs::set_permissions(&home.paths.home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    home
}

#[test]
fn a_task_over_its_disk_bound_is_paused_with_the_reason_and_resumes_on_retry() {
    let mut home = small_disk_home();
    let model = one_bash("head -c 200000000 /dev/zero > \"$TMPDIR/fill\"; echo written; sleep 120");
    home.start_with_model(&model);
    let id = home.json(&["task", "new", "fill the disk", "--profile", "small-disk", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    home.wait_status(&id, "Paused", WITHIN);
    let paused = events_of(&home, &id, "paused_by_supervisor");
    assert!(paused[0]["data"]["reason"].as_str().unwrap().contains("over its profile's disk-mb = 50"), "{paused:#?}");
    // The control: the task did write past its bound.
    let fill = home.paths.home.join("tasks").join(&id).join("tmp/fill");
    assert!(std::fs::metadata(&fill).unwrap().len() > 50 << 20);
    // The supervisor answers, and the acknowledged conversation is intact (the model's Bash call is in it).
    assert!(home.ok(&["task", "list"]).contains(&id));
    let log = home.ok(&["task", "log", &id, "--json"]);
    assert!(log.contains("head -c 200000000"), "{log}");
    // Freed, and retried: the task resumes from its conversation and completes.
    std::fs::remove_file(&fill).unwrap();
    home.ok(&["task", "retry", &id]);
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
}

/// Mount a tmpfs of `mib` MiB at `at`; false (with a message) where mounting is refused.
fn mount_tmpfs(at: &Path, mib: u64) -> bool {
    std::fs::create_dir_all(at).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "tmpfs"])
        .arg(at)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("SKIPPED: cannot mount a tmpfs here ({})", String::from_utf8_lossy(&out.stderr).trim());
    }
    out.status.success()
}

#[test]
fn a_task_filling_the_homes_filesystem_is_paused_and_task_new_still_works() {
    let mut home = TestHome::new();
    if !mount_tmpfs(&home.paths.home, 64) {
        return;
    }
    let model = one_bash("head -c 100000000 /dev/zero > \"$TMPDIR/fill\"; echo status $?; sleep 120");
    home.start_with_model(&model);
    let id = home.json(&["task", "new", "fill the home", "--json"])["id"].as_str().unwrap().to_owned();
    home.wait_status(&id, "Paused", WITHIN);
    let paused = events_of(&home, &id, "paused_by_supervisor");
    assert!(paused[0]["data"]["reason"].as_str().unwrap().contains("under its reserve"), "{paused:#?}");
    // The control: the task did fill the filesystem (its write stopped at the end of the space).
    let fill = home.paths.home.join("tasks").join(&id).join("tmp/fill");
    assert!(std::fs::metadata(&fill).unwrap().len() > 40 << 20);
    // The supervisor still answers and still stores: a new task is made.
    let second = home.json(&["task", "new", "after the fill", "--json"]);
    assert!(second["id"].as_str().is_some(), "{second:#}");
    home.kill9_supervisors();
    let _ = Command::new("umount").arg("-l").arg(&home.paths.home).status();
}

#[test]
fn the_cap_on_proxy_decisions_holds_across_worker_restarts() {
    // 6 000 refused CONNECTs, then the task kills its own worker (a new proxy comes with the new worker); then
    // 6 000 more: 12 000 decisions against a cap of 10 000 per task.
    let burst = "P=${HTTPS_PROXY##*:}; n=0; for i in $(seq 6000); do exec 3<>/dev/tcp/127.0.0.1/$P || continue; \
                 printf 'CONNECT evil.invalid:443 HTTP/1.1\\r\\n\\r\\n' >&3; read -r line <&3; \
                 case $line in *403*) n=$((n+1));; esac; exec 3>&-; done; echo refused=$n";
    let first = format!("{burst}; kill -9 $PPID");
    let second = burst.to_owned();
    let model = Model::start(policy(move |r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({ "command": first, "timeout": 600000 }))),
        1 => Step::Reply(Reply::tool("Bash", json!({ "command": second, "timeout": 600000 }))),
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    let networked = include_str!("../../sandbox-profiles/profiles/networked.toml");
    let filesystem = networked.split("[network]").next().unwrap();
    let profiles = home.paths.home.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("net.toml"), format!("{filesystem}[network]\nhosts = [\"localhost:1\"]\n")).unwrap();
    std::fs::set_permissions(&home.paths.home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    home.start_with_model(&model);
    let id =
        home.json(&["task", "new", "flood the proxy", "--profile", "net", "--json"])["id"].as_str().unwrap().to_owned();
    let ended = home.wait_ended(&[&id], Duration::from_secs(900)).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    // The control: the second worker's proxy refused all 6 000 (the attempts past the cap did reach a proxy).
    let log = home.ok(&["task", "log", &id, "--json"]);
    assert!(log.contains("refused=6000"), "{log}");
    let count = |kind: &str| -> i64 {
        home.open_store()
            .query_row("SELECT count(*) FROM events WHERE task = ?1 AND kind = ?2", [&id, kind], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count("worker_lost"), 1, "the task killed its worker once");
    assert_eq!(count("proxy_decision"), 10_000);
    assert_eq!(count("events_capped"), 1);
}
