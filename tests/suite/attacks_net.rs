//! The network attacks of the attack suite (issue 11 class 2), in the `networked` profile, whose only TCP way out
//! is the task's proxy: ways around Landlock's TCP rules that its connect and bind hooks do not see. `attack.c` run
//! as `attack net` from inside a real sandboxed worker aims each at a TCP listener of the test's on loopback, then
//! the same program runs outside (the control), where each must succeed. The listener's own count of connections
//! is the real state checked besides what the attacker printed.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(120);
const ATTACK_C: &str = include_str!("attacks/attack.c");

struct Run {
    inside: BTreeMap<String, String>,
    outside: BTreeMap<String, String>,
    inside_raw: String,
    outside_raw: String,
    /// Connections the test's listener received from the inside run, and from the outside run.
    reached_inside: usize,
    reached_outside: usize,
}

static RUN: OnceLock<Run> = OnceLock::new();

fn lines(output: &str) -> BTreeMap<String, String> {
    output.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Accept (without blocking) every connection waiting on the listener; how many.
fn drain(listener: &TcpListener) -> usize {
    let mut n = 0;
    loop {
        match listener.accept() {
            Ok(_) => n += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn attack() -> Run {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "export ATTACK_TCP_PORT={port} ATTACK_WHERE=\"${{ATTACK_WHERE:-inside}}\"\n\
         cat > \"$TMPDIR/attack.c\" <<'ATTACK_C'\n{ATTACK_C}\nATTACK_C\n\
         if gcc -O0 -o \"$TMPDIR/attack\" \"$TMPDIR/attack.c\" 2>\"$TMPDIR/gcc.err\"; then \"$TMPDIR/attack\" net; \
         else echo \"gcc failed: $(head -c 400 \"$TMPDIR/gcc.err\")\"; fi\necho end-of-probes\n"
    );
    let command = script.clone();
    let model = Model::start(policy(move |r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({ "command": command }))),
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let id =
        home.json(&["task", "new", "attacker", "--json", "--profile", "networked"])["id"].as_str().unwrap().to_owned();
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let inside_raw = home.first_tool_output(&id);
    assert!(inside_raw.contains("end-of-probes"), "the attacks did not all run: {inside_raw}");
    let reached_inside = drain(&listener);
    let outside_tmp = home.root().join("outside-tmp");
    std::fs::create_dir_all(&outside_tmp).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("TMPDIR", &outside_tmp)
        .env("ATTACK_WHERE", "outside")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let outside_raw = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let reached_outside = drain(&listener);
    home.kill9_supervisors();
    Run {
        inside: lines(&inside_raw),
        outside: lines(&outside_raw),
        inside_raw,
        outside_raw,
        reached_inside,
        reached_outside,
    }
}

fn refused_inside_allowed_outside(name: &str) {
    let r = RUN.get_or_init(attack);
    let inside = r.inside.get(name).unwrap_or_else(|| panic!("{name} did not run inside: {}", r.inside_raw));
    let outside = r.outside.get(name).unwrap_or_else(|| panic!("{name} did not run outside: {}", r.outside_raw));
    assert!(inside.starts_with("refused"), "{name} from inside a networked task: {inside}\n{}", r.inside_raw);
    assert!(outside.starts_with("allowed"), "the control of {name} (outside the sandbox): {outside}");
}

#[test]
fn an_mptcp_socket_does_not_get_around_the_tcp_rules() {
    refused_inside_allowed_outside("mptcp-connect");
}

#[test]
fn tcp_fast_open_does_not_get_around_the_tcp_rules() {
    refused_inside_allowed_outside("tcp-fastopen");
}

#[test]
fn listen_on_an_unbound_socket_does_not_bind_a_port() {
    refused_inside_allowed_outside("listen-unbound");
}

#[test]
fn a_plain_connect_to_the_same_listener_is_refused_too() {
    refused_inside_allowed_outside("tcp-direct");
}

#[test]
fn no_connection_from_inside_reaches_the_listener() {
    let r = RUN.get_or_init(attack);
    assert_eq!(r.reached_inside, 0, "{}", r.inside_raw);
    // The control: MPTCP (falling back to TCP), fast open and the plain connect each reached it from outside.
    assert_eq!(r.reached_outside, 3, "{}", r.outside_raw);
}
