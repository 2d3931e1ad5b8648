//! Clients that misbehave on the control socket cost themselves their link, and nothing else.

use std::time::{Duration, Instant};

use neuraphage_ipc::{ControlRequest, HandshakeReply, Hello, NewTask, PROTOCOL_VERSION, RequestFrame, Role};
use neuraphage_tests::{RawClient, TestHome, alive};

/// The supervisor still answers a real CLI.
fn still_serving(home: &TestHome, pid: u32) {
    assert!(alive(pid), "the supervisor died");
    home.ok(&["task", "list"]);
}

fn connected(home: &TestHome) -> RawClient {
    let mut c = RawClient::connect(&home.paths).unwrap();
    c.handshake().unwrap();
    c
}

#[test]
fn garbage_oversized_and_unknown_frames_close_only_their_own_link() {
    let mut home = TestHome::queue_only();
    let pid = home.start_supervisor();
    let witness = &mut connected(&home); // an innocent client connected throughout

    // Plain garbage where the hello should be (an HTTP request: its first 4 bytes announce a 1.2 GB frame).
    let mut c = RawClient::connect(&home.paths).unwrap();
    c.write_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(c.is_closed_by_peer());
    still_serving(&home, pid);

    // A 4 GiB length prefix after a good handshake.
    let mut c = connected(&home);
    c.write_raw(&u32::MAX.to_be_bytes()).unwrap();
    assert!(c.is_closed_by_peer());
    still_serving(&home, pid);

    // A frame of random bytes.
    let mut c = connected(&home);
    c.write_frame(&[0xc1, 0x00, 0xff, 0x13, 0x37, 0x42]).unwrap();
    assert!(c.is_closed_by_peer());
    still_serving(&home, pid);

    // A well-formed frame naming a request this supervisor does not know.
    #[derive(serde::Serialize)]
    enum Future {
        #[serde(rename = "teleport_task")]
        Teleport,
    }
    #[derive(serde::Serialize)]
    struct Frame {
        id: u64,
        request: Future,
    }
    let mut c = connected(&home);
    c.send(&Frame { id: 1, request: Future::Teleport }).unwrap();
    assert!(c.is_closed_by_peer());
    still_serving(&home, pid);

    // A request with no hello first.
    let mut c = RawClient::connect(&home.paths).unwrap();
    c.send(&RequestFrame { id: 1, request: ControlRequest::DaemonStatus }).unwrap();
    assert!(c.is_closed_by_peer());

    // The innocent client was served all along.
    assert!(matches!(witness.call(9, ControlRequest::DaemonStatus).unwrap(), neuraphage_ipc::ControlReply::Status(_)));
    assert!(home.task_ids().is_empty(), "nothing was stored");
}

#[test]
fn a_half_frame_stalls_only_its_own_link_and_is_then_closed() {
    let mut home = TestHome::queue_only();
    let pid = home.start_supervisor();
    let mut staller = connected(&home);
    staller.write_raw(&100u32.to_be_bytes()).unwrap();
    staller.write_raw(b"0123456789").unwrap();
    let stalled_at = Instant::now();
    // While it stalls, others are served.
    for i in 0..3 {
        home.ok(&["task", "new", &format!("while stalled {i}")]);
    }
    still_serving(&home, pid);
    // The supervisor gives up on the stalled frame (its frame deadline is 5 s) and closes the link.
    assert!(staller.is_closed_by_peer());
    assert!(stalled_at.elapsed() < Duration::from_secs(25), "closed after {:?}", stalled_at.elapsed());
    assert_eq!(home.task_ids().len(), 3);
}

#[test]
fn a_client_that_disconnects_mid_request_changes_nothing() {
    let mut home = TestHome::queue_only();
    let pid = home.start_supervisor();
    let body = neuraphage_ipc::frame::encode(&RequestFrame {
        id: 1,
        request: ControlRequest::CreateTask(NewTask::described("never finished")),
    })
    .unwrap();
    for cut in [1, 4, 5, body.len() / 2, body.len() + 3] {
        let mut c = connected(&home);
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        c.write_raw(&frame[..cut]).unwrap();
        drop(c);
    }
    still_serving(&home, pid);
    assert!(home.task_ids().is_empty(), "a half-sent request must not be stored");
}

#[test]
fn a_protocol_mismatch_is_refused_naming_both_versions() {
    let mut home = TestHome::queue_only();
    let pid = home.start_supervisor();
    let mut c = RawClient::connect(&home.paths).unwrap();
    c.send(&Hello { protocol: PROTOCOL_VERSION + 1, role: Role::Cli, pid: 1 }).unwrap();
    match c.recv::<HandshakeReply>().unwrap() {
        HandshakeReply::Refused { peer, reason } => {
            assert_eq!(peer.protocol, PROTOCOL_VERSION);
            assert!(reason.contains(&format!("protocol {PROTOCOL_VERSION}")), "{reason}");
            assert!(reason.contains(&format!("protocol {}", PROTOCOL_VERSION + 1)), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(c.is_closed_by_peer());
    still_serving(&home, pid);
}

#[test]
fn idle_connections_cannot_lock_others_out() {
    let mut home = TestHome::queue_only();
    let pid = home.start_supervisor();
    // 64 clients connect and then sit idle: every slot is taken.
    let mut held: Vec<RawClient> = (0..64).map(|_| connected(&home)).collect();
    std::thread::sleep(Duration::from_millis(600));
    // A real client is still served: the longest-idle connection is closed to make room.
    still_serving(&home, pid);
    let mut closed = 0;
    for c in held.iter_mut() {
        c.stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        if c.is_closed_by_peer() {
            closed += 1;
        }
    }
    assert!(closed >= 1, "an idle connection should have been closed");
}

#[test]
fn when_every_connection_is_busy_the_next_is_refused_with_the_reason() {
    let mut home = TestHome::queue_only();
    let pid = home.start_supervisor();
    // 64 clients each stall half a frame: none is idle, so none may be closed early.
    let held: Vec<RawClient> = (0..64)
        .map(|_| {
            let mut c = connected(&home);
            c.write_raw(&100u32.to_be_bytes()).unwrap();
            c
        })
        .collect();
    let mut extra = RawClient::connect(&home.paths).unwrap();
    match extra.hello().unwrap() {
        HandshakeReply::Refused { reason, .. } => assert!(reason.contains("64 connections"), "{reason}"),
        other => panic!("the 65th connection should be refused, got {other:?}"),
    }
    drop(held);
    // Slots come back as the held links close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = home.run(&["task", "list"]);
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "slots were not released: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(50));
    }
    still_serving(&home, pid);
}
