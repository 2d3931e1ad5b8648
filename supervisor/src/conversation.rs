//! A task's conversation repository: `tasks/<id>/conversation`, one git commit per checkpoint.
//!
//! Only the supervisor writes it (workers send checkpoints over their link); each commit is made before the
//! checkpoint is acknowledged.
//!
//! Layout of a commit's tree: one blob per message, fanned out by thousands, `messages/0000/000123.json` for message
//! 123. A checkpoint adds a message or two to a conversation whose earlier messages are unchanged, so their blobs and
//! the full buckets' trees are shared with the previous commit: storage grows with what is added, not with the square
//! of the conversation (which one `messages.json` rewritten at every checkpoint did). Commits made before this layout
//! hold the whole conversation in `messages.json`; they are still read, so tasks made then resume.

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

/// File holding the whole conversation in commits made before the per-message layout (still read).
pub const MESSAGES_FILE: &str = "messages.json";

/// Folder of the per-message layout in each commit's tree.
pub const MESSAGES_DIR: &str = "messages";

/// Messages per bucket folder of [`MESSAGES_DIR`].
const BUCKET: usize = 1000;

/// Most messages a conversation may hold (the names' digits: 10 000 buckets of [`BUCKET`]).
pub const MAX_MESSAGES: usize = 10_000 * BUCKET;

/// The bucket folder and file name of message `index`.
fn message_path(index: usize) -> (String, String) {
    (format!("{:04}", index / BUCKET), format!("{index:06}.json"))
}

/// Parse one JSON object of a conversation commit, saying which on error.
fn parse<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, git2::Error> {
    serde_json::from_slice(bytes).map_err(|e| git2::Error::from_str(&format!("{what}: {e}")))
}

/// An open conversation repository.
pub struct Conversation {
    repo: Repository,
}

impl Conversation {
    /// Open the repository in `dir`, creating it if needed.
    pub fn open(dir: &Path) -> Result<Conversation, git2::Error> {
        let repo = match Repository::open(dir) {
            Ok(r) => r,
            Err(_) => Repository::init(dir)?,
        };
        Ok(Conversation { repo })
    }

    /// Open an existing conversation repository to read it, never making one (a reader racing the session that
    /// makes it must not write the repository's config too).
    pub fn open_existing(dir: &Path) -> Result<Conversation, git2::Error> {
        Ok(Conversation { repo: Repository::open(dir)? })
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

    /// Commit the conversation (one blob per message, see the module's doc) with `summary` as the commit message;
    /// returns the commit id. Messages whose blob the previous commit already holds are not written again.
    pub fn commit(&self, messages: &[Message], summary: &str) -> Result<String, git2::Error> {
        if messages.len() > MAX_MESSAGES {
            return Err(git2::Error::from_str(&format!(
                "the conversation has {} messages, more than the {MAX_MESSAGES} it may hold",
                messages.len()
            )));
        }
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let previous = parent.as_ref().and_then(|c| c.tree().ok()).and_then(|t| {
            let id = t.get_name(MESSAGES_DIR)?.id();
            self.repo.find_tree(id).ok()
        });
        let mut dir = self.repo.treebuilder(None)?;
        for (b, chunk) in messages.chunks(BUCKET).enumerate() {
            let (bucket_name, _) = message_path(b * BUCKET);
            let old_bucket = previous.as_ref().and_then(|t| self.repo.find_tree(t.get_name(&bucket_name)?.id()).ok());
            let mut bucket = self.repo.treebuilder(None)?;
            for (i, message) in chunk.iter().enumerate() {
                let (_, name) = message_path(b * BUCKET + i);
                let json = serde_json::to_vec(message).map_err(|e| git2::Error::from_str(&e.to_string()))?;
                let hash = git2::Oid::hash_object(git2::ObjectType::Blob, &json)?;
                let shared = old_bucket.as_ref().and_then(|t| t.get_name(&name)).is_some_and(|e| e.id() == hash);
                let blob = if shared { hash } else { self.repo.blob(&json)? };
                bucket.insert(&name, blob, 0o100644)?;
            }
            // Writing a tree git already holds stores nothing new.
            dir.insert(&bucket_name, bucket.write()?, 0o040000)?;
        }
        let mut root = self.repo.treebuilder(None)?;
        root.insert(MESSAGES_DIR, dir.write()?, 0o040000)?;
        let tree = self.repo.find_tree(root.write()?)?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let sig = Signature::now("neuraphage", "neuraphage@localhost")?;
        Ok(self.repo.commit(Some("HEAD"), &sig, &sig, summary, &tree, &parents)?.to_string())
    }

    /// The conversation as of the last commit (empty if there is none).
    pub fn messages(&self) -> Result<Vec<Message>, git2::Error> {
        let Ok(head) = self.repo.head() else { return Ok(Vec::new()) };
        self.messages_of(&head.peel_to_tree()?)
    }

    /// The conversation held by `tree`, in either layout.
    fn messages_of(&self, tree: &git2::Tree<'_>) -> Result<Vec<Message>, git2::Error> {
        if let Some(entry) = tree.get_name(MESSAGES_FILE) {
            return parse(MESSAGES_FILE, self.repo.find_blob(entry.id())?.content());
        }
        let entry = tree.get_name(MESSAGES_DIR).ok_or_else(|| git2::Error::from_str("the commit has no messages"))?;
        let dir = self.repo.find_tree(entry.id())?;
        let mut messages = Vec::new();
        // Entries are sorted by name, and the names are zero-padded: their order is the conversation's.
        for bucket in dir.iter() {
            let found_bucket = bucket.name().unwrap_or("?").to_owned();
            let bucket = self.repo.find_tree(bucket.id())?;
            for entry in bucket.iter() {
                let name = entry.name().unwrap_or("?");
                let (bucket_name, expected) = message_path(messages.len());
                if found_bucket != bucket_name || name != expected || messages.len() >= MAX_MESSAGES {
                    return Err(git2::Error::from_str(&format!(
                        "{MESSAGES_DIR}/{found_bucket}/{name} where {MESSAGES_DIR}/{bucket_name}/{expected} was expected"
                    )));
                }
                messages.push(parse(name, self.repo.find_blob(entry.id())?.content())?);
            }
        }
        Ok(messages)
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
            let readable = commit.as_ref().ok().and_then(|c| self.messages_of(&c.tree().ok()?).ok());
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
        let tree = conv.repo.head().unwrap().peel_to_tree().unwrap();
        let blob = tree.get_path(Path::new("messages/0000/000000.json")).unwrap().id().to_string();
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
    fn a_commit_of_the_old_layout_is_read_and_the_next_commit_uses_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let conv = Conversation::open(dir.path()).unwrap();
        let old = vec![Message::user_text("from before"), Message::user_text("the change")];
        // A commit as the supervisor made them before: the whole conversation in messages.json.
        let blob = conv.repo.blob(&serde_json::to_vec_pretty(&old).unwrap()).unwrap();
        let mut root = conv.repo.treebuilder(None).unwrap();
        root.insert(MESSAGES_FILE, blob, 0o100644).unwrap();
        let tree = conv.repo.find_tree(root.write().unwrap()).unwrap();
        let sig = Signature::now("t", "t@localhost").unwrap();
        conv.repo
            .commit(Some("HEAD"), &sig, &sig, "request_sent #1\n\n{\"kind\":\"request_sent\"}\n", &tree, &[])
            .unwrap();
        assert_eq!(conv.messages().unwrap(), old);
        assert_eq!(conv.repair().unwrap(), None);
        let mut more = old.clone();
        more.push(Message::user_text("resumed"));
        conv.commit(&more, "two").unwrap();
        assert_eq!(conv.messages().unwrap(), more);
        let tree = conv.repo.head().unwrap().peel_to_tree().unwrap();
        assert!(tree.get_name(MESSAGES_FILE).is_none() && tree.get_name(MESSAGES_DIR).is_some());
    }

    #[test]
    fn a_checkpoint_writes_only_the_new_message_and_its_trees() {
        let dir = tempfile::tempdir().unwrap();
        let conv = Conversation::open(dir.path()).unwrap();
        // Over a bucket's worth, so that a full bucket is shared too.
        let mut messages: Vec<Message> = (0..BUCKET + 5).map(|i| Message::user_text(format!("m{i}"))).collect();
        conv.commit(&messages, "one").unwrap();
        let count = |conv: &Conversation| {
            let mut n = 0;
            conv.repo
                .odb()
                .unwrap()
                .foreach(|_| {
                    n += 1;
                    true
                })
                .unwrap();
            n
        };
        let before = count(&conv);
        messages.push(Message::user_text("new"));
        conv.commit(&messages, "two").unwrap();
        // The new message's blob, its bucket, the messages folder, the root tree and the commit.
        assert_eq!(count(&conv) - before, 5);
        assert_eq!(conv.messages().unwrap(), messages);
        // A conversation that was rewritten (not only appended to) is stored as it is.
        messages.remove(0);
        conv.commit(&messages, "three").unwrap();
        assert_eq!(conv.messages().unwrap(), messages);
    }

    #[test]
    fn a_compacted_conversation_is_the_new_trees_whole_content_and_the_log_keeps_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let conv = Conversation::open(dir.path()).unwrap();
        // Over a bucket, so a whole bucket must go too.
        let long: Vec<Message> = (0..BUCKET + 20).map(|i| Message::user_text(format!("turn {i}"))).collect();
        conv.commit(&long, "tool_completed #1").unwrap();
        let compacted = vec![
            Message::user_text("turn 0"),
            Message::user_text("Summary of the earlier work: …"),
            long[BUCKET + 19].clone(),
        ];
        conv.commit(&compacted, "compacted #2").unwrap();
        assert_eq!(conv.messages().unwrap(), compacted);
        // Exactly the new list in the tree: no stale message blob or bucket left from before.
        let tree = conv.repo.head().unwrap().peel_to_tree().unwrap();
        let mut paths = Vec::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
            if entry.kind() == Some(git2::ObjectType::Blob) {
                paths.push(format!("{root}{}", entry.name().unwrap()));
            }
            git2::TreeWalkResult::Ok
        })
        .unwrap();
        assert_eq!(paths, ["messages/0000/000000.json", "messages/0000/000001.json", "messages/0000/000002.json"]);
        // The log still holds the whole conversation before the compaction.
        let head = conv.repo.head().unwrap().peel_to_commit().unwrap();
        let before = head.parent(0).unwrap();
        assert_eq!(conv.messages_of(&before.tree().unwrap()).unwrap(), long);
        assert_eq!(conv.commit_count().unwrap(), 2);
        // And the conversation goes on from the compacted list.
        let mut more = compacted.clone();
        more.push(Message::user_text("after"));
        conv.commit(&more, "request_sent #3").unwrap();
        assert_eq!(Conversation::open(dir.path()).unwrap().messages().unwrap(), more);
    }

    #[test]
    fn a_tree_with_a_gap_in_its_messages_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let conv = Conversation::open(dir.path()).unwrap();
        conv.commit(&[Message::user_text("a"), Message::user_text("b")], "one").unwrap();
        let head = conv.repo.head().unwrap().peel_to_tree().unwrap();
        let messages = conv.repo.find_tree(head.get_name(MESSAGES_DIR).unwrap().id()).unwrap();
        let bucket = conv.repo.find_tree(messages.get_name("0000").unwrap().id()).unwrap();
        let mut gap = conv.repo.treebuilder(Some(&bucket)).unwrap();
        gap.remove("000000.json").unwrap();
        let mut dir_b = conv.repo.treebuilder(Some(&messages)).unwrap();
        dir_b.insert("0000", gap.write().unwrap(), 0o040000).unwrap();
        let mut root = conv.repo.treebuilder(Some(&head)).unwrap();
        root.insert(MESSAGES_DIR, dir_b.write().unwrap(), 0o040000).unwrap();
        let tree = conv.repo.find_tree(root.write().unwrap()).unwrap();
        let err = conv.messages_of(&tree).unwrap_err();
        assert!(err.message().contains("000001.json where messages/0000/000000.json"), "{err}");
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
