//! Attacks on what Landlock does not mediate, stopped by the outer boundary (bubblewrap's namespaces): metadata
//! changes outside the task (chmod, utime, setxattr, a setuid bit), inotify on another task's worktree and on
//! `~/.ssh`, `prlimit` / `renice` / `kill -STOP` on the supervisor, the broker and another task's worker, System V
//! shared memory, TCP to the host, and a task outliving a supervisor killed with -9.
//!
//! One run, shared by the tests below: a victim task (with a repository) waits in its tool while three attacker
//! tasks, one per shipped profile (each with one more read-only folder, holding a root-owned file for the setuid
//! attack), run every probe from inside. Then the same probes run outside (the control), against the same files
//! and a sacrificial process, where each must succeed. Each probe prints `NAME=allowed` or `NAME=refused REASON`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TEST_API_KEY, TestHome, alive, children_named, pids_in_namespace, task_pid_namespace};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(120);
const PROFILES: [&str; 3] = ["default", "untrusted", "networked"];

/// The probes; every target comes from the environment (see [`exports`]).
const PROBES: &str = r#"
p() { name=$1; shift; if out=$("$@" 2>&1); then echo "$name=allowed"; else echo "$name=refused $(echo $out | head -c 160)"; fi; }
py() { /usr/bin/python3 -c "$@"; }
XATTR='import os, sys; os.setxattr(sys.argv[1], "user.neuraphage", b"1")'
INOTIFY='import ctypes, os, sys
l = ctypes.CDLL(None, use_errno=True); fd = l.inotify_init1(0)
w = l.inotify_add_watch(fd, sys.argv[1].encode(), 0xfff)
sys.exit(0 if w >= 0 else os.strerror(ctypes.get_errno()))'
SHMAT='import ctypes, os, sys
l = ctypes.CDLL(None, use_errno=True); l.shmat.restype = ctypes.c_void_p
a = l.shmat(int(sys.argv[1]), None, 0)
sys.exit(0 if a not in (None, ctypes.c_void_p(-1).value) else os.strerror(ctypes.get_errno()))'
SHMGET='import ctypes, os, sys
l = ctypes.CDLL(None, use_errno=True)
i = l.shmget(int(sys.argv[1]), 4096, 0o1600)
sys.exit(0 if i >= 0 else os.strerror(ctypes.get_errno()))'
for f in ssh-key:$UHOME/.ssh/id_ed25519 api-keys:$NHOME/api-keys.yaml; do
  n=${f%%:*}; path=${f#*:}
  p chmod-$n sh -c 'chmod 644 "$1" && chmod 600 "$1"' _ "$path"
  p utime-$n touch -m -d 2001-01-01 "$path"
  p xattr-$n py "$XATTR" "$path"
done
p setuid-read-only chmod u+s "$RO/suid-target"
p inotify-victim py "$INOTIFY" "$VICTIM"
p inotify-ssh py "$INOTIFY" "$UHOME/.ssh"
for t in supervisor:$SUPERVISOR_PID broker:$BROKER_PID victim:$VICTIM_PID; do
  n=${t%%:*}; pid=${t#*:}
  p prlimit-$n prlimit --pid "$pid" --nofile=7:7
  p renice-$n renice -n 19 -p "$pid"
  p stop-$n kill -STOP "$pid"
done
p tcp-loopback bash -c 'exec 3<>/dev/tcp/127.0.0.1/$1' _ "$LO_PORT"
[ -n "$NL_ADDR" ] && p tcp-address bash -c 'exec 3<>/dev/tcp/$1/$2' _ "$NL_ADDR" "$NL_PORT"
p shm-attach py "$SHMAT" "$SHM_ID"
p shm-make py "$SHMGET" "$SHM_KEY"
[ -n "$HTTPS_PROXY" ] && echo "proxy=$(curl -sS -m 10 https://evil.example/ 2>&1 | head -c 200)"
echo end-of-probes
"#;

/// What one attacker printed, by probe name.
type Printed = BTreeMap<String, String>;

struct Run {
    /// Per profile: what its attacker printed, and its task (as it ended).
    inside: BTreeMap<&'static str, (Printed, Value)>,
    outside: Printed,
    /// Real state after the attackers ran, before the control: (fact, held).
    facts: Vec<(String, bool)>,
    /// Whether the machine has a non-loopback address for the TCP probe.
    has_address: bool,
}

static RUN: OnceLock<Run> = OnceLock::new();

fn run() -> &'static Run {
    RUN.get_or_init(attack)
}

fn printed(output: &str) -> Printed {
    output.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// A non-loopback IPv4 address of this machine, if it has one (the route to a documentation address says which).
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let udp = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    udp.connect("192.0.2.1:9").ok()?;
    let ip = udp.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// What a process looks like to the attacks: its limits, its nice value and its state letter.
fn observed(pid: u32) -> (String, String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<String> =
        stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().map(str::to_owned).collect();
    // After the comm: state is field 3, nice field 19 (1-based in proc(5)), so indices 0 and 16 here.
    (limits, fields.get(16).cloned().unwrap_or_default(), fields.first().cloned().unwrap_or_default())
}

fn sysv_keys() -> Vec<i64> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    text.lines().skip(1).filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect()
}

/// The shipped profiles with `ro` read-only; the networked one may also connect to `port` (so that Landlock lets
/// through what only the network namespace stops).
fn make_profiles(home: &TestHome, ro: &Path, port: Option<u16>) {
    let dir = home.paths.home.join("profiles");
    std::fs::create_dir_all(&dir).unwrap();
    for name in PROFILES {
        let (_, text) = neuraphage_sandbox_profiles::profile::SHIPPED.iter().find(|(n, _)| *n == name).unwrap();
        let with = text.replacen("read-exec = [", &format!("read-exec = [\"{}\", ", ro.display()), 1);
        assert_ne!(&with, text, "{name} has no read-exec list: update this test");
        let with = match (name, port) {
            ("networked", Some(port)) => with.replacen("tcp-connect = []", &format!("tcp-connect = [{port}]"), 1),
            _ => with,
        };
        std::fs::write(dir.join(format!("ns-{name}.toml")), with).unwrap();
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WITHIN;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn attack() -> Run {
    let mut home = TestHome::new();
    let root = home.root().to_path_buf();
    let user_home = root.join("user-home");
    std::fs::create_dir_all(user_home.join(".ssh")).unwrap();
    let ssh_key = user_home.join(".ssh/id_ed25519");
    std::fs::write(&ssh_key, "-----BEGIN OPENSSH PRIVATE KEY----- FAKE\n").unwrap();
    std::fs::set_permissions(&ssh_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ro = root.join("read-only");
    std::fs::create_dir_all(&ro).unwrap();
    let suid = ro.join("suid-target");
    std::fs::write(&suid, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o755)).unwrap();
    home.write_config("max-concurrent: 4\n");
    // Targets on the host: a TCP listener on 127.0.0.1 and one on another address of the machine, if it has one.
    let lo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = non_loopback_address();
    let nl = address.map(|a| std::net::TcpListener::bind((a, 0)).unwrap());
    make_profiles(&home, &ro, nl.as_ref().map(|l| l.local_addr().unwrap().port()));
    let repo = home.git_repo("app");

    let command: Arc<Mutex<String>> = Arc::default();
    let script = command.clone();
    let model = Model::start(policy(move |r| {
        let victim = r.first_user_text().unwrap_or_default().contains("victim");
        let bash = if victim {
            "while [ ! -e \"$TMPDIR/go\" ]; do sleep 0.05; done; echo victim-done".to_owned()
        } else {
            script.lock().unwrap().clone()
        };
        match r.tool_result_count() {
            0 => Step::Reply(Reply::tool("Bash", json!({ "command": bash }))),
            _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
        }
    }));
    let keys = format!(
        "providers:\n  - provider: anthropic\n    api-key: {TEST_API_KEY}\n    base-url: {}\n",
        model.double.anthropic_base_url()
    );
    let api_keys = home.paths.home.join("api-keys.yaml");
    std::fs::write(&api_keys, keys).unwrap();
    std::fs::set_permissions(&api_keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut env = model.env();
    env.push(("HOME".to_owned(), user_home.display().to_string()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let supervisor = home.start_supervisor_with(&pairs);
    let broker = children_named(supervisor, "neuraphage-brok")[0];

    // The victim: another task, waiting in its tool.
    let repo_arg = repo.to_str().unwrap();
    let victim_args = ["task", "new", "victim", "--repo", repo_arg, "--json"];
    let victim_id = home.json(&victim_args)["id"].as_str().unwrap().to_owned();
    let victim_bwrap = home.worker_in_tool(&victim_id, WITHIN);
    let victim_ns = task_pid_namespace(victim_bwrap).expect("the victim's pid namespace");
    // Its worker inside (pid 2 there: bubblewrap's init is pid 1).
    let victim_worker = pids_in_namespace(&victim_ns).iter().find(|(_, inner)| *inner == 2).expect("victim worker").0;
    let victim_tree = home.paths.home.join("tasks").join(&victim_id).join("worktree");

    // System V shared memory on the host.
    let ipcmk = std::process::Command::new("ipcmk").args(["-M", "4096"]).output().unwrap();
    let shm_id: String = String::from_utf8_lossy(&ipcmk.stdout).chars().filter(char::is_ascii_digit).collect();
    assert!(!shm_id.is_empty(), "ipcmk: {ipcmk:?}");
    let shm_key = 0x4e50_0000 + i64::from(std::process::id() & 0xffff);
    let exports = |sup: u32, brk: u32, vic: u32, key: i64| {
        let vars = [
            ("UHOME", user_home.display().to_string()),
            ("NHOME", home.paths.home.display().to_string()),
            ("RO", ro.display().to_string()),
            ("VICTIM", victim_tree.display().to_string()),
            ("SUPERVISOR_PID", sup.to_string()),
            ("BROKER_PID", brk.to_string()),
            ("VICTIM_PID", vic.to_string()),
            ("LO_PORT", lo.local_addr().unwrap().port().to_string()),
            ("NL_ADDR", address.map(|a| a.to_string()).unwrap_or_default()),
            ("NL_PORT", nl.as_ref().map(|l| l.local_addr().unwrap().port().to_string()).unwrap_or_default()),
            ("SHM_ID", shm_id.clone()),
            ("SHM_KEY", key.to_string()),
        ];
        let mut text: String = vars.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
        text.push_str(PROBES);
        text
    };
    *command.lock().unwrap() = exports(supervisor, broker, victim_worker, shm_key);
    let watched = [supervisor, broker, victim_bwrap, victim_worker];
    let before: Vec<_> = watched.iter().map(|p| observed(*p)).collect();
    let key_before = std::fs::metadata(&ssh_key).unwrap();
    let api_before = std::fs::metadata(&api_keys).unwrap();

    // Inside: one attacker per shipped profile, at once.
    let ids: Vec<(&'static str, String)> = PROFILES
        .iter()
        .map(|p| {
            let task = home.json(&["task", "new", "attacker", "--profile", &format!("ns-{p}"), "--json"]);
            (*p, task["id"].as_str().unwrap().to_owned())
        })
        .collect();
    let id_refs: Vec<&str> = ids.iter().map(|(_, id)| id.as_str()).collect();
    let ended = home.wait_ended(&id_refs, WITHIN);
    let mut inside = BTreeMap::new();
    for ((profile, id), task) in ids.iter().zip(ended) {
        let output = home.first_tool_output(id);
        assert!(output.contains("end-of-probes"), "{profile}: the probes did not all run: {output}");
        inside.insert(*profile, (printed(&output), task));
    }

    // The real state, after the attacks.
    let mut facts = Vec::new();
    let mut fact = |what: String, held: bool| facts.push((what, held));
    for (pid, was) in watched.iter().zip(&before) {
        let now = observed(*pid);
        fact(format!("process {pid} alive"), alive(*pid));
        fact(format!("process {pid} not stopped ({})", now.2), now.2 != "T" && now.2 != "t");
        fact(format!("process {pid} nice unchanged ({} → {})", was.1, now.1), was.1 == now.1);
        fact(format!("process {pid} limits unchanged"), was.0 == now.0);
    }
    for (path, was) in [(&ssh_key, &key_before), (&api_keys, &api_before)] {
        let now = std::fs::metadata(path).unwrap();
        fact(format!("{} mode unchanged", path.display()), now.mode() == was.mode());
        fact(format!("{} mtime unchanged", path.display()), now.mtime() == was.mtime());
        fact(format!("{} has no xattr", path.display()), xattr_absent(path));
    }
    fact("no setuid bit on the read-only file".into(), std::fs::metadata(&suid).unwrap().mode() & 0o4000 == 0);
    fact(format!("no segment with the task's key {shm_key} on the host"), !sysv_keys().contains(&shm_key));
    let shm_found = sysv_keys().len();

    // Let the victim end.
    std::fs::write(home.paths.home.join("tasks").join(&victim_id).join("tmp/go"), b"").unwrap();
    assert_eq!(home.wait_ended(&[&victim_id], WITHIN)[0]["status"], "Completed");

    // The control: the same probes outside, against a sacrificial process and a key of its own.
    let mut sacrifice = std::process::Command::new("sleep").arg("300").spawn().unwrap();
    let pid = sacrifice.id();
    let control_key = shm_key + 1;
    let out = std::process::Command::new("bash").arg("-c").arg(exports(pid, pid, pid, control_key)).output().unwrap();
    let outside = printed(&String::from_utf8_lossy(&out.stdout));
    let _ = sacrifice.kill();
    let _ = sacrifice.wait();
    let _ = std::process::Command::new("ipcrm").args(["-M", &control_key.to_string()]).status();
    let _ = std::process::Command::new("ipcrm").args(["-m", &shm_id]).status();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(shm_found > 0, "the host's segment is listed in /proc/sysvipc/shm");
    Run { inside, outside, facts, has_address: address.is_some() }
}

fn xattr_absent(path: &Path) -> bool {
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import os, sys; print(os.listxattr(sys.argv[1]))", &path.display().to_string()])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).contains("user.neuraphage")
}

/// Assert each probe was refused inside under every profile and allowed outside.
fn refused_inside_allowed_outside(probes: &[&str]) {
    let run = run();
    for probe in probes {
        for (profile, (inside, _)) in &run.inside {
            let got = inside.get(*probe).map(String::as_str).unwrap_or("(not run)");
            assert!(got.starts_with("refused"), "{probe} under {profile}: {got}\n{inside:#?}");
        }
        let control = run.outside.get(*probe).map(String::as_str).unwrap_or("(not run)");
        assert_eq!(control, "allowed", "the control for {probe}: {:#?}", run.outside);
    }
}

fn facts_hold(prefix: &str) {
    let bad: Vec<&(String, bool)> = run().facts.iter().filter(|(f, held)| f.contains(prefix) && !held).collect();
    assert!(run().facts.iter().any(|(f, _)| f.contains(prefix)), "no fact about {prefix}");
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn metadata_outside_the_task_cannot_be_changed() {
    refused_inside_allowed_outside(&[
        "chmod-ssh-key",
        "utime-ssh-key",
        "xattr-ssh-key",
        "chmod-api-keys",
        "utime-api-keys",
        "xattr-api-keys",
        "setuid-read-only",
    ]);
    facts_hold("id_ed25519");
    facts_hold("api-keys.yaml");
    facts_hold("setuid");
}

#[test]
fn inotify_sees_neither_another_tasks_worktree_nor_the_users_ssh_folder() {
    refused_inside_allowed_outside(&["inotify-victim", "inotify-ssh"]);
}

#[test]
fn the_supervisor_the_broker_and_another_tasks_worker_are_out_of_reach() {
    let mut probes = Vec::new();
    for target in ["supervisor", "broker", "victim"] {
        for attack in ["prlimit", "renice", "stop"] {
            probes.push(format!("{attack}-{target}"));
        }
    }
    refused_inside_allowed_outside(&probes.iter().map(String::as_str).collect::<Vec<_>>());
    facts_hold("process");
}

#[test]
fn system_v_shared_memory_of_the_host_is_out_of_reach_and_a_tasks_own_is_gone_with_it() {
    refused_inside_allowed_outside(&["shm-attach"]);
    // A segment made inside (where seccomp lets it) lives in the task's IPC namespace, never on the host.
    assert_eq!(run().outside.get("shm-make").map(String::as_str), Some("allowed"));
    facts_hold("segment");
}

#[test]
fn tcp_to_the_host_fails_and_the_proxy_still_answers() {
    let mut probes = vec!["tcp-loopback"];
    if run().has_address {
        probes.push("tcp-address");
    }
    refused_inside_allowed_outside(&probes);
    let (networked, _) = &run().inside["networked"];
    let proxy = networked.get("proxy").map(String::as_str).unwrap_or("(none)");
    assert!(proxy.contains("403"), "the proxy's refusal of an unlisted host, through the bridge: {proxy}");
}

#[test]
fn every_attacker_ran_inside_the_namespaces() {
    for (profile, (_, task)) in &run().inside {
        assert_eq!(task["status"], "Completed", "{profile}: {task:#}");
        let events = task["events"].as_array().unwrap();
        let sandboxed = events.iter().find(|e| e["kind"] == "sandboxed").expect("a sandboxed event");
        let enforced = sandboxed["data"]["enforced"].to_string();
        assert!(enforced.contains("namespaces (bubblewrap)"), "{profile}: {enforced}");
    }
}

/// Every process of a task whose supervisor is killed with -9 dies: bubblewrap has the worker's PDEATHSIG, and its
/// pid 1 dies with it (`--die-with-parent`), which ends its whole pid namespace — a `setsid` double fork included.
#[test]
fn a_task_does_not_outlive_a_supervisor_killed_with_9() {
    let mut home = TestHome::new();
    let command = "setsid sh -c 'sleep 1000 < /dev/null > /dev/null 2>&1 &'; (sleep 1000 &); echo started > $TMPDIR/ready; sleep 1000";
    let model = Model::start(policy(move |_| Step::Reply(Reply::tool("Bash", json!({ "command": command })))));
    home.start_with_model(&model);
    let id = home.json(&["task", "new", "outlive", "--json"])["id"].as_str().unwrap().to_owned();
    let worker = home.worker_in_tool(&id, WITHIN);
    let ready: PathBuf = home.paths.home.join("tasks").join(&id).join("tmp/ready");
    wait_for("the task never got ready", || ready.exists());
    let ns = task_pid_namespace(worker).expect("the task's pid namespace");
    let mut pids: Vec<u32> = pids_in_namespace(&ns).iter().map(|(host, _)| *host).collect();
    pids.push(worker);
    // The control: the worker, bubblewrap's init, the shell and the three sleeps run until then.
    assert!(pids.len() >= 6 && pids.iter().all(|p| alive(*p)), "{pids:?}");
    home.kill9_supervisors();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        let left: Vec<&u32> = pids.iter().filter(|p| alive(**p)).collect();
        assert!(Instant::now() < deadline, "processes of the task outlived its supervisor: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A profile that requires namespaces is refused where bubblewrap cannot be found, with the reason; one that does not
/// require them runs, and says they are missing.
#[test]
fn without_bubblewrap_a_profile_that_requires_namespaces_is_refused() {
    let mut home = TestHome::new();
    home.write_config("");
    let dir = home.paths.home.join("profiles");
    std::fs::create_dir_all(&dir).unwrap();
    let default = include_str!("../../sandbox-profiles/profiles/default.toml");
    let optional = default.replace("[namespaces]\nrequired = true", "[namespaces]\nrequired = false");
    assert_ne!(optional, default, "the default profile's [namespaces] changed: update this test");
    std::fs::write(dir.join("optional.toml"), optional).unwrap();
    let model = Model::start(policy(|_| Step::Reply(Reply::text("done").stop(StopReason::EndTurn))));
    let mut env = model.env();
    // The worker looks for bwrap on its PATH, which the supervisor's makes.
    env.push(("PATH".to_owned(), home.root().join("no-such-folder").display().to_string()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    home.start_supervisor_with(&pairs);
    let required = home.json(&["task", "new", "required", "--json"])["id"].as_str().unwrap().to_owned();
    let optional =
        home.json(&["task", "new", "optional", "--profile", "optional", "--json"])["id"].as_str().unwrap().to_owned();
    let ended = home.wait_ended(&[&required, &optional], WITHIN);
    assert_eq!(ended[0]["status"], "Failed", "{:#}", ended[0]);
    let error = ended[0].to_string();
    assert!(error.contains("requires namespaces") && error.contains("install it"), "{error}");
    // The control: the same machine runs a task whose profile does not require them, and reports them missing.
    assert_eq!(ended[1]["status"], "Completed", "{:#}", ended[1]);
    let events = ended[1]["events"].as_array().unwrap();
    let sandboxed = events.iter().find(|e| e["kind"] == "sandboxed").expect("a sandboxed event");
    assert!(sandboxed["data"]["missing"].to_string().contains("bubblewrap (bwrap) is not on PATH"), "{sandboxed:#}");
}
