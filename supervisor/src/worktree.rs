//! Task worktrees and branches, with git2 only.
//!
//! The repository is hostile: git2 (libgit2) runs no hooks, no filter drivers, no fsmonitor and nothing else a
//! repository's config can name, so everything here is safe to run on the supervisor's side. A task's worktree is
//! `tasks/<id>/worktree` on branch `neuraphage/<id>`, created from the task's base commit; the user's own checkout is
//! never touched.

use std::path::Path;

use git2::{
    DiffFormat, DiffOptions, IndexAddOption, Oid, Repository, RepositoryOpenFlags, Signature, WorktreeAddOptions,
};
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
    if dest.join(".git").exists() {
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

/// Commit everything in the worktree (new, changed and deleted files, .gitignore respected) to its branch.
/// Returns the new commit, or `None` when nothing changed.
pub fn commit_all(worktree: &Path, task: &TaskId, message: &str) -> Result<Option<String>, git2::Error> {
    let repo = open(worktree)?;
    let mut index = repo.index()?;
    index.add_all(["*"], IndexAddOption::DEFAULT, None)?;
    index.update_all(["*"], None)?;
    index.write()?;
    let tree_id = index.write_tree()?;
    let head = repo.head()?.peel_to_commit()?;
    if head.tree_id() == tree_id {
        return Ok(None);
    }
    let tree = repo.find_tree(tree_id)?;
    let sig = Signature::now(&format!("neuraphage {task}"), "neuraphage@localhost")?;
    let id = repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[&head])?;
    Ok(Some(id.to_string()))
}

/// The task's changes against its base commit as a patch: the worktree as it is (committed or not, untracked files
/// included) when it exists, else the branch's tip.
pub fn diff(repo_path: &Path, worktree: &Path, task: &TaskId, base_commit: &str) -> Result<String, git2::Error> {
    let mut opts = DiffOptions::new();
    opts.include_untracked(true).recurse_untracked_dirs(true).show_untracked_content(true);
    let (repo, use_workdir) =
        if worktree.join(".git").exists() { (open(worktree)?, true) } else { (open(repo_path)?, false) };
    let base = repo.find_commit(Oid::from_str(base_commit)?)?.tree()?;
    let diff = if use_workdir {
        repo.diff_tree_to_workdir_with_index(Some(&base), Some(&mut opts))?
    } else {
        let tip = repo.find_branch(&branch_name(task), git2::BranchType::Local)?.get().peel_to_tree()?;
        repo.diff_tree_to_tree(Some(&base), Some(&tip), Some(&mut opts))?
    };
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

/// Remove a task's worktree (the branch stays).
pub fn remove(repo_path: &Path, task: &TaskId, dest: &Path) -> Result<(), git2::Error> {
    let repo = open(repo_path)?;
    if let Ok(wt) = repo.find_worktree(task.as_str()) {
        wt.prune(Some(git2::WorktreePruneOptions::new().valid(true).working_tree(true)))?;
    }
    let _ = std::fs::remove_dir_all(dest);
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
        let patch = diff(&repo_path, &wt, &task, &base).unwrap();
        assert!(patch.contains("-one") && patch.contains("+two") && patch.contains("+new"), "{patch}");
        let commit = commit_all(&wt, &task, "work").unwrap().unwrap();
        assert!(commit_all(&wt, &task, "again").unwrap().is_none(), "nothing new to commit");
        // The branch has the work; the user's checkout does not.
        let repo = open(&repo_path).unwrap();
        let tip =
            repo.find_branch("neuraphage/np-0000001234", git2::BranchType::Local).unwrap().get().target().unwrap();
        assert_eq!(tip.to_string(), commit);
        assert_eq!(std::fs::read_to_string(repo_path.join("a.txt")).unwrap(), "one\n");
        remove(&repo_path, &task, &wt).unwrap();
        assert!(!wt.exists());
        let patch = diff(&repo_path, &wt, &task, &base).unwrap();
        assert!(patch.contains("+two"), "after removal the diff comes from the branch: {patch}");
    }
}
