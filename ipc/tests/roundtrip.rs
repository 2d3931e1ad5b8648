#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests: every wire message survives encode → decode unchanged, and random bytes never panic the decoder.

use chrono::{DateTime, TimeZone, Utc};
use neuraphage_ipc::broker::{BrokerSettings, BrokerToSupervisor, LinkGrant, ModelTier, SupervisorToBroker};
use neuraphage_ipc::cost::{CostGrouping, CostLine, CostTotals};
use neuraphage_ipc::events::{StreamItem, Subscribe};
use neuraphage_ipc::frame::{decode, encode};
use neuraphage_ipc::llm::{
    ChatRequest, ChatResponse, ContentBlock, LlmErrorKind, LlmFailure, Message, Speaker, StopReason, StreamDelta,
    ToolDefinition, Usage,
};
use neuraphage_ipc::lock::{LockInfo, LockOutcome, LockTableView};
use neuraphage_ipc::permission::PermissionAnswer;
use neuraphage_ipc::snapshot::SnapshotFrame;
use neuraphage_ipc::task::{PlanItem, PlanStatus};
use neuraphage_ipc::worker::{
    BrokerToWorker, Checkpoint, CheckpointKind, CommitResult, SandboxReport, SupervisorToWorker, TaskOutcome,
    WorkerStart, WorkerToBroker, WorkerToSupervisor,
};
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
        text().prop_map(|detail| RunningPhase::LlmQueued { detail }),
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
        (task_id(), status(), priority(), text(), option::of(text()), option::of(text())),
        (option::of(task_id()), option::of(text()), option::of(text()), time(), time(), option::of(text())),
    )
        .prop_map(
            |(
                (id, status, priority, description, repo, profile),
                (parent, base_commit, branch, created_at, updated_at, tier),
            )| {
                Task {
                    id,
                    status,
                    priority,
                    description,
                    repo,
                    profile,
                    parent,
                    base_commit,
                    branch,
                    tier,
                    persona: None,
                    no_watch: false,
                    created_at,
                    updated_at,
                }
            },
        )
}

fn task_ref() -> impl Strategy<Value = TaskRef> {
    (task_id(), state(), text()).prop_map(|(id, status, description)| TaskRef { id, status, description })
}

fn event() -> impl Strategy<Value = TaskEvent> {
    let kind = prop_oneof![
        priority().prop_map(|priority| EventKind::Created { priority }),
        task_id().prop_map(|on| EventKind::DependencyAdded { on }),
        (any::<u32>(), text()).prop_map(|(pid, workdir)| EventKind::WorkerStarted { pid, workdir }),
        (any::<u64>(), text(), text()).prop_map(|(seq, point, commit)| EventKind::Checkpoint { seq, point, commit }),
        text().prop_map(|status| EventKind::WorkerExited { status }),
        (text(), any::<u8>(), vec(text(), 0..3), vec(text(), 0..3)).prop_map(
            |(profile, kernel_abi, enforced, missing)| EventKind::Sandboxed { profile, kernel_abi, enforced, missing }
        ),
        text().prop_map(|report| EventKind::ConversationRepaired { report }),
        (text(), any::<u16>(), any::<bool>(), text())
            .prop_map(|(host, port, allowed, reason)| EventKind::ProxyDecision { host, port, allowed, reason }),
        (text(), any::<u32>(), any::<u64>()).prop_map(|(reason, attempt, retry_in_ms)| EventKind::WorkerLost {
            reason,
            attempt,
            retry_in_ms
        }),
        (text(), text()).prop_map(|(branch, commit)| EventKind::Committed { branch, commit }),
        (task_id(), any::<u32>()).prop_map(|(child, depth)| EventKind::SubtaskCreated { child, depth }),
        (task_id(), text()).prop_map(|(child, outcome)| EventKind::SubtaskEnded { child, outcome }),
        (text(), text(), text()).prop_map(|(from, to, reason)| EventKind::Escalated { from, to, reason }),
        (text(), text(), text()).prop_map(|(pool, key, reason)| EventKind::KeyRevoked { pool, key, reason }),
        (text(), text()).prop_map(|(note, path)| EventKind::SnapshotNote { note, path }),
        (state(), status()).prop_map(|(from, to)| EventKind::StatusChanged { from, to }),
        (text(), text(), text(), text(), text()).prop_map(|(tool_use_id, tool, subject, by, prompt)| {
            EventKind::PermissionRequested { tool_use_id, tool, subject, by, prompt }
        }),
        (text(), text(), text(), any::<bool>(), text()).prop_map(|(tool_use_id, tool, subject, allowed, by)| {
            EventKind::PermissionDecided { tool_use_id, tool, subject, allowed, by }
        }),
        (text(), text(), text()).prop_map(|(tool, tool_use_id, input)| EventKind::ToolCall {
            tool,
            tool_use_id,
            input
        }),
        (text(), text(), any::<bool>(), text()).prop_map(|(tool, tool_use_id, is_error, result)| {
            EventKind::ToolResult { tool, tool_use_id, is_error, result }
        }),
        (text(), any::<[u64; 4]>(), any::<bool>()).prop_map(|(model, n, priced)| EventKind::Cost {
            model,
            input_tokens: n[0],
            output_tokens: n[1],
            cache_tokens: n[2],
            cost_nano_usd: n[3],
            priced
        }),
    ];
    (any::<u64>(), task_id(), time(), kind).prop_map(|(seq, task, at, kind)| TaskEvent { seq, task, at, kind })
}

fn request() -> impl Strategy<Value = ControlRequest> {
    let new_task = (
        text(),
        option::of(text()),
        any::<u8>(),
        vec(text(), 0..3),
        option::of(text()),
        option::of(text()),
        option::of(text()),
    )
        .prop_map(|(description, repo, priority, after, profile, base, tier)| NewTask {
            description,
            repo,
            priority,
            after,
            profile,
            base,
            tier,
            persona: None,
            no_watch: false,
        });
    prop_oneof![
        Just(ControlRequest::DaemonStatus),
        Just(ControlRequest::Shutdown),
        Just(ControlRequest::ReloadConfig),
        new_task.prop_map(ControlRequest::CreateTask),
        (option::of(state()), any::<u64>()).prop_map(|(state, offset)| ControlRequest::ListTasks { state, offset }),
        text().prop_map(|task| ControlRequest::ShowTask { task }),
        (text(), text()).prop_map(|(task, on)| ControlRequest::AddDependency { task, on }),
        (text(), option::of(text())).prop_map(|(task, reason)| ControlRequest::KillTask { task, reason }),
        (text(), proptest::option::of(any::<u64>()))
            .prop_map(|(task, max_bytes)| ControlRequest::TaskDiff { task, max_bytes }),
        text().prop_map(|task| ControlRequest::TaskLog { task }),
        text().prop_map(|task| ControlRequest::RetryTask { task }),
        Just(ControlRequest::ListLocks),
        Just(ControlRequest::Cost { by: CostGrouping::Model }),
        (text(), any::<bool>(), any::<bool>(), option::of(text()), option::of(any::<i64>())).prop_map(
            |(task, allow, save, reason, request)| ControlRequest::DecidePermission {
                task,
                allow,
                save,
                reason,
                request
            }
        ),
        Just(ControlRequest::ListPermissionRules),
        any::<bool>().prop_map(|muted| ControlRequest::SetMuted { muted }),
        any::<i64>().prop_map(|id| ControlRequest::RemovePermissionRule { id }),
        (option::of(text()), option::of(any::<u64>()), any::<[bool; 3]>()).prop_map(|(task, since, b)| {
            ControlRequest::Subscribe(Subscribe { task, since, follow: b[0], deltas: b[1], until_end: b[2] })
        }),
        (text(), text()).prop_map(|(task, text)| ControlRequest::SendMessage { task, text }),
    ]
}

fn stream_item() -> impl Strategy<Value = StreamItem> {
    prop_oneof![
        event().prop_map(StreamItem::Event),
        (task_id(), delta()).prop_map(|(task, delta)| StreamItem::Delta { task, delta }),
        any::<u64>().prop_map(|seq| StreamItem::CaughtUp { seq }),
        any::<[u64; 4]>().prop_map(|n| StreamItem::Missed {
            count: n[0],
            resume_from: n[1],
            through: n[2],
            deltas: n[3]
        }),
        status().prop_map(|status| StreamItem::End { status }),
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
    let detail = (task(), vec(task_ref(), 0..3), vec(task_ref(), 0..3), vec(task_ref(), 0..3), vec(event(), 0..4))
        .prop_map(|(task, blocked_by, blocks, children, events)| TaskDetail {
            task,
            blocked_by,
            blocks,
            children,
            events,
            tree_cost: Default::default(),
            plan: vec![PlanItem { content: "step".into(), status: PlanStatus::InProgress }],
            cost: CostTotals {
                responses: 2,
                cost_nano_usd: 7,
                unpriced_models: vec!["m".into()],
                ..Default::default()
            },
        });
    let lock_view = (vec((text(), task_id(), any::<u64>(), vec(task_id(), 0..3)), 0..3), option::of(any::<u64>()))
        .prop_map(|(locks, grace_remaining_ms)| LockTableView {
            locks: locks
                .into_iter()
                .map(|(resource, holder, held_ms, waiters)| LockInfo { resource, holder, held_ms, waiters })
                .collect(),
            grace_remaining_ms,
        });
    let totals = || {
        (any::<u64>(), any::<u64>(), any::<u64>(), vec(text(), 0..2)).prop_map(
            |(responses, input_tokens, cost_nano_usd, unpriced_models)| CostTotals {
                responses,
                input_tokens,
                cost_nano_usd,
                unpriced_models,
                ..CostTotals::default()
            },
        )
    };
    let grouping = proptest::sample::select(vec![CostGrouping::Task, CostGrouping::Model, CostGrouping::Day]);
    let code = prop_oneof![
        Just(ErrorCode::InvalidArgument),
        Just(ErrorCode::NotFound),
        Just(ErrorCode::Ambiguous),
        Just(ErrorCode::Cycle),
        Just(ErrorCode::Conflict),
        Just(ErrorCode::ShuttingDown),
        Just(ErrorCode::Internal),
        Just(ErrorCode::Unavailable),
        Just(ErrorCode::Unknown),
    ];
    prop_oneof![
        status.prop_map(ControlReply::Status),
        task().prop_map(ControlReply::Task),
        (vec(task(), 0..4), option::of(any::<u64>())).prop_map(|(tasks, next)| ControlReply::Tasks { tasks, next }),
        detail.prop_map(|d| ControlReply::Detail(Box::new(d))),
        (task_id(), task_id(), any::<bool>()).prop_map(|(task, on, added)| ControlReply::DependencyAdded {
            task,
            on,
            added
        }),
        any::<u32>().prop_map(|pid| ControlReply::ShuttingDown { pid }),
        vec(text(), 0..3).prop_map(|providers| ControlReply::Reloaded { providers }),
        (task_id(), option::of(text()), text()).prop_map(|(task, base_commit, patch)| ControlReply::Diff {
            task,
            base_commit,
            patch
        }),
        (task_id(), vec(message(), 0..4)).prop_map(|(task, messages)| ControlReply::Log { task, messages }),
        lock_view.prop_map(ControlReply::Locks),
        (grouping, vec((text(), totals()), 0..3), totals()).prop_map(|(by, lines, total)| ControlReply::Cost {
            by,
            lines: lines.into_iter().map(|(key, totals)| CostLine { key, totals }).collect(),
            total
        }),
        (code, text(), vec(task_id(), 0..3))
            .prop_map(|(code, message, candidates)| ControlReply::Error(ControlError { code, message, candidates })),
        any::<i64>().prop_map(|id| ControlReply::PermissionRuleRemoved { id }),
        (task_id(), text(), text(), any::<bool>(), option::of(any::<i64>()), any::<bool>(), any::<i64>()).prop_map(
            |(task, tool, subject, allowed, saved_rule, requeued, request)| {
                ControlReply::PermissionDecided(neuraphage_ipc::permission::PermissionDecision {
                    task,
                    tool,
                    subject,
                    allowed,
                    saved_rule,
                    requeued,
                    request,
                })
            }
        ),
        stream_item().prop_map(ControlReply::Stream),
        (task_id(), text()).prop_map(|(task, delivery)| ControlReply::Sent { task, delivery }),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        text().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            vec(("[a-z]{1,6}", inner), 0..4).prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn block() -> impl Strategy<Value = ContentBlock> {
    prop_oneof![
        text().prop_map(|text| ContentBlock::Text { text }),
        (text(), text(), json_value()).prop_map(|(id, name, input)| ContentBlock::ToolUse { id, name, input }),
        (text(), text(), any::<bool>()).prop_map(|(tool_use_id, content, is_error)| ContentBlock::ToolResult {
            tool_use_id,
            content,
            is_error
        }),
        (text(), text()).prop_map(|(thinking, signature)| ContentBlock::Thinking { thinking, signature }),
        text().prop_map(|data| ContentBlock::RedactedThinking { data }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (any::<bool>(), vec(block(), 0..4))
        .prop_map(|(user, content)| Message { role: if user { Speaker::User } else { Speaker::Assistant }, content })
}

fn usage() -> impl Strategy<Value = Usage> {
    (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(a, b, c, d)| Usage {
        input_tokens: a,
        output_tokens: b,
        cache_creation_input_tokens: c,
        cache_read_input_tokens: d,
    })
}

fn delta() -> impl Strategy<Value = StreamDelta> {
    prop_oneof![
        (any::<u32>(), text()).prop_map(|(index, text)| StreamDelta::Text { index, text }),
        (any::<u32>(), text(), text()).prop_map(|(index, id, name)| StreamDelta::ToolUseStart { index, id, name }),
        (any::<u32>(), text()).prop_map(|(index, partial_json)| StreamDelta::ToolInput { index, partial_json }),
    ]
}

fn failure() -> impl Strategy<Value = LlmFailure> {
    let kind = proptest::sample::select(vec![
        LlmErrorKind::NoProvider,
        LlmErrorKind::Auth,
        LlmErrorKind::SpendLimit,
        LlmErrorKind::RateLimited,
        LlmErrorKind::Overloaded,
        LlmErrorKind::Server,
        LlmErrorKind::InvalidRequest,
        LlmErrorKind::MalformedResponse,
        LlmErrorKind::Transport,
        LlmErrorKind::Other,
    ]);
    (kind, text(), option::of(any::<u16>()), any::<bool>(), option::of(any::<u64>())).prop_map(
        |(kind, message, status, retryable, retry_after_ms)| LlmFailure {
            kind,
            message,
            status,
            retryable,
            retry_after_ms,
        },
    )
}

fn checkpoint_kind() -> impl Strategy<Value = CheckpointKind> {
    let outcome = prop_oneof![
        text().prop_map(|summary| TaskOutcome::Completed { summary }),
        (text(), any::<bool>()).prop_map(|(error, recoverable)| TaskOutcome::Failed { error, recoverable }),
        text().prop_map(|reason| TaskOutcome::NeedsUser { reason }),
    ];
    prop_oneof![
        Just(CheckpointKind::RequestSent),
        (usage(), text()).prop_map(|(usage, model)| CheckpointKind::ResponseReceived {
            usage,
            model,
            stop_reason: Some(StopReason::MaxTokens),
        }),
        (text(), text()).prop_map(|(tool, tool_use_id)| CheckpointKind::ToolStarted { tool, tool_use_id }),
        (text(), text(), any::<bool>()).prop_map(|(tool, tool_use_id, is_error)| CheckpointKind::ToolCompleted {
            tool,
            tool_use_id,
            is_error
        }),
        outcome.prop_map(|outcome| CheckpointKind::TaskEnded { outcome }),
    ]
}

type WorkerMessages = (SupervisorToWorker, WorkerToSupervisor, WorkerToBroker, BrokerToWorker);

fn worker_messages() -> impl Strategy<Value = WorkerMessages> {
    let start = (task_id(), text(), text(), option::of(text()), any::<u32>(), vec(message(), 0..3), any::<u64>())
        .prop_map(|(task, description, workdir, branch, max_iterations, messages, last_seq)| {
            SupervisorToWorker::Start(Box::new(WorkerStart {
                task,
                description,
                outputs_dir: format!("{workdir}/o"),
                tmp_dir: format!("{workdir}/t"),
                workdir,
                branch,
                max_iterations,
                messages,
                last_seq,
                resume_point: None,
                heartbeat_ms: last_seq / 2,
                inbox: vec![neuraphage_ipc::worker::UserInput {
                    id: last_seq,
                    text: format!("{max_iterations}"),
                    answers: None,
                }],
                parent: Some(TaskId::from_bits(last_seq)),
                home_skills: vec![neuraphage_ipc::worker::SkillFile { path: "p".into(), text: "t".into() }],
                context_tokens: last_seq,
                ..WorkerStart::defaults()
            }))
        });
    let to_worker = prop_oneof![
        start,
        any::<u64>().prop_map(|seq| SupervisorToWorker::Ack { seq }),
        text().prop_map(|reason| SupervisorToWorker::Cancel { reason }),
        (any::<u64>(), text(), text()).prop_map(|(id, branch, commit)| SupervisorToWorker::Committed {
            id,
            result: CommitResult::Committed { branch, commit }
        }),
        any::<u64>().prop_map(|id| SupervisorToWorker::Committed { id, result: CommitResult::NothingToCommit }),
        (any::<u64>(), text())
            .prop_map(|(id, error)| SupervisorToWorker::Committed { id, result: CommitResult::Failed { error } }),
        (any::<u64>(), text()).prop_map(|(id, text)| SupervisorToWorker::UserMessage { id, text }),
        (any::<u64>(), task_id(), text(), any::<bool>()).prop_map(|(id, child, outcome, is_error)| {
            SupervisorToWorker::Subtask {
                id,
                result: neuraphage_ipc::worker::SubtaskAnswer::Ended { child, outcome, is_error },
            }
        }),
        (any::<u64>(), task_id(), text(), any::<bool>()).prop_map(|(id, child, status, wait)| {
            SupervisorToWorker::Subtask {
                id,
                result: neuraphage_ipc::worker::SubtaskAnswer::Pending { child, status, wait },
            }
        }),
        any::<u64>().prop_map(|id| SupervisorToWorker::Permission { id, answer: PermissionAnswer::Allow }),
        (any::<u64>(), text())
            .prop_map(|(id, reason)| SupervisorToWorker::Permission { id, answer: PermissionAnswer::Deny { reason } }),
        (any::<u64>(), text())
            .prop_map(|(id, prompt)| SupervisorToWorker::Permission { id, answer: PermissionAnswer::Ask { prompt } }),
    ];
    let to_supervisor = prop_oneof![
        (any::<u64>(), checkpoint_kind(), any::<u32>(), vec(message(), 0..3)).prop_map(
            |(seq, kind, iteration, messages)| {
                WorkerToSupervisor::Checkpoint(Box::new(Checkpoint {
                    seq,
                    kind,
                    iteration,
                    messages,
                    delivered: vec![seq],
                    plan: Some(vec![PlanItem { content: "x".into(), status: PlanStatus::Done }]),
                }))
            }
        ),
        delta().prop_map(|delta| WorkerToSupervisor::Stream { delta }),
        text().prop_map(|on| WorkerToSupervisor::Waiting { on }),
        (any::<u64>(), text(), text(), option::of(text()), any::<bool>()).prop_map(
            |(id, tool_use_id, description, persona, wait)| WorkerToSupervisor::Subtask {
                id,
                tool_use_id,
                request: neuraphage_ipc::worker::SubtaskRequest::Create { description, persona, tier: None, wait },
            }
        ),
        (text(), any::<u8>(), vec(text(), 0..3), vec(text(), 0..3), option::of(text())).prop_map(
            |(profile, kernel_abi, enforced, missing, refused)| WorkerToSupervisor::Sandbox(SandboxReport {
                profile,
                kernel_abi,
                enforced,
                missing,
                refused
            })
        ),
        (any::<u64>(), text()).prop_map(|(id, message)| WorkerToSupervisor::Commit { id, message }),
        Just(WorkerToSupervisor::Heartbeat),
        (any::<u64>(), text(), text(), text()).prop_map(|(id, tool_use_id, tool, command)| {
            WorkerToSupervisor::Permission { id, tool_use_id, tool, input: serde_json::json!({ "command": command }) }
        }),
    ];
    let tools = vec![ToolDefinition {
        name: "Read".into(),
        description: "read".into(),
        input_schema: serde_json::json!({"type": "object"}),
    }];
    let request = (option::of(text()), text(), vec(message(), 0..3), any::<u32>()).prop_map(
        move |(model, system, messages, max_tokens)| ChatRequest {
            model,
            system,
            messages,
            tools: tools.clone(),
            max_tokens,
            tier: Some("router".into()),
        },
    );
    let to_broker = prop_oneof![
        (any::<u64>(), request).prop_map(|(id, request)| WorkerToBroker::Complete { id, request: Box::new(request) }),
        (any::<u64>(), vec(text(), 0..3), any::<u64>()).prop_map(|(id, resources, wait_ms)| WorkerToBroker::Lock {
            id,
            resources,
            wait_ms
        }),
        (any::<u64>(), vec(text(), 0..3)).prop_map(|(id, resources)| WorkerToBroker::Unlock { id, resources }),
        (any::<u64>(), vec(text(), 0..3)).prop_map(|(id, resources)| WorkerToBroker::Reclaim { id, resources }),
    ];
    let lock_outcome = prop_oneof![
        vec(text(), 0..3).prop_map(|resources| LockOutcome::Granted { resources }),
        vec(text(), 0..3).prop_map(|resources| LockOutcome::Released { resources }),
        (text(), vec(task_id(), 0..4)).prop_map(|(reason, cycle)| LockOutcome::Refused { reason, cycle }),
    ];
    let stop = proptest::sample::select(vec![
        StopReason::EndTurn,
        StopReason::ToolUse,
        StopReason::MaxTokens,
        StopReason::StopSequence,
        StopReason::Refusal,
        StopReason::PauseTurn,
        StopReason::Other,
    ]);
    let response = (text(), text(), vec(block(), 0..3), stop, usage())
        .prop_map(|(id, model, content, stop_reason, usage)| ChatResponse { id, model, content, stop_reason, usage });
    let from_broker = prop_oneof![
        (any::<u64>(), delta()).prop_map(|(id, delta)| BrokerToWorker::Delta { id, delta }),
        (any::<u64>(), response).prop_map(|(id, response)| BrokerToWorker::Done { id, response: Box::new(response) }),
        (any::<u64>(), failure()).prop_map(|(id, error)| BrokerToWorker::Failed { id, error }),
        (any::<u64>(), lock_outcome).prop_map(|(id, outcome)| BrokerToWorker::Lock { id, outcome }),
    ];
    (to_worker, to_supervisor, to_broker, from_broker)
}

fn broker_messages() -> impl Strategy<Value = (SupervisorToBroker, BrokerToSupervisor)> {
    let up = prop_oneof![
        (vec(text(), 0..3), vec(text(), 0..2))
            .prop_map(|(providers, warnings)| BrokerToSupervisor::Ready { providers, warnings }),
        (task_id(), text(), usage()).prop_map(|(task, model, usage)| BrokerToSupervisor::Usage { task, model, usage }),
        any::<u64>().prop_map(|id| BrokerToSupervisor::Locks { id, table: LockTableView::default() }),
        (text(), option::of(0u32..=100)).prop_map(|(pool, r)| BrokerToSupervisor::Headroom {
            pools: vec![neuraphage_ipc::status::PoolHeadroom {
                pool,
                requests: r.map(|r| f64::from(r) / 100.0),
                input_tokens: None,
                output_tokens: Some(1.0),
            }]
        }),
        (vec(text(), 0..3), option::of(text()))
            .prop_map(|(providers, error)| BrokerToSupervisor::Configured { providers, error }),
        (task_id(), option::of(text())).prop_map(|(task, detail)| BrokerToSupervisor::Queued { task, detail }),
        (task_id(), text(), text(), text()).prop_map(|(task, from, to, reason)| BrokerToSupervisor::Escalated {
            task,
            from,
            to,
            reason
        }),
        (task_id(), text(), text(), text()).prop_map(|(task, pool, key, reason)| BrokerToSupervisor::KeyRevoked {
            task,
            pool,
            key,
            reason
        }),
    ];
    let tier = (text(), text(), text(), text()).prop_map(|(name, provider, model, pool)| ModelTier {
        name,
        provider,
        model,
        pool,
        context_tokens: Some(1000),
        thinking_budget: None,
        prompt_caching: true,
    });
    let down = prop_oneof![
        Just(SupervisorToBroker::Shutdown),
        any::<u64>().prop_map(|id| SupervisorToBroker::ListLocks { id }),
        (vec(tier, 0..3), any::<bool>(), any::<u32>()).prop_map(|(tiers, auto_escalate, escalate_after_retries)| {
            SupervisorToBroker::Configure(BrokerSettings { tiers, auto_escalate, escalate_after_retries })
        }),
    ];
    (down, up)
}

fn hello() -> impl Strategy<Value = Hello> {
    (any::<u32>(), role(), any::<u32>()).prop_map(|(protocol, role, pid)| Hello { protocol, role, pid })
}

fn snapshot_frame() -> impl Strategy<Value = SnapshotFrame> {
    prop_oneof![
        (vec(any::<u8>(), 0..64), any::<u32>(), any::<u64>()).prop_map(|(path, mode, size)| SnapshotFrame::Entry {
            path,
            mode,
            size
        }),
        vec(any::<u8>(), 0..512).prop_map(|bytes| SnapshotFrame::Data { bytes }),
        (text(), vec(any::<u8>(), 0..64)).prop_map(|(note, path)| SnapshotFrame::Note { note, path }),
        (any::<u64>(), any::<u64>()).prop_map(|(entries, bytes)| SnapshotFrame::End { entries, bytes }),
    ]
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
    fn worker_link_messages_round_trip((a, b, c, d) in worker_messages()) {
        round_trips(&a)?;
        round_trips(&b)?;
        round_trips(&c)?;
        round_trips(&d)?;
    }

    #[test]
    fn broker_link_messages_round_trip((a, b) in broker_messages()) {
        round_trips(&a)?;
        round_trips(&b)?;
    }

    #[test]
    fn snapshot_frames_round_trip(frame in snapshot_frame()) {
        round_trips(&frame)?;
    }

    #[test]
    fn link_grants_round_trip(task in task_id(), priority in any::<u8>(), tier in option::of(text())) {
        round_trips(&LinkGrant { tree: Some(task.clone()), task, priority, tier })?;
    }

    #[test]
    fn random_bodies_never_panic_the_decoder(bytes in vec(any::<u8>(), 0..512)) {
        let _ = decode::<RequestFrame>(&bytes);
        let _ = decode::<ReplyFrame>(&bytes);
        let _ = decode::<Hello>(&bytes);
        let _ = decode::<HandshakeReply>(&bytes);
        let _ = decode::<WorkerToSupervisor>(&bytes);
        let _ = decode::<SupervisorToWorker>(&bytes);
        let _ = decode::<BrokerToWorker>(&bytes);
        let _ = decode::<WorkerToBroker>(&bytes);
        let _ = decode::<SnapshotFrame>(&bytes);
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
        base_commit: None,
        branch: None,
        tier: None,
        persona: None,
        no_watch: false,
        created_at: Utc.timestamp_millis_opt(0).unwrap(),
        updated_at: Utc.timestamp_millis_opt(0).unwrap(),
    };
    let json = serde_json::to_value(&task).unwrap();
    assert_eq!(json["id"], "np-0000000abc");
    assert_eq!(json["status"], "Cancelled");
    assert_eq!(json["status_detail"]["reason"], "by user");
    assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
}
