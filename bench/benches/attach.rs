//! Live-stream latency: from the LLM double sending a text delta to a subscribed client receiving it, p50/p99, with
//! 20 tasks streaming at once and 5 viewers each following every task's stream (`Subscribe` with deltas, as
//! `task attach` and `events --follow --deltas` do). The double stamps each delta with its send time
//! ([`neuraphage_llm_double::SEND_TIME_MARKER`]); the path is double → broker → worker → supervisor (event bus) →
//! control socket → client. Target: p99 under 10 ms. Run with `bench/run.sh` (it builds the release binaries).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use neuraphage_bench::Run;
use neuraphage_ipc::control::{MAX_REPLY_FRAME, MAX_REQUEST_FRAME};
use neuraphage_ipc::events::{StreamItem, Subscribe};
use neuraphage_ipc::llm::StreamDelta;
use neuraphage_ipc::{ControlReply, ControlRequest, Link, NewTask, ReplyFrame, RequestFrame, Role};
use neuraphage_llm_double::{Reply, SEND_TIME_MARKER, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use tokio::net::UnixStream;

const TASKS: usize = 20;
const VIEWERS: usize = 5;
/// Milliseconds between two deltas of one stream (each task streams at 50 deltas/s).
const DELTA_EVERY_MS: u64 = 20;

type ClientLink = Link<UnixStream, ReplyFrame, RequestFrame>;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let deltas = if quick { 25 } else { 150 };
    let model = Model::start(policy(move |_| {
        let reply = Reply::text(SEND_TIME_MARKER.repeat(deltas)).chunk_chars(SEND_TIME_MARKER.len());
        Step::Reply(reply.delay(Duration::from_millis(DELTA_EVERY_MS)).stop(StopReason::EndTurn))
    }));
    let mut home = TestHome::new();
    home.write_config(&format!("max-concurrent: {TASKS}\n"));
    home.start_with_model(&model);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (run, missed) = rt.block_on(measure(&home, deltas));
    println!("{}", Run::header());
    println!("{}", run.row());
    println!(
        "{TASKS} tasks x {deltas} deltas (one every {DELTA_EVERY_MS} ms), {VIEWERS} viewers of every task; \
         deltas missed by the viewers: {missed}; max {:.2} ms",
        run.percentile(100.0).as_secs_f64() * 1000.0
    );
}

async fn connect(home: &TestHome) -> ClientLink {
    let stream = UnixStream::connect(home.paths.control_socket()).await.unwrap();
    let mut link: ClientLink = Link::with_limits(stream, MAX_REPLY_FRAME, MAX_REQUEST_FRAME);
    link.connect_handshake(Role::Tool).await.unwrap();
    link
}

async fn measure(home: &TestHome, deltas: usize) -> (Run, u64) {
    let mut viewers = Vec::new();
    for _ in 0..VIEWERS {
        let mut link = connect(home).await;
        let subscribe = Subscribe { task: None, since: None, follow: true, deltas: true, until_end: false };
        link.send(&RequestFrame { id: 1, request: ControlRequest::Subscribe(subscribe) }).await.unwrap();
        let caught_up = link.expect().await.unwrap();
        assert!(matches!(caught_up.reply, ControlReply::Stream(StreamItem::CaughtUp { .. })), "{caught_up:?}");
        viewers.push(tokio::spawn(view(link)));
    }
    let start = Instant::now();
    let mut creator = connect(home).await;
    for i in 0..TASKS {
        let request = ControlRequest::CreateTask(NewTask::described(format!("stream {i}")));
        creator.send(&RequestFrame { id: i as u64, request }).await.unwrap();
        let reply = creator.expect().await.unwrap();
        assert!(matches!(reply.reply, ControlReply::Task(_)), "{:?}", reply.reply);
    }
    let (mut latencies, mut missed) = (Vec::new(), 0);
    for viewer in viewers {
        let (l, m) = viewer.await.unwrap();
        latencies.extend(l);
        missed += m;
    }
    assert!(latencies.len() + missed as usize >= TASKS * deltas * VIEWERS / 2, "too few deltas arrived");
    (Run { label: "delta → viewer".into(), clients: VIEWERS, latencies, wall: start.elapsed() }, missed)
}

/// Follow the stream until every task has ended; the latency of each stamped delta, and how many were missed.
async fn view(mut link: ClientLink) -> (Vec<Duration>, u64) {
    let (mut latencies, mut missed, mut ended) = (Vec::new(), 0, 0);
    let deadline = Instant::now() + Duration::from_secs(300);
    while ended < TASKS && Instant::now() < deadline {
        let frame = match tokio::time::timeout(Duration::from_secs(60), link.expect()).await {
            Ok(Ok(frame)) => frame,
            _ => break,
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        match frame.reply {
            ControlReply::Stream(StreamItem::Delta { delta: StreamDelta::Text { text, .. }, .. }) => {
                if let Ok(sent) = text.parse::<u64>() {
                    latencies.push(Duration::from_micros(now.saturating_sub(sent)));
                }
            }
            ControlReply::Stream(StreamItem::Missed { deltas, .. }) => missed += deltas,
            ControlReply::Stream(item) if neuraphage_ipc::events::ends_task(&item).is_some() => ended += 1,
            _ => {}
        }
    }
    (latencies, missed)
}
