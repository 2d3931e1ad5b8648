//! Acknowledged `task new` per second, and p50/p99 latency, against a real supervisor in a temporary home:
//! through the real `neuraphage` CLI (a process per task) and through the control socket directly (one link per
//! client, each request waiting for its acknowledgement), with 1 and 8 concurrent clients.
//!
//! Every acknowledgement means the task is committed to SQLite with `synchronous=FULL`, so this measures the
//! durable write path, fsync included. Run with `bench/run.sh` (it builds the release binaries first).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use neuraphage_bench::Run;
use neuraphage_ipc::control::{MAX_REPLY_FRAME, MAX_REQUEST_FRAME};
use neuraphage_ipc::{ControlReply, ControlRequest, Link, NewTask, ReplyFrame, RequestFrame, Role};
use neuraphage_tests::TestHome;
use tokio::net::UnixStream;

const CLI_OPS: usize = 200;
const SOCKET_OPS: usize = 2000;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (cli_ops, socket_ops) = if quick { (16, 64) } else { (CLI_OPS, SOCKET_OPS) };
    // Queue only (max-concurrent: 0): this measures the durable write path, not workers starting.
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    println!("{}", Run::header());
    for clients in [1, 8] {
        println!("{}", through_cli(&home, clients, cli_ops).row());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for clients in [1, 8] {
        println!("{}", rt.block_on(through_socket(&home, clients, socket_ops)).row());
    }
}

fn through_cli(home: &TestHome, clients: usize, ops: usize) -> Run {
    let per_client = ops / clients;
    let start = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    (0..per_client)
                        .map(|i| {
                            let t = Instant::now();
                            let out = home.cli().args(["task", "new", &format!("cli {c}/{i}")]).output().unwrap();
                            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    Run { label: "task new via CLI".into(), clients, latencies, wall: start.elapsed() }
}

async fn through_socket(home: &TestHome, clients: usize, ops: usize) -> Run {
    let per_client = ops / clients;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let socket = home.paths.control_socket();
        tasks.push(tokio::spawn(async move {
            let stream = UnixStream::connect(&socket).await.unwrap();
            let mut link: Link<_, ReplyFrame, RequestFrame> =
                Link::with_limits(stream, MAX_REPLY_FRAME, MAX_REQUEST_FRAME);
            link.connect_handshake(Role::Tool).await.unwrap();
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let t = Instant::now();
                let request = ControlRequest::CreateTask(NewTask::described(format!("socket {c}/{i}")));
                link.send(&RequestFrame { id: i as u64, request }).await.unwrap();
                let reply = link.expect().await.unwrap();
                assert!(matches!(reply.reply, ControlReply::Task(_)), "{:?}", reply.reply);
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Run { label: "task new via socket".into(), clients, latencies, wall: start.elapsed() }
}
