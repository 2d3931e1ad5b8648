//! A task's resource limits: its cgroup holds a fork bomb and a memory bomb to the task (the supervisor and another
//! task go on), nothing it started survives its end (not even a double-forked `setsid` child), and its rlimits are
//! the profile's. Each attack runs in a real sandboxed worker (Bash) under a small user profile, with a control that
//! shows the same action succeeding outside a task.

use std::time::Duration;

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome, alive};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(90);

/// The shipped default profile with small limits: 32 processes, 64 MiB, 256 open files, 16 MiB files.
fn small_profile() -> String {
    let default = include_str!("../../sandbox-profiles/profiles/default.toml");
    let small = default
        .replace("memory-mb = 8192", "memory-mb = 64")
        .replace("processes = 1024", "processes = 32")
        .replace("open-files = 4096", "open-files = 256")
        .replace("file-size-mb = 8192", "file-size-mb = 16");
    assert_ne!(small, default, "the default profile's limits changed: update this test");
    small
}

/// A home whose `small` profile has small limits, running two tasks at once.
fn small_home() -> TestHome {
    let home = TestHome::new();
    home.write_config("max-concurrent: 2\n");
    let profiles = home.paths.home.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("small.toml"), small_profile()).unwrap();
    // The layer below the namespaces (the session and the cgroup), alone: without a pid namespace, the task's pids
    // are the host's, and a killed supervisor's task outlives it until the next one sweeps its cgroup.
    let without = small_profile().replace("[namespaces]\nrequired = true", "[namespaces]\nenabled = false");
    assert_ne!(without, small_profile(), "the default profile's [namespaces] changed: update this test");
    std::fs::write(profiles.join("small-no-ns.toml"), without).unwrap();
    home
}

/// Start the supervisor with a model that gives each task (found by the marker in its description) its Bash calls,
/// one a turn, then ends it.
fn start(home: &mut TestHome, commands: &[(&str, Vec<String>)]) -> Model {
    let commands: Vec<(String, Vec<String>)> = commands.iter().map(|(m, c)| ((*m).to_owned(), c.clone())).collect();
    let model = Model::start(policy(move |r| {
        let text = r.first_user_text().unwrap_or_default();
        let steps = commands.iter().find(|(marker, _)| text.contains(marker.as_str())).map(|(_, c)| c.as_slice());
        match steps.unwrap_or_default().get(r.tool_result_count()) {
            Some(command) => Step::Reply(Reply::tool("Bash", json!({ "command": command }))),
            None => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
        }
    }));
    home.start_with_model(&model);
    model
}

fn new_task(home: &TestHome, marker: &str) -> String {
    new_task_with(home, marker, "small")
}

fn new_task_with(home: &TestHome, marker: &str, profile: &str) -> String {
    let task = home.json(&["task", "new", marker, "--profile", profile, "--json"]);
    task["id"].as_str().unwrap().to_owned()
}

/// What the task's sandbox reported enforced (its `sandboxed` event).
fn enforced(task: &serde_json::Value) -> String {
    let events = task["events"].as_array().unwrap();
    let sandboxed = events.iter().find(|e| e["kind"] == "sandboxed").expect("a sandboxed event");
    sandboxed["data"].to_string()
}

/// Fork `$1` children that each hold a process for a while; print how many forks succeeded and exit 1 if one failed.
const SPAWNER: &str = r#"
import os, sys, time
want, hold = int(sys.argv[1]), int(sys.argv[2])
kids, err = [], None
for _ in range(want):
    try:
        pid = os.fork()
    except OSError as e:
        err = e
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
print(f'spawned={len(kids)} of {want}', f'fork-failed: {err}' if err else 'all-forked', flush=True)
time.sleep(hold)
for k in kids:
    os.kill(k, 9)
    os.waitpid(k, 0)
sys.exit(1 if err else 0)
"#;

fn spawner(count: u32, hold_seconds: u32) -> String {
    format!("/usr/bin/python3 - {count} {hold_seconds} <<'EOF'{SPAWNER}EOF")
}

#[test]
fn a_fork_bomb_in_a_task_hits_its_process_limit_and_spares_the_rest() {
    let mut home = small_home();
    let bomb = spawner(200, 3);
    let _model = start(&mut home, &[("BOMB", vec![bomb]), ("BYSTANDER", vec![spawner(8, 0)])]);
    let bomb_id = new_task(&home, "BOMB");
    let bystander = new_task(&home, "BYSTANDER");
    home.worker_in_tool(&bomb_id, WITHIN);
    // The supervisor answers while the bomb is at its limit.
    assert!(home.task_ids().contains(&bomb_id));
    let ended = home.wait_ended(&[&bomb_id, &bystander], WITHIN);
    assert!(enforced(&ended[0]).contains("pids.max = 32"), "no pids cgroup: {:#}", ended[0]);
    let output = home.first_tool_output(&bomb_id);
    assert!(output.contains("fork-failed"), "the fork bomb was not stopped: {output}");
    let spawned: u32 = output.split("spawned=").nth(1).and_then(|s| s.split(' ').next()?.parse().ok()).unwrap();
    assert!(spawned < 32, "{output}");
    // The other task, limited alike, forks what it needs meanwhile and completes.
    assert_eq!(ended[1]["status"], "Completed", "{:#}", ended[1]);
    let other = home.first_tool_output(&bystander);
    assert!(other.contains("spawned=8 of 8 all-forked"), "{other}");
    assert!(home.task_ids().len() == 2);
    // The control: outside a task, the same 200 forks succeed.
    let outside = std::process::Command::new("bash").arg("-c").arg(spawner(200, 0)).output().unwrap();
    let outside = String::from_utf8_lossy(&outside.stdout);
    assert!(outside.contains("spawned=200 of 200 all-forked"), "the control: {outside}");
}

/// Fork 13 children that each allocate and touch 40 MiB (520 MiB in all, each under the 64 MiB data rlimit), hold it
/// a second; print how many ended well, were SIGKILLed (the OOM killer) or failed otherwise.
const MEMORY_BOMB: &str = r#"/usr/bin/python3 - <<'EOF'
import os, time
kids = []
for _ in range(13):
    pid = os.fork()
    if pid == 0:
        try:
            b = bytearray(40 * 1024 * 1024)
            for i in range(0, len(b), 4096):
                b[i] = 1
            time.sleep(1)
            os._exit(0)
        except MemoryError:
            os._exit(3)
    kids.append(pid)
ok = killed = other = 0
for k in kids:
    _, st = os.waitpid(k, 0)
    if os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0:
        ok += 1
    elif os.WIFSIGNALED(st) and os.WTERMSIG(st) == 9:
        killed += 1
    else:
        other += 1
print(f'ok={ok} killed={killed} other={other}', flush=True)
EOF"#;

#[test]
fn a_memory_bomb_in_a_task_is_killed_within_its_memory_limit() {
    let mut home = small_home();
    let _model =
        start(&mut home, &[("BOMB", vec![MEMORY_BOMB.to_owned()]), ("BYSTANDER", vec!["echo bystander-ok".into()])]);
    let bomb = new_task(&home, "BOMB");
    let bystander = new_task(&home, "BYSTANDER");
    let ended = home.wait_ended(&[&bomb, &bystander], WITHIN);
    assert!(enforced(&ended[0]).contains("cgroup memory"), "no memory cgroup: {:#}", ended[0]);
    let output = home.first_tool_output(&bomb);
    let killed: u32 = output.split("killed=").nth(1).and_then(|s| s.split(' ').next()?.parse().ok()).unwrap_or(0);
    // The OOM killer takes the largest process of the cgroup: mostly a child of the bomb; when the children are all
    // still small as the limit is hit, it may be the task's worker itself (the task then resumes from its
    // checkpoint, told the call's outcome is unknown). Either way the bomb was stopped inside the task's cgroup.
    let worker_killed = output.contains("outcome of this Bash call is unknown")
        && home.show(&bomb)["events"].as_array().unwrap().iter().any(|e| e["kind"] == "worker_lost");
    assert!(
        (killed > 0 && !output.contains("ok=13")) || worker_killed,
        "the memory bomb was not stopped by the cgroup: {output}"
    );
    // The supervisor and the other task live on.
    assert_eq!(ended[1]["status"], "Completed", "{:#}", ended[1]);
    assert!(home.first_tool_output(&bystander).contains("bystander-ok"));
    assert_eq!(home.task_ids().len(), 2);
    // The control: outside a task, the same allocations all succeed.
    let outside = std::process::Command::new("bash").arg("-c").arg(MEMORY_BOMB).output().unwrap();
    let outside = String::from_utf8_lossy(&outside.stdout);
    assert!(outside.contains("ok=13 killed=0"), "the control: {outside}");
}

/// A double fork into a new session: `sleep` is orphaned outside the shell's session and process group. Its pid
/// goes to `$TMPDIR/survivor.pid`; it holds no pipe of the shell's.
const SURVIVOR: &str =
    "setsid sh -c 'sleep 1000 < /dev/null > /dev/null 2>&1 & echo $! > \"$TMPDIR/survivor.pid\"'; echo started";

#[test]
fn a_double_forked_setsid_survivor_dies_with_its_task() {
    let mut home = small_home();
    let _model = start(&mut home, &[("SURVIVOR", vec![SURVIVOR.to_owned()])]);
    let id = new_task_with(&home, "SURVIVOR", "small-no-ns");
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let tmp = home.paths.home.join("tasks").join(&id).join("tmp");
    let pid: u32 = std::fs::read_to_string(tmp.join("survivor.pid")).unwrap().trim().parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(std::time::Instant::now() < deadline, "a double-forked process {pid} outlived its task");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The control: outside a task, the same double fork survives the shell that made it.
    let scratch = tempfile::tempdir().unwrap();
    let out =
        std::process::Command::new("bash").arg("-c").arg(SURVIVOR).env("TMPDIR", scratch.path()).output().unwrap();
    assert!(out.status.success());
    let pid: u32 = std::fs::read_to_string(scratch.path().join("survivor.pid")).unwrap().trim().parse().unwrap();
    let survived = alive(pid);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    assert!(survived, "the control: the double-forked sleep outside a task died on its own");
}

#[test]
fn a_task_runs_with_its_profiles_rlimits() {
    let probe = "echo open-files=$(ulimit -n) file-blocks=$(ulimit -f)";
    let mut home = small_home();
    let _model = start(&mut home, &[("RLIMITS", vec![probe.to_owned()])]);
    let id = new_task(&home, "RLIMITS");
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let output = home.first_tool_output(&id);
    // 16 MiB in ulimit's 1024-byte blocks.
    assert!(output.contains("open-files=256 file-blocks=16384"), "{output}");
    // The control: outside a task, the limits are not the profile's.
    let outside = std::process::Command::new("bash").arg("-c").arg(probe).output().unwrap();
    let outside = String::from_utf8_lossy(&outside.stdout);
    assert!(!outside.contains("open-files=256") && !outside.contains("file-blocks=16384"), "the control: {outside}");
}

#[test]
fn processes_of_a_killed_supervisors_task_die_when_the_next_one_starts() {
    // The first run leaves a double-forked survivor; the resumed one waits in its tool too (so only the start of
    // the next supervisor, not the end of the resumed task, can account for the survivor's death).
    let steps = vec![format!("{SURVIVOR}; sleep 600"), "sleep 600".to_owned()];
    let mut home = small_home();
    let model = start(&mut home, &[("STALE", steps)]);
    let id = new_task_with(&home, "STALE", "small-no-ns");
    home.worker_in_tool(&id, WITHIN);
    let pid_file = home.paths.home.join("tasks").join(&id).join("tmp").join("survivor.pid");
    let deadline = std::time::Instant::now() + WITHIN;
    let pid: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok()) {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "the task never wrote {}", pid_file.display());
        std::thread::sleep(Duration::from_millis(20));
    };
    home.kill9_supervisors();
    // The control: a supervisor killed with -9 cannot end its task's processes itself.
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(pid), "the survivor died with the supervisor: nothing left for the next one to prove");
    home.start_with_model(&model);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(std::time::Instant::now() < deadline, "a process {pid} of the killed supervisor's task still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
    home.worker_in_tool(&id, WITHIN);
    home.ok(&["task", "kill", &id]);
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Cancelled", "{ended:#}");
}
