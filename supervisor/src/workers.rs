//! The tasks running now, and the scheduler that starts them.
//!
//! [`schedule`] wakes when something changes (a task created, ended, cancelled, a dependency added) and at a slow
//! tick; it marks Queued tasks whose blocker failed or was cancelled as Blocked (with the reason), then starts ready
//! tasks (no open blockers) by priority, then age, up to `max-concurrent`, each in its own worker process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use neuraphage_ipc::{RunningPhase, TaskId, TaskStatus};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker_link::Broker;
use crate::requests::Daemon;
use crate::runner::run_task;

/// Running tasks, their cancel switches, and their workers' pids.
#[derive(Debug, Default)]
pub struct WorkerRegistry {
    running: Mutex<HashMap<TaskId, CancellationToken>>,
    pids: Mutex<HashMap<TaskId, u32>>,
    /// Our end of each running worker's handoff socket, for new broker links.
    handoffs: Mutex<HashMap<TaskId, std::os::fd::OwnedFd>>,
    /// Wakes the scheduler.
    pub wake: Notify,
}

impl WorkerRegistry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, CancellationToken>> {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tell a running task's session to stop its worker (the status is already Cancelled).
    pub fn cancel(&self, id: &TaskId) {
        if let Some(token) = self.map().get(id) {
            token.cancel();
        }
    }

    /// Whether a session runs the task now.
    pub fn is_running(&self, id: &TaskId) -> bool {
        self.map().contains_key(id)
    }

    /// The tasks running now.
    pub fn running(&self) -> Vec<TaskId> {
        self.map().keys().cloned().collect()
    }

    /// Number of tasks running now.
    pub fn count(&self) -> usize {
        self.map().len()
    }

    fn pids(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, u32>> {
        self.pids.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Record (or with `None`, forget) a task's worker pid.
    pub fn set_pid(&self, id: &TaskId, pid: Option<u32>) {
        match pid {
            Some(pid) => self.pids().insert(id.clone(), pid),
            None => self.pids().remove(id),
        };
    }

    /// Record (or with `None`, forget) our end of a running worker's handoff socket.
    pub fn set_handoff(&self, id: &TaskId, fd: Option<std::os::fd::OwnedFd>) {
        let mut map = self.handoffs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match fd {
            Some(fd) => map.insert(id.clone(), fd),
            None => map.remove(id),
        };
    }

    /// After a broker restart: give every running worker a new link to the new broker.
    pub fn relink_all(&self, broker: &Broker, grant_of: impl Fn(&TaskId) -> neuraphage_ipc::broker::LinkGrant) {
        let map = self.handoffs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (task, handoff) in map.iter() {
            let relinked = crate::spawn::stream_pair().map_err(|e| e.to_string()).and_then(|(ours, theirs)| {
                broker.hand_over(&grant_of(task), std::os::fd::OwnedFd::from(ours))?;
                neuraphage_ipc::inherit::send_fd(handoff, b"broker", theirs)
            });
            match relinked {
                Ok(()) => tracing::info!(%task, "handed the worker a link to the new broker"),
                Err(e) => tracing::error!(%task, error = %e, "cannot relink the worker to the new broker"),
            }
        }
    }

    /// Whether `pid` belongs to a task: a worker, or a process in a worker's session, or a descendant of a worker.
    /// The control socket refuses such peers.
    pub fn is_task_process(&self, pid: u32) -> bool {
        let workers: Vec<u32> = self.pids().values().copied().collect();
        if workers.is_empty() {
            return false;
        }
        let mut at = pid;
        for _ in 0..64 {
            let Some((ppid, sid)) = crate::spawn::parent_and_session(at) else { return false };
            if workers.contains(&at) || workers.contains(&sid) {
                return true;
            }
            if ppid <= 1 {
                return false;
            }
            at = ppid;
        }
        false
    }
}

/// How often the scheduler looks even when nothing woke it.
const TICK: Duration = Duration::from_secs(2);

/// Start ready tasks until `shutdown`; then wait for every session to stop.
pub async fn schedule(daemon: Arc<Daemon>, broker: Arc<Broker>, shutdown: CancellationToken) {
    let sessions = TaskTracker::new();
    // Tasks that were Running when the last supervisor stopped go back to the queue; they resume from their
    // conversation.
    // One the Watcher had stopped (V12 `watcher_stop`: paused, aborted) ends as the Watcher decided instead.
    let requeued = daemon.with_store(|s| s.list(Some(neuraphage_ipc::TaskState::Running)));
    for task in requeued.unwrap_or_default() {
        match daemon.with_store(|s| s.watcher_stop(&task.id)) {
            Ok(Some(status)) => {
                tracing::info!(task = %task.id, status = %status.state(), "the Watcher's stop, after a restart");
                let parked = matches!(status, TaskStatus::WaitingForUser { .. });
                crate::inbox::end_session(&daemon, &task.id, status);
                if parked {
                    crate::permissions::answer::after_park(&daemon, &task.id);
                }
                crate::subtasks::on_end(&daemon, &task.id);
            }
            // A pause the user asked for (acknowledged) before the session reached its next checkpoint.
            _ if daemon.with_store(|s| s.pause_requested(&task.id)).unwrap_or(false) => {
                tracing::info!(task = %task.id, "paused after a supervisor restart, as asked before it");
                crate::inbox::end_session(&daemon, &task.id, TaskStatus::Paused);
            }
            _ => {
                tracing::info!(task = %task.id, "re-queued after a supervisor restart");
                daemon.transition(&task.id, TaskStatus::Queued);
            }
        }
    }
    // Sub-tasks that ended just before the last supervisor died: their parents are told now.
    crate::subtasks::tell_untold(&daemon);
    // Live sub-tasks of tasks that ended just before it died: cancelled now, as their parent's end would have.
    crate::subtasks::cancel_orphans(&daemon);
    loop {
        start_ready(&daemon, &broker, &sessions, &shutdown);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = daemon.workers.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    sessions.close();
    sessions.wait().await;
}

fn start_ready(daemon: &Arc<Daemon>, broker: &Arc<Broker>, sessions: &TaskTracker, shutdown: &CancellationToken) {
    match daemon.with_store(|s| s.stuck()) {
        Ok(stuck) => {
            for s in stuck {
                let on = format!("{} is {}", s.blocker, s.state);
                daemon.transition(&s.task, TaskStatus::Blocked { on });
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot look for stuck tasks"),
    }
    match daemon.with_store(|s| s.unblocked()) {
        Ok(ids) => {
            for id in ids {
                daemon.transition(&id, TaskStatus::Queued);
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot look for unblocked tasks"),
    }
    let free = daemon.config().max_concurrent.saturating_sub(daemon.workers.count());
    if free == 0 {
        return;
    }
    let ready = match daemon.with_store(|s| s.ready(free)) {
        Ok(ready) => ready,
        Err(e) => return tracing::error!(error = %e, "cannot read ready tasks"),
    };
    for task in ready {
        let token = CancellationToken::new();
        daemon.workers.map().insert(task.id.clone(), token.clone());
        daemon.transition(&task.id, TaskStatus::Running { phase: RunningPhase::Initializing });
        let (daemon, broker, shutdown) = (daemon.clone(), broker.clone(), shutdown.clone());
        sessions.spawn(async move {
            let id = task.id.clone();
            run_task(daemon.clone(), broker, task, token, shutdown).await;
            daemon.workers.map().remove(&id);
            daemon.workers.wake.notify_one();
        });
    }
}
