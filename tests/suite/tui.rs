//! `neuraphage tui` for real (issue 15): the dashboard runs in tmux (a 120×40 pane) against a real supervisor, its
//! sandboxed workers and the LLM double; keys are sent with `send-keys` and what shows is read with
//! `capture-pane`: it lists the tasks that wait first with the banner, approves a permission request, answers a
//! question with a typed message, pauses and kills a task after confirming, attaches and detaches, shows a new
//! task's streamed text as it comes, sets the pane's
//! title (`np ⏳N ▶N ✓N`), and quits leaving every task as it was; attaching to a task started before the dashboard
//! shows its conversation so far, then its live tail; a deny's typed reason reaches the model.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome, bin};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(120);

const DEPLOY: &str = "echo DEPLOY prod > deployed.txt; cat deployed.txt";

/// A model that, per the task's description, asks a question (`ask:`) or runs one command (`run:`), then ends.
fn scripted() -> Model {
    Model::start(policy(|r| {
        let task = r.first_user_text().unwrap_or_default();
        if r.tool_result_count() > 0 {
            return Step::Reply(Reply::text("finished").stop(StopReason::EndTurn));
        }
        if task.contains("stream:") {
            let reply = Reply::text("hello from the model, streamed live").chunk_chars(4);
            return Step::Reply(reply.delay(Duration::from_millis(20)).stop(StopReason::EndTurn));
        }
        if task.contains("ask:") {
            return Step::Reply(Reply::tool(
                "AskUser",
                json!({"question": "Which colour?", "options": ["red", "blue"]}),
            ));
        }
        match task.split_once("run:") {
            Some((_, command)) => Step::Reply(Reply::tool("Bash", json!({ "command": command.trim() }))),
            None => Step::Reply(Reply::text("finished").stop(StopReason::EndTurn)),
        }
    }))
}

/// A tmux server of its own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("run tmux")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "np"];
        args.extend_from_slice(keys);
        self.ok(&args);
    }

    fn type_text(&self, text: &str) {
        self.ok(&["send-keys", "-t", "np", "-l", text]);
    }

    fn screen(&self) -> String {
        self.ok(&["capture-pane", "-p", "-t", "np"])
    }

    fn title(&self) -> String {
        self.ok(&["display-message", "-p", "-t", "np", "#{pane_title}"]).trim().to_owned()
    }

    /// Wait until the pane shows what `check` looks for; the screen.
    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WITHIN;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "the pane never showed {what}:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_text(&self, text: &str) -> String {
        self.wait_for(text, |s| s.contains(text))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// Start `neuraphage tui` for `home` in a detached 120×40 session; the pane says `EXITED <code>` when it ends.
fn start_tui(home: &TestHome) -> Tmux {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is not installed (.ci/run installs it)");
    }
    // One tmux server per test: the tests of this file run at once in one process.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmux = Tmux { socket: format!("np-tui-{}-{n}", std::process::id()) };
    let _ = tmux.run(&["kill-server"]);
    let quote = |p: &Path| format!("'{}'", p.display());
    let command = format!(
        "env -u XDG_RUNTIME_DIR -u NO_COLOR NEURAPHAGE_HOME={} NEURAPHAGE_RUNTIME_DIR={} TERM=xterm-256color {} tui; \
         echo EXITED $?; sleep 600",
        quote(&home.paths.home),
        quote(&home.paths.runtime_dir),
        quote(&bin("neuraphage")),
    );
    tmux.ok(&["-f", "/dev/null", "new-session", "-d", "-s", "np", "-x", "120", "-y", "40", &command]);
    tmux
}

fn new_task(home: &TestHome, description: &str) -> String {
    home.json(&["task", "new", description, "--json"])["id"].as_str().unwrap().to_owned()
}

fn status(home: &TestHome, id: &str) -> Value {
    home.show(id)["status"].clone()
}

/// Filter the Tasks pane down to the task whose description contains `text` (it becomes the selection).
fn select(tmux: &Tmux, text: &str, id: &str) {
    // Escape clears the filter; the next key waits for that (an Escape followed at once by a key reads as Alt-key).
    tmux.keys(&["Escape"]);
    tmux.wait_for("the filter cleared", |s| {
        s.lines().find(|l| l.contains("Tasks ")).is_some_and(|l| !l.contains(" /"))
    });
    tmux.keys(&["/"]);
    tmux.type_text(text);
    tmux.keys(&["Enter"]);
    tmux.wait_for(&format!("{id} alone in the Tasks pane"), |s| s.contains("Tasks 1/") && s.contains(&id[3..]));
}

#[test]
fn the_dashboard_shows_waiting_tasks_first_and_approves_answers_pauses_and_kills() {
    let model = scripted();
    let mut home = TestHome::new();
    home.write_config("security:\n  permissions:\n    ask-commands: [\"echo DEPLOY *\"]\n");
    home.start_with_model(&model);
    let approve = new_task(&home, &format!("approve-me run: {DEPLOY}"));
    home.wait_status(&approve, "WaitingForUser", WITHIN);
    let question = new_task(&home, "question-me ask: a colour");
    home.wait_status(&question, "WaitingForUser", WITHIN);
    let doomed = new_task(&home, "doomed-task ask: another colour");
    home.wait_status(&doomed, "WaitingForUser", WITHIN);
    let done = new_task(&home, "plain-task run: echo hi");
    home.wait_status(&done, "Completed", WITHIN);

    let tmux = start_tui(&home);
    // Waiting tasks first, oldest wait first, under the banner; the finished one after them.
    let screen = tmux.wait_text("3 tasks wait on you");
    let row = |s: &str, id: &str| s.lines().position(|l| l.contains(&id[3..]) && l.contains('│'));
    let rows: Vec<usize> = [&approve, &question, &doomed, &done].iter().map(|id| row(&screen, id).unwrap()).collect();
    assert!(rows.windows(2).all(|w| w[0] < w[1]), "waiting first, oldest first: {rows:?}\n{screen}");
    assert!(screen.contains("Stats") && screen.contains("Notifications"), "{screen}");
    let title = tmux.title();
    assert!(title.starts_with("np ⏳3 ▶0 ✓1"), "pane title {title:?}");

    // j/k move the selection; Enter attaches full-screen; d detaches.
    tmux.keys(&["g", "j", "k"]);
    tmux.keys(&["Enter"]);
    let attached = tmux.wait_text("attached · d detach");
    assert!(
        attached.contains(&approve) && attached.contains("DEPLOY"),
        "the oldest waiting task, attached:\n{attached}"
    );
    tmux.keys(&["d"]);
    tmux.wait_text("Notifications");

    // a approves the permission request: the command runs and the task completes.
    select(&tmux, "approve-me", &approve);
    tmux.keys(&["a"]);
    tmux.wait_text("approved request #");
    home.wait_status(&approve, "Completed", WITHIN);
    let shown =
        tmux.wait_for("the approved task done", |s| s.lines().any(|l| l.contains(&approve[3..]) && l.contains("done")));
    assert!(!shown.contains("3 tasks wait"), "{shown}");
    let outputs = home.tool_outputs(&approve);
    assert_eq!(outputs, ["DEPLOY prod\n"], "the approved command ran");

    // s types a message: it answers the question.
    select(&tmux, "question-me", &question);
    tmux.keys(&["s"]);
    tmux.wait_text("message to");
    tmux.type_text("blue");
    tmux.keys(&["Enter"]);
    tmux.wait_text("sent to");
    home.wait_status(&question, "Completed", WITHIN);
    let answer = home.tool_outputs(&question);
    assert!(answer.iter().any(|o| o.contains("blue")), "the answer reached the model: {answer:?}");

    // p pauses; K asks, another key keeps it, y kills.
    select(&tmux, "doomed-task", &doomed);
    tmux.keys(&["p"]);
    tmux.wait_text("paused:");
    assert_eq!(status(&home, &doomed), "Paused");
    tmux.keys(&["K"]);
    tmux.wait_text("Kill?");
    tmux.keys(&["n"]);
    tmux.wait_for("the dialog closed", |s| !s.contains("Kill?"));
    assert_eq!(status(&home, &doomed), "Paused", "n keeps it");
    tmux.keys(&["K"]);
    tmux.wait_text("Kill?");
    tmux.keys(&["y"]);
    tmux.wait_text("killed:");
    assert_eq!(status(&home, &doomed), "Cancelled");

    // A task made while the dashboard runs appears, and its streamed text shows in the live pane.
    tmux.keys(&["Escape"]);
    let streamer = new_task(&home, "streamer-task stream: say hello");
    tmux.wait_text("Tasks 5/5");
    select(&tmux, "streamer-task", &streamer);
    tmux.wait_text("hello from the model, streamed live");
    home.wait_status(&streamer, "Completed", WITHIN);

    tmux.keys(&["Escape"]);
    let screen = tmux.wait_text("Tasks 5/5");
    assert!(!screen.contains("wait on you"), "nothing waits any more:\n{screen}");
    let title = tmux.wait_title("np ⏳0 ▶0 ✓4");
    assert!(title.starts_with("np ⏳0"), "{title}");

    // q quits and changes nothing.
    let before: Vec<Value> =
        [&approve, &question, &doomed, &done, &streamer].iter().map(|id| status(&home, id)).collect();
    tmux.keys(&["q"]);
    tmux.wait_text("EXITED 0");
    let after: Vec<Value> =
        [&approve, &question, &doomed, &done, &streamer].iter().map(|id| status(&home, id)).collect();
    assert_eq!(before, after);
}

impl Tmux {
    fn wait_title(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WITHIN;
        loop {
            let title = self.title();
            if title.starts_with(prefix) {
                return title;
            }
            assert!(Instant::now() < deadline, "the pane title stayed {title:?}, never {prefix:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn without_a_supervisor_it_says_so_and_leaves_the_terminal_alone() {
    let home = TestHome::new();
    let tmux = start_tui(&home);
    let screen = tmux.wait_text("EXITED 3");
    assert!(screen.contains("the supervisor is not running"), "{screen}");
}

#[test]
fn attaching_shows_the_conversation_so_far_then_the_live_tail_and_a_deny_reason_reaches_the_model() {
    let model = Model::start(policy(|r| {
        let task = r.first_user_text().unwrap_or_default();
        if r.tool_result_count() > 0 {
            let reply = Reply::text("LIVE-TAIL after your answer").chunk_chars(4);
            return Step::Reply(reply.delay(Duration::from_millis(20)).stop(StopReason::EndTurn));
        }
        if task.contains("deny-me") {
            return Step::Reply(Reply::tool("Bash", json!({ "command": DEPLOY })));
        }
        Step::Reply(
            Reply::text("BACKLOG-MARKER: I read the repository before you came.")
                .with_tool("AskUser", json!({"question": "Which colour?", "options": ["red", "blue"]})),
        )
    }));
    let mut home = TestHome::new();
    home.write_config("security:\n  permissions:\n    ask-commands: [\"echo DEPLOY *\"]\n");
    home.start_with_model(&model);
    let asked = new_task(&home, "backlog-task");
    home.wait_status(&asked, "WaitingForUser", WITHIN);
    let denied = new_task(&home, "deny-me");
    home.wait_status(&denied, "WaitingForUser", WITHIN);

    // The dashboard starts after the model's text was streamed: only the stored conversation has it.
    let tmux = start_tui(&home);
    tmux.wait_text("2 tasks wait on you");
    select(&tmux, "backlog-task", &asked);
    tmux.keys(&["Enter"]);
    tmux.wait_text("attached · d detach");
    let screen = tmux.wait_text("BACKLOG-MARKER: I read the repository before you came.");
    assert!(screen.contains("Which colour?"), "{screen}");
    // Then the live tail: the answer's streamed reply, below the conversation.
    tmux.keys(&["s"]);
    tmux.wait_text("message ›");
    tmux.type_text("blue");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_text("LIVE-TAIL after your answer");
    let at = |text: &str| screen.find(text).unwrap_or_else(|| panic!("{text} not shown:\n{screen}"));
    assert!(at("BACKLOG-MARKER") < at("LIVE-TAIL"), "{screen}");
    home.wait_status(&asked, "Completed", WITHIN);
    tmux.keys(&["d"]);
    tmux.wait_text("Notifications");

    // x asks why; the reason typed reaches the model with the refusal, as `task deny --reason` sends it.
    select(&tmux, "deny-me", &denied);
    tmux.keys(&["x"]);
    tmux.wait_text("why (optional");
    tmux.type_text("not on prod today");
    tmux.keys(&["Enter"]);
    tmux.wait_text("denied request #");
    home.wait_status(&denied, "Completed", WITHIN);
    let outputs = home.tool_outputs(&denied);
    assert!(outputs.iter().any(|o| o.contains("not on prod today")), "the reason reached the model: {outputs:?}");
}
