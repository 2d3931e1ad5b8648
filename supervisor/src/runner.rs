//! One running task: its folders and worktree, its worker process, and the worker link.
//!
//! [`run_task`] spawns `neuraphage-worker` with two inherited socketpairs (this link and its broker link, whose other
//! end goes to the broker), a scrubbed environment and cwd = the worktree; it persists every checkpoint (conversation
//! commit, then SQLite) before acknowledging it; and when the worker ends it commits the task's work to its branch
//! and records how the task ended. A task whose profile lists hosts gets its own [`crate::proxy`] for the session.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use neuraphage_ipc::worker::{
    ARG_BROKER_FD, ARG_HANDOFF_FD, ARG_SUPERVISOR_FD, Checkpoint, CheckpointKind, CommitResult, MAX_WORKER_FRAME,
    SandboxReport, SupervisorToWorker, TaskOutcome, WorkerStart, WorkerToSupervisor,
};
use neuraphage_ipc::{EventKind, Link, Role, RunningPhase, Task, TaskId, TaskStatus};
use neuraphage_sandbox_profiles::hosts::HostRule;
use neuraphage_sandbox_profiles::plan::SandboxPlan;
use neuraphage_sandbox_profiles::{FsAccess, TaskFolders, profile};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

use crate::broker_link::Broker;
use crate::conversation::Conversation;
use crate::proxy::TaskProxy;
use crate::requests::Daemon;
use crate::spawn::{fd_arg, seqpacket_pair, sibling_binary, spawn_with_fds, stream_pair};
use crate::{task_commit, worktree};

/// Name of the worker binary.
pub const WORKER_BIN: &str = "neuraphage-worker";

/// Environment variables a worker keeps from the supervisor's (everything else is dropped).
const ENV_ALLOWLIST: &[&str] = &[
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TZ",
    "RUST_LOG",
    "RUST_BACKTRACE",
    #[cfg(debug_assertions)]
    neuraphage_ipc::worker::ENV_TEST_PAUSE_AFTER,
    #[cfg(debug_assertions)]
    neuraphage_sandbox_profiles::ENV_TEST_LANDLOCK_ABI,
];

/// `PATH` for a task: the supervisor's, less the folders its sandbox cannot execute from (so a command fails with
/// "not found" instead of a bare "Permission denied" from a shim in the user's home).
fn task_path(plan: &SandboxPlan) -> std::ffi::OsString {
    let reachable = |dir: &Path| {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        plan.fs.iter().any(|r| r.access != FsAccess::Read && dir.starts_with(&r.path))
    };
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let kept: Vec<PathBuf> = std::env::split_paths(&path).filter(|d| reachable(d)).collect();
    std::env::join_paths(kept).unwrap_or_else(|_| "/usr/bin:/bin".into())
}

/// How long a cancelled worker gets to stop before it is killed.
const CANCEL_GRACE: Duration = Duration::from_secs(3);

type WorkerLink = Link<UnixStream, WorkerToSupervisor, SupervisorToWorker>;

/// The folders of a task under the home.
#[derive(Debug, Clone)]
pub struct TaskDirs {
    /// `tasks/<id>`.
    pub root: PathBuf,
    /// `tasks/<id>/worktree`.
    pub worktree: PathBuf,
    /// `tasks/<id>/conversation`.
    pub conversation: PathBuf,
    /// `tasks/<id>/outputs`.
    pub outputs: PathBuf,
    /// `tasks/<id>/tmp`.
    pub tmp: PathBuf,
    /// `tasks/<id>/git`, the task's private repository.
    pub git: PathBuf,
}

impl TaskDirs {
    /// The folders of `task` under `home`.
    pub fn new(home: &Path, task: &TaskId) -> TaskDirs {
        let root = home.join("tasks").join(task.as_str());
        TaskDirs {
            worktree: root.join("worktree"),
            conversation: root.join("conversation"),
            outputs: root.join("outputs"),
            tmp: root.join("tmp"),
            git: root.join("git"),
            root,
        }
    }
}

/// How a worker session ended.
enum Ending {
    /// The worker reported the task's end (and it was persisted).
    Ended(TaskOutcome),
    /// The task was cancelled.
    Cancelled,
    /// The supervisor is stopping; the task goes back to the queue.
    Interrupted,
    /// The worker went away without ending the task.
    Lost(String),
    /// The task's sandbox cannot be made or enforced: it fails without a retry of its own.
    Refused(String),
    /// The task is over its disk bound or the home's reserve ([`crate::disk`]): it is paused, with the reason.
    Paused(String),
    /// `task pause` stopped it after a checkpoint ([`crate::inbox`]).
    PausedByUser,
    /// It parked until the sub-tasks it waits for end ([`crate::subtasks`]): Blocked, without a worker.
    WaitsOnSubtasks(String),
}

/// Run `task` to its end. Never panics; every failure ends as the task's status.
#[tracing::instrument(skip_all, fields(task = %task.id))]
pub async fn run_task(
    daemon: Arc<Daemon>,
    broker: Arc<Broker>,
    task: Task,
    cancel: CancellationToken,
    shutdown: CancellationToken,
) {
    let id = task.id.clone();
    let dirs = TaskDirs::new(&daemon.paths().home, &id);
    let mut restarts = 0;
    let last_seq = |daemon: &Daemon| daemon.last_checkpoint(&id).ok().flatten().map(|(seq, _)| seq);
    let ending = loop {
        let before = last_seq(&daemon);
        let ending = session(&daemon, &broker, &task, &dirs, &cancel, &shutdown).await.unwrap_or_else(Ending::Lost);
        let Ending::Lost(why) = ending else { break ending };
        if last_seq(&daemon) != before {
            // The worker made progress before it died: only deaths in a row, without progress, count.
            restarts = 0;
        }
        if restarts == MAX_RESTARTS || cancel.is_cancelled() || shutdown.is_cancelled() {
            let error = format!("the worker died {} times; the last time: {why}", restarts + 1);
            break Ending::Lost(error);
        }
        // Recovery matrix: a new worker resumes from the last acknowledged checkpoint, after a growing pause.
        restarts += 1;
        let wait = RESTART_BACKOFF * 2u32.pow(restarts - 1);
        tracing::warn!(%why, restarts, ?wait, "the worker died; starting a new one from the last checkpoint");
        let retry_in_ms = wait.as_millis() as u64;
        daemon.record(&id, EventKind::WorkerLost { reason: why, attempt: restarts, retry_in_ms });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => break Ending::Cancelled,
            _ = shutdown.cancelled() => break Ending::Interrupted,
        }
    };
    finish(&daemon, &task, &dirs, ending).await;
}

/// How many times in a row, without an acknowledged checkpoint between, a task's worker is started again after it
/// died, before the task fails (recoverable).
pub const MAX_RESTARTS: u32 = 3;

/// The pause before the first restart; doubled for each next one.
pub const RESTART_BACKOFF: Duration = Duration::from_millis(500);

async fn session(
    daemon: &Arc<Daemon>,
    broker: &Broker,
    task: &Task,
    dirs: &TaskDirs,
    cancel: &CancellationToken,
    shutdown: &CancellationToken,
) -> Result<Ending, String> {
    let prepared = {
        let (daemon, task) = (daemon.clone(), task.clone());
        let dirs = TaskDirs::new(&daemon.paths().home, &task.id);
        tokio::task::spawn_blocking(move || prepare(&daemon, &task, &dirs)).await.map_err(|e| e.to_string())??
    };
    let folders = TaskFolders {
        workdir: prepared.workdir.clone(),
        tmp: dirs.tmp.clone(),
        outputs: dirs.outputs.clone(),
        git_dir: prepared.git_dir.clone(),
        worktree_gitfile: prepared.worktree_gitfile.clone(),
    };
    let ctx = profile::Context::of_this_process(&daemon.paths().home, task.repo.as_deref().map(Path::new));
    let profile_name = task.profile.as_deref().unwrap_or(profile::DEFAULT_PROFILE);
    let (profile, mut plan) =
        match profile::load(profile_name, &ctx).and_then(|p| p.plan(&folders, &ctx).map(|plan| (p, plan))) {
            Ok(both) => both,
            Err(e) => return Ok(Ending::Refused(format!("sandbox profile {profile_name}: {e}"))),
        };
    let proxy = match start_proxy(daemon, task, profile.network()).await {
        Ok(proxy) => proxy,
        Err(e) => return Ok(Ending::Refused(format!("cannot start the task's network proxy: {e}"))),
    };
    if let Some(proxy) = &proxy {
        // Landlock lets the task connect to the proxy's port (and the profile's own ports), nowhere else.
        plan.tcp_connect.push(proxy.port());
    }
    // In its network namespace, those ports lead to the host's 127.0.0.1 through unix sockets, and nothing else does.
    let ports = plan.tcp_connect.clone();
    let bridges = match crate::proxy_bridge::TaskBridges::start(&dirs.root, &mut plan, &ports) {
        Ok(bridges) => bridges,
        Err(e) => return Ok(Ending::Refused(format!("cannot make the task's network bridges: {e}"))),
    };
    // The task's own cgroup (process and memory limits), which the worker joins first; at the end, every process
    // in it dies, however it left the worker's session.
    let cgroup = {
        let (home, id, limits) = (daemon.paths().home.clone(), task.id.as_str().to_owned(), plan.limits.clone());
        tokio::task::spawn_blocking(move || crate::cgroup::for_task(&home, &id, &limits))
            .await
            .map_err(|e| e.to_string())?
    };
    if !cgroup.missing.is_empty() {
        tracing::warn!(missing = ?cgroup.missing, "the task runs without (part of) its cgroup");
    }
    plan.cgroups = cgroup.dirs.clone();
    let ran =
        worker_session(daemon, broker, task, dirs, &plan, &profile, prepared, proxy, &cgroup, cancel, shutdown).await;
    bridges.stop().await;
    let left = tokio::task::spawn_blocking(move || cgroup.end()).await.unwrap_or(0);
    if left > 0 {
        tracing::info!(left, "killed the processes left in the task's cgroup");
    }
    ran
}

#[allow(clippy::too_many_arguments)]
async fn worker_session(
    daemon: &Arc<Daemon>,
    broker: &Broker,
    task: &Task,
    dirs: &TaskDirs,
    plan: &SandboxPlan,
    profile: &profile::Profile,
    prepared: Prepared,
    proxy: Option<TaskProxy>,
    cgroup: &crate::cgroup::TaskCgroup,
    cancel: &CancellationToken,
    shutdown: &CancellationToken,
) -> Result<Ending, String> {
    let Prepared { workdir, git_dir, worktree_gitfile, messages, last_seq, resume_point, context } = prepared;
    let plan_file = dirs.root.join("sandbox.json");
    plan.save(&plan_file).map_err(|e| format!("{}: {e}", plan_file.display()))?;

    let (sup_ours, sup_theirs) = stream_pair().map_err(|e| format!("socketpair: {e}"))?;
    let (broker_ours, broker_theirs) = stream_pair().map_err(|e| format!("socketpair: {e}"))?;
    let (handoff_ours, handoff_theirs) = seqpacket_pair().map_err(|e| format!("socketpair: {e}"))?;
    let binary = sibling_binary(WORKER_BIN)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dirs.root.join("worker.log"))
        .map_err(|e| format!("worker.log: {e}"))?;
    let mut cmd = tokio::process::Command::new(&binary);
    cmd.arg(ARG_SUPERVISOR_FD).arg(fd_arg(&sup_theirs)).arg(ARG_BROKER_FD).arg(fd_arg(&broker_theirs));
    cmd.arg(ARG_HANDOFF_FD).arg(fd_arg(&handoff_theirs));
    cmd.arg("--workdir").arg(&workdir).arg("--tmp").arg(&dirs.tmp).arg("--outputs").arg(&dirs.outputs);
    if let Some(g) = &git_dir {
        cmd.arg("--git-dir").arg(g);
    }
    if let Some(a) = &worktree_gitfile {
        cmd.arg("--worktree-gitfile").arg(a);
    }
    cmd.arg("--sandbox").arg(&plan_file);
    cmd.current_dir(&workdir).env_clear();
    for key in ENV_ALLOWLIST {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    for (key, value) in profile.env() {
        cmd.env(key, value);
    }
    if let Some(proxy) = &proxy {
        for key in PROXY_ENV {
            cmd.env(key, proxy.url());
        }
        cmd.env("NO_PROXY", "").env("no_proxy", "");
    }
    cmd.env("PATH", task_path(plan));
    if let Some(g) = &git_dir {
        // git inside the task: its private repository (read-only) and its worktree.
        cmd.env("GIT_DIR", g).env("GIT_WORK_TREE", &workdir);
    }
    cmd.env("HOME", &dirs.tmp).env("TMPDIR", &dirs.tmp).env("NEURAPHAGE_TASK", task.id.as_str());
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(log);
    let mut child = spawn_with_fds(&mut cmd, &[&sup_theirs, &broker_theirs, &handoff_theirs])
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    drop((sup_theirs, handoff_theirs));
    daemon.workers.set_handoff(&task.id, Some(handoff_ours));
    let pid = child.id().unwrap_or(0);
    daemon.workers.set_pid(&task.id, Some(pid));
    tracing::info!(pid, workdir = %workdir.display(), "worker started");
    daemon.record(&task.id, EventKind::WorkerStarted { pid, workdir: workdir.display().to_string() });
    drop(broker_theirs);
    // The broker gets the other end of the worker's broker link; the supervisor keeps no copy.
    // Its priority and tier as stored now (an escalation during an earlier worker's life moved the tier).
    let grant = crate::broker_link::grant(daemon, &task.id).unwrap_or_else(|_| neuraphage_ipc::broker::LinkGrant {
        task: task.id.clone(),
        priority: task.priority.get(),
        tier: task.tier.clone(),
        tree: None,
    });
    broker.hand_over(&grant, std::os::fd::OwnedFd::from(broker_ours))?;

    let stream = UnixStream::from_std(sup_ours).map_err(|e| e.to_string())?;
    let mut link: WorkerLink = Link::new(stream, MAX_WORKER_FRAME);
    let disk = crate::disk::watch(
        daemon.paths().home.clone(),
        dirs.root.clone(),
        plan.limits.disk_mb,
        daemon.config().disk_reserve,
    );
    let ending = tokio::select! {
        ending = converse(daemon, task, dirs, &mut link, &workdir, (messages, last_seq, resume_point), context, cgroup, cancel, shutdown) => ending,
        why = disk => Ending::Paused(why),
    };

    // The worker has ended the task, or must stop now.
    let stopped = if matches!(ending, Ending::Ended(_) | Ending::WaitsOnSubtasks(_)) {
        tokio::time::timeout(CANCEL_GRACE, child.wait()).await.ok()
    } else {
        let _ = link.send(&SupervisorToWorker::Cancel { reason: "stopping".into() }).await;
        tokio::time::timeout(CANCEL_GRACE, child.wait()).await.ok()
    };
    let status = match stopped {
        Some(Ok(status)) => status.to_string(),
        _ => {
            let _ = child.kill().await;
            "killed after not stopping in time".to_owned()
        }
    };
    // Whatever the task started and left running dies with it: here its session (where it has no cgroup), then
    // (the caller) every process in its cgroup, however it left the session.
    let leftovers = crate::spawn::kill_session(pid);
    if leftovers > 0 {
        tracing::info!(leftovers, "killed processes the task left running");
    }
    daemon.workers.set_pid(&task.id, None);
    daemon.workers.set_handoff(&task.id, None);
    daemon.record(&task.id, EventKind::WorkerExited { status: status.clone() });
    if let Some(proxy) = proxy {
        proxy.stop().await;
    }
    Ok(match ending {
        Ending::Lost(why) => Ending::Lost(format!("{why} (worker {status})")),
        other => other,
    })
}

/// The end of a session whose worker could not enforce the sandbox.
fn sandbox_refused(why: &str) -> Ending {
    Ending::Refused(format!("the worker cannot enforce the sandbox: {why}"))
}

/// The variables that point a task's HTTP clients at its proxy.
const PROXY_ENV: [&str; 4] = ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];

/// For a profile that lists hosts, the task's proxy (it stops when dropped, so with the session on any early return).
async fn start_proxy(daemon: &Arc<Daemon>, task: &Task, net: &profile::Network) -> std::io::Result<Option<TaskProxy>> {
    if net.hosts.is_empty() {
        return Ok(None);
    }
    // The profile checker refused entries that do not parse; none is dropped here.
    let rules = net.hosts.iter().filter_map(|h| HostRule::parse(h)).collect();
    let (daemon, id) = (daemon.clone(), task.id.clone());
    let asker = crate::permissions::network::asker(&daemon, &id);
    let proxy = TaskProxy::start_asking(rules, Arc::new(move |kind| daemon.record(&id, kind)), asker).await?;
    tracing::info!(port = proxy.port(), "network proxy started");
    Ok(Some(proxy))
}

struct Prepared {
    workdir: PathBuf,
    git_dir: Option<PathBuf>,
    worktree_gitfile: Option<PathBuf>,
    messages: Vec<neuraphage_ipc::llm::Message>,
    last_seq: u64,
    resume_point: Option<CheckpointKind>,
    /// Issue 13's context for the worker's `Start` (user instructions and skills, git state, drift count).
    context: StartContext,
}

/// The parts of `WorkerStart` for the worker's context assembly and drift guard, read in [`prepare`].
struct StartContext {
    read: crate::task_context::TaskContext,
    /// The last checkpoint's drift turn count.
    iteration: u32,
    /// Learnings of earlier tasks for the system prompt (issue 17).
    knowledge: Option<String>,
}

/// Blocking: make the task's folders and worktree, and load where it left off.
fn prepare(daemon: &Daemon, task: &Task, dirs: &TaskDirs) -> Result<Prepared, String> {
    for d in [&dirs.root, &dirs.outputs, &dirs.tmp] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    crate::disk::prepare_reserve(&daemon.paths().home, daemon.config().disk_reserve);
    let conversation = Conversation::open(&dirs.conversation).map_err(|e| format!("conversation repository: {e}"))?;
    for lock in conversation.clear_stale_locks() {
        tracing::warn!(lock = %lock.display(), "removed a stale lock left by a killed supervisor");
    }
    match conversation.repair() {
        Ok(Some(report)) => {
            tracing::warn!(%report, "repaired a damaged conversation repository");
            daemon.record(&task.id, EventKind::ConversationRepaired { report });
        }
        Ok(None) => {}
        Err(e) => return Err(format!("conversation repository is damaged beyond repair: {e}")),
    }
    let messages = conversation.messages().map_err(|e| format!("conversation repository: {e}"))?;
    // A task that ended Failed (or waiting for the user) and runs again was retried: it goes on from its
    // conversation, it does not end again.
    let resume_point = conversation.last_kind().filter(|k| {
        !matches!(k, CheckpointKind::TaskEnded { outcome: TaskOutcome::Failed { .. } | TaskOutcome::NeedsUser { .. } })
    });
    let last_seq = daemon.last_checkpoint(&task.id).map(|c| c.map(|(seq, _)| seq).unwrap_or(0))?;
    let iteration = daemon.with_store(|s| s.last_iteration(&task.id)).unwrap_or(0);
    let home = daemon.paths().home.clone();
    let knowledge = crate::knowledge::inject::start_text(daemon, task);
    let (Some(repo), Some(base)) = (&task.repo, &task.base_commit) else {
        let read = crate::task_context::TaskContext::read(&home, &task.id, None, None);
        return Ok(Prepared {
            workdir: dirs.tmp.clone(),
            git_dir: None,
            worktree_gitfile: None,
            messages,
            last_seq,
            resume_point,
            context: StartContext { read, iteration, knowledge },
        });
    };
    let repo = Path::new(repo);
    let depth = daemon.config().task_history_depth;
    crate::private_repo::prepare(repo, &task.id, base, depth, &dirs.git, &dirs.worktree)
        .map_err(|e| format!("the task's repository: {}", e.message()))?;
    // No process of the task runs yet: whatever an earlier one left at `.git` goes.
    crate::worktree_seal::seal(&dirs.root, &dirs.worktree, &[])?;
    daemon.set_branch(&task.id, &worktree::branch_name(&task.id))?;
    let read = crate::task_context::TaskContext::read(&home, &task.id, Some(&dirs.git), Some(base));
    Ok(Prepared {
        workdir: dirs.worktree.clone(),
        git_dir: Some(dirs.git.clone()),
        worktree_gitfile: Some(dirs.worktree.join(".git")),
        messages,
        last_seq,
        resume_point,
        context: StartContext { read, iteration, knowledge },
    })
}

#[allow(clippy::too_many_arguments)]
async fn converse(
    daemon: &Arc<Daemon>,
    task: &Task,
    dirs: &TaskDirs,
    link: &mut WorkerLink,
    workdir: &Path,
    resume: (Vec<neuraphage_ipc::llm::Message>, u64, Option<CheckpointKind>),
    context: StartContext,
    cgroup: &crate::cgroup::TaskCgroup,
    cancel: &CancellationToken,
    shutdown: &CancellationToken,
) -> Ending {
    match tokio::time::timeout(Duration::from_secs(10), link.accept_handshake(Role::Supervisor)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Ending::Lost(format!("worker handshake: {e}")),
        Err(_) => return Ending::Lost("the worker did not say hello within 10 s (see its worker.log)".into()),
    }
    // User input: what is stored now goes in `Start`, what comes later over the link.
    let mut mailbox = crate::inbox::Mailbox::open(daemon, &task.id);
    // The model and context window of the task's tier as stored now (an escalation moved it).
    let tier = daemon.with_store(|s| s.task(&task.id)).map(|t| t.tier).unwrap_or_else(|_| task.tier.clone());
    let (model, context_tokens) = daemon.config().task_context(tier.as_deref());
    let (persona_prompt, allowed_tools) = daemon.personas.for_start(task.persona.as_deref());
    let start = WorkerStart {
        task: task.id.clone(),
        description: task.description.clone(),
        workdir: workdir.display().to_string(),
        outputs_dir: dirs.outputs.display().to_string(),
        tmp_dir: dirs.tmp.display().to_string(),
        branch: task.repo.as_ref().map(|_| worktree::branch_name(&task.id)),
        max_iterations: daemon.config().max_iterations,
        messages: resume.0,
        last_seq: resume.1,
        resume_point: resume.2,
        heartbeat_ms: crate::stuck::heartbeat_every().as_millis() as u64,
        inbox: mailbox.pending(),
        model,
        tier,
        context_tokens,
        compact_at_percent: daemon.config().compact_at_percent,
        // Issue 13's context and drift guard.
        base_commit: task.base_commit.clone(),
        parent: task.parent.clone(),
        user_instructions: context.read.user_instructions,
        home_skills: context.read.home_skills,
        git_summary: context.read.git_summary,
        drift: daemon.config().drift.limits(),
        iteration: context.iteration,
        knowledge: context.knowledge,
        persona_prompt,
        allowed_tools,
    };
    if let Err(e) = link.send(&SupervisorToWorker::Start(Box::new(start))).await {
        // A worker that cannot enforce its sandbox sends its report and exits at once, maybe before `Start` reached
        // it: the report is still in the link, and the task is refused with its reason rather than lost.
        if let Ok(Ok(Some(WorkerToSupervisor::Sandbox(SandboxReport { refused: Some(why), .. })))) =
            tokio::time::timeout(Duration::from_secs(1), link.recv()).await
        {
            return sandbox_refused(&why);
        }
        return Ending::Lost(format!("cannot start the worker: {e}"));
    }
    daemon.transition(&task.id, TaskStatus::Running { phase: RunningPhase::AssemblingContext });
    let stuck_after = crate::stuck::stuck_after();
    // Children this session's `Task` calls wait for: its park is then a wait on them, not on the user.
    let mut waits_on: Vec<TaskId> = Vec::new();
    loop {
        let received = tokio::select! {
            _ = cancel.cancelled() => return Ending::Cancelled,
            _ = shutdown.cancelled() => return Ending::Interrupted,
            Some((id, text)) = mailbox.recv() => {
                if let Err(e) = link.send(&SupervisorToWorker::UserMessage { id, text }).await {
                    return Ending::Lost(format!("worker link: {e}"));
                }
                continue;
            }
            received = tokio::time::timeout(stuck_after, link.recv()) => match received {
                Ok(received) => received,
                Err(_) => return Ending::Lost(crate::stuck::reason(stuck_after)),
            },
        };
        match received {
            Ok(Some(WorkerToSupervisor::Checkpoint(cp))) => {
                let seq = cp.seq;
                let ended = match &cp.kind {
                    CheckpointKind::TaskEnded { outcome } => Some(outcome.clone()),
                    _ => None,
                };
                let compacted = matches!(cp.kind, CheckpointKind::Compacted { .. }).then(|| cp.messages.clone());
                if let Err(e) = persist(daemon, &task.id, &dirs.conversation, *cp).await {
                    return Ending::Lost(format!("cannot persist a checkpoint: {e}"));
                }
                if let Err(e) = link.send(&SupervisorToWorker::Ack { seq }).await {
                    return Ending::Lost(format!("worker link: {e}"));
                }
                if let Some(messages) = compacted {
                    // Issue 17: what the compaction is about to forget may hold learnings (off the task's path).
                    crate::knowledge::extract::spawn(daemon, &task.id, Some(messages), "compaction");
                }
                if let Some(outcome) = ended {
                    if matches!(outcome, TaskOutcome::NeedsUser { .. }) && !waits_on.is_empty() {
                        let on: Vec<String> = waits_on.iter().map(TaskId::to_string).collect();
                        return Ending::WaitsOnSubtasks(format!("sub-tasks {}", on.join(", ")));
                    }
                    return Ending::Ended(outcome);
                }
                if daemon.mailboxes.pause_requested(&task.id) {
                    return Ending::PausedByUser;
                }
            }
            Ok(Some(WorkerToSupervisor::Sandbox(report))) => {
                let SandboxReport { profile, kernel_abi, mut enforced, mut missing, refused } = report;
                if let Some(why) = refused {
                    return sandbox_refused(&why);
                }
                // The supervisor's side of the sandbox: the cgroup's limits, or why the task has none.
                enforced.extend(cgroup.enforced.iter().cloned());
                missing.extend(cgroup.missing.iter().cloned());
                if !missing.is_empty() {
                    tracing::warn!(?missing, "this kernel cannot enforce part of the sandbox");
                }
                daemon.record(&task.id, EventKind::Sandboxed { profile, kernel_abi, enforced, missing });
            }
            Ok(Some(WorkerToSupervisor::Notice { kind, message })) => {
                let notice = neuraphage_ipc::task::cut_text(&kind, 64);
                let message = neuraphage_ipc::task::cut_text(&message, 2048);
                daemon.record(&task.id, EventKind::Notice { notice, message });
            }
            Ok(Some(WorkerToSupervisor::Commit { id, message })) => {
                let result = commit_now(daemon, task, dirs, &message).await;
                if let Err(e) = link.send(&SupervisorToWorker::Committed { id, result }).await {
                    return Ending::Lost(format!("worker link: {e}"));
                }
            }
            Ok(Some(WorkerToSupervisor::Permission { id, tool_use_id, tool, input })) => {
                let answer =
                    crate::permissions::gate::answer(daemon, &task.id, workdir, tool_use_id, tool, input).await;
                if let Err(e) = link.send(&SupervisorToWorker::Permission { id, answer }).await {
                    return Ending::Lost(format!("worker link: {e}"));
                }
            }
            Ok(Some(WorkerToSupervisor::Subtask { id, tool_use_id, request })) => {
                let result = crate::subtasks::answer(daemon, task, dirs, tool_use_id, request).await;
                if let neuraphage_ipc::worker::SubtaskAnswer::Pending { child, wait: true, .. } = &result {
                    waits_on.push(child.clone());
                }
                if let Err(e) = link.send(&SupervisorToWorker::Subtask { id, result }).await {
                    return Ending::Lost(format!("worker link: {e}"));
                }
            }
            Ok(Some(WorkerToSupervisor::Learn { id, learning })) => {
                let (d, t) = (daemon.clone(), task.id.clone());
                let recorded = tokio::task::spawn_blocking(move || {
                    crate::knowledge::record_from_task(&d, &t, learning, "tool", 0.9)
                })
                .await;
                let result = match recorded {
                    Ok(Ok((l, updated))) => neuraphage_ipc::knowledge::LearnResult::Recorded { id: l.id, updated },
                    Ok(Err(e)) => neuraphage_ipc::knowledge::LearnResult::Failed { error: e.to_string() },
                    Err(e) => neuraphage_ipc::knowledge::LearnResult::Failed { error: e.to_string() },
                };
                if let Err(e) = link.send(&SupervisorToWorker::Learned { id, result }).await {
                    return Ending::Lost(format!("worker link: {e}"));
                }
            }
            Ok(Some(WorkerToSupervisor::Stream { delta })) => daemon.events().publish_delta(&task.id, &delta),
            Ok(Some(WorkerToSupervisor::Waiting { on })) => tracing::debug!(%on, "worker waiting"),
            Ok(Some(WorkerToSupervisor::Heartbeat)) => {}
            Ok(None) => return Ending::Lost("the worker closed its link before the task ended".into()),
            Err(e) => return Ending::Lost(format!("worker link: {e}")),
        }
    }
}

/// Commit the conversation, then record the checkpoint: only then may it be acknowledged.
async fn persist(daemon: &Arc<Daemon>, task: &TaskId, conversation: &Path, cp: Checkpoint) -> Result<(), String> {
    let (daemon, task, conversation) = (daemon.clone(), task.clone(), conversation.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let repo = Conversation::open(&conversation).map_err(|e| e.to_string())?;
        let commit = repo.commit(&cp.messages, &crate::conversation::commit_message(&cp)).map_err(|e| e.to_string())?;
        daemon.checkpoint(&task, &cp, &commit)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Commit the work, set the final status, tidy up.
async fn finish(daemon: &Arc<Daemon>, task: &Task, dirs: &TaskDirs, ending: Ending) {
    // Every process of the task is gone: the final snapshot (still sandboxed), the commit, then the worktree is
    // sealed for a person or, with `keep-worktrees: false`, removed with the private repository, before the status
    // says the task ended (a crash in between re-runs the task from its branch, where the work was committed).
    let (d, t) = (daemon.clone(), task.clone());
    let dirs_ = dirs.clone();
    let keep = daemon.config().keep_worktrees;
    let first_line = task.description.lines().next().unwrap_or("").chars().take(72).collect::<String>();
    let message = format!("{first_line}\n\nWork of Neuraphage task {}.\n", task.id);
    let ended = tokio::task::spawn_blocking(move || task_commit::end(&d, &t, &dirs_, &message, keep)).await;
    if let Ok(Err(e)) | Err(e) = ended.map_err(|e| e.to_string()) {
        tracing::error!(error = %e, "cannot commit the task's work");
        // Said on the task too: a task whose work is not on its branch must not look as if it were.
        let note = format!("the task's work could not be committed to its branch: {e}");
        daemon.record(&task.id, EventKind::SnapshotNote { note, path: String::new() });
    }
    // Issue 17: learnings from the conversation of a task that ended, off its path.
    if matches!(ending, Ending::Ended(TaskOutcome::Completed { .. } | TaskOutcome::Failed { .. })) {
        crate::knowledge::extract::spawn(daemon, &task.id, None, "end");
    }
    // A Watcher's pause or abort ends the session it cancelled with its own status ([`crate::watcher::act`]).
    // Stored with its intervention (V12); cleared when this end is stored (`Store::end_session`).
    let watcher_stop = daemon.with_store(|s| s.watcher_stop(&task.id)).ok().flatten();
    let status = match ending {
        Ending::Ended(TaskOutcome::Completed { summary }) => TaskStatus::Completed { summary: Some(summary) },
        Ending::Ended(TaskOutcome::Failed { error, recoverable }) => TaskStatus::Failed { error, recoverable },
        Ending::Ended(TaskOutcome::NeedsUser { reason }) => TaskStatus::WaitingForUser { prompt: reason },
        Ending::Cancelled => watcher_stop.unwrap_or(TaskStatus::Cancelled { reason: None }),
        Ending::Interrupted => TaskStatus::Queued,
        Ending::Lost(why) => TaskStatus::Failed { error: why, recoverable: true },
        Ending::Refused(why) => TaskStatus::Failed { error: why, recoverable: true },
        Ending::Paused(reason) => {
            tracing::warn!(%reason, "task paused");
            daemon.record(&task.id, EventKind::PausedBySupervisor { reason });
            TaskStatus::Paused
        }
        Ending::PausedByUser => TaskStatus::Paused,
        Ending::WaitsOnSubtasks(on) => TaskStatus::Blocked { on },
    };
    daemon.forget_event_counts(&task.id);
    tracing::info!(status = %status.state(), "task ended");
    let parked = matches!(status, TaskStatus::WaitingForUser { .. });
    crate::inbox::end_session(daemon, &task.id, status);
    if parked {
        crate::permissions::answer::after_park(daemon, &task.id);
    }
    // A sub-task that ended is told to its parent.
    crate::subtasks::on_end(daemon, &task.id);
}

/// The `Commit` tool, on the supervisor's side: a sandboxed snapshot, committed with git2 (no hooks or filters run).
async fn commit_now(daemon: &Arc<Daemon>, task: &Task, dirs: &TaskDirs, message: &str) -> CommitResult {
    let (d, t) = (daemon.clone(), task.clone());
    let dirs = dirs.clone();
    let message = format!("{}\n\nNeuraphage task {}.\n", message.trim_end(), task.id);
    match tokio::task::spawn_blocking(move || task_commit::commit(&d, &t, &dirs, &message)).await {
        Ok(Ok(Some(commit))) => CommitResult::Committed { branch: worktree::branch_name(&task.id), commit },
        Ok(Ok(None)) => CommitResult::NothingToCommit,
        Ok(Err(error)) => CommitResult::Failed { error },
        Err(e) => CommitResult::Failed { error: e.to_string() },
    }
}
