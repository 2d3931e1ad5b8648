//! A task's private repository: `tasks/<id>/git`, made and written by the supervisor only (git2).
//!
//! It holds the task's base commit, the history of its base to [`crate::config::Config::task_history_depth`]
//! commits (a `shallow` file marks the boundary, so `git log` works), and the task's branch `neuraphage/<id>`, which
//! its HEAD names. None of the user's config, remotes, hooks, index, stash, reflogs, other branches or unreachable
//! objects is in it. The task's worktree `tasks/<id>/worktree` is a plain folder checked out from it (no filters);
//! the task runs git with `GIT_DIR` = the private repository (read-only to it) and `GIT_WORK_TREE` = the worktree.
//! The worktree's `.git` is a regular file holding [`GITFILE_NOTE`], which git refuses ("invalid gitfile format"), so
//! a person who opens the worktree gets no git configuration the task wrote.
//!
//! Commits are built from a [`crate::snapshot`] (read inside the sandbox), made on the private branch, then brought
//! into the user's repository: the objects it lacks are packed (git2's PackBuilder) into its object store, no hook
//! runs, and `refs/heads/neuraphage/<id>` moves there.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::Path;

use flate2::{Compress, Compression, FlushCompress};
use git2::{Oid, Repository, RepositoryInitOptions, Signature};
use neuraphage_ipc::TaskId;
use sha1::{Digest, Sha1};

use crate::worktree::{branch_name, open};

/// What the worktree's `.git` file says (git reads it as a broken gitfile and refuses to run there).
pub const GITFILE_NOTE: &str = "neuraphage: this worktree's repository is private to its task; review its work with \
                                `neuraphage task diff` or the branch neuraphage/<id> of your repository\n";

/// Longest commit message kept (bytes); the rest is cut.
pub const MAX_COMMIT_MESSAGE: usize = 16 * 1024;

/// The ref of the task's branch (the same name in the private and the user's repository).
pub fn branch_ref(task: &TaskId) -> String {
    format!("refs/heads/{}", branch_name(task))
}

/// A model's commit message made safe to store and print: control characters other than newline and tab removed,
/// at most [`MAX_COMMIT_MESSAGE`] bytes (cut at a character boundary), never empty.
pub fn clean_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_COMMIT_MESSAGE));
    for c in message.chars().filter(|c| !c.is_control() || *c == '\n' || *c == '\t') {
        if out.len() + c.len_utf8() > MAX_COMMIT_MESSAGE {
            break;
        }
        out.push(c);
    }
    if out.trim().is_empty() { "Work of a Neuraphage task".to_owned() } else { out }
}

/// Make the task's private repository at `git` and its worktree at `worktree`, or adopt what exists: a task made
/// before private repositories (an old-style git worktree) or without one yet gets one from the user's
/// `neuraphage/<id>` branch when it exists, else from its base; a worktree's files are kept as they are.
pub fn prepare(
    user_repo: &Path,
    task: &TaskId,
    base: &str,
    depth: u32,
    git: &Path,
    worktree: &Path,
) -> Result<(), git2::Error> {
    let fail = |what: &str, e: std::io::Error| git2::Error::from_str(&format!("{what}: {e}"));
    // Only the supervisor writes the task's branch in the user's repository, one session at a time: a lock on it
    // now was left by a supervisor killed while writing it.
    crate::worktree::clear_stale_branch_lock(user_repo, task)?;
    // The same in the private repository (only the supervisor writes it): its branch and its index.
    let branch_lock = git.join("refs/heads").join(format!("{}.lock", crate::worktree::branch_name(task)));
    for lock in [branch_lock, git.join("index.lock")] {
        if std::fs::symlink_metadata(&lock).is_ok_and(|m| m.is_file()) {
            std::fs::remove_file(&lock).map_err(|e| fail(&lock.display().to_string(), e))?;
            tracing::warn!(lock = %lock.display(), "removed a stale lock left by a killed supervisor");
        }
    }
    if !git.join("HEAD").is_file() {
        let user = open(user_repo)?;
        let base = Oid::from_str(base)?;
        let start = user.find_reference(&branch_ref(task)).and_then(|r| r.peel_to_commit()).map(|c| c.id());
        let start = start.unwrap_or(base);
        // The branch is in the user's repository from the start (at the base), as the task's name for its work.
        if user.find_reference(&branch_ref(task)).is_err() {
            user.reference(&branch_ref(task), start, false, "neuraphage: the task's branch")?;
        }
        // Made aside and renamed into place, so a crash never leaves half a repository under the real name.
        let partial = git.with_extension("partial");
        if std::fs::symlink_metadata(&partial).is_ok() {
            std::fs::remove_dir_all(&partial).map_err(|e| fail(&partial.display().to_string(), e))?;
        }
        make(&user, &partial, task, start, base, depth)?;
        std::fs::rename(&partial, git).map_err(|e| fail(&git.display().to_string(), e))?;
        // An old-style task's admin folder in the user's repository is not used any more.
        let admin = user.path().join("worktrees").join(task.as_str());
        if std::fs::symlink_metadata(&admin).is_ok_and(|m| m.is_dir()) {
            let _ = std::fs::remove_dir_all(&admin);
        }
        let private = open(git)?;
        if worktree.is_dir() {
            // Its files stay; the index says what the branch holds (git compares the files' content).
            set_index(&private, start)?;
        } else {
            checkout(&private, worktree)?;
        }
    } else if !worktree.is_dir() {
        checkout(&open(git)?, worktree)?;
    }
    Ok(())
}

/// Copy `start`, its history back to `base` and `depth` commits of the base's own history from `user` into a new
/// repository at `dest`, with the branch, HEAD and `shallow` file.
fn make(user: &Repository, dest: &Path, task: &TaskId, start: Oid, base: Oid, depth: u32) -> Result<(), git2::Error> {
    let mut opts = RepositoryInitOptions::new();
    opts.bare(true).external_template(false).mkpath(true);
    let private = Repository::init_opts(dest, &opts)?;
    // libgit2's own template puts sample hooks there; the task's repository has no hooks at all.
    let _ = std::fs::remove_dir_all(dest.join("hooks"));
    let commits = history(user, start, base, depth)?;
    copy_objects(user, &private, &commits)?;
    // Commits whose parents were not copied are the shallow boundary.
    let included: HashSet<Oid> = commits.iter().copied().collect();
    let mut shallow = Vec::new();
    for id in &commits {
        if user.find_commit(*id)?.parent_ids().any(|p| !included.contains(&p)) {
            shallow.push(id.to_string());
        }
    }
    shallow.sort();
    if !shallow.is_empty() {
        std::fs::write(dest.join("shallow"), shallow.join("\n") + "\n")
            .map_err(|e| git2::Error::from_str(&format!("shallow: {e}")))?;
    }
    let private = open(dest)?;
    private.reference(&branch_ref(task), start, true, "neuraphage: the task's branch")?;
    private.set_head(&branch_ref(task))?;
    Ok(())
}

/// Copy `commits` and all their trees and blobs from `user` into `private` as one pack without deltas, written
/// straight into the private object store's pack writer (libgit2's indexer checks it and writes its index).
///
/// libgit2's PackBuilder walks every commit's whole tree and searches deltas over every object, which for a large
/// repository costs seconds each time a task starts; here each tree and blob is visited once by id (subtrees shared
/// by the commits are walked once), and each object is only zlib-deflated (fast level). The ids are listed first
/// (the pack's header holds their count); the objects are then read, deflated and written one at a time.
fn copy_objects(user: &Repository, private: &Repository, commits: &[Oid]) -> Result<(), git2::Error> {
    let objects = enumerate_objects(user, commits)?;
    let count = u32::try_from(objects.len())
        .map_err(|_| git2::Error::from_str(&format!("too many objects for one pack: {}", objects.len())))?;
    let io = |e: std::io::Error| git2::Error::from_str(&format!("writing the pack: {e}"));
    let source = user.odb()?;
    let odb = private.odb()?;
    let mut writer = odb.packwriter()?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, Hashed { inner: &mut writer, sha: Sha1::new() });
    out.write_all(b"PACK").map_err(io)?;
    out.write_all(&2u32.to_be_bytes()).map_err(io)?;
    out.write_all(&count.to_be_bytes()).map_err(io)?;
    let mut deflate = Compress::new(Compression::fast(), true);
    let mut deflated = Vec::new();
    let mut header = Vec::with_capacity(16);
    for id in &objects {
        let object = source.read(*id)?;
        let kind = match object.kind() {
            git2::ObjectType::Commit => 1u8,
            git2::ObjectType::Tree => 2,
            git2::ObjectType::Blob => 3,
            git2::ObjectType::Tag => 4,
            other => return Err(git2::Error::from_str(&format!("object {id} is of an unexpected kind {other}"))),
        };
        let data = object.data();
        object_header(kind, data.len() as u64, &mut header);
        zlib(&mut deflate, data, &mut deflated)?;
        out.write_all(&header).map_err(io)?;
        out.write_all(&deflated).map_err(io)?;
    }
    let hashed = out.into_inner().map_err(|e| io(e.into_error()))?;
    let trailer = hashed.sha.finalize();
    hashed.inner.write_all(&trailer).map_err(io)?;
    writer.commit()?;
    Ok(())
}

/// The ids of `commits` and of every tree and blob they reach, each once (a tree already seen is not walked again).
/// Gitlinks (submodules' commits) are not followed.
fn enumerate_objects(user: &Repository, commits: &[Oid]) -> Result<Vec<Oid>, git2::Error> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut trees = Vec::new();
    for id in commits {
        if !seen.insert(*id) {
            continue;
        }
        out.push(*id);
        trees.push(user.find_commit(*id)?.tree_id());
        while let Some(tree) = trees.pop() {
            if !seen.insert(tree) {
                continue;
            }
            out.push(tree);
            for entry in user.find_tree(tree)?.iter() {
                match entry.kind() {
                    Some(git2::ObjectType::Tree) if !seen.contains(&entry.id()) => trees.push(entry.id()),
                    Some(git2::ObjectType::Blob) if seen.insert(entry.id()) => out.push(entry.id()),
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

/// A pack entry's header: the kind and the inflated size, 4 bits of it in the first byte, then 7 a byte.
fn object_header(kind: u8, mut size: u64, out: &mut Vec<u8>) {
    out.clear();
    let mut byte = (kind << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size != 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
}

/// `data` zlib-deflated into `out` (replacing what it held), with `deflate` reset first.
fn zlib(deflate: &mut Compress, data: &[u8], out: &mut Vec<u8>) -> Result<(), git2::Error> {
    deflate.reset();
    out.clear();
    loop {
        out.reserve(data.len() / 2 + 64);
        let read = usize::try_from(deflate.total_in()).unwrap_or(usize::MAX).min(data.len());
        let status = deflate
            .compress_vec(&data[read..], out, FlushCompress::Finish)
            .map_err(|e| git2::Error::from_str(&format!("deflating an object: {e}")))?;
        if status == flate2::Status::StreamEnd {
            return Ok(());
        }
    }
}

/// A writer that hashes (SHA-1) everything written through it: the pack's trailer.
struct Hashed<W> {
    inner: W,
    sha: Sha1,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The commits to copy: those from `start` back to `base` (the task's own), and `base`'s ancestors up to `depth`
/// generations.
fn history(user: &Repository, start: Oid, base: Oid, depth: u32) -> Result<Vec<Oid>, git2::Error> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([(base, 0u32)]);
    if start != base {
        let mut walk = user.revwalk()?;
        walk.push(start)?;
        walk.hide(base)?;
        for id in walk {
            let id = id?;
            if seen.insert(id) {
                out.push(id);
            }
        }
    }
    while let Some((id, generation)) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        out.push(id);
        if generation < depth {
            for parent in user.find_commit(id)?.parent_ids() {
                queue.push_back((parent, generation + 1));
            }
        }
    }
    Ok(out)
}

/// Check the branch's tip out into `worktree` (a new folder) and write the private index.
fn checkout(private: &Repository, worktree: &Path) -> Result<(), git2::Error> {
    std::fs::create_dir_all(worktree).map_err(|e| git2::Error::from_str(&format!("{}: {e}", worktree.display())))?;
    private.set_workdir(worktree, false)?;
    let mut how = git2::build::CheckoutBuilder::new();
    how.force().disable_filters(true).target_dir(worktree);
    private.checkout_head(Some(&mut how))?;
    if let Some(tip) = private.head()?.target() {
        set_index(private, tip)?;
    }
    crate::worktree_seal::write_note(worktree).map_err(|e| git2::Error::from_str(&e))
}

/// Point the private index at `commit`'s tree (what the task's `git status` compares with).
pub fn set_index(private: &Repository, commit: Oid) -> Result<(), git2::Error> {
    let tree = private.find_commit(commit)?.tree()?;
    let mut index = private.index()?;
    index.read_tree(&tree)?;
    index.write()
}

/// Commit `tree` (from a checked snapshot, already in the private repository) on the task's private branch, then
/// bring it into the user's repository. `None` when the tree is the tip's.
pub fn commit_tree(
    git: &Path,
    user_repo: &Path,
    task: &TaskId,
    tree: Oid,
    message: &str,
) -> Result<Option<Oid>, git2::Error> {
    let private = open(git)?;
    let parent = private.find_reference(&branch_ref(task))?.peel_to_commit()?;
    if parent.tree_id() == tree {
        return Ok(None);
    }
    let tree = private.find_tree(tree)?;
    let sig = Signature::now(&format!("neuraphage {task}"), "neuraphage@localhost")?;
    let id = private.commit(Some(&branch_ref(task)), &sig, &sig, &clean_message(message), &tree, &[&parent])?;
    set_index(&private, id)?;
    bring_to_user(&private, user_repo, task, id)?;
    Ok(Some(id))
}

/// Copy the objects of `tip` that the user's repository lacks into it (one pack, git2, no hooks) and move its
/// `refs/heads/neuraphage/<id>` to `tip`.
pub fn bring_to_user(private: &Repository, user_repo: &Path, task: &TaskId, tip: Oid) -> Result<(), git2::Error> {
    let user = open(user_repo)?;
    let odb = user.odb()?;
    let mut missing = Vec::new();
    let mut seen = HashSet::new();
    let mut commits = vec![tip];
    while let Some(id) = commits.pop() {
        if odb.exists(id) || !seen.insert(id) {
            continue;
        }
        let commit = private.find_commit(id)?;
        missing.push(id);
        missing_tree(private, &odb, commit.tree_id(), &mut seen, &mut missing)?;
        commits.extend(commit.parent_ids());
    }
    if !missing.is_empty() {
        let mut pack = private.packbuilder()?;
        for id in &missing {
            pack.insert_object(*id, None)?;
        }
        let mut writer = odb.packwriter()?;
        let mut failed = None;
        pack.foreach(|chunk| match writer.write_all(chunk) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        })?;
        if let Some(e) = failed {
            return Err(git2::Error::from_str(&format!("writing the pack: {e}")));
        }
        writer.commit()?;
    }
    crate::worktree::clear_stale_branch_lock(user_repo, task)?;
    user.reference(&branch_ref(task), tip, true, "neuraphage: the task's work")?;
    Ok(())
}

fn missing_tree(
    private: &Repository,
    odb: &git2::Odb<'_>,
    tree: Oid,
    seen: &mut HashSet<Oid>,
    missing: &mut Vec<Oid>,
) -> Result<(), git2::Error> {
    if odb.exists(tree) || !seen.insert(tree) {
        return Ok(());
    }
    missing.push(tree);
    for entry in private.find_tree(tree)?.iter() {
        match entry.kind() {
            Some(git2::ObjectType::Tree) => missing_tree(private, odb, entry.id(), seen, missing)?,
            Some(git2::ObjectType::Blob) if !odb.exists(entry.id()) && seen.insert(entry.id()) => {
                missing.push(entry.id())
            }
            _ => {}
        }
    }
    Ok(())
}

/// Remove the task's private repository and worktree (known names under `tasks/<id>`, never paths read from a
/// file), and an old-style task's admin folder in the user's repository.
pub fn remove(git: &Path, worktree: &Path, user_repo: Option<&Path>, task: &TaskId) -> Result<(), String> {
    let admin = user_repo.and_then(|r| open(r).ok()).map(|r| r.path().join("worktrees").join(task.as_str()));
    for dir in [Some(worktree), Some(git), admin.as_deref()].into_iter().flatten() {
        match std::fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => {
                std::fs::remove_dir_all(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))?
            }
            Ok(_) => return Err(format!("{} is not a folder; left alone", dir.display())),
            Err(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user's repository with `n` commits on master (file `f` holds the commit's number), a staged file, a remote
    /// and a second branch; returns the tip.
    fn user_repo(dir: &Path, n: usize) -> Oid {
        let repo = Repository::init(dir).unwrap();
        let sig = Signature::now("t", "t@t").unwrap();
        let mut parent: Option<Oid> = None;
        for i in 0..n {
            std::fs::write(dir.join("f"), format!("{i}\n")).unwrap();
            let mut index = repo.index().unwrap();
            index.add_path(Path::new("f")).unwrap();
            index.write().unwrap();
            let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
            let parents: Vec<_> = parent.iter().map(|p| repo.find_commit(*p).unwrap()).collect();
            let refs: Vec<_> = parents.iter().collect();
            parent = Some(repo.commit(Some("HEAD"), &sig, &sig, &format!("c{i}"), &tree, &refs).unwrap());
        }
        repo.remote("origin", "https://user:TOKEN@example.com/r.git").unwrap();
        parent.unwrap()
    }

    #[test]
    fn a_private_repository_holds_the_base_and_its_history_to_the_depth_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user");
        let base = user_repo(&user, 10);
        let task = TaskId::from_bits(0x42);
        let (git, wt) = (dir.path().join("t/git"), dir.path().join("t/worktree"));
        prepare(&user, &task, &base.to_string(), 3, &git, &wt).unwrap();
        let private = open(&git).unwrap();
        let mut walk = private.revwalk().unwrap();
        walk.push_head().unwrap();
        assert_eq!(walk.count(), 4, "the base and 3 generations of its history");
        assert_eq!(std::fs::read_to_string(git.join("shallow")).unwrap().lines().count(), 1);
        assert!(private.find_remote("origin").is_err(), "no remote of the user's");
        assert_eq!(private.head().unwrap().name().ok(), Some("refs/heads/neuraphage/np-0000000042"));
        assert_eq!(std::fs::read_to_string(wt.join("f")).unwrap(), "9\n");
        assert_eq!(std::fs::read_to_string(wt.join(".git")).unwrap(), GITFILE_NOTE);
        assert!(git.join("index").is_file(), "the private index is written");
        assert!(!git.join("hooks").exists(), "no hooks");
        // A commit made from a tree reaches the user's branch; the user's checkout and master do not move.
        let blob = private.blob(b"work\n").unwrap();
        let mut tb = private.treebuilder(None).unwrap();
        tb.insert("work.txt", blob, 0o100644).unwrap();
        let tree = tb.write().unwrap();
        let id = commit_tree(&git, &user, &task, tree, "work\x1b[31m red\x07\n\tdone").unwrap().unwrap();
        assert!(commit_tree(&git, &user, &task, tree, "again").unwrap().is_none(), "nothing new");
        let u = open(&user).unwrap();
        let tip = u.find_reference("refs/heads/neuraphage/np-0000000042").unwrap().peel_to_commit().unwrap();
        assert_eq!(tip.id(), id);
        assert_eq!(tip.message().ok(), Some("work[31m red\n\tdone"), "control characters are stripped");
        assert_eq!(u.head().unwrap().peel_to_commit().unwrap().id(), base);
        // Made again (resume of a task whose private repository is gone): from the user's branch.
        remove(&git, &wt, Some(&user), &task).unwrap();
        assert!(!git.exists() && !wt.exists());
        prepare(&user, &task, &base.to_string(), 0, &git, &wt).unwrap();
        assert_eq!(std::fs::read_to_string(wt.join("work.txt")).unwrap(), "work\n");
        assert_eq!(open(&git).unwrap().head().unwrap().target(), Some(id));
    }

    #[test]
    fn every_object_of_the_copied_history_is_in_the_private_repository_and_git_log_works() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user");
        let repo = Repository::init(&user).unwrap();
        let sig = Signature::now("t", "t@t").unwrap();
        let mut parent: Option<Oid> = None;
        // Nested folders, a subtree shared by every commit (`same`), an empty file and a large one (sizes that need
        // several bytes of a pack entry's header), a file changed by each commit.
        std::fs::create_dir_all(user.join("same/deep")).unwrap();
        std::fs::create_dir_all(user.join("a/b")).unwrap();
        std::fs::write(user.join("same/deep/x.txt"), "shared\n").unwrap();
        std::fs::write(user.join("same/empty"), "").unwrap();
        let big: String = (0..200_000).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        std::fs::write(user.join("same/big"), big).unwrap();
        for i in 0..12 {
            std::fs::write(user.join(format!("a/b/c{}.txt", i % 4)), format!("{i}\n")).unwrap();
            std::fs::write(user.join("top"), format!("top {i}\n")).unwrap();
            let mut index = repo.index().unwrap();
            index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
            index.write().unwrap();
            let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
            let parents: Vec<_> = parent.iter().map(|p| repo.find_commit(*p).unwrap()).collect();
            let refs: Vec<_> = parents.iter().collect();
            parent = Some(repo.commit(Some("HEAD"), &sig, &sig, &format!("c{i}"), &tree, &refs).unwrap());
        }
        let base = parent.unwrap();
        let task = TaskId::from_bits(0x43);
        let (git, wt) = (dir.path().join("t/git"), dir.path().join("t/worktree"));
        prepare(&user, &task, &base.to_string(), 5, &git, &wt).unwrap();
        let private = open(&git).unwrap();
        let (from, to) = (repo.odb().unwrap(), private.odb().unwrap());
        let expected = enumerate_objects(&repo, &history(&repo, base, base, 5).unwrap()).unwrap();
        let unique: HashSet<Oid> = expected.iter().copied().collect();
        assert_eq!(unique.len(), expected.len(), "each object listed once");
        assert_eq!(expected.iter().filter(|id| repo.find_commit(**id).is_ok()).count(), 6);
        for id in &expected {
            let (a, b) = (from.read(*id).unwrap(), to.read(*id).unwrap());
            assert_eq!((a.kind(), a.data()), (b.kind(), b.data()), "{id}");
        }
        // Every tree and blob that the copied commits reach is there (not only those listed).
        let mut walk = private.revwalk().unwrap();
        walk.push_head().unwrap();
        let mut commits = 0;
        for id in walk {
            commits += 1;
            let tree = private.find_commit(id.unwrap()).unwrap().tree().unwrap();
            tree.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
                assert!(to.read(entry.id()).is_ok(), "{} is in the private repository", entry.id());
                git2::TreeWalkResult::Ok
            })
            .unwrap();
        }
        assert_eq!(commits, 6, "the base and 5 generations of its history");
        let git_dir = format!("--git-dir={}", git.display());
        let log = std::process::Command::new("git").args([git_dir.as_str(), "log", "--format=%s"]).output().unwrap();
        assert!(log.status.success(), "git log: {}", String::from_utf8_lossy(&log.stderr));
        assert_eq!(String::from_utf8(log.stdout).unwrap(), "c11\nc10\nc9\nc8\nc7\nc6\n");
        let fsck = std::process::Command::new("git").args([git_dir.as_str(), "fsck", "--full"]).output().unwrap();
        assert!(fsck.status.success(), "git fsck: {}", String::from_utf8_lossy(&fsck.stderr));
        assert_eq!(std::fs::read_to_string(wt.join("a/b/c3.txt")).unwrap(), "11\n");
    }

    #[test]
    fn commit_messages_are_cleaned_and_bounded() {
        assert_eq!(clean_message("a\u{1b}]0;x\u{7}b\r\nc\u{9b}"), "a]0;xb\nc");
        assert_eq!(clean_message("\u{1b}"), "Work of a Neuraphage task");
        assert_eq!(clean_message(&"é".repeat(MAX_COMMIT_MESSAGE)).len(), MAX_COMMIT_MESSAGE);
    }
}
