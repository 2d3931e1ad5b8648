//! The attack suite of the sandbox: a hostile task tries, from inside a real sandboxed worker, to reach what it must
//! not; each attack is also run outside the sandbox (the control) where it must succeed, so every test can fail.
//!
//! One task runs every attack (to keep the suite fast): a Bash tool call runs `attacks/probes.sh` (shell attacks) and
//! compiles, with the machine's gcc inside the sandbox, and runs `attacks/attack.c` (system-call attacks). Each prints
//! `NAME=allowed` or `NAME=refused ...`. Then the test runs the same script outside the sandbox, from the same
//! worktree, with the same targets. Each attack is its own named test below over that shared run; a few more check
//! the real state (files, refs, datagrams, processes) rather than what the attacker printed.
//!
//! Covered elsewhere, not repeated here: reading the key from the supervisor's environment through `/proc`
//! (`task_isolation::a_task_cannot_read_the_key_from_the_supervisors_or_brokers_environment`), the control socket's
//! handshake refusal (`task_isolation::a_task_cannot_drive_the_supervisor_through_the_control_socket`), abstract
//! unix sockets and `kill -0` of the supervisor (`task_isolation::a_task_cannot_reach_tcp_an_abstract_socket_...`),
//! ptrace(TRACEME)/`unshare -U`/io_uring through python (`task_isolation::a_task_cannot_make_namespaces_...`),
//! another task's worktree between five running tasks (`running::five_tasks_on_one_repo_...`), `env` without the key
//! (`running::a_task_that_runs_env_sees_no_api_key`), survivors after the task ends
//! (`task_isolation::processes_a_task_leaves_behind_die_with_it`, and the `setsid` double-fork in `limits::a_double_forked_setsid_survivor_dies_with_its_task`), the worktree's git metadata turned against the
//! supervisor (`hostile_repo`).
//!
//! Known and not asserted: `/proc/keys` still lists the *description* of a key the task's uid may view (the probe
//! `proc-keys-lists-the-key` prints it; the payload is never readable: `keyctl` is refused and the worker left the
//! inherited session keyring). A hard link to a secret planted in the worktree by someone outside would be followed
//! (Landlock checks paths, not inodes); a repository cannot carry one, and the task cannot make one (`link` across
//! rule boundaries fails, EXDEV).

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TEST_API_KEY, TestHome, alive, children_named};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(120);
const ATTACK_C: &str = include_str!("attacks/attack.c");
const PROBES_SH: &str = include_str!("attacks/probes.sh");
const SSH_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY----- FAKE-KEY-FOR-THE-ATTACK-SUITE";

/// What the attacker printed inside and outside, and the real state observed after each run.
struct Run {
    inside: BTreeMap<String, String>,
    outside: BTreeMap<String, String>,
    /// The raw output of the inside run (for messages).
    inside_raw: String,
    outside_raw: String,
    /// Facts about the real state, after the inside run and after the outside run.
    after_inside: BTreeMap<&'static str, bool>,
    after_outside: BTreeMap<&'static str, bool>,
}

static RUN: OnceLock<Run> = OnceLock::new();

fn run() -> &'static Run {
    RUN.get_or_init(attack)
}

fn lines(output: &str) -> BTreeMap<String, String> {
    output
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once('=')?;
            let ok = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            (ok && !name.is_empty()).then(|| (name.to_owned(), rest.to_owned()))
        })
        .collect()
}

/// The last tool result of a task, from its log.
fn tool_output(home: &TestHome, id: &str) -> String {
    let log = home.json(&["task", "log", id, "--json"]);
    log["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "tool_result")
        .filter_map(|b| b["content"].as_str().map(str::to_owned))
        .next_back()
        .unwrap_or_default()
}

fn commit_symlinks(repo: &Path, links: &[(&str, &Path)]) {
    let r = git2::Repository::open(repo).unwrap();
    let mut index = r.index().unwrap();
    for (name, target) in links {
        std::os::unix::fs::symlink(target, repo.join(name)).unwrap();
        index.add_path(Path::new(name)).unwrap();
    }
    index.write().unwrap();
    let tree = r.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
    let parent = r.head().unwrap().peel_to_commit().unwrap();
    r.commit(Some("HEAD"), &sig, &sig, "links", &tree, &[&parent]).unwrap();
}

/// Add a key to this thread's session keyring (joining a new one if it has none), which the supervisor started
/// from this thread, and so its workers, inherit. Its id.
fn add_session_key(description: &str, payload: &str) -> i64 {
    let ty = c"user";
    let desc = std::ffi::CString::new(description).unwrap();
    const KEY_SPEC_SESSION_KEYRING: i64 = -3;
    // SAFETY: add_key with valid NUL-terminated strings and a payload pointer and length that match.
    #[allow(unsafe_code)]
    let id = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_SESSION_KEYRING,
        )
    };
    assert!(id > 0, "add_key: {}", std::io::Error::last_os_error());
    id
}

fn head_of(repo: &Path, branch: &str) -> Option<String> {
    let r = git2::Repository::open(repo).ok()?;
    Some(r.find_branch(branch, git2::BranchType::Local).ok()?.get().target()?.to_string())
}

fn stopped_or_traced(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default().to_owned();
    field("State:").starts_with(['T', 't']) || field("TracerPid:") != "0"
}

/// A System V shared memory segment made outside the task, holding a marker; removed on drop.
struct Segment {
    key: i32,
    id: i32,
    at: *mut u8,
}

impl Segment {
    const MARKER: &'static [u8] = b"outside-segment\0";

    fn new() -> Segment {
        let key = 0x4e50_0000 | (std::process::id() as i32 & 0xffff);
        // SAFETY: shmget/shmat with valid arguments; the segment is 4096 bytes and the marker is written within it.
        #[allow(unsafe_code)]
        unsafe {
            let id = libc::shmget(key, 4096, libc::IPC_CREAT | libc::IPC_EXCL | 0o600);
            assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
            let at = libc::shmat(id, std::ptr::null(), 0) as *mut u8;
            assert!(at as isize != -1, "shmat: {}", std::io::Error::last_os_error());
            std::ptr::copy_nonoverlapping(Self::MARKER.as_ptr(), at, Self::MARKER.len());
            Segment { key, id, at }
        }
    }

    fn overwritten(&self) -> bool {
        // SAFETY: reading the marker's length from the live 4096-byte attachment.
        #[allow(unsafe_code)]
        let now = unsafe { std::slice::from_raw_parts(self.at, Self::MARKER.len()) };
        now != Self::MARKER
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: detaching the attachment made in `new` and removing the segment.
        #[allow(unsafe_code)]
        unsafe {
            libc::shmdt(self.at as *const libc::c_void);
            libc::shmctl(self.id, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

/// What another process's limits, nice value and CPUs are, from /proc.
fn process_settings(pid: u32) -> (String, String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let files = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or_default().to_owned();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    // Fields after the name start at field 3 (state); nice is field 19.
    let nice = after_name.split_whitespace().nth(16).unwrap_or_default().to_owned();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or_default().trim().to_owned();
    (files, nice, cpus)
}

fn attack() -> Run {
    let mut home = TestHome::new();
    let root = home.root().to_path_buf();
    // The user's home as the supervisor sees it, with a private key in it.
    let user_home = root.join("user-home");
    std::fs::create_dir_all(user_home.join(".ssh")).unwrap();
    std::fs::write(user_home.join(".ssh/id_ed25519"), format!("{SSH_KEY}\n")).unwrap();
    // The user's repository: symlinks to secrets committed in it, an untracked secret in the checkout.
    let repo = home.git_repo("app");
    let store = home.paths.home.join("neuraphage.db");
    let victim_placeholder = root.join("victim-worktree-file");
    commit_symlinks(
        &repo,
        &[
            ("link-to-ssh-key", &user_home.join(".ssh/id_ed25519")),
            ("link-to-store", &store),
            ("link-to-user-home", &user_home),
            ("link-to-other-task", &victim_placeholder),
        ],
    );
    std::fs::write(repo.join("checkout-secret.txt"), "checkout secret\n").unwrap();
    // Listeners and a bystander process outside the task.
    let unix_path = root.join("other.sock");
    let _unix = UnixListener::bind(&unix_path).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp6 = TcpListener::bind("[::1]:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let mut bystander: Child = Command::new("sleep").arg("600").stdin(Stdio::null()).spawn().unwrap();
    let bystander_before = process_settings(bystander.id());
    let segment = Segment::new();
    let key_payload = format!("KEYRING-PAYLOAD-{}", std::process::id());
    let key_id = add_session_key(&format!("neuraphage-attack-{}", std::process::id()), &key_payload);

    // The supervisor, with the user's home and an API key in both its environment and api-keys.yaml.
    let command: Arc<Mutex<String>> = Arc::default();
    let script = command.clone();
    let model = Model::start(policy(move |r| {
        let victim = r.first_user_text().unwrap_or_default().contains("victim");
        match (victim, r.tool_result_count()) {
            (true, 0) => {
                Step::Reply(Reply::tool("Write", json!({"file_path": "victim.txt", "content": "victim data"})))
            }
            (false, 0) => Step::Reply(Reply::tool("Bash", json!({"command": script.lock().unwrap().clone()}))),
            _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
        }
    }));
    home.write_config("");
    let keys = format!(
        "providers:\n  - provider: anthropic\n    api-key: {TEST_API_KEY}\n    base-url: {}\n",
        model.double.anthropic_base_url()
    );
    let keys_path = home.paths.home.join("api-keys.yaml");
    std::fs::write(&keys_path, keys).unwrap();
    std::fs::set_permissions(&keys_path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut env = model.env();
    env.push(("HOME".to_owned(), user_home.display().to_string()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let supervisor = home.start_supervisor_with(&pairs);

    // The victim: another task on the same repository, which writes a file in its worktree and ends.
    let repo_arg = repo.to_str().unwrap();
    let victim_id =
        home.json(&["task", "new", "victim", "--repo", repo_arg, "--json"])["id"].as_str().unwrap().to_owned();
    assert_eq!(home.wait_ended(&[&victim_id], WITHIN)[0]["status"], "Completed");
    let victim = home.paths.home.join("tasks").join(&victim_id).join("worktree");
    assert!(victim.join("victim.txt").is_file());
    std::os::unix::fs::symlink(victim.join("victim.txt"), &victim_placeholder).unwrap();
    let broker = children_named(supervisor, "neuraphage-brok");
    assert_eq!(broker.len(), 1, "one broker");
    let master_before = head_of(&repo, "master").unwrap();

    let tag = format!("{}-{}", std::process::id(), supervisor);
    let exports = [
        ("UHOME", user_home.display().to_string()),
        ("NHOME", home.paths.home.display().to_string()),
        ("VICTIM", victim.display().to_string()),
        ("VICTIM_ID", victim_id.clone()),
        ("REPO", repo.display().to_string()),
        ("GITDIR", repo.join(".git").display().to_string()),
        ("ROOT", root.display().to_string()),
        ("TAG", tag.clone()),
        ("SUPERVISOR_PID", supervisor.to_string()),
        ("ATTACK_CONTROL_SOCKET", home.paths.control_socket().display().to_string()),
        ("ATTACK_UNIX_SOCKET", unix_path.display().to_string()),
        ("ATTACK_TCP_PORT", tcp.local_addr().unwrap().port().to_string()),
        ("ATTACK_TCP6_PORT", tcp6.local_addr().unwrap().port().to_string()),
        ("ATTACK_UDP_PORT", udp.local_addr().unwrap().port().to_string()),
        ("ATTACK_SLEEP_PID", bystander.id().to_string()),
        ("ATTACK_BROKER_PID", broker[0].to_string()),
        ("ATTACK_SUPERVISOR_PID", supervisor.to_string()),
        ("ATTACK_KEY_ID", key_id.to_string()),
        ("ATTACK_SHM_KEY", segment.key.to_string()),
    ];
    let mut text: String = exports.iter().map(|(k, v)| format!("export {k}='{v}'\n")).collect();
    text.push_str("export ATTACK_WHERE=\"${ATTACK_WHERE:-inside}\"\n");
    text.push_str(&format!("cat > \"$TMPDIR/attack.c\" <<'ATTACK_C'\n{ATTACK_C}\nATTACK_C\n{PROBES_SH}"));
    *command.lock().unwrap() = text.clone();

    // Inside: the attacker task.
    let id = home.json(&["task", "new", "attacker", "--repo", repo_arg, "--json"])["id"].as_str().unwrap().to_owned();
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let inside_raw = tool_output(&home, &id);
    assert!(inside_raw.contains("end-of-probes"), "the attacks did not all run: {inside_raw}");
    let worktree = home.paths.home.join("tasks").join(&id).join("worktree");

    let mut received = [0u8; 64];
    let datagram = |udp: &UdpSocket, buf: &mut [u8]| match udp.recv(buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if e.kind() == ErrorKind::WouldBlock => None,
        Err(e) => panic!("udp: {e}"),
    };
    let state = |received: Option<String>, bystander: u32| -> BTreeMap<&'static str, bool> {
        let (files, nice, cpus) = process_settings(bystander);
        BTreeMap::from([
            ("bystander's open-files limit changed", files != bystander_before.0),
            ("bystander reniced", nice != bystander_before.1),
            ("bystander's CPUs changed", cpus != bystander_before.2),
            ("shared memory made outside overwritten", segment.overwritten()),
            ("victim file overwritten", std::fs::read_to_string(victim.join("victim.txt")).unwrap() != "victim data"),
            ("hook planted", repo.join(".git/hooks/post-checkout").exists()),
            (
                "config planted",
                std::fs::read_to_string(repo.join(".git/config")).unwrap().contains("planted = by-task"),
            ),
            ("master moved", head_of(&repo, "master").as_deref() != Some(master_before.as_str())),
            ("branch planted", head_of(&repo, "planted-by-task").is_some()),
            ("file planted in the checkout", repo.join("planted-by-task.txt").exists()),
            ("file planted in /tmp", Path::new(&format!("/tmp/neuraphage-attack-{tag}")).exists()),
            ("file planted in /dev/shm", Path::new(&format!("/dev/shm/neuraphage-attack-{tag}")).exists()),
            ("file planted outside", root.join("planted-by-task.txt").exists()),
            ("file planted through a symlink", user_home.join("planted-through-link").exists()),
            ("udp datagram received", received.is_some()),
            ("bystander stopped or traced", !alive(bystander) || stopped_or_traced(bystander)),
        ])
    };
    let after_inside = state(datagram(&udp, &mut received), bystander.id());

    // Outside: the control, the same script from the same worktree, with the environment the supervisor has.
    let outside_tmp = root.join("outside-tmp");
    std::fs::create_dir_all(&outside_tmp).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(&text)
        .current_dir(&worktree)
        .env("TMPDIR", &outside_tmp)
        .env("ATTACK_WHERE", "outside")
        .env("ANTHROPIC_API_KEY", TEST_API_KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let outside_raw = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let got = datagram(&udp, &mut received);
    assert_eq!(got.as_deref(), Some("udp-from-outside"), "the control's datagram: {outside_raw}");
    let mut after_outside = state(got, bystander.id());
    after_outside.insert("bystander stopped or traced", true); // the control attached and detached: not re-checked
    let _ = std::fs::remove_file(format!("/tmp/neuraphage-attack-{tag}"));
    let _ = std::fs::remove_file(format!("/dev/shm/neuraphage-attack-{tag}"));
    let _ = bystander.kill();
    let _ = bystander.wait();
    home.kill9_supervisors();
    Run {
        inside: lines(&inside_raw),
        outside: lines(&outside_raw),
        inside_raw,
        outside_raw,
        after_inside,
        after_outside,
    }
}

/// The attack was refused inside the task, and allowed outside (the control).
fn refused_inside_allowed_outside(name: &str) {
    let r = run();
    let inside = r.inside.get(name).unwrap_or_else(|| panic!("{name} did not run inside: {}", r.inside_raw));
    let outside = r.outside.get(name).unwrap_or_else(|| panic!("{name} did not run outside: {}", r.outside_raw));
    assert!(inside.starts_with("refused"), "{name} from inside a task: {inside}\n{}", r.inside_raw);
    assert!(outside.starts_with("allowed"), "the control of {name} (outside the sandbox): {outside}");
}

macro_rules! attacks {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                refused_inside_allowed_outside($name);
            }
        )*
        /// Every attack of the suite, by name (the state checks and the filter-only ioctl are counted apart).
        const ATTACKS: &[&str] = &[$($name),*];
    };
}

attacks! {
    read_a_private_key_in_the_users_home => "home-ssh-key",
    read_the_store => "store-read",
    read_api_keys_yaml => "api-keys-read",
    read_another_tasks_worktree => "other-task-worktree-read",
    write_another_tasks_worktree => "other-task-worktree-write",
    write_another_tasks_git_admin_folder => "other-task-git-admin-write",
    read_the_users_checkout => "user-checkout-read",
    write_the_users_checkout => "user-checkout-write",
    write_the_system_tmp => "write-system-tmp",
    write_dev_shm => "write-dev-shm",
    write_a_folder_outside => "write-outside-folder",
    follow_a_committed_symlink_to_the_private_key => "symlink-to-ssh-key",
    follow_a_committed_symlink_to_the_store => "symlink-to-store",
    follow_a_committed_symlink_to_another_task => "symlink-to-other-task",
    write_through_a_committed_symlink_to_a_folder => "symlink-dir-write",
    hard_link_the_private_key_into_the_worktree => "hardlink-to-ssh-key",
    hard_link_the_store_into_the_task_tmp => "hardlink-to-store",
    write_the_users_git_hooks => "git-hooks-write",
    move_the_users_master_branch => "git-ref-master",
    create_a_branch_in_the_users_repository => "git-ref-new-branch",
    write_the_users_git_config => "git-config-write",
    connect_to_the_control_socket => "unix-control-socket",
    connect_to_another_unix_socket => "unix-other-socket",
    connect_to_a_tcp_listener_on_loopback => "tcp-loopback",
    connect_to_a_tcp_listener_on_ipv6_loopback => "tcp-loopback-v6",
    send_udp => "udp-send",
    open_a_raw_socket => "raw-socket",
    open_a_netlink_socket => "netlink-socket",
    open_a_packet_socket => "packet-socket",
    open_a_vsock_socket => "vsock-socket",
    ptrace_a_process_outside_the_task => "ptrace-attach",
    signal_a_process_outside_the_task => "signal-outside",
    read_the_brokers_environ => "proc-environ-broker",
    open_the_supervisors_mem => "proc-mem-supervisor",
    read_the_supervisors_environ => "proc-environ-supervisor",
    see_an_api_key_in_its_environment => "api-key-in-environment",
    chown_to_another_uid => "chown-other-uid",
    get_capabilities_on_exec_as_root => "exec-gets-capabilities",
    get_capabilities_from_a_setuid_root_binary => "setuid-root-binary",
    raise_a_capability_with_capset => "capset-raise",
    raise_an_ambient_capability => "ambient-raise",
    unlock_the_securebits => "securebits-unlock",
    read_an_inherited_keyring => "keyring-read",
    inject_terminal_input => "tiocsti",
    inject_terminal_input_with_high_bits_in_the_request => "tiocsti-high-bits",
    escape_through_io_uring => "io-uring",
    make_a_user_namespace_with_unshare => "userns-unshare",
    make_a_network_namespace_with_unshare => "netns-unshare",
    make_a_user_namespace_with_clone => "userns-clone",
    make_a_user_namespace_with_clone3 => "userns-clone3",
    mount_a_filesystem => "mount-tmpfs",
    set_another_processs_limits_with_prlimit => "prlimit-other",
    renice_another_process => "setpriority-other",
    move_another_process_to_other_cpus => "sched-setaffinity-other",
    set_another_processs_io_priority => "ioprio-set-other",
    attach_shared_memory_made_outside => "sysv-shm-attach",
    make_a_system_v_shared_memory_segment => "sysv-shm-create",
    make_a_system_v_semaphore => "sysv-sem-create",
    make_a_system_v_message_queue => "sysv-msg-create",
}

#[test]
fn tioclinux_is_refused_by_the_filter_before_it_reaches_the_kernel() {
    // No virtual console here, so outside the kernel answers ENOTTY: the control is that the call reaches it, while
    // inside the filter answers EPERM first.
    let r = run();
    let inside = &r.inside["tioclinux"];
    let outside = &r.outside["tioclinux"];
    assert!(inside.starts_with("refused errno=1 "), "{inside}");
    assert!(!outside.starts_with("refused errno=1 "), "the control reached the kernel: {outside}");
}

#[test]
fn the_attacks_change_nothing_outside_the_task() {
    let r = run();
    for (fact, happened) in &r.after_inside {
        assert!(!happened, "after the attacks from inside: {fact}\n{}", r.inside_raw);
    }
    // The control: the same attacks from outside did change each of these (but the bystander, which the control
    // only attached to and detached from).
    for (fact, happened) in &r.after_outside {
        assert!(happened, "the control did not manage: {fact}\n{}", r.outside_raw);
    }
}

#[test]
fn the_sandbox_leaves_what_tasks_need() {
    // Not attacks: a unix socketpair (pipelines, tools) works inside, and the attacker compiled and ran.
    let r = run();
    for name in ["socketpair-unix", "prlimit-self", "nice-self"] {
        assert!(r.inside.get(name).is_some_and(|l| l.starts_with("allowed")), "{name}: {}", r.inside_raw);
    }
    assert!(!r.inside_raw.contains("gcc failed"), "{}", r.inside_raw);
    assert!(!r.inside_raw.contains(SSH_KEY) && !r.inside_raw.contains(TEST_API_KEY), "{}", r.inside_raw);
    assert!(!r.inside_raw.contains("KEYRING-PAYLOAD"), "{}", r.inside_raw);
    eprintln!("{}", r.inside_raw);
    eprintln!("attacks tried: {} (+ tioclinux and the state checks)", ATTACKS.len());
}
