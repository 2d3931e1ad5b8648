//! A task's commits and diffs, end to end: the worktree read by the sandboxed [`crate::snapshot`] helper, the commit
//! made in the task's [`crate::private_repo`] and brought into the user's repository, what the snapshot noted
//! recorded as events; and at the task's end, the worktree sealed ([`crate::worktree_seal`]) or removed.

use std::path::Path;

use git2::{DiffFormat, DiffOptions, Oid};
use neuraphage_ipc::{EventKind, Task};

use crate::private_repo;
use crate::requests::Daemon;
use crate::runner::TaskDirs;
use crate::worktree::{branch_name, open};

/// Most snapshot notes recorded as events per snapshot.
const MAX_NOTE_EVENTS: usize = 20;

/// Take a snapshot of the worktree into the private repository; its notes become events.
fn snapshot(daemon: &Daemon, task: &Task, dirs: &TaskDirs) -> Result<crate::snapshot::Snapshot, String> {
    let private = open(&dirs.git).map_err(|e| format!("the task's repository: {}", e.message()))?;
    let snap = crate::snapshot::take(
        &private,
        &dirs.root.join("sandbox.json"),
        &dirs.worktree,
        &dirs.root.join("worker.log"),
    )?;
    for (note, path) in snap.notes.iter().take(MAX_NOTE_EVENTS) {
        let path = String::from_utf8_lossy(path).into_owned();
        tracing::info!(%note, %path, "snapshot note");
        daemon.record(&task.id, EventKind::SnapshotNote { note: note.clone(), path });
    }
    Ok(snap)
}

/// Commit the worktree to the task's branch with `message`; the new commit's id, if anything changed.
pub fn commit(daemon: &Daemon, task: &Task, dirs: &TaskDirs, message: &str) -> Result<Option<String>, String> {
    commit_seeing(daemon, task, dirs, message).map(|(commit, _)| commit)
}

/// [`commit`], also returning the `.git` entries the snapshot saw in subfolders.
fn commit_seeing(
    daemon: &Daemon,
    task: &Task,
    dirs: &TaskDirs,
    message: &str,
) -> Result<(Option<String>, Vec<Vec<u8>>), String> {
    let Some(repo) = &task.repo else { return Ok((None, Vec::new())) };
    if !dirs.worktree.is_dir() || !dirs.git.is_dir() {
        return Ok((None, Vec::new()));
    }
    if !dirs.root.join("sandbox.json").is_file() {
        // No worker ever ran (its sandbox was refused before the plan was written): no work, and no plan to read
        // the worktree under.
        tracing::warn!("no sandbox plan for the task: nothing committed");
        return Ok((None, Vec::new()));
    }
    let snap = snapshot(daemon, task, dirs)?;
    let commit = private_repo::commit_tree(&dirs.git, Path::new(repo), &task.id, snap.tree, message)
        .map_err(|e| e.message().to_owned())?
        .map(|id| id.to_string());
    if let Some(commit) = &commit {
        daemon.record(&task.id, EventKind::Committed { branch: branch_name(&task.id), commit: commit.clone() });
    }
    Ok((commit, snap.nested_git()))
}

/// After the task's last process is gone: commit its work, then seal its worktree for a person (`keep`) or remove
/// it with the private repository.
pub fn end(daemon: &Daemon, task: &Task, dirs: &TaskDirs, message: &str, keep: bool) -> Result<(), String> {
    let committed = commit_seeing(daemon, task, dirs, message);
    if task.repo.is_some() && dirs.worktree.is_dir() {
        if keep {
            // Nested `.git`s the snapshot saw (a failed snapshot saw none: the root is still sealed).
            let nested = committed.as_ref().map(|(_, n)| n.clone()).unwrap_or_default();
            let moved = crate::worktree_seal::seal(&dirs.root, &dirs.worktree, &nested)?;
            if !moved.is_empty() {
                tracing::warn!(?moved, "git metadata the task made was moved out of its worktree");
            }
        } else if committed.is_ok() {
            let repo = task.repo.as_deref().map(Path::new);
            private_repo::remove(&dirs.git, &dirs.worktree, repo, &task.id)?;
        }
    }
    committed.map(|_| ())
}

/// The task's changes against its base as a patch: for a running task (`live`), of its worktree's files as they are
/// now, snapshotted into its PRIVATE repository (the user's object store gets nothing); else of its branch.
pub fn diff(daemon: &Daemon, task: &Task, dirs: &TaskDirs, live: bool) -> Result<String, String> {
    let (Some(repo), Some(base)) = (&task.repo, &task.base_commit) else { return Ok(String::new()) };
    let base = Oid::from_str(base).map_err(|e| e.message().to_owned())?;
    let msg = |e: git2::Error| e.message().to_owned();
    if dirs.git.is_dir() {
        let private = open(&dirs.git).map_err(msg)?;
        let tip = if live && dirs.worktree.is_dir() && dirs.root.join("sandbox.json").is_file() {
            snapshot(daemon, task, dirs)?.tree
        } else {
            private
                .find_reference(&private_repo::branch_ref(&task.id))
                .and_then(|r| r.peel_to_tree())
                .map_err(msg)?
                .id()
        };
        return patch(&private, base, tip).map_err(msg);
    }
    let user = open(Path::new(repo)).map_err(msg)?;
    let tip = user.find_reference(&private_repo::branch_ref(&task.id)).and_then(|r| r.peel_to_tree()).map_err(msg)?;
    patch(&user, base, tip.id()).map_err(msg)
}

fn patch(repo: &git2::Repository, base: Oid, tip: Oid) -> Result<String, git2::Error> {
    let base = repo.find_commit(base)?.tree()?;
    let tip = repo.find_tree(tip)?;
    let diff = repo.diff_tree_to_tree(Some(&base), Some(&tip), Some(&mut DiffOptions::new()))?;
    let mut patch = Vec::new();
    diff.print(DiffFormat::Patch, |_, _, line| {
        if matches!(line.origin(), '+' | '-' | ' ') {
            patch.push(line.origin() as u8);
        }
        patch.extend_from_slice(line.content());
        true
    })?;
    Ok(String::from_utf8_lossy(&patch).into_owned())
}
