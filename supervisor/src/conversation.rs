//! A task's conversation repository: `tasks/<id>/conversation`, one git commit of `messages.json` per checkpoint.
//!
//! Only the supervisor writes it (workers send checkpoints over their link); each commit is made before the
//! checkpoint is acknowledged.

use std::path::{Path, PathBuf};

use git2::{Repository, Signature};
use neuraphage_ipc::llm::Message;

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
}
