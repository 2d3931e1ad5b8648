//! Sub-tasks (issue 16): the supervisor's side of the `Task` and `TaskResult` tools, a child's end told to its parent,
//! and a task's end (kill included) cascading to its live tree.
//!
//! A child is made through the same path as `task new` ([`Daemon::new_task_draft`]: the same checks, and whatever
//! resolution that path does, e.g. personas), once per parent call id: its repository and profile are the parent's
//! (the profile is always the parent's: a child is never looser), its priority the parent's, its tier as asked, and
//! its base the parent's branch as it stands — the parent's uncommitted work is committed first, through the
//! sandboxed snapshot of [`crate::task_commit`]. Limits (`max-subtask-depth`, `max-subtasks`) are checked in the
//! store's transaction ([`crate::store::subtasks`]). A parent that waits is held Blocked without a worker (see
//! [`crate::runner`]); the scheduler queues it again once none of the children it waits for is live
//! ([`crate::store::Store::unblocked`]), which holds across supervisor restarts. Its next worker asks again for each
//! waiting call and gets the child's outcome: summary, branch and diff stat, or its error. A child that the parent
//! does not wait for is told to it as advice ([`crate::inbox::advise`]) when it ends.

use std::sync::Arc;

use neuraphage_ipc::task::cut_text;
use neuraphage_ipc::worker::{SubtaskAnswer, SubtaskRequest};
use neuraphage_ipc::{NewTask, Task, TaskId, TaskStatus};

use crate::requests::Daemon;
use crate::runner::TaskDirs;
use crate::store::subtasks::{Created, Limits, check};

/// Most bytes of a child's summary or error given back to its parent.
pub const MAX_OUTCOME: usize = 16 * 1024;

/// The limits of the configuration.
fn limits(daemon: &Daemon) -> Limits {
    Limits { max_depth: daemon.config().max_subtask_depth, max_live: daemon.config().max_subtasks }
}

/// Answer a `Task` / `TaskResult` call of `parent`'s worker.
pub async fn answer(
    daemon: &Arc<Daemon>,
    parent: &Task,
    dirs: &TaskDirs,
    call: String,
    request: SubtaskRequest,
) -> SubtaskAnswer {
    let (daemon, parent, dirs) = (daemon.clone(), parent.clone(), dirs.clone());
    tokio::task::spawn_blocking(move || answer_now(&daemon, &parent, &dirs, &call, request))
        .await
        .unwrap_or_else(|e| SubtaskAnswer::Refused { error: format!("Task failed in the supervisor: {e}") })
}

fn refused(error: impl Into<String>) -> SubtaskAnswer {
    SubtaskAnswer::Refused { error: error.into() }
}

/// Longest call id accepted from a worker (providers' ids are a few dozen bytes).
pub const MAX_CALL_ID: usize = 256;

/// Blocking: see [`answer`].
fn answer_now(daemon: &Daemon, parent: &Task, dirs: &TaskDirs, call: &str, request: SubtaskRequest) -> SubtaskAnswer {
    if call.is_empty() || call.len() > MAX_CALL_ID {
        return refused(format!("Task: the call id is {} bytes; it must be 1 to {MAX_CALL_ID}", call.len()));
    }
    match request {
        SubtaskRequest::Create { description, persona, tier, wait } => {
            match daemon.with_store(|s| s.subtask_by_call(&parent.id, call)) {
                Ok(Some(child)) => return standing(daemon, &child, wait),
                Ok(None) => {}
                Err(e) => return refused(format!("Task: {e}")),
            }
            // The limits, before the parent's work is committed for nothing (checked again when the child is stored).
            let counted = daemon.with_store(|s| {
                let (depth, root) = s.depth_and_root(&parent.id)?;
                Ok((depth, s.live_descendants(&root)?.len() as u32))
            });
            match counted {
                Ok((depth, live)) => {
                    if let Err(why) = check(depth + 1, live, limits(daemon)) {
                        return refused(why);
                    }
                }
                Err(e) => return refused(format!("Task: {e}")),
            }
            let base = match &parent.repo {
                Some(_) => match base_for_child(daemon, parent, dirs) {
                    Ok(base) => base,
                    Err(e) => {
                        return refused(format!("Task: cannot commit this task's work as the sub-task's base: {e}"));
                    }
                },
                None => None,
            };
            // Cost: a child runs on no higher tier than its parent's as it stands now (red team).
            let parent_tier = tier_now(daemon, &parent.id, parent.tier.as_deref());
            if let Some(asked) = tier.as_deref()
                && above(asked, &parent_tier)
            {
                return refused(format!(
                    "Task refused: tier {:?} is above this task's tier {parent_tier:?}; a sub-task runs on its \
                     parent's tier or a lower one",
                    cut_text(asked, 16)
                ));
            }
            let asked = persona.is_some();
            let new = NewTask {
                description,
                repo: parent.repo.clone(),
                priority: parent.priority.get(),
                after: Vec::new(),
                // Always the parent's profile: a sub-task is never looser than its parent.
                profile: parent.profile.clone(),
                base,
                tier,
                persona,
                no_watch: parent.no_watch,
            };
            let mut draft = match daemon.new_task_draft(new, Some(parent)) {
                Ok(draft) => draft,
                Err(e) => return refused(format!("Task refused: {}", e.to_control_error().message)),
            };
            // A persona's tier (asked or chosen by the rules) is capped at the parent's.
            if draft.tier.as_deref().is_some_and(|t| above(t, &parent_tier)) {
                draft.tier = Some(parent_tier.clone());
            }
            // Tools: a parent whose persona limits its tools makes children within the same limit.
            let mut inherited = false;
            let (_, parent_tools) = daemon.personas.for_start(parent.persona.as_deref());
            if let Some(parent_tools) = parent_tools {
                let (_, child_tools) = daemon.personas.for_start(draft.persona.as_deref());
                if !within(child_tools.as_deref(), &parent_tools) {
                    if asked {
                        return refused(format!(
                            "Task refused: persona {:?} may use tools this task's persona {:?} may not; a sub-task's \
                             tools are within its parent's",
                            draft.persona.as_deref().unwrap_or(""),
                            parent.persona.as_deref().unwrap_or("")
                        ));
                    }
                    draft.persona = parent.persona.clone();
                    inherited = true;
                }
            }
            match daemon.with_store(|s| s.create_subtask(&draft, call, wait, limits(daemon))) {
                Ok(Created::New(child)) => {
                    match (inherited, child.persona.clone()) {
                        (true, Some(persona)) => {
                            let reason = "its parent's persona (a sub-task's tools are within its parent's)".into();
                            daemon.record(&child.id, neuraphage_ipc::EventKind::PersonaSelected { persona, reason });
                        }
                        _ => crate::personas::record_selected(daemon, &child, asked),
                    }
                    tracing::info!(parent = %parent.id, child = %child.id, wait, "sub-task created");
                    daemon.workers.wake.notify_one();
                    standing(daemon, &child, wait)
                }
                Ok(Created::Existing(child)) => standing(daemon, &child, wait),
                Ok(Created::Refused(why)) => refused(why),
                Err(e) => refused(format!("Task: {e}")),
            }
        }
        SubtaskRequest::Result { task } => {
            let Ok(id) = task.parse::<TaskId>() else {
                return refused(format!(
                    "TaskResult: {:?} is not a task id (np- and 10 hex digits)",
                    cut_text(&task, 64)
                ));
            };
            match daemon.with_store(|s| s.task(&id)) {
                Ok(child) if child.parent.as_ref() == Some(&parent.id) => standing(daemon, &child, false),
                // A missing task and another tree's get the same answer: whether an id exists is not told (red team).
                Ok(_) => refused(format!("TaskResult: {id} is not a sub-task of this task")),
                Err(e) if e.to_control_error().code == neuraphage_ipc::ErrorCode::NotFound => {
                    refused(format!("TaskResult: {id} is not a sub-task of this task"))
                }
                Err(e) => refused(format!("TaskResult: {}", e.to_control_error().message)),
            }
        }
    }
}

/// For a sub-task, its parent's tier as it stands now (the highest it may run on); `None` for a top-level task.
pub fn parent_tier(daemon: &Daemon, id: &TaskId) -> Option<String> {
    let parent = daemon.with_store(|s| s.task(id)).ok()?.parent?;
    Some(tier_now(daemon, &parent, None))
}

/// Task `id`'s tier as stored now (an escalation moves it), else `fallback`, else the default tier.
fn tier_now(daemon: &Daemon, id: &TaskId, fallback: Option<&str>) -> String {
    daemon
        .with_store(|s| s.task(id))
        .ok()
        .and_then(|t| t.tier)
        .or_else(|| fallback.map(str::to_owned))
        .unwrap_or_else(|| neuraphage_ipc::broker::DEFAULT_TIER.to_owned())
}

/// Whether tier `tier` is above tier `of` (an unknown name is above none: it is refused as a name elsewhere).
pub fn above(tier: &str, of: &str) -> bool {
    let rank = |t: &str| neuraphage_ipc::broker::TIER_NAMES.iter().position(|n| *n == t);
    matches!((rank(tier), rank(of)), (Some(a), Some(b)) if a > b)
}

/// Whether a child's allowed tools (`None`: every tool) are within its parent's.
pub fn within(child: Option<&[String]>, parent: &[String]) -> bool {
    child.is_some_and(|c| c.iter().all(|t| parent.contains(t)))
}

/// The parent's branch as it stands, its uncommitted work committed first: the child's base.
fn base_for_child(daemon: &Daemon, parent: &Task, dirs: &TaskDirs) -> Result<Option<String>, String> {
    let message = format!("Work so far, before a sub-task\n\nNeuraphage task {}.\n", parent.id);
    crate::task_commit::commit(daemon, parent, dirs, &message)?;
    if !dirs.git.is_dir() {
        return Ok(parent.base_commit.clone());
    }
    let private = crate::worktree::open(&dirs.git).map_err(|e| e.message().to_owned())?;
    let tip = private
        .find_reference(&crate::private_repo::branch_ref(&parent.id))
        .and_then(|r| r.peel_to_commit())
        .map_err(|e| e.message().to_owned())?;
    Ok(Some(tip.id().to_string()))
}

/// How a child stands, for its parent's call.
fn standing(daemon: &Daemon, child: &Task, wait: bool) -> SubtaskAnswer {
    if child.status.state().is_terminal() {
        let (outcome, is_error) = outcome_of(daemon, child);
        SubtaskAnswer::Ended { child: child.id.clone(), outcome, is_error }
    } else {
        SubtaskAnswer::Pending { child: child.id.clone(), status: child.status.state().to_string(), wait }
    }
}

/// An ended child's outcome in words (bounded), and whether it is an error.
pub fn outcome_of(daemon: &Daemon, child: &Task) -> (String, bool) {
    let id = &child.id;
    let work = || {
        let branch = child.branch.clone().unwrap_or_else(|| crate::worktree::branch_name(id));
        match diff_stat(daemon, child) {
            Some(stat) => format!("\nBranch: {branch}\nChanges: {stat}"),
            None if child.repo.is_some() => format!("\nBranch: {branch}"),
            None => String::new(),
        }
    };
    match &child.status {
        TaskStatus::Completed { summary } => {
            let summary = cut_text(summary.as_deref().unwrap_or(""), MAX_OUTCOME);
            (format!("Sub-task {id} completed.{}\nSummary:\n{summary}", work()), false)
        }
        TaskStatus::Failed { error, .. } => {
            (format!("Sub-task {id} failed: {}{}", cut_text(error, MAX_OUTCOME), work()), true)
        }
        TaskStatus::Cancelled { reason } => {
            let why = reason.as_deref().map(|r| format!(" ({})", cut_text(r, 1024))).unwrap_or_default();
            (format!("Sub-task {id} was cancelled{why}.{}", work()), true)
        }
        other => (format!("Sub-task {id} is {}.", other.state()), false),
    }
}

/// `N files changed, +A −D` of a child's branch against its base, from its private repository (else the user's,
/// where its commits were brought); `None` without a repository or a branch.
fn diff_stat(daemon: &Daemon, child: &Task) -> Option<String> {
    let (Some(repo), Some(base)) = (&child.repo, &child.base_commit) else { return None };
    let dirs = TaskDirs::new(&daemon.paths().home, &child.id);
    let path = if dirs.git.is_dir() { dirs.git.clone() } else { std::path::PathBuf::from(repo) };
    let stat = || -> Result<String, git2::Error> {
        let r = crate::worktree::open(&path)?;
        let tip = r.find_reference(&crate::private_repo::branch_ref(&child.id))?.peel_to_tree()?;
        let base = r.find_commit(git2::Oid::from_str(base)?)?.tree()?;
        let stats = r.diff_tree_to_tree(Some(&base), Some(&tip), None)?.stats()?;
        Ok(stat_line(stats.files_changed(), stats.insertions(), stats.deletions()))
    };
    stat().map_err(|e| tracing::warn!(child = %child.id, error = %e.message(), "no diff stat")).ok()
}

/// The diff stat's words.
pub fn stat_line(files: usize, added: usize, deleted: usize) -> String {
    let s = if files == 1 { "" } else { "s" };
    format!("{files} file{s} changed, +{added} \u{2212}{deleted}")
}

/// After a task's session ended (its status is stored): if it is a sub-task that has ended, tell its parent
/// (`SubtaskEnded`; and, for a child it does not wait for, its outcome as advice in its next turn) and wake the
/// scheduler (a parent waiting for it may go back to the queue).
///
/// A task that ended (any way: completed, failed, killed) also ends its live sub-tasks, at every depth: a child
/// does not outlive its parent, running up cost for an outcome no one will read (red team). A crash before that is
/// repaired at the next start ([`cancel_orphans`]).
pub fn on_end(daemon: &Daemon, id: &TaskId) {
    let Ok(task) = daemon.with_store(|s| s.task(id)) else { return };
    if !task.status.state().is_terminal() {
        return;
    }
    if task.parent.is_some() {
        // Between the child's status and its parent's being told: a crash here is repaired at the next start.
        crate::crash_point::at("subtask_ended");
        tell_parent(daemon, &task);
    }
    crate::crash_point::at("task_ended");
    cancel_descendants(daemon, id, &format!("its parent {id} ended ({})", task.status.state()));
    daemon.workers.wake.notify_one();
}

/// At start: the live sub-tasks of tasks that ended (the supervisor died before [`on_end`] ended them) are cancelled.
pub fn cancel_orphans(daemon: &Daemon) {
    let orphans = match daemon.with_store(|s| s.orphaned_subtasks()) {
        Ok(orphans) => orphans,
        Err(e) => return tracing::error!(error = %e, "cannot read the sub-tasks of tasks that ended"),
    };
    for (parent, state) in orphans {
        tracing::info!(task = %parent, "the live sub-tasks of a task that ended are cancelled after a restart");
        cancel_descendants(daemon, &parent, &format!("its parent {parent} ended ({state})"));
    }
}

/// At start: every sub-task that ended without its parent being told (the supervisor died in between) is told now.
pub fn tell_untold(daemon: &Daemon) {
    let untold = match daemon.with_store(|s| s.untold_subtasks()) {
        Ok(untold) => untold,
        Err(e) => return tracing::error!(error = %e, "cannot read the sub-tasks whose parents were not told"),
    };
    for id in untold {
        match daemon.with_store(|s| s.task(&id)) {
            Ok(child) => {
                tracing::info!(child = %id, "a sub-task's end is told to its parent after a restart");
                tell_parent(daemon, &child);
            }
            Err(e) => tracing::warn!(child = %id, error = %e, "cannot read the sub-task"),
        }
    }
}

/// Tell `child`'s parent that it ended, once (see [`crate::store::Store::tell_parent`]), and hand the advice to the
/// parent's running session, if any.
fn tell_parent(daemon: &Daemon, child: &Task) {
    let (outcome, _) = outcome_of(daemon, child);
    let shown = cut_text(&outcome, neuraphage_ipc::task::MAX_EVENT_TEXT);
    let advice = crate::inbox::validate(&outcome).is_ok().then_some(outcome.as_str());
    match daemon.with_store(|s| s.tell_parent(&child.id, &shown, advice)) {
        Ok(Some(told)) => {
            if let Some((inbox, framed, true)) = told.advice {
                daemon.mailboxes.hand(&told.parent, inbox, framed);
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(child = %child.id, error = %e, "the sub-task's end was not told to its parent"),
    }
}

/// `task kill` of `id`, or its end: cancel its live sub-tasks, at every depth (each cancellation is the child's status event;
/// one not running is also told to its parent here — a running one is when its session ends).
pub fn cancel_descendants(daemon: &Daemon, id: &TaskId, why: &str) {
    let live = match daemon.with_store(|s| s.live_descendants(id)) {
        Ok(live) => live,
        Err(e) => return tracing::error!(task = %id, error = %e, "cannot read the task's sub-tasks"),
    };
    for child in live {
        let reason = why.to_owned();
        let running = daemon.workers.is_running(&child);
        match daemon.with_store(|s| s.cancel(&child, Some(reason))) {
            Ok(task) => {
                tracing::info!(%child, parent = %id, "sub-task cancelled with its parent");
                daemon.workers.cancel(&child);
                if !running && task.parent.is_some() {
                    tell_parent(daemon, &task);
                }
            }
            Err(e) => tracing::warn!(%child, error = %e, "cannot cancel the sub-task"),
        }
    }
    daemon.workers.wake.notify_one();
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_child_is_never_above_its_parent_in_tier_or_tools() {
        use super::{above, within};
        assert!(above("expert", "worker") && above("worker", "router") && above("expert", "router"));
        assert!(!above("worker", "worker") && !above("router", "expert") && !above("boss", "router"));
        let parent: Vec<String> = ["Read", "Task"].iter().map(|s| (*s).to_owned()).collect();
        assert!(within(Some(&["Read".to_owned()]), &parent));
        assert!(!within(Some(&["Read".to_owned(), "Bash".to_owned()]), &parent));
        assert!(!within(None, &parent), "every tool is not within a limited list");
    }

    #[test]
    fn stat_lines_read_like_git() {
        assert_eq!(super::stat_line(1, 3, 0), "1 file changed, +3 \u{2212}0");
        assert_eq!(super::stat_line(2, 10, 4), "2 files changed, +10 \u{2212}4");
    }
}
