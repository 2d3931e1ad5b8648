//! The event stream and `task attach`, against the LLM double: deltas in order, tool calls with their outcomes,
//! the end of the task; `events --since` gives exactly the backlog after SEQ, then the live tail; a subscriber that
//! never reads slows nothing and is told what it missed; hostile streamed text is printed escaped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use neuraphage_ipc::events::{StreamItem, Subscribe};
use neuraphage_ipc::{ControlReply, ControlRequest, ReplyFrame, RequestFrame};
use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, RawClient, TestHome};
use pretty_assertions::assert_eq;
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(90);

/// A child's stdout, line by line, read on a thread.
struct Lines {
    child: Child,
    rx: Receiver<String>,
    seen: Vec<String>,
    stderr: tempfile::NamedTempFile,
}

impl Lines {
    fn spawn(mut cmd: Command) -> Lines {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr.reopen().unwrap()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { child, rx, seen: Vec::new(), stderr }
    }

    /// What it wrote on stderr so far.
    fn errors(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// Read until a line satisfies `done` (true) or the output ends (false).
    fn until(&mut self, done: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + WITHIN;
        loop {
            match self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let hit = done(&line);
                    self.seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no expected line in {WITHIN:?}; so far: {:#?}\nstderr: {}", self.seen, self.errors())
                }
            }
        }
    }

    /// Read to the end of the output, and reap the process.
    fn finish(mut self) -> (Vec<String>, std::process::ExitStatus) {
        self.until(|_| false);
        (self.seen, self.child.wait().unwrap())
    }

    /// Stop the process, and return what it printed.
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        self.until(|_| false);
        let _ = self.child.wait();
        self.seen
    }
}

/// Block the double's first answer until `gate` opens (so a viewer is attached before any text streams).
fn wait_for(gate: &AtomicBool) {
    let deadline = Instant::now() + WITHIN;
    while !gate.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn new_task(home: &TestHome, description: &str) -> String {
    let repo = home.git_repo(&description.replace(' ', "-"));
    let task = home.json(&["task", "new", description, "--repo", repo.to_str().unwrap(), "--json"]);
    task["id"].as_str().unwrap().to_owned()
}

/// Text a task could make its model say: a screen clear, a window title, a bell, a bidi override.
const HOSTILE: &str = "look \u{1b}[2J\u{1b}]0;pwned\u{7} at \u{202e}txt.exe done";

#[test]
fn attach_json_streams_text_in_order_tool_calls_with_outcomes_and_ends_with_the_task() {
    let gate = Arc::new(AtomicBool::new(false));
    let g = gate.clone();
    let model = Model::start(policy(move |r| match r.tool_result_count() {
        0 => {
            wait_for(&g);
            let reply = Reply::text(HOSTILE).with_tool("Bash", json!({"command": "echo tool-out-$((40+2))"}));
            Step::Reply(reply.chunk_chars(3))
        }
        _ => Step::Reply(Reply::text("all done").chunk_chars(3).stop(StopReason::EndTurn)),
    }));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let id = new_task(&home, "stream some text");
    let mut attach = home.cli();
    attach.args(["task", "attach", &id, "--json"]);
    let mut attach = Lines::spawn(attach);
    let mut human = home.cli();
    human.args(["events", "--task", &id, "--follow", "--deltas"]);
    let mut human = Lines::spawn(human);
    assert!(attach.until(|l| l.contains("\"caught_up\"")), "attach: {:#?} {}", attach.seen, attach.errors());
    assert!(human.until(|l| l.contains("caught up")), "events: {:#?} {}", human.seen, human.errors());
    gate.store(true, Ordering::SeqCst);

    let (lines, status) = attach.finish();
    assert!(status.success(), "attach: {status}: {lines:#?}");
    let items: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Deltas in order: together they are exactly the model's text, both turns.
    let text: String = items
        .iter()
        .filter(|i| i["delta"]["delta"]["type"] == "text")
        .filter_map(|i| i["delta"]["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, format!("{HOSTILE}all done"), "{lines:#?}");
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["event"]["kind"].as_str()).collect();
    let call = items.iter().find(|i| i["event"]["kind"] == "tool_call").expect("a tool_call event");
    assert_eq!(call["event"]["data"]["tool"], "Bash");
    assert!(call["event"]["data"]["input"].as_str().unwrap().contains("echo tool-out"), "{call:#}");
    let result = items.iter().find(|i| i["event"]["kind"] == "tool_result").expect("a tool_result event");
    assert_eq!(result["event"]["data"]["is_error"], false);
    assert!(result["event"]["data"]["result"].as_str().unwrap().contains("tool-out-42"), "{result:#}");
    let call_at = kinds.iter().position(|k| *k == "tool_call").unwrap();
    assert!(kinds[call_at..].contains(&"tool_result"), "the outcome follows the call: {kinds:?}");
    // It ends with the task.
    assert_eq!(items.last().unwrap()["end"]["status"]["status"], "Completed", "{lines:#?}");
    assert_eq!(home.show(&id)["status"], "Completed");
    // The JSON lines carry the hostile text only as escapes.
    let raw = lines.join("\n");
    assert!(!raw.contains('\u{1b}') && !raw.contains('\u{7}') && !raw.contains('\u{202e}'), "{raw}");

    // The human view of the same stream: the text arrives, escaped; nothing a terminal would act on.
    assert!(human.until(|l| l.contains("→ Completed")), "events: {:#?}", human.seen);
    let shown = human.stop().join("\n");
    assert!(!shown.contains('\u{1b}') && !shown.contains('\u{7}') && !shown.contains('\u{202e}'), "{shown}");
    assert!(shown.contains("\\u{1b}") && shown.contains("\\u{202e}"), "{shown}");
    assert!(shown.contains("tool_call Bash") && shown.contains("tool-out-42"), "{shown}");
}

fn seqs_of(lines: &str) -> (Vec<u64>, Vec<Value>) {
    let items: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seqs = items.iter().filter_map(|i| i["event"]["seq"].as_u64()).collect();
    (seqs, items)
}

#[test]
fn events_since_gives_exactly_the_backlog_after_seq_then_the_live_tail() {
    let model = Model::start(policy(|_| Step::Reply(Reply::text("nothing to do").stop(StopReason::EndTurn))));
    let mut home = TestHome::new();
    home.start_with_model(&model);
    let first = new_task(&home, "first");
    home.wait_ended(&[&first], WITHIN);
    let stored: Vec<u64> = {
        let store = home.open_store();
        let mut stmt = store.prepare("SELECT seq FROM events ORDER BY seq").unwrap();
        stmt.query_map([], |r| r.get::<_, i64>(0)).unwrap().map(|s| s.unwrap() as u64).collect()
    };
    assert!(stored.len() > 4, "{stored:?}");
    // The whole log, then from the middle: exactly what follows SEQ, in order, then `caught_up`.
    let (all, items) = seqs_of(&home.ok(&["events", "--json"]));
    assert_eq!(all, stored);
    assert_eq!(items.last().unwrap()["caught_up"]["seq"], *stored.last().unwrap());
    let mid = stored[stored.len() / 2];
    let (after, _) = seqs_of(&home.ok(&["events", "--since", &mid.to_string(), "--json"]));
    assert_eq!(after, stored.iter().copied().filter(|s| *s > mid).collect::<Vec<_>>());
    let (one, _) = seqs_of(&home.ok(&["events", "--task", &first, "--since", &mid.to_string(), "--json"]));
    assert_eq!(one, after, "only the first task exists");

    // Live: from SEQ, the backlog then every new event, each once, in order — none lost between the two.
    let mut follow = home.cli();
    follow.args(["events", "--since", &mid.to_string(), "--follow", "--json"]);
    let mut follow = Lines::spawn(follow);
    assert!(follow.until(|l| l.contains("\"caught_up\"")));
    let second = new_task(&home, "second");
    home.wait_ended(&[&second], WITHIN);
    let second_done = |l: &str| l.contains(&second) && l.contains("\"status_changed\"") && l.contains("Completed");
    assert!(follow.until(second_done), "{:#?}", follow.seen);
    let seen = follow.stop().join("\n");
    let (live, _) = seqs_of(&seen);
    let stored_now: Vec<u64> = {
        let store = home.open_store();
        let mut stmt = store.prepare("SELECT seq FROM events WHERE seq > ?1 ORDER BY seq").unwrap();
        stmt.query_map([mid as i64], |r| r.get::<_, i64>(0)).unwrap().map(|s| s.unwrap() as u64).collect()
    };
    assert_eq!(live, stored_now[..live.len()].to_vec(), "backlog + live = the store, in order, no gap, no duplicate");
    assert!(live.len() > after.len(), "live events came after the backlog");
}

#[test]
fn a_subscriber_that_never_reads_slows_nothing_and_is_told_what_it_missed() {
    // Far more streamed text than a socket buffer and a subscriber's queue hold (4096 items).
    let big = "0123456789abcdef".repeat(8_000);
    let text = big.clone();
    let model =
        Model::start(policy(move |_| Step::Reply(Reply::text(text.clone()).chunk_chars(16).stop(StopReason::EndTurn))));
    let mut home = TestHome::new();
    // Long enough that the subscriber is still there when it reads, after the task (the default, 10 s, would drop it
    // sooner on a slow machine: `exhaustion`-style tests cover the drop).
    home.write_config("event-stream-write-secs: 300\n");
    home.start_with_model(&model);
    let mut stuck = RawClient::connect(&home.paths).unwrap();
    stuck.handshake().unwrap();
    let subscribe = Subscribe { task: None, since: Some(0), follow: true, deltas: true, until_end: false };
    stuck.send(&RequestFrame { id: 7, request: ControlRequest::Subscribe(subscribe) }).unwrap();
    // The subscriber reads nothing from here on, while a task streams 20 000 deltas.
    let id = new_task(&home, "talk a lot");
    let done = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(done["status"], "Completed", "{done:#}");
    // Other clients are served meanwhile, streams included.
    home.ok(&["daemon", "status"]);
    let (backlog, _) = seqs_of(&home.ok(&["events", "--task", &id, "--json"]));
    assert!(!backlog.is_empty());
    // Now the stuck subscriber reads: what fit, in order, then what it missed (or, had it stalled past the write
    // deadline, the supervisor closed it).
    let mut deltas = 0u64;
    let told = loop {
        let frame: ReplyFrame = match stuck.recv() {
            Ok(frame) => frame,
            Err(e) => panic!("the stream ended before saying what was missed ({deltas} deltas read): {e}"),
        };
        assert_eq!(frame.id, 7);
        match frame.reply {
            ControlReply::Stream(StreamItem::Delta { .. }) => deltas += 1,
            ControlReply::Stream(missed @ StreamItem::Missed { .. }) => break missed,
            ControlReply::Stream(_) => {}
            other => panic!("{other:?}"),
        }
    };
    let StreamItem::Missed { deltas: missed, .. } = told else { unreachable!() };
    assert!(missed > 0, "deltas were dropped, and counted");
    assert_eq!(deltas + missed, (big.len() / 16) as u64, "every delta was either delivered or counted as missed");
}

#[test]
fn a_subscriber_that_never_reads_is_dropped_after_the_write_deadline() {
    let text = "0123456789abcdef".repeat(8_000);
    let model =
        Model::start(policy(move |_| Step::Reply(Reply::text(text.clone()).chunk_chars(16).stop(StopReason::EndTurn))));
    let mut home = TestHome::new();
    home.write_config("event-stream-write-secs: 1\n");
    home.start_with_model(&model);
    let mut stuck = RawClient::connect(&home.paths).unwrap();
    stuck.handshake().unwrap();
    let subscribe = Subscribe { task: None, since: None, follow: true, deltas: true, until_end: false };
    stuck.send(&RequestFrame { id: 1, request: ControlRequest::Subscribe(subscribe) }).unwrap();
    let id = new_task(&home, "talk a lot");
    assert_eq!(home.wait_ended(&[&id], WITHIN)[0]["status"], "Completed");
    // Its socket filled up and stayed full for longer than a second: the supervisor closed it. Reading drains the
    // socket and would let a write still inside its deadline through, so wait out that deadline (1 s) first.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(stuck.is_closed_by_peer(), "a subscriber that never reads must be dropped");
    home.ok(&["daemon", "status"]);
}

#[test]
fn when_every_stream_slot_is_held_by_followers_that_never_read_a_new_stream_is_still_served() {
    let mut home = TestHome::new();
    home.start_supervisor();
    // 64 followers (the cap) that subscribe and then never read nor close.
    let mut stuck = Vec::new();
    for i in 0..64u64 {
        let mut client = RawClient::connect(&home.paths).unwrap();
        client.handshake().unwrap();
        let subscribe = Subscribe { task: None, since: None, follow: true, deltas: false, until_end: false };
        client.send(&RequestFrame { id: i + 1, request: ControlRequest::Subscribe(subscribe) }).unwrap();
        stuck.push(client);
    }
    // Let the supervisor take every subscription (each answers CaughtUp first) before the 65th.
    for client in &mut stuck {
        let frame: ReplyFrame = client.recv().unwrap();
        assert!(matches!(frame.reply, ControlReply::Stream(StreamItem::CaughtUp { .. })), "{:?}", frame.reply);
    }
    // The 65th is served: the stream idle the longest was ended to make room (before, it was refused with
    // "already serving 64 event streams").
    home.ok(&["events", "--json"]);
    assert!(stuck.iter_mut().any(RawClient::is_closed_by_peer), "one idle follower was ended to make room");
}
