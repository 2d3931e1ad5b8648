//! Task worktrees and branches, with git2 only.
//!
//! The repository is hostile: git2 (libgit2) runs no hooks, no filter drivers, no fsmonitor and nothing else a
//! repository's config can name, so everything here is safe to run on the supervisor's side. A task's worktree is
//! `tasks/<id>/worktree` on branch `neuraphage/<id>`, created from the task's base commit; the user's own checkout is
//! never touched.

use std::path::Path;

use git2::{DiffFormat, DiffOptions, Oid, Repository, RepositoryOpenFlags, Signature, WorktreeAddOptions};
use neuraphage_ipc::TaskId;

/// Branch name of a task.
pub fn branch_name(task: &TaskId) -> String {
    format!("neuraphage/{task}")
}

/// Open a repository exactly at `path` (no search upwards).
pub fn open(path: &Path) -> Result<Repository, git2::Error> {
    Repository::open_ext(path, RepositoryOpenFlags::NO_SEARCH, std::iter::empty::<&std::ffi::OsStr>())
}

/// Resolve `base` (a commit, branch or tag; default HEAD) in the repository to a commit id.
pub fn resolve_base(repo: &Path, base: Option<&str>) -> Result<String, String> {
    let repo = open(repo).map_err(|e| e.message().to_owned())?;
    let spec = base.unwrap_or("HEAD");
    let object = repo.revparse_single(spec).map_err(|e| match base {
        Some(b) => format!("--base {b}: {}", e.message()),
        None => format!("the repository has no commit yet (HEAD: {}); commit something first", e.message()),
    })?;
    let commit = object.peel_to_commit().map_err(|e| format!("{spec} is not a commit: {}", e.message()))?;
    Ok(commit.id().to_string())
}

/// Create the task's branch at `base_commit` and check it out as a worktree at `dest`. Idempotent: an existing
/// worktree for the task is reused.
pub fn create(repo_path: &Path, task: &TaskId, base_commit: &str, dest: &Path) -> Result<String, git2::Error> {
    let repo = open(repo_path)?;
    let branch = branch_name(task);
    if dest.exists() {
        // Made by an earlier run of this task; it is resumed as it is.
        return Ok(branch);
    }
    let commit = repo.find_commit(Oid::from_str(base_commit)?)?;
    let reference = match repo.find_branch(&branch, git2::BranchType::Local) {
        Ok(b) => b.into_reference(),
        Err(_) => repo.branch(&branch, &commit, false)?.into_reference(),
    };
    // A stale worktree entry (its folder was removed) would make the name taken: prune it first.
    if let Ok(old) = repo.find_worktree(task.as_str())
        && old.validate().is_err()
    {
        old.prune(Some(git2::WorktreePruneOptions::new().valid(true).working_tree(true)))?;
    }
    let mut opts = WorktreeAddOptions::new();
    opts.reference(Some(&reference));
    repo.worktree(task.as_str(), dest, Some(&opts))?;
    Ok(branch)
}

/// Remove the lock on the task's branch ref that a killed supervisor may have left in the user's repository. Only
/// the supervisor writes `refs/heads/neuraphage/<id>`, one session at a time, so at a session's start it is stale.
pub fn clear_stale_branch_lock(repo_path: &Path, task: &TaskId) -> Result<(), git2::Error> {
    let repo = open(repo_path)?;
    let lock = repo.path().join("refs/heads").join(format!("{}.lock", branch_name(task)));
    if std::fs::symlink_metadata(&lock).is_ok_and(|m| m.is_file()) && std::fs::remove_file(&lock).is_ok() {
        tracing::warn!(lock = %lock.display(), "removed a stale branch lock left by a killed supervisor");
    }
    Ok(())
}

/// Largest file a snapshot takes into a commit; bigger ones are left out (and logged).
pub const MAX_SNAPSHOT_FILE: u64 = 100 * 1024 * 1024;

/// A tree of the worktree's files as they are, written to the repository's object store.
///
/// The worktree is the task's: anything in it may be hostile. So this never opens it as a repository (its `.git`
/// file and admin folder are the task's to write) and never follows a symlink: it walks the files itself (`.git`
/// entries skipped, `.gitignore` honoured), opens each with `O_NOFOLLOW`, takes regular files and symlinks (as
/// links), and skips everything else.
pub fn snapshot(repo: &Repository, worktree: &Path) -> Result<Oid, git2::Error> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let fail = |what: &str, e: &dyn std::fmt::Display| git2::Error::from_str(&format!("{what}: {e}"));
    let mut index = git2::Index::new()?;
    let walker = ignore::WalkBuilder::new(worktree)
        .hidden(false)
        .parents(false)
        .ignore(false)
        .git_global(false)
        .git_exclude(false)
        .git_ignore(true)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for entry in walker {
        let entry = entry.map_err(|e| fail("walking the worktree", &e))?;
        let Some(kind) = entry.file_type() else { continue };
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(worktree) else { continue };
        if rel.as_os_str().is_empty() || kind.is_dir() {
            continue;
        }
        let (mode, data) = if kind.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| fail(&path.display().to_string(), &e))?;
            (0o120000, target.as_os_str().as_bytes().to_vec())
        } else if kind.is_file() {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| fail(&path.display().to_string(), &e))?;
            let meta = file.metadata().map_err(|e| fail(&path.display().to_string(), &e))?;
            if !meta.is_file() {
                continue;
            }
            if meta.len() > MAX_SNAPSHOT_FILE {
                tracing::warn!(file = %path.display(), size = meta.len(), "left out of the commit: too large");
                continue;
            }
            let mut data = Vec::with_capacity(meta.len() as usize);
            std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_SNAPSHOT_FILE), &mut data)
                .map_err(|e| fail(&path.display().to_string(), &e))?;
            (if meta.mode() & 0o111 != 0 { 0o100755 } else { 0o100644 }, data)
        } else {
            continue;
        };
        let id = repo.blob(&data)?;
        let rel = rel.as_os_str().as_bytes().to_vec();
        index.add(&git2::IndexEntry {
            ctime: git2::IndexTime::new(0, 0),
            mtime: git2::IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode,
            uid: 0,
            gid: 0,
            file_size: data.len().min(u32::MAX as usize) as u32,
            id,
            flags: rel.len().min(0xfff) as u16,
            flags_extended: 0,
            path: rel,
        })?;
    }
    index.write_tree_to(repo)
}

/// Commit the worktree's files to the task's branch, `refs/heads/neuraphage/<id>` in the user's repository, named
/// explicitly (never through the worktree's `HEAD`, which the task can rewrite). Returns the new commit, or `None`
/// when nothing changed.
pub fn commit_all(
    repo_path: &Path,
    worktree: &Path,
    task: &TaskId,
    message: &str,
) -> Result<Option<String>, git2::Error> {
    let repo = open(repo_path)?;
    let branch = format!("refs/heads/{}", branch_name(task));
    let parent = repo.find_reference(&branch)?.peel_to_commit()?;
    let tree_id = snapshot(&repo, worktree)?;
    if parent.tree_id() == tree_id {
        return Ok(None);
    }
    let tree = repo.find_tree(tree_id)?;
    let sig = Signature::now(&format!("neuraphage {task}"), "neuraphage@localhost")?;
    let id = repo.commit(Some(&branch), &sig, &sig, message, &tree, &[&parent])?;
    Ok(Some(id.to_string()))
}

/// The task's changes against its base commit as a patch: of the worktree's files as they are now when `live`
/// (a running task), else of the branch's tip (what the task's end committed).
pub fn diff(
    repo_path: &Path,
    worktree: &Path,
    task: &TaskId,
    base_commit: &str,
    live: bool,
) -> Result<String, git2::Error> {
    let repo = open(repo_path)?;
    let base = repo.find_commit(Oid::from_str(base_commit)?)?.tree()?;
    let tip = if live && worktree.is_dir() {
        repo.find_tree(snapshot(&repo, worktree)?)?
    } else {
        repo.find_reference(&format!("refs/heads/{}", branch_name(task)))?.peel_to_tree()?
    };
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

/// Remove a task's worktree folder and its admin folder in the user's repository, both found by their known names
/// (never by paths read from files the task could write). The branch stays.
pub fn remove(repo_path: &Path, task: &TaskId, dest: &Path) -> Result<(), git2::Error> {
    let repo = open(repo_path)?;
    let admin = repo.path().join("worktrees").join(task.as_str());
    for dir in [dest, admin.as_path()] {
        match std::fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(dir)
                .map_err(|e| git2::Error::from_str(&format!("cannot remove {}: {e}", dir.display())))?,
            Ok(_) => return Err(git2::Error::from_str(&format!("{} is not a folder; left alone", dir.display()))),
            Err(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with_commit(dir: &Path) -> String {
        let repo = Repository::init(dir).unwrap();
        std::fs::write(dir.join("a.txt"), "one\n").unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("a.txt")).unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = Signature::now("t", "t@t").unwrap();
        repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[]).unwrap().to_string()
    }

    #[test]
    fn worktree_branch_commit_and_diff() {
        let dir = tempfile::tempdir().unwrap();
        let repo_path = dir.path().join("repo");
        let base = repo_with_commit(&repo_path);
        assert_eq!(resolve_base(&repo_path, None).unwrap(), base);
        assert!(resolve_base(&repo_path, Some("nope")).unwrap_err().contains("--base nope"));
        let task = TaskId::from_bits(0x1234);
        let wt = dir.path().join("wt");
        assert_eq!(create(&repo_path, &task, &base, &wt).unwrap(), "neuraphage/np-0000001234");
        assert_eq!(std::fs::read_to_string(wt.join("a.txt")).unwrap(), "one\n");
        std::fs::write(wt.join("a.txt"), "two\n").unwrap();
        std::fs::write(wt.join("new.txt"), "new\n").unwrap();
        let patch = diff(&repo_path, &wt, &task, &base, true).unwrap();
        assert!(patch.contains("-one") && patch.contains("+two") && patch.contains("+new"), "{patch}");
        let commit = commit_all(&repo_path, &wt, &task, "work").unwrap().unwrap();
        assert!(commit_all(&repo_path, &wt, &task, "again").unwrap().is_none(), "nothing new to commit");
        // The branch has the work; the user's checkout does not.
        let repo = open(&repo_path).unwrap();
        let tip =
            repo.find_branch("neuraphage/np-0000001234", git2::BranchType::Local).unwrap().get().target().unwrap();
        assert_eq!(tip.to_string(), commit);
        assert_eq!(std::fs::read_to_string(repo_path.join("a.txt")).unwrap(), "one\n");
        remove(&repo_path, &task, &wt).unwrap();
        assert!(!wt.exists());
        let patch = diff(&repo_path, &wt, &task, &base, false).unwrap();
        assert!(patch.contains("+two"), "after removal the diff comes from the branch: {patch}");
    }
}
