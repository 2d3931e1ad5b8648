//! A task's conversation repository: `tasks/<id>/conversation`, one git commit of `messages.json` per checkpoint.
//!
//! Only the supervisor writes it (workers send checkpoints over their link); each commit is made before the
//! checkpoint is acknowledged.

use std::path::{Path, PathBuf};

use git2::{Repository, Signature};
use neuraphage_ipc::llm::Message;

/// Ask libgit2 to fsync every object, ref and index it writes (and their folders), process-wide: a commit made
/// before an acknowledgement must survive a power loss. Call once at start, before any git operation.
pub fn enable_fsync() {
    // git2 has no safe wrapper for this option.
    let option = libgit2_sys::GIT_OPT_ENABLE_FSYNC_GITDIR as std::ffi::c_int;
    // SAFETY: git_libgit2_opts with GIT_OPT_ENABLE_FSYNC_GITDIR takes exactly one int argument, as passed; it only
    // sets a global flag. libgit2 is initialised by git2 before any use, and this runs before other threads use it.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libgit2_sys::init();
        libgit2_sys::git_libgit2_opts(option, 1 as std::ffi::c_int)
    };
    if rc != 0 {
        tracing::warn!(rc, "libgit2 refused to enable fsync; git writes are not synced");
    }
}

/// The commit message of a checkpoint: `kind #seq`, then the kind as JSON (read back by [`Conversation::last_kind`]).
pub fn commit_message(cp: &neuraphage_ipc::worker::Checkpoint) -> String {
    let kind = serde_json::to_string(&cp.kind).unwrap_or_default();
    format!("{} #{}\n\n{kind}\n", cp.kind.name(), cp.seq)
}

/// File holding the conversation in each commit.
pub const MESSAGES_FILE: &str = "messages.json";

/// An open conversation repository.
pub struct Conversation {
    repo: Repository,
    dir: PathBuf,
}

impl Conversation {
    /// Open the repository in `dir`, creating it if needed.
    pub fn open(dir: &Path) -> Result<Conversation, git2::Error> {
        let repo = match Repository::open(dir) {
            Ok(r) => r,
            Err(_) => Repository::init(dir)?,
        };
        Ok(Conversation { repo, dir: dir.to_path_buf() })
    }

    /// Remove lock files a killed supervisor left in the repository (`HEAD.lock`, `index.lock`, `refs/**.lock`).
    /// Only the supervisor writes a conversation, and only one session of a task runs at a time, so at the start of
    /// a session any lock is stale. Returns the locks removed.
    pub fn clear_stale_locks(&self) -> Vec<PathBuf> {
        let git = self.repo.path().to_path_buf();
        let mut found = Vec::new();
        let mut dirs = vec![git.clone(), git.join("refs")];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else { continue };
                if kind.is_dir() && path.starts_with(git.join("refs")) {
                    dirs.push(path);
                } else if kind.is_file() && path.extension().is_some_and(|e| e == "lock") {
                    found.push(path);
                }
            }
        }
        found.retain(|p| std::fs::remove_file(p).is_ok());
        found
    }

    /// Commit the conversation as `messages.json` with `summary` as the commit message; returns the commit id.
    pub fn commit(&self, messages: &[Message], summary: &str) -> Result<String, git2::Error> {
        let json = serde_json::to_vec_pretty(messages).map_err(|e| git2::Error::from_str(&e.to_string()))?;
        // The working copy mirrors the last commit so a person can read it; the commit is what counts.
        let tmp = self.dir.join(format!(".{MESSAGES_FILE}.tmp"));
        std::fs::write(&tmp, &json).and_then(|()| std::fs::rename(&tmp, self.dir.join(MESSAGES_FILE))).map_err(
            |e| git2::Error::from_str(&format!("cannot write {}: {e}", self.dir.join(MESSAGES_FILE).display())),
        )?;
        let blob = self.repo.blob(&json)?;
        let mut builder = self.repo.treebuilder(None)?;
        builder.insert(MESSAGES_FILE, blob, 0o100644)?;
        let tree = self.repo.find_tree(builder.write()?)?;
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let sig = Signature::now("neuraphage", "neuraphage@localhost")?;
        Ok(self.repo.commit(Some("HEAD"), &sig, &sig, summary, &tree, &parents)?.to_string())
    }

    /// The conversation as of the last commit (empty if there is none).
    pub fn messages(&self) -> Result<Vec<Message>, git2::Error> {
        let Ok(head) = self.repo.head() else { return Ok(Vec::new()) };
        let tree = head.peel_to_tree()?;
        let entry = tree.get_name(MESSAGES_FILE).ok_or_else(|| git2::Error::from_str("messages.json is missing"))?;
        let blob = self.repo.find_blob(entry.id())?;
        serde_json::from_slice(blob.content()).map_err(|e| git2::Error::from_str(&format!("messages.json: {e}")))
    }

    /// The checkpoint kind recorded in the last commit's message (see [`commit_message`]), if any.
    pub fn last_kind(&self) -> Option<neuraphage_ipc::worker::CheckpointKind> {
        let head = self.repo.head().ok()?.peel_to_commit().ok()?;
        let message = head.message().ok()?;
        serde_json::from_str(message.split_once("\n\n")?.1.trim()).ok()
    }

    /// If the last commit cannot be read back (a torn write after a power loss, a damaged object), move HEAD back to
    /// the newest commit that can, and say which commits were dropped: `Ok(None)` when nothing needed repair.
    pub fn repair(&self) -> Result<Option<String>, git2::Error> {
        if self.messages().is_ok() {
            return Ok(None);
        }
        let head = self.repo.head()?.target().ok_or_else(|| git2::Error::from_str("HEAD has no target"))?;
        let mut at = head;
        let mut dropped = 0;
        loop {
            let commit = self.repo.find_commit(at);
            let readable = commit.as_ref().ok().and_then(|c| {
                let tree = c.tree().ok()?;
                let blob = self.repo.find_blob(tree.get_name(MESSAGES_FILE)?.id()).ok()?;
                serde_json::from_slice::<Vec<Message>>(blob.content()).ok()
            });
            if readable.is_some() {
                let refname = self.repo.head()?.name().unwrap_or("refs/heads/master").to_owned();
                self.repo.reference(&refname, at, true, "neuraphage: repaired after a damaged commit")?;
                return Ok(Some(format!("moved back {dropped} commit(s) from {head} to {at}")));
            }
            dropped += 1;
            match commit.ok().and_then(|c| c.parent_id(0).ok()) {
                Some(parent) => at = parent,
                None => return Err(git2::Error::from_str("no commit of the conversation can be read")),
            }
        }
    }

    /// Number of commits on HEAD.
    pub fn commit_count(&self) -> Result<usize, git2::Error> {
        let mut walk = self.repo.revwalk()?;
        if walk.push_head().is_err() {
            return Ok(0);
        }
        Ok(walk.count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let conv = Conversation::open(dir.path()).unwrap();
        assert!(conv.messages().unwrap().is_empty());
        let msgs = vec![Message::user_text("hello")];
        conv.commit(&msgs, "request_sent").unwrap();
        let mut more = msgs.clone();
        more.push(Message::user_text("again"));
        conv.commit(&more, "response_received").unwrap();
        let reopened = Conversation::open(dir.path()).unwrap();
        assert_eq!(reopened.messages().unwrap(), more);
        assert_eq!(reopened.commit_count().unwrap(), 2);
    }

    #[test]
    fn a_damaged_last_commit_is_repaired_back_to_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let conv = Conversation::open(dir.path()).unwrap();
        let good = vec![Message::user_text("kept")];
        conv.commit(&good, "one").unwrap();
        conv.commit(&[Message::user_text("torn")], "two").unwrap();
        assert_eq!(conv.repair().unwrap(), None, "nothing to repair");
        // Tear the last commit's messages.json object, as a write cut by a power loss would.
        let blob = conv.repo.head().unwrap().peel_to_tree().unwrap().get_name(MESSAGES_FILE).unwrap().id().to_string();
        let object = dir.path().join(".git/objects").join(&blob[..2]).join(&blob[2..]);
        std::fs::set_permissions(&object, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::write(&object, b"torn").unwrap();
        assert!(conv.messages().is_err(), "the control: the damage is visible");
        let report = conv.repair().unwrap().unwrap();
        assert!(report.contains("moved back 1 commit"), "{report}");
        assert_eq!(conv.messages().unwrap(), good);
        conv.commit(&[Message::user_text("after")], "three").unwrap();
    }

    #[test]
    fn a_stale_lock_from_a_killed_writer_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let conv = Conversation::open(dir.path()).unwrap();
        conv.commit(&[Message::user_text("a")], "one").unwrap();
        std::fs::write(dir.path().join(".git/refs/heads/master.lock"), "").unwrap();
        assert!(conv.commit(&[Message::user_text("b")], "two").is_err(), "the control: a stale lock blocks commits");
        assert_eq!(conv.clear_stale_locks().len(), 1);
        conv.commit(&[Message::user_text("b")], "two").unwrap();
    }
}
