//! Answers control requests: validates what the client sent, then reads or writes the store.
//!
//! [`Daemon::handle`] is synchronous (SQLite and git2 block); the server calls it on a blocking thread. A mutating
//! request's reply is built only after its transaction has committed. Bad input is refused with a message that says
//! what was wrong and where, and changes nothing.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use git2::{Repository, RepositoryOpenFlags};
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::worker::Checkpoint;
use neuraphage_ipc::{
    ControlReply, ControlRequest, DaemonStatus, ErrorCode, EventKind, MAX_DESCRIPTION_BYTES, NewTask, PROTOCOL_VERSION,
    Priority, TaskId, TaskState, TaskStatus,
};

use neuraphage_ipc::llm::Usage;

use crate::broker_link::LockQuery;
use crate::config::Config;
use crate::cost::PriceTable;
use crate::error::{Result, SupervisorError};
use crate::event_caps::{Admission, EventCaps};
use crate::store::Store;
use crate::store::tasks::TaskDraft;
use crate::workers::WorkerRegistry;

/// How many recent events `task show` returns.
pub const SHOW_EVENTS: usize = 50;

/// Most tasks in one page of `task list`.
pub const PAGE_TASKS: usize = 500;

/// Description bytes in one page of `task list` (well under the reply frame limit).
pub const PAGE_BYTES: usize = 16 * 1024 * 1024;

/// Longest reason a `task kill` may record.
pub const MAX_REASON_BYTES: usize = 4096;

/// Longest sandbox profile name.
const MAX_PROFILE_NAME: usize = 64;

/// The supervisor's shared state: the store, its settings, and the tasks running now.
#[derive(Debug)]
pub struct Daemon {
    store: Mutex<Store>,
    /// Per-task caps on events a task can cause in volume.
    event_caps: EventCaps,
    paths: Paths,
    config: Config,
    /// Running tasks, and the scheduler's wake-up.
    pub workers: WorkerRegistry,
    /// Running sessions' ends for user messages, and pauses asked of running tasks ([`crate::inbox`]).
    pub mailboxes: crate::inbox::Mailboxes,
    started_at: DateTime<Utc>,
    started: Instant,
    prices: PriceTable,
    /// Questions for the broker (the lock table), answered by the broker watch ([`crate::broker_link`]).
    lock_queries: tokio::sync::mpsc::UnboundedSender<LockQuery>,
    lock_queries_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<LockQuery>>>,
    /// The broker, for reloads (set once it runs).
    broker: std::sync::OnceLock<std::sync::Arc<crate::broker_link::Broker>>,
    /// The live event bus: every committed event is published when the store is released ([`StoreGuard`]).
    bus: std::sync::Arc<crate::event_bus::EventBus>,
    /// The knowledge store (issue 17).
    pub knowledge: crate::knowledge::Knowledge,
    /// The personas in force ([`crate::personas`]).
    pub personas: crate::personas::Personas,
    /// The Watcher's memory of what it flagged ([`crate::watcher`]).
    pub watcher: crate::watcher::WatcherState,
    /// The status socket's line ([`crate::status_socket`]).
    pub status: crate::status_socket::StatusHub,
    /// Notifications muted or not ([`crate::notifications`]).
    pub mute: crate::notifications::Mute,
}

/// The store, locked; on release, the events committed meanwhile are published on the bus (in commit order, still
/// under the lock).
pub struct StoreGuard<'a> {
    store: std::sync::MutexGuard<'a, Store>,
    bus: &'a crate::event_bus::EventBus,
}

impl std::ops::Deref for StoreGuard<'_> {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl std::ops::DerefMut for StoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Store {
        &mut self.store
    }
}

impl Drop for StoreGuard<'_> {
    fn drop(&mut self) {
        let store = &*self.store;
        self.bus.publish_committed(|after, limit| store.events_after(after, u64::MAX, None, limit));
    }
}

/// How long `neuraphage locks` waits for the broker.
pub const BROKER_ANSWER_WITHIN: Duration = Duration::from_secs(5);

impl Daemon {
    /// Wrap an open store.
    pub fn new(store: Store, paths: Paths, config: Config) -> Daemon {
        let (lock_queries, rx) = tokio::sync::mpsc::unbounded_channel();
        let paths_home = paths.home.clone();
        let personas = crate::personas::Personas::load(&paths.home);
        let mute = crate::notifications::Mute::load(&paths.home);
        Daemon {
            store: Mutex::new(store),
            event_caps: EventCaps::default(),
            paths,
            prices: config.price_table(),
            config,
            workers: WorkerRegistry::default(),
            mailboxes: crate::inbox::Mailboxes::default(),
            started_at: Utc::now(),
            started: Instant::now(),
            lock_queries,
            lock_queries_rx: Mutex::new(Some(rx)),
            broker: std::sync::OnceLock::new(),
            bus: Default::default(),
            knowledge: crate::knowledge::Knowledge::new(&paths_home),
            personas,
            watcher: Default::default(),
            status: Default::default(),
            mute,
        }
    }

    /// The receiving end of the lock-table questions, for the broker watch (once).
    pub fn take_lock_queries(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<LockQuery>> {
        self.lock_queries_rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// Price and store what one model response used (reported by the broker); a failure is logged.
    pub fn record_usage(&self, task: &TaskId, model: &str, usage: &Usage) {
        let priced = self.prices.price(model, usage);
        if !priced.priced {
            tracing::warn!(%task, %model, "the price table does not know this model: its usage is recorded unpriced");
        }
        if let Err(e) = self.store().and_then(|mut s| s.record_cost(task, model, usage, priced)) {
            tracing::error!(%task, error = %e, "cannot record a model response's usage");
        }
    }

    /// One model call on `task`'s behalf, made by the supervisor itself (the Watcher, knowledge extraction): priced
    /// as the task's, on `request.tier` (else the task's tier), never escalating it. See [`Broker::complete`].
    ///
    /// [`Broker::complete`]: crate::broker_link::Broker::complete
    pub async fn side_call(
        &self,
        task: &TaskId,
        request: neuraphage_ipc::llm::ChatRequest,
        within: Duration,
    ) -> Result<neuraphage_ipc::llm::ChatResponse, neuraphage_ipc::llm::LlmFailure> {
        let failure = |message: String| neuraphage_ipc::llm::LlmFailure {
            kind: neuraphage_ipc::llm::LlmErrorKind::Other,
            message,
            status: None,
            retryable: false,
            retry_after_ms: None,
        };
        let grant = match crate::broker_link::grant(self, task) {
            Ok(grant) => grant,
            Err(e) => return Err(failure(format!("{task}: {e}"))),
        };
        let broker = self.broker.get().ok_or_else(|| failure("the broker is not running yet".to_owned()))?;
        broker.complete(grant, request, within).await
    }

    /// Remember the broker (for `config reload`).
    pub fn set_broker(&self, broker: std::sync::Arc<crate::broker_link::Broker>) {
        let _ = self.broker.set(broker);
    }

    /// Read `neuraphage.yaml` again and have the broker apply its tiers and re-read `api-keys.yaml`. Nothing
    /// changes when either file does not load (the error names file, line and key). Other settings of
    /// `neuraphage.yaml` take effect at the next start. Blocks: call it from a blocking thread, or use
    /// [`Daemon::reload_async`].
    pub fn reload_config(&self) -> Result<Vec<String>> {
        let handle = tokio::runtime::Handle::current();
        handle.block_on(self.reload_async())
    }

    /// [`Daemon::reload_config`] for async callers (SIGHUP).
    pub async fn reload_async(&self) -> Result<Vec<String>> {
        let path = self.paths.home.join(crate::config::CONFIG_FILE);
        let config = Config::load(&path).map_err(invalid)?;
        self.personas.reload(&self.paths.home).map_err(|e| invalid(format!("{e} (the personas in force stay)")))?;
        let broker = self
            .broker
            .get()
            .ok_or_else(|| SupervisorError::refused(ErrorCode::Conflict, "the broker is not running yet"))?;
        broker.reload(config.broker()).await.map_err(|e| invalid(format!("the broker kept its configuration: {e}")))
    }

    /// The folders.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Change a task's status; a failure is logged (the store keeps the old status).
    pub fn transition(&self, id: &TaskId, status: TaskStatus) {
        match self.store().and_then(|mut s| s.transition(id, status)) {
            Ok((_, true)) => self.workers.wake.notify_one(),
            Ok((_, false)) => {}
            Err(e) => tracing::error!(task = %id, error = %e, "cannot change the task's status"),
        }
    }

    /// Append an event, within the task's cap for its kind ([`crate::event_caps`]); a failure is logged.
    pub fn record(&self, id: &TaskId, kind: EventKind) {
        let admission = self.event_caps.admit(id, &kind, || self.store().and_then(|s| s.count_events(id, kind.name())));
        let capped = match admission {
            Admission::Record => None,
            Admission::RecordLast { cap } => Some(EventKind::EventsCapped { capped: kind.name().to_owned(), cap }),
            Admission::Drop => {
                tracing::info!(task = %id, event = ?kind, "over the task's cap on events of this kind: only logged");
                return;
            }
        };
        for kind in std::iter::once(kind).chain(capped) {
            if let Err(e) = self.store().and_then(|mut s| s.record(id, kind)) {
                tracing::error!(task = %id, error = %e, "cannot record an event");
            }
        }
    }

    /// Forget the in-memory event counts of a task whose session ended (the next one counts from the store).
    pub fn forget_event_counts(&self, id: &TaskId) {
        self.event_caps.forget(id);
    }

    /// Persist a checkpoint whose conversation is committed at `commit`.
    pub fn checkpoint(&self, id: &TaskId, cp: &Checkpoint, commit: &str) -> std::result::Result<(), String> {
        let plan_event = match &cp.plan {
            Some(_) => {
                let kind = EventKind::PlanUpdated { items: Vec::new() };
                self.event_caps.admit(id, &kind, || self.store().and_then(|s| s.count_events(id, kind.name())))
            }
            None => Admission::Record,
        };
        self.store().and_then(|mut s| s.checkpoint_capped(id, cp, commit, plan_event)).map_err(|e| e.to_string())
    }

    /// The live event bus.
    pub fn events(&self) -> &std::sync::Arc<crate::event_bus::EventBus> {
        &self.bus
    }

    /// The last checkpoint's sequence number and commit.
    pub fn last_checkpoint(&self, id: &TaskId) -> std::result::Result<Option<(u64, String)>, String> {
        self.store().and_then(|s| s.last_checkpoint(id)).map_err(|e| e.to_string())
    }

    /// Record a task's branch.
    pub fn set_branch(&self, id: &TaskId, branch: &str) -> std::result::Result<(), String> {
        self.store().and_then(|mut s| s.set_branch(id, branch)).map_err(|e| e.to_string())
    }

    /// Run `f` with the store locked (for the scheduler).
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        f(&mut *self.store()?)
    }

    /// Answer one request. [`ControlRequest::Shutdown`] is the server's to act on; here it is only acknowledged.
    pub fn handle(&self, request: ControlRequest) -> ControlReply {
        match self.dispatch(request) {
            Ok(reply) => reply,
            Err(err) => {
                if !matches!(err, SupervisorError::Refused(_)) {
                    tracing::error!(error = %err, "request failed");
                }
                ControlReply::Error(err.to_control_error())
            }
        }
    }

    fn store(&self) -> Result<StoreGuard<'_>> {
        // A panic while holding the lock cannot leave SQLite half-written (the transaction rolls back), so a
        // poisoned lock is safe to keep using.
        let store = self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(StoreGuard { store, bus: &self.bus })
    }

    fn dispatch(&self, request: ControlRequest) -> Result<ControlReply> {
        Ok(match request {
            ControlRequest::DaemonStatus => ControlReply::Status(self.status()?),
            ControlRequest::Knowledge(request) => ControlReply::Knowledge(crate::knowledge::answer(self, request)?),
            ControlRequest::Shutdown => ControlReply::ShuttingDown { pid: std::process::id() },
            ControlRequest::ReloadConfig => ControlReply::Reloaded { providers: self.reload_config()? },
            ControlRequest::CreateTask(new) => {
                let asked = new.persona.is_some();
                let draft = self.validate(new)?;
                let task = self.store()?.create_task(&draft)?;
                crate::personas::record_selected(self, &task, asked);
                tracing::info!(task = %task.id, priority = %task.priority, "task created");
                self.workers.wake.notify_one();
                ControlReply::Task(task)
            }
            ControlRequest::TaskDiff { task, max_bytes } => {
                let task = {
                    let store = self.store()?;
                    let id = store.resolve(&task)?;
                    store.task(&id)?
                };
                let dirs = crate::runner::TaskDirs::new(&self.paths.home, &task.id);
                let live = !task.status.state().is_terminal();
                let max = max_bytes
                    .unwrap_or(neuraphage_ipc::control::MAX_DIFF_BYTES)
                    .min(neuraphage_ipc::control::MAX_DIFF_BYTES);
                let patch = crate::task_commit::diff(self, &task, &dirs, live, max).map_err(|e| {
                    SupervisorError::refused(ErrorCode::Conflict, format!("{}: no diff yet ({e})", task.id))
                })?;
                ControlReply::Diff { task: task.id, base_commit: task.base_commit, patch }
            }
            ControlRequest::TaskLog { task } => {
                let id = self.store()?.resolve(&task)?;
                let dirs = crate::runner::TaskDirs::new(&self.paths.home, &id);
                let messages = if dirs.conversation.join(".git").exists() {
                    crate::conversation::Conversation::open_existing(&dirs.conversation)
                        .and_then(|c| c.messages())
                        .map_err(|e| SupervisorError::Corrupt(format!("{}: {e}", dirs.conversation.display())))?
                } else {
                    Vec::new()
                };
                ControlReply::Log { task: id, messages }
            }
            ControlRequest::ListTasks { state, offset } => {
                let (tasks, next) = self.store()?.page(state, offset, PAGE_TASKS, PAGE_BYTES)?;
                ControlReply::Tasks { tasks, next }
            }
            ControlRequest::ShowTask { task } => {
                let store = self.store()?;
                let id = store.resolve(&task)?;
                ControlReply::Detail(Box::new(store.detail(&id, SHOW_EVENTS)?))
            }
            ControlRequest::AddDependency { task, on } => {
                let mut store = self.store()?;
                let (task, on) = (store.resolve(&task)?, store.resolve(&on)?);
                let added = store.add_dependency(&task, &on)?;
                tracing::info!(%task, %on, added, "dependency");
                self.workers.wake.notify_one();
                ControlReply::DependencyAdded { task, on, added }
            }
            ControlRequest::RetryTask { task } => {
                let mut store = self.store()?;
                let id = store.resolve(&task)?;
                let task = store.retry(&id)?;
                tracing::info!(task = %id, "task queued again");
                self.workers.wake.notify_one();
                ControlReply::Task(task)
            }
            ControlRequest::ListLocks => {
                let unavailable = |why: &str| SupervisorError::refused(ErrorCode::Unavailable, why.to_owned());
                let (tx, rx) = std::sync::mpsc::channel();
                self.lock_queries.send(tx).map_err(|_| unavailable("the broker watch is not running"))?;
                let table = rx.recv_timeout(BROKER_ANSWER_WITHIN).map_err(|_| {
                    unavailable("the broker did not answer within 5 s (it may be restarting); try again")
                })?;
                ControlReply::Locks(table)
            }
            ControlRequest::Cost { by } => {
                let (lines, total) = self.store()?.cost_report(by)?;
                ControlReply::Cost { by, lines, total }
            }
            ControlRequest::DecidePermission { task, allow, save, reason, request } => {
                crate::permissions::answer::decide(self, &task, allow, save, reason, request)?
            }
            ControlRequest::SetMuted { muted } => {
                self.mute.set(muted)?;
                tracing::info!(muted, "notifications muted or unmuted");
                self.status.touch();
                ControlReply::Muted { muted }
            }
            ControlRequest::ListPermissionRules => crate::permissions::answer::list(self)?,
            ControlRequest::RemovePermissionRule { id } => crate::permissions::answer::remove(self, id)?,
            ControlRequest::KillTask { task, reason } => {
                if let Some(r) = reason.as_ref().filter(|r| r.len() > MAX_REASON_BYTES) {
                    return Err(invalid(format!("the reason is {} bytes; the limit is {MAX_REASON_BYTES}", r.len())));
                }
                let mut store = self.store()?;
                let id = store.resolve(&task)?;
                let task = store.cancel(&id, reason)?;
                drop(store);
                tracing::info!(task = %id, "task cancelled");
                let running = self.workers.is_running(&id);
                self.workers.cancel(&id);
                // Its sub-tasks, at every depth, are cancelled with it (first: theirs is the kill's reason).
                crate::subtasks::cancel_descendants(self, &id, &format!("its parent {id} was killed"));
                // A sub-task with no session to end is told to its parent now (a running one, when its session ends).
                if !running {
                    crate::subtasks::on_end(self, &id);
                }
                self.workers.wake.notify_one();
                ControlReply::Task(task)
            }
            ControlRequest::SendMessage { task, text } => crate::inbox::send(self, &task, text, false)?,
            ControlRequest::AnswerQuestion { task, text } => crate::inbox::send(self, &task, text, true)?,
            ControlRequest::PauseTask { task } => crate::inbox::pause(self, &task)?,
            ControlRequest::ResumeTask { task } => crate::inbox::resume(self, &task)?,
            ControlRequest::ListWaiting => crate::inbox::waiting(self)?,
            ControlRequest::ListPersonas => ControlReply::Personas(self.personas.with(|s| s.list())),
            ControlRequest::WatcherLog { limit } => ControlReply::WatcherLog(crate::watcher::log(self, limit)?),
            ControlRequest::Subscribe(_) => {
                return Err(invalid("a subscription is a stream: the server serves it, not a request handler".into()));
            }
        })
    }

    fn status(&self) -> Result<DaemonStatus> {
        Ok(DaemonStatus {
            pid: std::process::id(),
            started_at: self.started_at,
            uptime_secs: self.started.elapsed().as_secs(),
            home: self.paths.home.display().to_string(),
            control_socket: self.paths.control_socket().display().to_string(),
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            tasks: self.store()?.counts()?,
        })
    }

    /// A new task's draft, through the same checks as `task new` ([`Daemon::validate`]), as a child of `parent`
    /// when given (sub-tasks, [`crate::subtasks`]): its edge, and never a priority more urgent than the parent's.
    pub(crate) fn new_task_draft(&self, new: NewTask, parent: Option<&neuraphage_ipc::Task>) -> Result<TaskDraft> {
        let mut draft = self.validate(new)?;
        if let Some(parent) = parent {
            draft.parent = Some(parent.id.clone());
            draft.priority = draft.priority.max(parent.priority);
        }
        Ok(draft)
    }

    /// Check a new task's fields and resolve its dependencies.
    fn validate(&self, new: NewTask) -> Result<TaskDraft> {
        let description = validate_description(new.description)?;
        let priority = Priority::try_from(new.priority).map_err(|_| {
            invalid(format!("priority {} is outside 0..4 (0 = critical, 2 = default, 4 = low)", new.priority))
        })?;
        let repo = new.repo.as_deref().map(validate_repo).transpose()?;
        let base_commit = match (&repo, &new.base) {
            (Some(repo), base) => {
                Some(crate::worktree::resolve_base(Path::new(repo), base.as_deref()).map_err(invalid)?)
            }
            (None, Some(base)) => return Err(invalid(format!("--base {base} needs --repo"))),
            (None, None) => None,
        };
        let profile = new.profile.map(validate_profile).transpose()?;
        // The profile must exist and pass its checks now, not when the task starts.
        let name = profile.as_deref().unwrap_or(neuraphage_sandbox_profiles::profile::DEFAULT_PROFILE);
        let ctx = neuraphage_sandbox_profiles::profile::Context::of_this_process(
            &self.paths().home,
            repo.as_deref().map(Path::new),
        );
        neuraphage_sandbox_profiles::profile::load(name, &ctx)
            .map_err(|e| invalid(format!("--profile {name}: {e}")))?;
        let store = self.store()?;
        let mut after: Vec<TaskId> = Vec::new();
        for typed in &new.after {
            let id = store.resolve(typed)?;
            let state = store.task(&id)?.status.state();
            if matches!(state, TaskState::Cancelled | TaskState::Failed) {
                return Err(SupervisorError::refused(
                    ErrorCode::Conflict,
                    format!("--after {id}: that task is {state}; the new task would wait for it forever"),
                ));
            }
            if !after.contains(&id) {
                after.push(id);
            }
        }
        let tier = match new.tier {
            None => None,
            Some(tier) if neuraphage_ipc::broker::TIER_NAMES.contains(&tier.as_str()) => Some(tier),
            Some(tier) => return Err(invalid(format!("--tier {tier:?}: the tiers are router, worker and expert"))),
        };
        let persona = match new.persona {
            Some(p)
                if p.is_empty()
                    || p.len() > 64
                    || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                return Err(invalid(format!("--persona {p:?}: a persona name is 1 to 64 letters, digits, - or _")));
            }
            p => p,
        };
        // The persona: `--persona`, else the selection rules ([`crate::personas`]); its tier unless `--tier`.
        let selected = self
            .personas
            .with(|s| s.select(persona.as_deref(), &description))
            .map_err(|e| invalid(format!("--persona: {e}")))?;
        let tier = tier.or(Some(selected.tier));
        let persona = Some(selected.persona);
        Ok(TaskDraft {
            description,
            priority,
            repo,
            profile,
            parent: None,
            after,
            base_commit,
            tier,
            persona,
            no_watch: new.no_watch,
        })
    }
}

fn invalid(message: String) -> SupervisorError {
    SupervisorError::refused(ErrorCode::InvalidArgument, message)
}

fn validate_description(description: String) -> Result<String> {
    if description.trim().is_empty() {
        return Err(invalid("the task description is empty; say what the task should do".into()));
    }
    if description.len() > MAX_DESCRIPTION_BYTES {
        return Err(invalid(format!(
            "the task description is {} bytes; the limit is {MAX_DESCRIPTION_BYTES} bytes (64 KiB)",
            description.len()
        )));
    }
    if let Some(at) = description.find('\0') {
        return Err(invalid(format!("the task description contains a NUL byte at byte {at}")));
    }
    Ok(description)
}

/// The repository must be the top of a non-bare git work tree. Opening it with git2 runs nothing from it.
fn validate_repo(repo: &str) -> Result<String> {
    let path = Path::new(repo);
    if !path.is_absolute() {
        return Err(invalid(format!("--repo {repo}: the supervisor needs an absolute path")));
    }
    if !path.exists() {
        return Err(invalid(format!("--repo {repo}: no such folder")));
    }
    if !path.is_dir() {
        return Err(invalid(format!("--repo {repo} is not a folder")));
    }
    let no_search = RepositoryOpenFlags::NO_SEARCH;
    let opened = Repository::open_ext(path, no_search, std::iter::empty::<&std::ffi::OsStr>());
    let repository = match opened {
        Ok(r) => r,
        Err(e) => {
            let hint = match Repository::discover(path).ok().and_then(|r| r.workdir().map(Path::to_path_buf)) {
                Some(top) => format!(
                    "; it is inside the repository at {}, pass that instead",
                    top.display().to_string().trim_end_matches('/')
                ),
                None => String::new(),
            };
            return Err(invalid(format!("--repo {repo} is not a git repository ({}){hint}", e.message())));
        }
    };
    let Some(workdir) = repository.workdir() else {
        return Err(invalid(format!("--repo {repo} is a bare repository; a task needs one with a working tree")));
    };
    let top = workdir.canonicalize().map_err(|e| invalid(format!("--repo {repo}: {e}")))?;
    if top != path.canonicalize().map_err(|e| invalid(format!("--repo {repo}: {e}")))? {
        return Err(invalid(format!("--repo {repo} is inside the repository at {}, pass that instead", top.display())));
    }
    top.to_str().map(str::to_owned).ok_or_else(|| invalid(format!("--repo {repo}: the path is not valid UTF-8")))
}

fn validate_profile(name: String) -> Result<String> {
    let ok_start = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok_start || !ok_chars || name.len() > MAX_PROFILE_NAME {
        return Err(invalid(format!(
            "--profile {name:?}: a profile name is 1 to {MAX_PROFILE_NAME} letters, digits, '-' or '_', starting with a letter or digit"
        )));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(SupervisorError::Refused(e)) => e.message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn descriptions_are_checked() {
        assert!(refused(validate_description(" \n".into())).contains("empty"));
        assert!(refused(validate_description("x".repeat(MAX_DESCRIPTION_BYTES + 1))).contains("65537 bytes"));
        assert!(refused(validate_description("a\0b".into())).contains("byte 1"));
        assert_eq!(validate_description("x".repeat(MAX_DESCRIPTION_BYTES)).unwrap().len(), MAX_DESCRIPTION_BYTES);
    }

    #[test]
    fn repos_must_be_the_top_of_a_work_tree() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().canonicalize().unwrap();
        assert!(refused(validate_repo(top.to_str().unwrap())).contains("not a git repository"));
        Repository::init(&top).unwrap();
        std::fs::create_dir(top.join("sub")).unwrap();
        assert_eq!(validate_repo(top.to_str().unwrap()).unwrap(), top.to_str().unwrap());
        let msg = refused(validate_repo(top.join("sub").to_str().unwrap()));
        assert!(msg.contains("inside the repository"), "{msg}");
        assert!(refused(validate_repo("relative")).contains("absolute"));
        assert!(refused(validate_repo(top.join("missing").to_str().unwrap())).contains("no such folder"));
        let bare = tempfile::tempdir().unwrap();
        Repository::init_bare(bare.path()).unwrap();
        assert!(refused(validate_repo(bare.path().to_str().unwrap())).contains("bare"));
    }

    #[test]
    fn profile_names_are_checked() {
        assert_eq!(validate_profile("untrusted".into()).unwrap(), "untrusted");
        assert!(refused(validate_profile("../etc".into())).contains("profile name"));
        assert!(refused(validate_profile(String::new())).contains("profile name"));
    }
}
