//! The knowledge store on the wire (issue 17): what `neuraphage knowledge …` asks and is told, and what the `Learn`
//! tool sends. Learnings are Markdown files with YAML front matter under `$NEURAPHAGE_HOME/knowledge/`; the
//! supervisor keeps an FTS5 index over them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::task::TaskId;

/// Longest title of a learning.
pub const MAX_TITLE_BYTES: usize = 200;
/// Longest body of a learning.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Most tags on a learning, and the longest tag.
pub const MAX_TAGS: usize = 16;
/// Longest tag.
pub const MAX_TAG_BYTES: usize = 40;
/// Most files a learning names, and the longest path.
pub const MAX_FILES: usize = 32;
/// Longest file path a learning names.
pub const MAX_FILE_BYTES: usize = 512;
/// Longest search query.
pub const MAX_QUERY_BYTES: usize = 1024;

/// A learning or a decision, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Learning {
    /// Its id (also its file name without `.md`).
    pub id: String,
    /// `learning` or `decision`.
    pub kind: String,
    /// One line.
    pub title: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The task it came from, if any.
    pub source_task: Option<String>,
    /// The repository it concerns, if any.
    pub repository: Option<String>,
    /// Files it concerns (relative to the repository).
    pub files: Vec<String>,
    /// When it was first recorded.
    pub created: DateTime<Utc>,
    /// 0 to 1: how sure the recorder was (an explicit `Learn` call: 0.9; keyword extraction: 0.4).
    pub confidence: f64,
    /// The Markdown body.
    pub body: String,
    /// Where its file is.
    pub path: String,
}

/// What a new learning says (the `Learn` tool's input, `knowledge add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewLearning {
    /// `learning` (default) or `decision`.
    #[serde(default)]
    pub kind: Option<String>,
    /// One line.
    pub title: String,
    /// The Markdown body.
    pub body: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Files it concerns.
    #[serde(default)]
    pub files: Vec<String>,
    /// The repository it concerns (`knowledge add --repo`; the `Learn` tool's is its task's).
    #[serde(default)]
    pub repository: Option<String>,
}

/// How a `Learn` call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LearnResult {
    /// Its file is written and indexed.
    Recorded {
        /// The learning's id.
        id: String,
        /// True when an existing, near-identical learning was updated instead of a new one added.
        updated: bool,
    },
    /// Refused or failed; nothing was written.
    Failed {
        /// Why.
        error: String,
    },
}

/// A file under `knowledge/` that could not be read (skipped, never fatal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The file.
    pub path: String,
    /// Why.
    pub why: String,
}

/// A learning relayed by the Syncer from one running task to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relay {
    /// The learning.
    pub learning: String,
    /// The task that recorded it.
    pub from: TaskId,
    /// The task it was relayed to.
    pub to: TaskId,
    /// The relevance score that passed `relay-threshold`.
    pub score: f64,
    /// The advice's inbox id in the receiving task.
    pub inbox: u64,
    /// When.
    pub at: DateTime<Utc>,
}

/// `neuraphage knowledge …`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnowledgeRequest {
    /// Every learning (bodies included), and the files skipped.
    List,
    /// One learning.
    Show {
        /// Its id.
        id: String,
    },
    /// Full-text search.
    Search {
        /// Words to look for.
        query: String,
        /// Only learnings of this repository weigh more.
        repository: Option<String>,
    },
    /// Record a learning by hand.
    Add(NewLearning),
    /// Delete a learning's file (and its index entry).
    Remove {
        /// Its id.
        id: String,
    },
    /// The Syncer's relays, newest first.
    Relays,
}

/// A search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// Higher is better: bm25 with the repository and file overlap weighted.
    pub score: f64,
    /// The learning.
    pub learning: Learning,
}

/// The supervisor's answers to [`KnowledgeRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnowledgeReply {
    /// Answer to `List`.
    Learnings {
        /// The learnings, oldest first.
        learnings: Vec<Learning>,
        /// Files skipped, with why.
        skipped: Vec<Skipped>,
    },
    /// Answer to `Show`.
    Learning(Box<Learning>),
    /// Answer to `Search`, best first.
    Hits {
        /// The hits.
        hits: Vec<Hit>,
    },
    /// Answer to `Add`.
    Added {
        /// The id.
        id: String,
        /// An existing near-identical learning was updated.
        updated: bool,
    },
    /// Answer to `Remove`.
    Removed {
        /// The id.
        id: String,
    },
    /// Answer to `Relays`.
    Relays {
        /// The relays, newest first.
        relays: Vec<Relay>,
    },
}
