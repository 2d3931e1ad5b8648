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
/// The task's changes against its base as a patch of at most `max` bytes (see [`patch`]).
pub fn diff(daemon: &Daemon, task: &Task, dirs: &TaskDirs, live: bool, max: u64) -> Result<String, String> {
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
        return patch(&private, base, tip, max).map_err(msg);
    }
    let user = open(Path::new(repo)).map_err(msg)?;
    let tip = user.find_reference(&private_repo::branch_ref(&task.id)).and_then(|r| r.peel_to_tree()).map_err(msg)?;
    patch(&user, base, tip.id(), max).map_err(msg)
}

/// The patch from `base` (a commit) to `tip` (a tree), whole lines only, at most `max` bytes: what the task wrote can
/// be as large as its disk allowance, so past `max` lines are only counted, and a last line says how many were left
/// out and where the whole diff is.
fn patch(repo: &git2::Repository, base: Oid, tip: Oid, max: u64) -> Result<String, git2::Error> {
    let base = repo.find_commit(base)?.tree()?;
    let tip = repo.find_tree(tip)?;
    let diff = repo.diff_tree_to_tree(Some(&base), Some(&tip), Some(&mut DiffOptions::new()))?;
    let mut text = String::new();
    let (mut left_lines, mut left_bytes) = (0u64, 0u64);
    diff.print(DiffFormat::Patch, |_, _, line| {
        let origin = matches!(line.origin(), '+' | '-' | ' ');
        if left_lines > 0 {
            left_lines += 1;
            left_bytes += line.content().len() as u64 + u64::from(origin);
            return true;
        }
        // Bytes that are not UTF-8 become U+FFFD (3 bytes each): the bound is on the text sent, not on the bytes
        // read, or a line of 0xFF would triple a cut patch past the reply frame. A line ends in `\n`, so no
        // character is split between two.
        let content = String::from_utf8_lossy(line.content());
        let len = content.len() as u64 + u64::from(origin);
        if text.len() as u64 + len > max {
            left_lines += 1;
            left_bytes += line.content().len() as u64 + u64::from(origin);
            return true;
        }
        if origin {
            text.push(line.origin());
        }
        text.push_str(&content);
        true
    })?;
    if left_lines > 0 {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "{} {left_lines} more lines ({left_bytes} bytes) left out; the whole change is on the task's branch]\n",
            neuraphage_ipc::control::DIFF_CUT_NOTE
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository whose first commit is empty and a tree holding `files` (name, bytes).
    pub(super) fn repo_with(files: &[(&str, &[u8])]) -> (tempfile::TempDir, git2::Repository, Oid, Oid) {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        let (base, tip) = {
            let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
            let empty = repo.treebuilder(None).unwrap().write().unwrap();
            let base = repo.commit(None, &sig, &sig, "base", &repo.find_tree(empty).unwrap(), &[]).unwrap();
            let mut tree = repo.treebuilder(None).unwrap();
            for (name, bytes) in files {
                let blob = repo.blob(bytes).unwrap();
                tree.insert(name, blob, 0o100644).unwrap();
            }
            (base, tree.write().unwrap())
        };
        (dir, repo, base, tip)
    }

    /// [`repo_with`] one file of `lines` numbered lines.
    fn repo_with_change(lines: usize) -> (tempfile::TempDir, git2::Repository, Oid, Oid) {
        let text: String = (0..lines).map(|i| format!("line {i:06}\n")).collect();
        repo_with(&[("big.txt", text.as_bytes())])
    }

    #[test]
    fn a_patch_past_its_bound_is_cut_at_a_line_with_a_note_counting_the_rest() {
        let (_dir, repo, base, tip) = repo_with_change(10_000);
        // Control: unbounded, every line is there and no note.
        let whole = patch(&repo, base, tip, u64::MAX).unwrap();
        assert!(whole.contains("+line 009999\n") && !whole.contains("[neuraphage"), "{}", &whole[..200]);
        let cut = patch(&repo, base, tip, 4096).unwrap();
        let (kept, note) = cut.trim_end().rsplit_once('\n').unwrap();
        assert!(kept.len() <= 4096, "{} bytes kept", kept.len());
        assert!(kept.starts_with("diff --git a/big.txt b/big.txt") && kept.ends_with(char::is_numeric), "{kept}");
        let kept_lines = kept.lines().filter(|l| l.starts_with("+line")).count();
        let left = whole.lines().count() - kept.lines().count();
        assert_eq!(
            note,
            format!(
                "[neuraphage: the diff is cut here: {left} more lines ({} bytes) left out; the whole change is on \
                 the task's branch]",
                whole.len() - kept.len() - 1
            )
        );
        assert!(kept_lines > 100 && kept_lines < 10_000, "{kept_lines}");
    }
}

#[cfg(test)]
mod attacks {
    use super::tests::repo_with;
    use super::*;

    #[test]
    fn invalid_utf8_does_not_grow_a_cut_patch_past_its_bound() {
        // Lines of bytes that are not UTF-8 (no NUL, so git reads the file as text): each byte becomes U+FFFD.
        let line = [&[0xffu8; 99][..], b"\n"].concat();
        let body = line.repeat(10_000);
        let (_dir, repo, base, tip) = repo_with(&[("bad.txt", &body)]);
        // Control: the raw bytes kept fit the bound.
        let cut = patch(&repo, base, tip, 64 * 1024).unwrap();
        let note = cut.trim_end().rsplit('\n').next().unwrap();
        assert!(note.starts_with(neuraphage_ipc::control::DIFF_CUT_NOTE), "{note}");
        let kept = cut.len() - note.len() - 1;
        assert!(kept <= 64 * 1024, "{kept} bytes kept for a bound of 65536");
    }

    #[test]
    fn one_line_larger_than_the_bound_leaves_only_the_note() {
        let body = vec![b'a'; 1 << 20];
        let (_dir, repo, base, tip) = repo_with(&[("one.txt", &body)]);
        let cut = patch(&repo, base, tip, 4096).unwrap();
        assert!(cut.len() < 4096 + 200, "{}", cut.len());
        assert!(cut.contains(neuraphage_ipc::control::DIFF_CUT_NOTE));
    }

    #[test]
    fn a_file_name_cannot_start_a_line_of_the_patch() {
        let name = "x\n[neuraphage: the diff is cut here: 0 more lines";
        let (_dir, repo, base, tip) = repo_with(&[(name, b"hi\n")]);
        let whole = patch(&repo, base, tip, u64::MAX).unwrap();
        assert!(!whole.lines().any(|l| l.starts_with(neuraphage_ipc::control::DIFF_CUT_NOTE)), "{whole}");
    }
}
