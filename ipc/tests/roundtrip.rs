#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests: every wire message survives encode → decode unchanged, and random bytes never panic the decoder.

use chrono::{DateTime, TimeZone, Utc};
use neuraphage_ipc::frame::{decode, encode};
use neuraphage_ipc::{
    ControlError, ControlReply, ControlRequest, DaemonStatus, ErrorCode, EventKind, FrameCodec, HandshakeReply, Hello,
    NewTask, Priority, ReplyFrame, RequestFrame, Role, RunningPhase, Task, TaskDetail, TaskEvent, TaskId, TaskRef,
    TaskState, TaskStatus,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_000_000_000_000).prop_map(|ms| Utc.timestamp_millis_opt(ms).single().unwrap_or_default())
}

fn task_id() -> impl Strategy<Value = TaskId> {
    (0u64..1 << 40).prop_map(TaskId::from_bits)
}

fn priority() -> impl Strategy<Value = Priority> {
    (0u8..=4).prop_map(|p| Priority::try_from(p).unwrap_or_default())
}

fn state() -> impl Strategy<Value = TaskState> {
    proptest::sample::select(TaskState::ALL.to_vec())
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Cli),
        Just(Role::Tui),
        Just(Role::Supervisor),
        Just(Role::Worker),
        Just(Role::Broker),
        Just(Role::Tool)
    ]
}

fn phase() -> impl Strategy<Value = RunningPhase> {
    prop_oneof![
        Just(RunningPhase::Initializing),
        Just(RunningPhase::AssemblingContext),
        Just(RunningPhase::LlmRequest),
        text().prop_map(|tool| RunningPhase::ToolExecution { tool }),
        Just(RunningPhase::Processing),
    ]
}

fn status() -> impl Strategy<Value = TaskStatus> {
    prop_oneof![
        Just(TaskStatus::Queued),
        phase().prop_map(|phase| TaskStatus::Running { phase }),
        text().prop_map(|prompt| TaskStatus::WaitingForUser { prompt }),
        text().prop_map(|on| TaskStatus::Blocked { on }),
        Just(TaskStatus::Paused),
        option::of(text()).prop_map(|summary| TaskStatus::Completed { summary }),
        (text(), any::<bool>()).prop_map(|(error, recoverable)| TaskStatus::Failed { error, recoverable }),
        option::of(text()).prop_map(|reason| TaskStatus::Cancelled { reason }),
    ]
}

fn task() -> impl Strategy<Value = Task> {
    (
        task_id(),
        status(),
        priority(),
        text(),
        option::of(text()),
        option::of(text()),
        option::of(task_id()),
        time(),
        time(),
    )
        .prop_map(|(id, status, priority, description, repo, profile, parent, created_at, updated_at)| Task {
            id,
            status,
            priority,
            description,
            repo,
            profile,
            parent,
            created_at,
            updated_at,
        })
}

fn task_ref() -> impl Strategy<Value = TaskRef> {
    (task_id(), state(), text()).prop_map(|(id, status, description)| TaskRef { id, status, description })
}

fn event() -> impl Strategy<Value = TaskEvent> {
    let kind = prop_oneof![
        priority().prop_map(|priority| EventKind::Created { priority }),
        task_id().prop_map(|on| EventKind::DependencyAdded { on }),
        (state(), status()).prop_map(|(from, to)| EventKind::StatusChanged { from, to }),
    ];
    (any::<u64>(), task_id(), time(), kind).prop_map(|(seq, task, at, kind)| TaskEvent { seq, task, at, kind })
}

fn request() -> impl Strategy<Value = ControlRequest> {
    let new_task = (text(), option::of(text()), any::<u8>(), vec(text(), 0..3), option::of(text())).prop_map(
        |(description, repo, priority, after, profile)| NewTask { description, repo, priority, after, profile },
    );
    prop_oneof![
        Just(ControlRequest::DaemonStatus),
        Just(ControlRequest::Shutdown),
        new_task.prop_map(ControlRequest::CreateTask),
        option::of(state()).prop_map(|state| ControlRequest::ListTasks { state }),
        text().prop_map(|task| ControlRequest::ShowTask { task }),
        (text(), text()).prop_map(|(task, on)| ControlRequest::AddDependency { task, on }),
        (text(), option::of(text())).prop_map(|(task, reason)| ControlRequest::KillTask { task, reason }),
    ]
}

fn reply() -> impl Strategy<Value = ControlReply> {
    let status =
        (any::<u32>(), time(), any::<u64>(), text(), text(), any::<u32>(), text(), vec((state(), any::<u64>()), 0..8))
            .prop_map(|(pid, started_at, uptime_secs, home, control_socket, protocol, version, tasks)| DaemonStatus {
                pid,
                started_at,
                uptime_secs,
                home,
                control_socket,
                protocol,
                version,
                tasks: tasks.into_iter().collect(),
            });
    let detail =
        (task(), vec(task_ref(), 0..3), vec(task_ref(), 0..3), vec(task_ref(), 0..3), vec(event(), 0..4)).prop_map(
            |(task, blocked_by, blocks, children, events)| TaskDetail { task, blocked_by, blocks, children, events },
        );
    let code = prop_oneof![
        Just(ErrorCode::InvalidArgument),
        Just(ErrorCode::NotFound),
        Just(ErrorCode::Ambiguous),
        Just(ErrorCode::Cycle),
        Just(ErrorCode::Conflict),
        Just(ErrorCode::ShuttingDown),
        Just(ErrorCode::Internal),
        Just(ErrorCode::Unknown),
    ];
    prop_oneof![
        status.prop_map(ControlReply::Status),
        task().prop_map(ControlReply::Task),
        vec(task(), 0..4).prop_map(ControlReply::Tasks),
        detail.prop_map(|d| ControlReply::Detail(Box::new(d))),
        (task_id(), task_id(), any::<bool>()).prop_map(|(task, on, added)| ControlReply::DependencyAdded {
            task,
            on,
            added
        }),
        any::<u32>().prop_map(|pid| ControlReply::ShuttingDown { pid }),
        (code, text(), vec(task_id(), 0..3))
            .prop_map(|(code, message, candidates)| ControlReply::Error(ControlError { code, message, candidates })),
    ]
}

fn hello() -> impl Strategy<Value = Hello> {
    (any::<u32>(), role(), any::<u32>()).prop_map(|(protocol, role, pid)| Hello { protocol, role, pid })
}

fn round_trips<T>(msg: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = encode(msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: T = decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, msg);
    Ok(())
}

proptest! {
    #[test]
    fn hello_round_trips(h in hello()) {
        round_trips(&h)?;
        round_trips(&HandshakeReply::Accepted { peer: h.clone() })?;
        round_trips(&HandshakeReply::Refused { peer: h, reason: "no".into() })?;
    }

    #[test]
    fn requests_round_trip(id in any::<u64>(), request in request()) {
        round_trips(&RequestFrame { id, request })?;
    }

    #[test]
    fn replies_round_trip(id in any::<u64>(), reply in reply()) {
        round_trips(&ReplyFrame { id, reply })?;
    }

    #[test]
    fn random_bodies_never_panic_the_decoder(bytes in vec(any::<u8>(), 0..512)) {
        let _ = decode::<RequestFrame>(&bytes);
        let _ = decode::<ReplyFrame>(&bytes);
        let _ = decode::<Hello>(&bytes);
        let _ = decode::<HandshakeReply>(&bytes);
    }

    #[test]
    fn random_streams_never_panic_the_codec(bytes in vec(any::<u8>(), 0..512)) {
        let mut codec = FrameCodec::new(256);
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
            let _ = decode::<RequestFrame>(&frame);
        }
    }
}

#[test]
fn task_json_has_a_flat_status() {
    let task = Task {
        id: TaskId::from_bits(0xabc),
        status: TaskStatus::Cancelled { reason: Some("by user".into()) },
        priority: Priority::DEFAULT,
        description: "d".into(),
        repo: None,
        profile: None,
        parent: None,
        created_at: Utc.timestamp_millis_opt(0).unwrap(),
        updated_at: Utc.timestamp_millis_opt(0).unwrap(),
    };
    let json = serde_json::to_value(&task).unwrap();
    assert_eq!(json["id"], "np-0000000abc");
    assert_eq!(json["status"], "Cancelled");
    assert_eq!(json["status_detail"]["reason"], "by user");
    assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
}
