use pretty_assertions::assert_eq;
use tokio::io::{AsyncWriteExt, duplex};

use super::*;
use crate::control::{ControlReply, ControlRequest, RequestFrame};
use crate::hello::{HandshakeReply, Hello, PROTOCOL_VERSION, Role};

type ServerLink<S> = Link<S, RequestFrame, ControlReply>;

const MAX: usize = 1024;

fn frame_bytes(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[tokio::test]
async fn a_message_round_trips_over_a_stream() {
    let (a, b) = duplex(4096);
    let mut tx: Link<_, ControlReply, RequestFrame> = Link::new(a, MAX);
    let mut rx: ServerLink<_> = Link::new(b, MAX);
    let sent = RequestFrame { id: 7, request: ControlRequest::ListTasks { state: None, offset: 0 } };
    tx.send(&sent).await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), Some(sent));
}

#[tokio::test]
async fn clean_close_between_frames_is_none() {
    let (a, b) = duplex(64);
    drop(a);
    let mut rx: ServerLink<_> = Link::new(b, MAX);
    assert!(rx.recv().await.unwrap().is_none());
}

#[tokio::test]
async fn oversized_length_prefix_is_refused_before_reading_the_body() {
    let (mut a, b) = duplex(64);
    a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let mut rx: ServerLink<_> = Link::new(b, MAX);
    match rx.recv().await {
        Err(IpcError::Oversized { len, max }) => assert_eq!((len, max), (u32::MAX as u64, MAX)),
        other => panic!("expected Oversized, got {other:?}"),
    }
}

#[tokio::test]
async fn sending_an_oversized_message_is_refused() {
    let (a, _b) = duplex(64);
    let mut tx: Link<_, ControlReply, RequestFrame> = Link::new(a, 16);
    let big = RequestFrame { id: 1, request: ControlRequest::ShowTask { task: "x".repeat(100) } };
    assert!(matches!(tx.send(&big).await, Err(IpcError::Oversized { .. })));
}

#[tokio::test]
async fn close_in_the_middle_of_a_frame_is_truncated() {
    let (mut a, b) = duplex(64);
    a.write_all(&100u32.to_be_bytes()).await.unwrap();
    a.write_all(b"0123456789").await.unwrap();
    drop(a);
    let mut rx: ServerLink<_> = Link::new(b, MAX);
    match rx.recv().await {
        Err(IpcError::Truncated { buffered }) => assert_eq!(buffered, 14),
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[tokio::test]
async fn close_in_the_middle_of_the_length_prefix_is_truncated() {
    let (mut a, b) = duplex(64);
    a.write_all(&[0, 0]).await.unwrap();
    drop(a);
    let mut rx: ServerLink<_> = Link::new(b, MAX);
    assert!(matches!(rx.recv().await, Err(IpcError::Truncated { buffered: 2 })));
}

#[tokio::test]
async fn garbage_body_is_malformed() {
    let (mut a, b) = duplex(64);
    a.write_all(&frame_bytes(&[0xc1, 0xff, 0x00, 0x13])).await.unwrap();
    let mut rx: ServerLink<_> = Link::new(b, MAX);
    assert!(matches!(rx.recv().await, Err(IpcError::Malformed { .. })));
}

#[tokio::test]
async fn empty_body_is_malformed() {
    let (mut a, b) = duplex(64);
    a.write_all(&frame_bytes(&[])).await.unwrap();
    let mut rx: ServerLink<_> = Link::new(b, MAX);
    assert!(matches!(rx.recv().await, Err(IpcError::Malformed { .. })));
}

#[tokio::test]
async fn trailing_bytes_after_a_message_are_malformed() {
    let mut body = encode(&RequestFrame { id: 1, request: ControlRequest::DaemonStatus }).unwrap().to_vec();
    body.push(0xc0);
    let (mut a, b) = duplex(256);
    a.write_all(&frame_bytes(&body)).await.unwrap();
    let mut rx: ServerLink<_> = Link::new(b, MAX);
    match rx.recv().await {
        Err(IpcError::Malformed { detail }) => assert!(detail.contains("1 trailing bytes"), "{detail}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_variant_is_typed() {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    enum FutureRequest {
        TeleportTask,
    }
    #[derive(serde::Serialize)]
    struct FutureFrame {
        id: u64,
        request: FutureRequest,
    }
    let body = encode(&FutureFrame { id: 3, request: FutureRequest::TeleportTask }).unwrap();
    let (mut a, b) = duplex(256);
    a.write_all(&frame_bytes(&body)).await.unwrap();
    let mut rx: ServerLink<_> = Link::new(b, MAX);
    match rx.recv().await {
        Err(IpcError::UnknownVariant { detail }) => assert!(detail.contains("teleport_task"), "{detail}"),
        other => panic!("expected UnknownVariant, got {other:?}"),
    }
}

#[tokio::test]
async fn a_string_claiming_gigabytes_inside_a_small_frame_is_malformed_not_allocated() {
    // str32 header announcing 0xffff_fff0 bytes, followed by 3 bytes.
    let body = [0xdb, 0xff, 0xff, 0xff, 0xf0, b'a', b'b', b'c'];
    let (mut a, b) = duplex(64);
    a.write_all(&frame_bytes(&body)).await.unwrap();
    let mut rx: Link<_, String, ()> = Link::new(b, MAX);
    assert!(matches!(rx.recv().await, Err(IpcError::Malformed { .. })));
}

#[tokio::test]
async fn deeply_nested_body_is_malformed_not_a_stack_overflow() {
    let body = vec![0x91u8; 900]; // 900 nested one-element arrays
    let (mut a, b) = duplex(2048);
    a.write_all(&frame_bytes(&body)).await.unwrap();
    let mut rx: Link<_, serde_json::Value, ()> = Link::new(b, MAX);
    assert!(matches!(rx.recv().await, Err(IpcError::Malformed { .. })));
}

#[tokio::test]
async fn partial_frame_bytes_reports_an_unfinished_frame() {
    let (mut a, b) = duplex(64);
    a.write_all(&50u32.to_be_bytes()).await.unwrap();
    a.write_all(b"abc").await.unwrap();
    let mut rx: ServerLink<_> = Link::new(b, MAX);
    let waited = tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv()).await;
    assert!(waited.is_err(), "an unfinished frame must not yield a message");
    assert_eq!(rx.partial_frame_bytes(), 7);
}

#[tokio::test]
async fn handshake_accepts_the_same_protocol() {
    let (a, b) = duplex(1024);
    let mut client: Link<_, ControlReply, RequestFrame> = Link::new(a, MAX);
    let mut server: ServerLink<_> = Link::new(b, MAX);
    let (c, s) = tokio::join!(client.connect_handshake(Role::Cli), server.accept_handshake(Role::Supervisor));
    assert_eq!(c.unwrap().role, Role::Supervisor);
    assert_eq!(s.unwrap(), Hello::ours(Role::Cli));
}

#[tokio::test]
async fn handshake_mismatch_names_both_versions_on_both_sides() {
    let (a, b) = duplex(1024);
    let mut client: Link<_, HandshakeReply, Hello> = Link::new(a, MAX);
    let mut server: ServerLink<_> = Link::new(b, MAX);
    let future = Hello { protocol: PROTOCOL_VERSION + 41, role: Role::Cli, pid: 4242 };
    let (sent, s) = tokio::join!(client.send(&future), server.accept_handshake(Role::Supervisor));
    sent.unwrap();
    let server_err = s.unwrap_err().to_string();
    assert!(server_err.contains(&format!("protocol {PROTOCOL_VERSION}")), "{server_err}");
    assert!(server_err.contains(&format!("protocol {}", PROTOCOL_VERSION + 41)), "{server_err}");
    match client.expect().await.unwrap() {
        HandshakeReply::Refused { peer, reason } => {
            assert_eq!(peer.protocol, PROTOCOL_VERSION);
            assert_eq!(reason, server_err);
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn client_reports_a_mismatch_from_the_servers_hello() {
    let (a, b) = duplex(1024);
    let mut client: Link<_, ControlReply, RequestFrame> = Link::new(a, MAX);
    let mut fake_server: Link<_, Hello, HandshakeReply> = Link::new(b, MAX);
    let old = Hello { protocol: 0, role: Role::Supervisor, pid: 9 };
    let (c, _) = tokio::join!(client.connect_handshake(Role::Cli), async {
        fake_server.expect().await.unwrap();
        fake_server.send(&HandshakeReply::Accepted { peer: old }).await.unwrap();
    });
    let err = c.unwrap_err();
    assert!(matches!(err, IpcError::ProtocolMismatch { ours: PROTOCOL_VERSION, theirs: 0, .. }), "{err}");
}
