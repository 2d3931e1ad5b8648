//! The status socket (issue 15, "The status socket"): a client gets one JSON line at once and one per change, so a
//! task that starts waiting and then completes shows in later lines, with the waiting task's question,
//! the day's tokens and the broker's pools; `neuraphage status` prints it for bars and titles; another uid and a task
//! process are refused; a client that never reads holds back no one and is dropped, and one that sends anything is
//! closed. The model is the LLM double.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use neuraphage_ipc::status::StatusLine;
use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome, bin};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(90);

/// A reader of the status socket.
struct Status {
    reader: BufReader<UnixStream>,
}

impl Status {
    fn connect(home: &TestHome) -> Status {
        let stream = UnixStream::connect(home.paths.status_socket()).expect("connect to status.sock");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Status { reader: BufReader::new(stream) }
    }

    /// The next line, or `None` when the socket closed or nothing came in time.
    fn next(&mut self) -> Option<StatusLine> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a StatusLine ({e}): {line}"))),
        }
    }

    /// Read lines until one satisfies `want`; every line read is kept in `seen`.
    fn until(&mut self, seen: &mut Vec<StatusLine>, what: &str, want: impl Fn(&StatusLine) -> bool) -> StatusLine {
        let deadline = Instant::now() + WITHIN;
        loop {
            assert!(Instant::now() < deadline, "no status line with {what}; saw {seen:#?}");
            if let Some(line) = self.next() {
                seen.push(line.clone());
                if want(&line) {
                    return line;
                }
            }
        }
    }
}

fn n(line: &StatusLine, key: &str) -> u64 {
    line.counts.get(key).copied().unwrap_or(0)
}

fn asking_model() -> Model {
    Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("AskUser", json!({"question": "Which colour?", "options": ["red", "blue"]}))),
        _ => Step::Reply(Reply::text("thanks").stop(StopReason::EndTurn)),
    }))
}

#[test]
fn the_lines_show_a_task_waiting_with_its_question_then_completed() {
    let model = asking_model();
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let mut status = Status::connect(&home);
    let mut seen = Vec::new();
    // At once: the empty home.
    let first = status.next().expect("a line at once");
    assert!(first.counts.is_empty() && first.waiting.is_empty() && !first.muted, "{first:#?}");
    let id = home.json(&["task", "new", "pick a colour", "--json"])["id"].as_str().unwrap().to_owned();
    // Lines are coalesced (a burst of changes is one line), so the test asks only for the lines that must come: one
    // where the task waits (the double's AskUser: it waits until this test answers), then one where it completed.
    let waiting = status.until(&mut seen, "the task waiting", |l| n(l, "waiting_for_user") == 1);
    assert_eq!(waiting.waiting.len(), 1, "{waiting:#?}");
    assert_eq!(waiting.waiting[0].id.as_str(), id);
    // The question, on one line (its options' line breaks are spaces).
    assert!(waiting.waiting[0].prompt.starts_with("Which colour? Options:"), "{waiting:#?}");
    assert!(!waiting.waiting[0].prompt.contains('\n'));
    // The model was called once: its tokens count today and the broker's pool is listed with its headroom (the usage
    // report may reach the supervisor just after the task started waiting: then it is the next line).
    let priced =
        |l: &StatusLine| l.tokens_today > 0 && l.cost_today_usd > 0.0 && l.pools.iter().any(|p| p.requests.is_some());
    let with_tokens =
        if priced(&waiting) { waiting } else { status.until(&mut seen, "today's tokens and a pool", priced) };
    assert_eq!(n(&with_tokens, "waiting_for_user"), 1, "{with_tokens:#?}");
    assert_eq!(with_tokens.pools[0].pool, "anthropic", "{with_tokens:#?}");
    home.ok(&["task", "send", &id, "2"]);
    let done = status.until(&mut seen, "the task completed", |l| n(l, "completed") == 1);
    assert!(done.waiting.is_empty() && n(&done, "waiting_for_user") == 0, "{done:#?}");
    // The lines came in order, each one a change.
    let at: Vec<_> = seen.iter().map(|l| l.at).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
    // `neuraphage status` reads the same socket.
    let text = home.ok(&["status"]);
    assert!(text.contains("1 completed"), "{text}");
    let json: Value = home.json(&["status", "--json"]);
    assert_eq!(json["counts"]["completed"], 1, "{json:#}");
    let bar = home.ok(&["status", "--format", "{waiting}w {done}d {glyphs}"]);
    assert_eq!(bar, "0w 1d ⏳0 ▶0 ✓1\n");
    let title = home.ok(&["status", "--title"]);
    assert_eq!(title, "\u{1b}]2;np ⏳0 ▶0 ✓1\u{7}");
    let waybar: Value = serde_json::from_str(&home.ok(&["status", "--json-waybar"])).unwrap();
    assert_eq!(waybar["text"], "np ⏳0 ▶0 ✓1");
    assert_eq!(waybar["class"], json!(["idle"]));
}

#[test]
fn mute_shows_in_the_line_and_survives_a_restart() {
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    let mut status = Status::connect(&home);
    assert!(!status.next().unwrap().muted);
    assert_eq!(home.json(&["notify", "mute", "--json"]), json!({"muted": true}));
    let mut seen = Vec::new();
    status.until(&mut seen, "muted", |l| l.muted);
    home.kill9_supervisors();
    home.start_supervisor();
    assert_eq!(home.json(&["status", "--json"])["muted"], true);
    home.ok(&["notify", "unmute"]);
    assert_eq!(home.json(&["status", "--json"])["muted"], false);
}

#[test]
fn a_client_that_never_reads_stalls_no_one_and_is_dropped() {
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    // Three clients that never read, one that sends bytes, and one that reads.
    let stalled: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(home.paths.status_socket()).unwrap()).collect();
    let mut chatty = UnixStream::connect(home.paths.status_socket()).unwrap();
    chatty.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut reader = Status::connect(&home);
    let mut count = reader.next().unwrap().counts.get("queued").copied().unwrap_or(0);
    // Many changes (every new task is one more queued): more lines than a stalled client's send buffer holds (each
    // small write costs the socket about 1 KiB of its 32 KiB).
    for _ in 0..100 {
        home.ok(&["task", "new", "one more"]);
        let mut seen = Vec::new();
        count = n(&reader.until(&mut seen, "the new task", |l| n(l, "queued") > count), "queued");
    }
    // The reader saw every change (each task new above waited for its line) while the others did not read.
    assert!(count >= 100, "only {count} changes were seen");
    // Past the write deadline (5 s), a stalled client's pending write has failed: reading now cannot let it through.
    std::thread::sleep(Duration::from_secs(7));
    // The sender was closed after its first line.
    chatty.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let _ = chatty.read_to_end(&mut got);
    assert_eq!(String::from_utf8_lossy(&got).lines().count(), 1, "{}", String::from_utf8_lossy(&got));
    // The stalled clients were dropped: what they can still read ends (end of file), well before all the lines.
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let ended = s.read_to_end(&mut got);
        assert!(ended.is_ok(), "a stalled client was not dropped: {ended:?}");
        let lines = String::from_utf8_lossy(&got).lines().count() as u64;
        assert!(lines < count, "a stalled client got all {lines} lines");
    }
    // The reader is still served.
    home.ok(&["task", "new", "last"]);
    let mut seen = Vec::new();
    reader.until(&mut seen, "the last task", |l| n(l, "queued") == count + 1);
}

#[test]
fn another_uid_is_refused_by_peer_credentials() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: this needs root to switch to uid 65534");
        return;
    }
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    home.ok(&["task", "new", "secret task"]);
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cli = dir.path().join("neuraphage");
    std::fs::copy(bin("neuraphage"), &cli).unwrap();
    // CAP_DAC_OVERRIDE gets it past the folder's and the socket's modes: SO_PEERCRED must stop it.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["--inh-caps", "+dac_override", "--ambient-caps", "+dac_override"])
        .arg(&cli)
        .args(["status", "--json"])
        .env("NEURAPHAGE_HOME", &home.paths.home)
        .env("NEURAPHAGE_RUNTIME_DIR", &home.paths.runtime_dir)
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("uid 65534 refused"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("queued"));
    // The control: its own uid reads the line.
    assert_eq!(home.json(&["status", "--json"])["counts"]["queued"], 1);
}

#[test]
fn a_task_cannot_read_the_status_socket() {
    let mut home = TestHome::new();
    let socket = home.paths.status_socket();
    let probe = format!(
        "perl -MIO::Socket::UNIX -e '$s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die \"connect: $!\\n\"; \
         $l = <$s>; print \"LINE:$l\"' {}",
        socket.display()
    );
    let command = probe.clone();
    let model = Model::start(policy(move |r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({ "command": command }))),
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }));
    home.start_with_model(&model);
    let id = home.json(&["task", "new", "probe", "--json"])["id"].as_str().unwrap().to_owned();
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "the probe's task did not run to its end: {ended:#}");
    let output = home.first_tool_output(&id);
    eprintln!("the probe inside the task: {output}");
    // Two layers: no AF_UNIX socket for a task (seccomp), and were it let through, the peer check refuses it.
    match output.split("LINE:").nth(1) {
        None => assert!(
            output.contains("connect: Address family not supported"),
            "the probe neither connected nor was refused a socket: {output}"
        ),
        Some(line) => {
            assert!(line.contains("inside a task refused") && !line.contains("counts"), "a task read it: {output}")
        }
    }
    // The control: the same probe outside a task reads the line (so the probe can succeed), and so does a client.
    let outside = std::process::Command::new("sh").arg("-c").arg(&probe).output().unwrap();
    let outside = String::from_utf8_lossy(&outside.stdout);
    let line: StatusLine = serde_json::from_str(outside.split("LINE:").nth(1).unwrap_or_else(|| panic!("{outside}")))
        .unwrap_or_else(|e| panic!("{e}: {outside}"));
    assert_eq!(line.counts.get("completed"), Some(&1), "{outside}");
    let mut status = Status::connect(&home);
    assert_eq!(status.next().unwrap().counts.get("completed"), Some(&1));
}

/// The README's snippets for tmux, waybar and polybar, run as those bars run them (`sh -c`, the CLI on PATH).
#[test]
fn the_readme_bar_snippets_work() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block = |fence: &str| -> String {
        let start =
            readme.find(&format!("```{fence}\n")).unwrap_or_else(|| panic!("no ```{fence} block")) + 4 + fence.len();
        readme[start..][..readme[start..].find("```").unwrap()].to_owned()
    };
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    home.ok(&["task", "new", "one"]);
    let path = format!("{}:{}", neuraphage_tests::bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let sh = |command: &str| {
        let mut c = std::process::Command::new("sh");
        c.arg("-c").arg(command).env("PATH", &path).env("NEURAPHAGE_HOME", &home.paths.home);
        c.env("NEURAPHAGE_RUNTIME_DIR", &home.paths.runtime_dir).env_remove("XDG_RUNTIME_DIR");
        c
    };
    // The first line a (following) command prints, then it is stopped.
    let first_line = |command: &str| -> String {
        let mut child =
            sh(command).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        line
    };
    // tmux: the command inside `#(…)`.
    let tmux = block("tmux");
    let inner = &tmux[tmux.find("#(").unwrap() + 2..];
    let command = &inner[..inner.find(") ").unwrap()];
    let out = sh(command).output().unwrap();
    assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "np ⏳0 ▶0 ✓0 $0.00\n", "{command}");
    // waybar: `exec` prints JSON lines with text, tooltip and class.
    let waybar: Value = serde_json::from_str(&format!("{{{}}}", block("json"))).unwrap();
    let module = &waybar["custom/neuraphage"];
    assert_eq!(module["return-type"], "json");
    let line: Value = serde_json::from_str(&first_line(module["exec"].as_str().unwrap())).unwrap();
    assert_eq!(line["text"], "np ⏳0 ▶0 ✓0", "{line}");
    assert!(line["tooltip"].as_str().unwrap().contains("1 queued"), "{line}");
    assert_eq!(line["class"], json!(["idle"]));
    // polybar: `exec` with `tail = true` prints a line per change.
    let polybar = block("ini");
    assert!(polybar.contains("tail = true"));
    let exec = polybar.lines().find_map(|l| l.strip_prefix("exec = ")).unwrap();
    assert_eq!(first_line(exec), "np ⏳0 ▶0 ✓0 -\n", "{exec}");
}

#[test]
fn clients_past_the_cap_are_told_so_and_a_freed_slot_serves_again() {
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    let cap = 64; // status_socket::MAX_CLIENTS
    let mut held: Vec<Status> = (0..cap).map(|_| Status::connect(&home)).collect();
    for s in &mut held {
        assert!(s.next().is_some(), "a client within the cap got no line");
    }
    // One more is refused with a reason, as one JSON line, and closed.
    let stream = UnixStream::connect(home.paths.status_socket()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut refused = String::new();
    BufReader::new(stream).read_to_string(&mut refused).unwrap();
    let reason: Value = serde_json::from_str(refused.trim()).unwrap_or_else(|e| panic!("{e}: {refused}"));
    assert!(reason["error"].as_str().unwrap().contains("already serving 64 clients"), "{refused}");
    let (code, stderr) = home.fails(&["status"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("already serving"), "{stderr}");
    // The control: once a client leaves, its slot serves a new one.
    drop(held.pop());
    let deadline = Instant::now() + WITHIN;
    loop {
        let out = home.run(&["status", "--json"]);
        if out.status.success() {
            let line: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(line["counts"], json!({}));
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot never served: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(50));
    }
}
