//! What a task cannot reach even as the same user: the API key in the supervisor's or broker's environment, the
//! control socket, and life after its end. Each attack runs from inside a real sandboxed worker (Bash), and each has
//! a control that shows the same action working from outside.

use std::time::Duration;

use neuraphage_ipc::frame::{decode, encode};
use neuraphage_ipc::{HandshakeReply, Hello, Role};
use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, RawClient, TEST_API_KEY, TestHome, alive, pids_in_namespace, task_pid_namespace};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(90);

/// Run one task whose only tool call is `command`; return (the task as it ended, the Bash output).
fn run_bash(home: &mut TestHome, command: String) -> (serde_json::Value, String) {
    let model = Model::start(policy(move |r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({ "command": command }))),
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }));
    home.start_with_model(&model);
    let id = home.json(&["task", "new", "probe", "--json"])["id"].as_str().unwrap().to_owned();
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    let output = home.first_tool_output(&id);
    (ended, output)
}

#[test]
fn a_task_cannot_read_the_key_from_the_supervisors_or_brokers_environment() {
    let mut home = TestHome::new();
    let command = "S=$(awk '/^PPid/{print $2}' /proc/$PPID/status); echo supervisor=$S; \
                   tr '\\0' '\\n' < /proc/$S/environ; \
                   for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null; done | grep ANTHROPIC; \
                   echo end-of-probe"
        .to_owned();
    let (ended, output) = run_bash(&mut home, command);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    assert!(output.contains("end-of-probe") && output.contains("supervisor="), "the probe ran: {output}");
    assert!(!output.contains(TEST_API_KEY), "a task read the API key: {output}");
    // The control: outside the sandbox, the supervisor's environment does hold the key.
    let pid = std::fs::read_to_string(home.paths.home.join("supervisor.lock")).unwrap().trim().to_owned();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&environ).contains(TEST_API_KEY));
}

#[test]
fn a_task_cannot_drive_the_supervisor_through_the_control_socket() {
    let mut home = TestHome::new();
    let hello: String = encode(&Hello::ours(Role::Cli)).unwrap().iter().map(|b| format!("{b:02x}")).collect();
    let socket = home.paths.control_socket();
    let command = format!(
        "perl -MIO::Socket::UNIX -e '$s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die \"connect: $!\\n\"; \
         $h = pack(\"H*\", $ARGV[1]); print $s pack(\"N\", length $h) . $h; \
         read($s, $l, 4) or die \"no reply\\n\"; read($s, $b, unpack(\"N\", $l)); print \"REPLY:\" . unpack(\"H*\", $b) . \"\\n\"' \
         {} {hello}",
        socket.display()
    );
    let (ended, output) = run_bash(&mut home, command);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    // Two layers: the seccomp filter refuses the task any AF_UNIX socket (so it cannot even connect), and were it
    // let through, the supervisor refuses a client from inside a task at the handshake.
    match output.split("REPLY:").nth(1).map(|s| s.trim().to_owned()) {
        None => assert!(
            output.contains("connect: Address family not supported"),
            "the probe neither connected nor was refused a socket: {output}"
        ),
        Some(hex) => {
            let bytes: Vec<u8> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            match decode::<HandshakeReply>(&bytes).unwrap() {
                HandshakeReply::Refused { reason, .. } => assert!(reason.contains("inside a task"), "{reason}"),
                other => panic!("a task was let onto the control socket: {other:?}"),
            }
        }
    }
    // The control: the same hello from outside a task is accepted.
    let mut outside = RawClient::connect(&home.paths).unwrap();
    assert!(matches!(outside.hello().unwrap(), HandshakeReply::Accepted { .. }));
}

#[test]
fn processes_a_task_leaves_behind_die_with_it() {
    let mut home = TestHome::new();
    // A background subshell and a `setsid` one are left behind; the tool waits for the test's go before it ends.
    let command = "(sleep 300; echo late > late.txt) & echo $! > $TMPDIR/bg.pid; \
                   setsid sh -c 'sleep 300' & echo $! > $TMPDIR/setsid.pid; \
                   while [ ! -e $TMPDIR/go ]; do sleep 0.05; done; echo started";
    let model = Model::start(policy(move |r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({ "command": command }))),
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }));
    home.start_with_model(&model);
    let id = home.json(&["task", "new", "probe", "--json"])["id"].as_str().unwrap().to_owned();
    let worker = home.worker_in_tool(&id, WITHIN);
    let tmp = home.paths.home.join("tasks").join(&id).join("tmp");
    let deadline = std::time::Instant::now() + WITHIN;
    let read_pid = |name: &str| std::fs::read_to_string(tmp.join(name)).ok().and_then(|s| s.trim().parse::<u32>().ok());
    let inner = loop {
        if let (Some(bg), Some(setsid)) = (read_pid("bg.pid"), read_pid("setsid.pid")) {
            break [bg, setsid];
        }
        assert!(std::time::Instant::now() < deadline, "the task never wrote its pids");
        std::thread::sleep(Duration::from_millis(20));
    };
    // The task's pids are those of its pid namespace: find them on the host.
    let ns = task_pid_namespace(worker).expect("the task's pid namespace");
    let in_ns = pids_in_namespace(&ns);
    let host: Vec<u32> =
        inner.iter().map(|p| in_ns.iter().find(|(_, i)| i == p).map(|(h, _)| *h).expect("a host pid")).collect();
    // The control: while the task runs, they do too.
    assert!(host.iter().all(|p| alive(*p)), "{host:?}");
    std::fs::write(tmp.join("go"), b"").unwrap();
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    assert!(home.first_tool_output(&id).contains("started"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host.iter().any(|p| alive(*p)) {
        assert!(std::time::Instant::now() < deadline, "a background process outlived its task: {host:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Probes of the seccomp layer: a user namespace, io_uring, and ptrace.
const SECCOMP_PROBES: &str = "unshare -U true 2>/dev/null && echo unshare=allowed || echo unshare=refused; \
    /usr/bin/python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); p = ctypes.create_string_buffer(120); \
fd = l.syscall(425, 4, p); print(\"io_uring=allowed\" if fd >= 0 else \"io_uring=refused\")'; \
    /usr/bin/python3 -c 'import ctypes; l = ctypes.CDLL(None, use_errno=True); \
print(\"ptrace=allowed\" if l.ptrace(0, 0, 0, 0) == 0 else \"ptrace=refused\")'";

#[test]
fn a_task_cannot_make_namespaces_use_io_uring_or_ptrace() {
    let mut home = TestHome::new();
    let (ended, output) = run_bash(&mut home, SECCOMP_PROBES.to_owned());
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    for probe in ["unshare", "io_uring", "ptrace"] {
        assert!(output.contains(&format!("{probe}=refused")), "{probe} from inside a task: {output}");
    }
    // The control: outside the sandbox the same probes succeed.
    let outside = std::process::Command::new("bash").arg("-c").arg(SECCOMP_PROBES).output().unwrap();
    let outside = String::from_utf8_lossy(&outside.stdout);
    for probe in ["unshare", "io_uring", "ptrace"] {
        assert!(outside.contains(&format!("{probe}=allowed")), "the control for {probe}: {outside}");
    }
}

#[test]
fn a_task_cannot_reach_tcp_an_abstract_socket_or_signal_outside_itself() {
    use std::os::linux::net::SocketAddrExt;
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let name = format!("neuraphage-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let _abstract = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    let probes = |supervisor: &str| {
        format!(
            "(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo tcp=allowed || echo tcp=refused; \
             /usr/bin/python3 -c 'import socket\n\
try:\n    s = socket.socket(socket.AF_UNIX); s.connect(\"\\0{name}\"); print(\"abstract=allowed\")\nexcept OSError: print(\"abstract=refused\")'; \
             kill -0 {supervisor} 2>/dev/null && echo signal=allowed || echo signal=refused"
        )
    };
    let mut home = TestHome::new();
    // The supervisor is the worker's parent: the probe finds it from its own parent (the worker).
    let (ended, output) = run_bash(&mut home, probes("$(awk '/^PPid/{print $2}' /proc/$PPID/status)"));
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    for probe in ["tcp", "abstract", "signal"] {
        assert!(output.contains(&format!("{probe}=refused")), "{probe} from inside a task: {output}");
    }
    // The control: from outside, the same probes reach the listener, the socket and the supervisor.
    let pid = std::fs::read_to_string(home.paths.home.join("supervisor.lock")).unwrap().trim().to_owned();
    let outside = std::process::Command::new("bash").arg("-c").arg(probes(&pid)).output().unwrap();
    let outside = String::from_utf8_lossy(&outside.stdout);
    for probe in ["tcp", "abstract", "signal"] {
        assert!(outside.contains(&format!("{probe}=allowed")), "the control for {probe}: {outside}");
    }
}
