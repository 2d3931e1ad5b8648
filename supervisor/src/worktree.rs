//! The user's repository as the supervisor sees it, with git2 only: opening it, resolving a task's base, the task's
//! branch name and its ref lock.
//!
//! The repository is hostile: git2 (libgit2) runs no hooks, no filter drivers, no fsmonitor and nothing else a
//! repository's config can name, so everything here is safe to run on the supervisor's side. A task works in its
//! own private repository ([`crate::private_repo`]); the user's own checkout is never touched.

use std::path::Path;

use git2::{Repository, RepositoryOpenFlags};
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_resolves_to_a_commit_or_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        assert!(resolve_base(dir.path(), None).unwrap_err().contains("commit something first"));
        let tree = repo.find_tree(repo.index().unwrap().write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@t").unwrap();
        let base = repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[]).unwrap().to_string();
        assert_eq!(resolve_base(dir.path(), None).unwrap(), base);
        assert!(resolve_base(dir.path(), Some("nope")).unwrap_err().contains("--base nope"));
    }
}
