//! Notifications (issue 15, "Notifications"): a task that starts waiting on the user, or completes, is told over a
//! real D-Bus session bus (a `dbus-daemon` started by the test; `dbus-monitor` records the freedesktop `Notify` calls
//! the supervisor makes) and spoken by the configured command (a script that writes its argv); muted, nothing goes
//! out; a burst within the coalescing window is one notification. The model is the LLM double.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(90);

/// A private session bus and a monitor of its Notify calls; both stopped on drop.
struct Bus {
    daemon: Child,
    monitor: Child,
    address: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bus {
    fn start() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (package dbus) must be installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let address = format!("unix:path={}", socket.display());
        let log = dir.path().join("monitor.log");
        let monitor = Command::new("dbus-monitor")
            .args(["--address", &address])
            .arg("type='method_call',interface='org.freedesktop.Notifications',member='Notify'")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-monitor");
        // The monitor is in place once it has printed its own name's signals.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&log).unwrap_or_default().is_empty() {
            assert!(Instant::now() < deadline, "dbus-monitor printed nothing");
            std::thread::sleep(Duration::from_millis(20));
        }
        Bus { daemon, monitor, address, log, _dir: dir }
    }

    /// Each Notify call seen so far, as dbus-monitor printed it (its arguments: app, id, icon, summary, body, …).
    fn notifies(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut calls = Vec::new();
        for block in text.split("\nmethod call ").skip(1) {
            if block.lines().next().is_some_and(|l| l.contains("member=Notify")) {
                calls.push(block.to_owned());
            }
        }
        calls
    }

    /// Wait until a Notify call satisfies `want`.
    fn wait_for(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(call) = self.notifies().into_iter().find(|c| want(c)) {
                return call;
            }
            assert!(Instant::now() < deadline, "no Notify call with {what}; saw {:#?}", self.notifies());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        for child in [&mut self.monitor, &mut self.daemon] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A speech command that appends its arguments, one per line, to `out`, and its standard input to `out.stdin`.
fn speech_script(home: &TestHome, out: &Path) -> PathBuf {
    let script = home.root().join("speak.sh");
    let (out, stdin) = (out.display(), out.with_extension("stdin"));
    let stdin = stdin.display();
    std::fs::write(&script, format!("#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{out}'\ncat >> '{stdin}'\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn asking_model() -> Model {
    Model::start(policy(|r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("AskUser", json!({"question": "Which colour?", "options": ["red", "blue"]}))),
        _ => Step::Reply(Reply::text("thanks").stop(StopReason::EndTurn)),
    }))
}

fn start(home: &mut TestHome, model: &Model, bus: &Bus) {
    let mut env = model.env();
    env.push(("DBUS_SESSION_BUS_ADDRESS".to_owned(), bus.address.clone()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    home.start_supervisor_with(&pairs);
}

/// A supervisor on `bus` whose configuration (`config`, given the speech script's path) speaks through
/// [`speech_script`]; the home and the file the script writes what it was given to.
fn start_speaking(model: &Model, bus: &Bus, config: impl FnOnce(&Path) -> String) -> (TestHome, PathBuf) {
    let mut home = TestHome::new();
    let spoken = home.root().join("spoken.txt");
    let script = speech_script(&home, &spoken);
    home.write_config(&config(&script));
    start(&mut home, model, bus);
    (home, spoken)
}

fn new_task(home: &TestHome, description: &str) -> String {
    home.json(&["task", "new", description, "--json"])["id"].as_str().unwrap().to_owned()
}

#[test]
fn a_waiting_task_is_notified_on_the_session_bus_and_spoken() {
    let bus = Bus::start();
    let model = asking_model();
    let (home, spoken) = start_speaking(&model, &bus, |script| {
        format!(
            "notifications:\n  on: [waiting, completed]\n  desktop: true\n  tts-command: [\"{}\", \"--voice\", \"en\"]\n  coalesce-ms: 300\n",
            script.display()
        )
    });
    assert!(bus.notifies().is_empty(), "the control: nothing before a task waits");
    let id = new_task(&home, "pick a colour for the logo");
    let call = bus.wait_for("the waiting task", |c| c.contains(&id) && c.contains("needs you"));
    // The summary names the task; the body its description and the question.
    assert!(call.contains("string \"neuraphage\""), "{call}");
    assert!(call.contains(&format!("string \"neuraphage: task {id} needs you\"")), "{call}");
    assert!(call.contains("pick a colour for the logo") && call.contains("asks: Which colour? Options:"), "{call}");
    // Spoken with the configured arguments first, then the text.
    let deadline = Instant::now() + WITHIN;
    let said = loop {
        let said = std::fs::read_to_string(&spoken).unwrap_or_default();
        if said.contains("Which colour?") {
            break said;
        }
        assert!(Instant::now() < deadline, "the speech command was not called: {said:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let args: Vec<&str> = said.lines().collect();
    assert_eq!(&args[..2], ["--voice", "en"], "{said}");
    assert!(args[2].contains(&id) && args[2].contains("needs you") && args[2].contains("Which colour?"), "{said}");
    assert_eq!(args.len(), 3, "one argument with the text: {said}");
    // The same text on its standard input (for a command that reads it, e.g. piper).
    let stdin = std::fs::read_to_string(spoken.with_extension("stdin")).unwrap_or_default();
    assert_eq!(stdin.trim_end(), args[2], "{stdin}");
    // Completing notifies too (it is in `on`).
    home.ok(&["task", "send", &id, "1"]);
    bus.wait_for("the completed task", |c| c.contains(&format!("task {id} completed")));
    assert_eq!(bus.notifies().iter().filter(|c| c.contains("needs you")).count(), 1, "once per event");
}

#[test]
fn muted_nothing_is_sent_and_unmuted_it_is() {
    let bus = Bus::start();
    let model = asking_model();
    let (home, spoken) = start_speaking(&model, &bus, |script| {
        format!("notifications:\n  on: [waiting]\n  tts-command: [\"{}\"]\n  coalesce-ms: 200\n", script.display())
    });
    home.ok(&["notify", "mute"]);
    let quiet = new_task(&home, "quiet one");
    home.wait_status(&quiet, "WaitingForUser", WITHIN);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(bus.notifies().is_empty(), "muted, yet notified: {:#?}", bus.notifies());
    assert!(!spoken.exists(), "muted, yet spoken");
    // The control: unmuted, the next one is notified and spoken.
    home.ok(&["notify", "unmute"]);
    let loud = new_task(&home, "loud one");
    bus.wait_for("the unmuted task", |c| c.contains(&loud));
    assert!(!bus.notifies().iter().any(|c| c.contains(&quiet)), "the muted event was not sent later");
    let deadline = Instant::now() + WITHIN;
    while !std::fs::read_to_string(&spoken).unwrap_or_default().contains(&loud) {
        assert!(Instant::now() < deadline, "not spoken after unmute");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_burst_is_one_notification() {
    let bus = Bus::start();
    let model = asking_model();
    let mut home = TestHome::new();
    home.write_config("notifications:\n  on: [waiting]\n  coalesce-ms: 8000\n");
    start(&mut home, &model, &bus);
    let ids: Vec<String> = (0..3).map(|i| new_task(&home, &format!("burst {i}"))).collect();
    for id in &ids {
        home.wait_status(id, "WaitingForUser", WITHIN);
    }
    let call = bus.wait_for("the burst", |c| c.contains("tasks need you"));
    assert!(call.contains("3 tasks need you"), "{call}");
    for id in &ids {
        assert!(call.contains(id.as_str()), "{id} not named: {call}");
    }
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(bus.notifies().len(), 1, "{:#?}", bus.notifies());
}

#[test]
fn a_hostile_question_is_escaped_and_cut_in_the_notification() {
    let bus = Bus::start();
    let question =
        format!("Pick <b>one</b> & <img src=\"file:///etc/passwd\"> \u{1b}]2;pwned\u{7} now {}", "x".repeat(3000));
    let model = Model::start(policy(move |r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("AskUser", json!({ "question": question }))),
        _ => Step::Reply(Reply::text("thanks").stop(StopReason::EndTurn)),
    }));
    let (home, spoken) = start_speaking(&model, &bus, |script| {
        format!("notifications:\n  on: [waiting]\n  tts-command: [\"{}\"]\n  coalesce-ms: 200\n", script.display())
    });
    let id = new_task(&home, "a <i>hostile</i> task");
    let call = bus.wait_for("the waiting task", |c| c.contains(&id));
    // No notification server answers on this bus, so whether it reads markup is unknown: the body is escaped.
    assert!(call.contains("Pick &lt;b&gt;one&lt;/b&gt; &amp; &lt;img src="), "{call}");
    assert!(call.contains("a &lt;i&gt;hostile&lt;/i&gt; task"), "{call}");
    assert!(!call.contains("<b>") && !call.contains("<img") && !call.contains("<i>"), "{call}");
    // Terminal controls are shown, not sent; the question is cut.
    assert!(call.contains("\\u{1b}]2;pwned\\u{7}") && !call.contains('\u{1b}'), "{call}");
    assert!(call.contains('…') && call.len() < 3000, "{} bytes: {call}", call.len());
    // The speech command gets the same bounded, escaped text (no markup entities: it is not markup).
    let deadline = Instant::now() + WITHIN;
    let said = loop {
        let said = std::fs::read_to_string(&spoken).unwrap_or_default();
        if said.contains(&id) {
            break said;
        }
        assert!(Instant::now() < deadline, "the speech command was not called: {said:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(said.contains("Pick <b>one</b>") && !said.contains('\u{1b}') && said.len() < 1000, "{said}");
}
