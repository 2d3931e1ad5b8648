//! What one task learns, the others know (issue 17): the knowledge store and what feeds and reads it.
//!
//! - [`files`]: the Markdown + YAML files under `$NEURAPHAGE_HOME/knowledge/`, the truth (atomic writes, bounded
//!   reads, malformed files skipped with their path).
//! - [`index`]: the FTS5 index in the store, rebuilt from the files at start and rescanned (mtime and size, no file
//!   opened unless it changed) before every search and injection; search, recording with de-duplication.
//! - [`extract`]: learnings found in a conversation after a task ends and at compactions: keyword triggers pick
//!   passages, the router tier refines them (`keyword` | `llm` | `hybrid`), off the request path.
//! - [`inject`]: the top learnings for a task, framed as data from earlier tasks, for its system prompt.
//! - [`syncer`]: a learning recorded while other tasks run is scored against each and relayed as advice.
//!
//! Why a rescan and not a `notify` watcher: the rescan is a `readdir` and one `stat` per file, ~10 ms for 10 000
//! files, runs only when something reads the index, cannot miss an event (a watcher's queue overflows, and edits
//! made while the supervisor is down are never seen), and needs no thread.

pub mod extract;
pub mod files;
pub mod index;
pub mod inject;
pub mod syncer;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use neuraphage_ipc::TaskId;
use serde::Deserialize;

/// How learnings are extracted from conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Extraction {
    /// Keyword triggers only (no model call).
    Keyword,
    /// Keyword triggers pick passages, the router tier refines them; nothing is kept when it cannot.
    Llm,
    /// As `llm`, but the keyword passages are kept when the router tier is down.
    Hybrid,
    /// No extraction.
    Off,
}

/// The `knowledge:` block of `neuraphage.yaml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct KnowledgeConfig {
    /// `keyword`, `llm`, `hybrid` (default) or `off`.
    pub extraction: Extraction,
    /// Put relevant learnings in each task's system prompt.
    pub inject: bool,
    /// Most learnings injected.
    pub inject_count: usize,
    /// Most bytes of injected knowledge.
    pub inject_max_bytes: usize,
    /// Relay a learning to a running task whose relevance score (0 to 1) reaches this.
    pub relay_threshold: f64,
    /// Most relays a task receives per hour.
    pub rate_limit: usize,
    /// Seconds the router tier has to refine one passage.
    pub router_within_secs: u64,
}

impl Default for KnowledgeConfig {
    fn default() -> KnowledgeConfig {
        KnowledgeConfig {
            extraction: Extraction::Hybrid,
            inject: true,
            inject_count: 5,
            inject_max_bytes: 6 * 1024,
            relay_threshold: 0.5,
            rate_limit: 10,
            router_within_secs: 60,
        }
    }
}

/// The knowledge store's state in the supervisor.
#[derive(Debug)]
pub struct Knowledge {
    root: PathBuf,
    /// Serialises rescans and writes (the index follows the files in one order).
    pub(crate) lock: Mutex<()>,
    /// Relays each task received in the last hour (the Syncer's rate limit).
    relayed: Mutex<HashMap<TaskId, VecDeque<Instant>>>,
    /// Learnings each task recorded in this run ([`MAX_RECORDED_PER_TASK`]).
    recorded: Mutex<HashMap<TaskId, usize>>,
}

impl Knowledge {
    /// The store of `home`.
    pub fn new(home: &Path) -> Knowledge {
        Knowledge {
            root: files::root(home),
            lock: Mutex::new(()),
            relayed: Mutex::default(),
            recorded: Mutex::default(),
        }
    }

    /// The knowledge folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// May `task` record one more learning? If so, it is counted.
    pub(crate) fn take_record(&self, task: &TaskId) -> bool {
        let mut map = self.recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(task.clone()).or_default();
        *n += 1;
        *n <= MAX_RECORDED_PER_TASK
    }

    /// May `task` receive one more relay now (`limit` an hour)? If so, it is counted.
    pub(crate) fn take_relay(&self, task: &TaskId, limit: usize) -> bool {
        let mut map = self.relayed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let sent = map.entry(task.clone()).or_default();
        let hour = std::time::Duration::from_secs(3600);
        while sent.front().is_some_and(|t| t.elapsed() > hour) {
            sent.pop_front();
        }
        if sent.len() >= limit {
            return false;
        }
        sent.push_back(Instant::now());
        true
    }
}

/// Most learnings `knowledge list` returns.
pub const MAX_LISTED: usize = 20_000;

/// Bytes of each body `knowledge list` returns.
pub const LISTED_BODY_BYTES: usize = 1024;

/// Most learnings one task may record in one supervisor run (its `Learn` calls and its extractions).
pub const MAX_RECORDED_PER_TASK: usize = 200;

/// Answer `neuraphage knowledge …` (blocking: the store and the files).
pub fn answer(
    daemon: &crate::requests::Daemon,
    request: neuraphage_ipc::knowledge::KnowledgeRequest,
) -> crate::error::Result<neuraphage_ipc::knowledge::KnowledgeReply> {
    use neuraphage_ipc::ErrorCode;
    use neuraphage_ipc::knowledge::{KnowledgeReply, KnowledgeRequest, MAX_QUERY_BYTES};

    use crate::error::SupervisorError;
    let k = &daemon.knowledge;
    let bad_id = |id: &str| {
        SupervisorError::refused(
            ErrorCode::InvalidArgument,
            format!("{:?} is not a learning id (1 to 64 of a-z, 0-9 and -)", files::cut(id, 80)),
        )
    };
    let missing = |id: &str| SupervisorError::refused(ErrorCode::NotFound, format!("no learning {id}"));
    Ok(match request {
        KnowledgeRequest::List => {
            let skipped = index::rescan(k, daemon)?;
            // Bodies cut (`show` has them whole), so the reply stays far under its frame limit.
            let mut learnings = daemon.with_store(|s| s.knowledge_all())?;
            learnings.truncate(MAX_LISTED);
            for l in &mut learnings {
                if l.body.len() > LISTED_BODY_BYTES {
                    let mut at = LISTED_BODY_BYTES;
                    while !l.body.is_char_boundary(at) {
                        at -= 1;
                    }
                    l.body.truncate(at);
                    l.body.push_str(" […]");
                }
            }
            KnowledgeReply::Learnings { learnings, skipped }
        }
        KnowledgeRequest::Show { id } => {
            if !files::valid_id(&id) {
                return Err(bad_id(&id));
            }
            index::rescan(k, daemon)?;
            let l = daemon.with_store(|s| s.knowledge_get(&id))?.ok_or_else(|| missing(&id))?;
            KnowledgeReply::Learning(Box::new(l))
        }
        KnowledgeRequest::Search { query, repository } => {
            if query.len() > MAX_QUERY_BYTES {
                return Err(SupervisorError::refused(
                    ErrorCode::InvalidArgument,
                    format!("the query is {} bytes; at most {MAX_QUERY_BYTES}", query.len()),
                ));
            }
            let q = index::Query { text: &query, repository: repository.as_deref(), files: &[], limit: 20 };
            KnowledgeReply::Hits { hits: index::search(k, daemon, &q)? }
        }
        KnowledgeRequest::Add(new) => {
            let (l, updated) = index::record(k, daemon, new, None, 1.0)?;
            tracing::info!(id = %l.id, updated, "learning added by hand");
            KnowledgeReply::Added { id: l.id, updated }
        }
        KnowledgeRequest::Remove { id } => {
            if !files::valid_id(&id) {
                return Err(bad_id(&id));
            }
            if !index::remove(k, daemon, &id)? {
                return Err(missing(&id));
            }
            KnowledgeReply::Removed { id }
        }
        KnowledgeRequest::Relays => KnowledgeReply::Relays { relays: daemon.with_store(|s| s.relays(1000))? },
    })
}

/// A learning recorded from a running task (its `Learn` tool, or extraction): written, indexed, an event on the
/// task, then relayed by the Syncer (off the caller's path). Blocking.
pub fn record_from_task(
    daemon: &std::sync::Arc<crate::requests::Daemon>,
    task: &TaskId,
    mut new: neuraphage_ipc::knowledge::NewLearning,
    how: &str,
    confidence: f64,
) -> crate::error::Result<(neuraphage_ipc::knowledge::Learning, bool)> {
    if !daemon.knowledge.take_record(task) {
        return Err(crate::error::SupervisorError::refused(
            neuraphage_ipc::ErrorCode::Conflict,
            format!("this task already recorded {MAX_RECORDED_PER_TASK} learnings; no more are kept"),
        ));
    }
    let repo = daemon.with_store(|s| s.task(task)).ok().and_then(|t| t.repo);
    new.repository = repo;
    let (l, updated) = index::record(&daemon.knowledge, &**daemon, new, Some(task), confidence)?;
    tracing::info!(%task, id = %l.id, how, updated, "learning recorded");
    let title = files::cut(&l.title, 200);
    daemon.record(
        task,
        neuraphage_ipc::EventKind::KnowledgeRecorded { id: l.id.clone(), title, how: how.into(), updated },
    );
    syncer::spawn_relay(daemon, l.clone(), task.clone());
    Ok((l, updated))
}
