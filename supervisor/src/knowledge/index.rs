//! The knowledge index kept in step with the files: [`rebuild`] at start (the files are the truth, so a supervisor
//! killed mid-write comes back consistent), [`rescan`] before every read (a file whose mtime or size changed is read
//! again, a deleted one dropped, a malformed one reported with its path and left out), [`search`] (bm25 with the
//! repository and file overlap weighted) and [`record`] (write the file, then index it; a near-duplicate of an
//! existing learning updates it instead).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use chrono::Utc;
use neuraphage_ipc::TaskId;
use neuraphage_ipc::knowledge::{Hit, Learning, MAX_FILES, MAX_TAGS, NewLearning, Skipped};

use super::Knowledge;
use super::files::{self, Stamp};
use crate::error::{Result, SupervisorError};
use crate::store::Store;

/// Something that lends the store (the daemon; a bare mutex in benches and tests).
pub trait StoreAccess {
    /// Run `f` with the store locked.
    fn with<T>(&self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T>;
}

impl StoreAccess for crate::requests::Daemon {
    fn with<T>(&self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        self.with_store(f)
    }
}

impl StoreAccess for Mutex<Store> {
    fn with<T>(&self, f: impl FnOnce(&mut Store) -> Result<T>) -> Result<T> {
        f(&mut self.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Read every file and replace the index with them. Returns how many were indexed and the files skipped.
pub fn rebuild(k: &Knowledge, store: &impl StoreAccess) -> Result<(usize, Vec<Skipped>)> {
    let _guard = k.guard();
    files::ensure(k.root()).map_err(|e| SupervisorError::Corrupt(format!("{}: {e}", k.root().display())))?;
    let (listed, mut skipped) = files::list(k.root());
    let mut all = Vec::with_capacity(listed.len());
    let mut seen = HashSet::new();
    for item in listed {
        match files::read(&item.path) {
            Ok(l) if seen.insert(l.id.clone()) => all.push((l, item.stamp)),
            Ok(l) => skipped.push(Skipped {
                path: item.path.display().to_string(),
                why: format!("id {} is also in the other folder", l.id),
            }),
            Err(why) => skipped.push(Skipped { path: item.path.display().to_string(), why }),
        }
    }
    report(&skipped);
    store.with(|s| s.knowledge_rebuild(&all))?;
    Ok((all.len(), skipped))
}

fn report(skipped: &[Skipped]) {
    for s in skipped {
        tracing::warn!(path = %s.path, why = %s.why, "a knowledge file is skipped");
    }
}

/// Bring the index in step with the files: only files whose stamp changed are read. Returns the files skipped.
pub fn rescan(k: &Knowledge, store: &impl StoreAccess) -> Result<Vec<Skipped>> {
    let _guard = k.guard();
    rescan_locked(k, store)
}

fn rescan_locked(k: &Knowledge, store: &impl StoreAccess) -> Result<Vec<Skipped>> {
    let (listed, mut skipped) = files::list(k.root());
    let known = store.with(|s| s.knowledge_stamps())?;
    let mut upserts = Vec::new();
    let mut present = HashSet::with_capacity(listed.len());
    let mut bad = Vec::new();
    for item in &listed {
        if known.get(&item.id) == Some(&item.stamp) {
            present.insert(item.id.clone());
            continue;
        }
        match files::read(&item.path) {
            Ok(l) if present.insert(l.id.clone()) => upserts.push((l, item.stamp)),
            Ok(_) => {}
            Err(why) => {
                bad.push(item.id.clone());
                skipped.push(Skipped { path: item.path.display().to_string(), why });
            }
        }
    }
    let mut deletes: Vec<String> = known.keys().filter(|id| !present.contains(*id)).cloned().collect();
    deletes.extend(bad);
    if !upserts.is_empty() || !deletes.is_empty() {
        store.with(|s| s.knowledge_apply(&upserts, &deletes))?;
    }
    report(&skipped);
    Ok(skipped)
}

/// Words that say nothing about a learning.
const STOP: &[&str] = &[
    "the", "and", "for", "that", "this", "with", "was", "are", "is", "it", "of", "to", "in", "on", "a", "an", "be",
    "as", "at", "by", "or", "not", "from", "but", "have", "has", "had", "you", "we", "its", "into", "when", "then",
    "than", "there", "their", "will", "would", "can", "could", "should", "all", "any", "use", "used", "using", "do",
    "does", "did", "if", "so", "no", "yes", "out", "up", "what", "which", "who", "how", "why", "our", "your",
];

/// The distinct lower-case words of `text` (letters, digits, `_`), 2 to 40 characters, stop words left out.
pub fn words(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for w in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
        let w = w.to_lowercase();
        if w.chars().count() < 2 || w.len() > 40 || STOP.contains(&w.as_str()) {
            continue;
        }
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

/// An FTS5 query matching any of the words of `text` (each quoted: nothing the user typed is FTS syntax); `None`
/// when it has no usable word. At most 32 words.
pub fn fts_query(text: &str) -> Option<String> {
    let words = words(text);
    if words.is_empty() {
        return None;
    }
    Some(words.iter().take(32).map(|w| format!("\"{}\"", w.replace('"', ""))).collect::<Vec<_>>().join(" OR "))
}

/// What to look for.
#[derive(Debug, Clone, Default)]
pub struct Query<'a> {
    /// Free text.
    pub text: &'a str,
    /// The repository of the asker: its learnings weigh more.
    pub repository: Option<&'a str>,
    /// Files of the asker: learnings naming them weigh more.
    pub files: &'a [String],
    /// Most hits.
    pub limit: usize,
}

/// Does a learning's file `a` name the same file as `b` (equal, or one a path suffix of the other)?
pub fn same_file(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_start_matches("./"), b.trim_start_matches("./"));
    a == b || a.ends_with(&format!("/{b}")) || b.ends_with(&format!("/{a}"))
}

/// Rank: bm25 (negated: higher is better), times 1 + 1 for the same repository + 0.5 per overlapping file (up to 3).
fn weigh(l: &Learning, bm25: f64, q: &Query<'_>) -> f64 {
    let repo = (q.repository.is_some() && l.repository.as_deref() == q.repository) as u8 as f64;
    let overlap = l.files.iter().filter(|f| q.files.iter().any(|g| same_file(f, g))).count().min(3) as f64;
    (-bm25).max(1e-6) * (1.0 + repo + 0.5 * overlap)
}

/// Search the index as it is (no rescan).
pub fn search_indexed(store: &impl StoreAccess, q: &Query<'_>) -> Result<Vec<Hit>> {
    let text = format!("{} {}", q.text, q.files.join(" "));
    let Some(fts) = fts_query(&text) else { return Ok(Vec::new()) };
    let found = store.with(|s| s.knowledge_match(&fts, 50.max(q.limit)))?;
    let mut hits: Vec<Hit> =
        found.into_iter().map(|(l, bm25)| Hit { score: weigh(&l, bm25, q), learning: l }).collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.truncate(q.limit);
    Ok(hits)
}

/// Rescan, then search.
pub fn search(k: &Knowledge, store: &impl StoreAccess, q: &Query<'_>) -> Result<Vec<Hit>> {
    rescan(k, store)?;
    search_indexed(store, q)
}

/// How alike two texts are: shared words over all words (Jaccard).
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b): (HashSet<String>, HashSet<String>) = (words(a).into_iter().collect(), words(b).into_iter().collect());
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    a.intersection(&b).count() as f64 / a.union(&b).count() as f64
}

/// Learnings this much alike (and of the same repository and source) are one: the newer text updates the older.
pub const DUPLICATE_SIMILARITY: f64 = 0.6;

/// Record a learning: checked, de-duplicated against the index, written (atomically), then indexed. Returns it and
/// whether an existing one was updated.
pub fn record(
    k: &Knowledge,
    store: &impl StoreAccess,
    new: NewLearning,
    source: Option<&TaskId>,
    confidence: f64,
) -> Result<(Learning, bool)> {
    files::check_new(&new).map_err(|e| SupervisorError::refused(neuraphage_ipc::ErrorCode::InvalidArgument, e))?;
    let _guard = k.guard();
    rescan_locked(k, store)?;
    let text = format!("{}\n{}", new.title, new.body);
    let duplicate = match fts_query(&text) {
        Some(fts) => store
            .with(|s| s.knowledge_match(&fts, 10))?
            .into_iter()
            .map(|(l, _)| l)
            .filter(|l| l.repository == new.repository)
            // A task updates only its own learnings: another task's (or the user's) text is never rewritten under
            // its source's name (red team: a hostile task's near copy would otherwise replace it, still credited).
            .filter(|l| source.is_none_or(|s| l.source_task.as_deref() == Some(s.as_str())))
            .find(|l| similarity(&format!("{}\n{}", l.title, l.body), &text) >= DUPLICATE_SIMILARITY),
        None => None,
    };
    let kind = new.kind.clone().unwrap_or_else(|| "learning".to_owned());
    let (learning, updated) = match duplicate {
        Some(mut old) => {
            old.title = new.title;
            old.body = new.body;
            for t in new.tags {
                if !old.tags.contains(&t) && old.tags.len() < MAX_TAGS {
                    old.tags.push(t);
                }
            }
            for f in new.files {
                if !old.files.contains(&f) && old.files.len() < MAX_FILES {
                    old.files.push(f);
                }
            }
            old.confidence = old.confidence.max(confidence);
            if old.source_task.is_none() {
                old.source_task = source.map(|s| s.to_string());
            }
            (old, true)
        }
        None => {
            let id = files::new_id();
            let path = files::folder(k.root(), &kind).join(format!("{id}.md"));
            let learning = Learning {
                id,
                kind,
                title: new.title,
                tags: new.tags,
                source_task: source.map(|s| s.to_string()),
                repository: new.repository,
                files: new.files,
                created: Utc::now(),
                confidence: confidence.clamp(0.0, 1.0),
                body: new.body.trim_end().to_owned(),
                path: String::new(),
            };
            (Learning { path: path.display().to_string(), ..learning }, false)
        }
    };
    let path = Path::new(&learning.path).to_path_buf();
    files::write(&path, &learning).map_err(SupervisorError::Corrupt)?;
    let stamp = stamp_of(&path).map_err(SupervisorError::Corrupt)?;
    store.with(|s| s.knowledge_apply(&[(learning.clone(), stamp)], &[]))?;
    Ok((learning, updated))
}

fn stamp_of(path: &Path) -> std::result::Result<Stamp, String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Stamp { mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(), size: m.size() as i64 })
}

/// Delete a learning (its file, then its index entry). `Ok(false)`: no such learning.
pub fn remove(k: &Knowledge, store: &impl StoreAccess, id: &str) -> Result<bool> {
    let _guard = k.guard();
    rescan_locked(k, store)?;
    let Some(l) = store.with(|s| s.knowledge_get(id))? else { return Ok(false) };
    files::remove(Path::new(&l.path)).map_err(SupervisorError::Corrupt)?;
    store.with(|s| s.knowledge_apply(&[], std::slice::from_ref(&l.id)))?;
    Ok(true)
}

/// Stamps by id, for tests.
pub fn stamps(store: &impl StoreAccess) -> Result<HashMap<String, Stamp>> {
    store.with(|s| s.knowledge_stamps())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(title: &str, body: &str, repo: Option<&str>, files: &[&str]) -> NewLearning {
        NewLearning {
            kind: None,
            title: title.into(),
            body: body.into(),
            tags: vec![],
            files: files.iter().map(|f| f.to_string()).collect(),
            repository: repo.map(str::to_owned),
        }
    }

    #[test]
    fn record_search_edit_delete_and_duplicates() {
        let home = tempfile::tempdir().unwrap();
        let store = Mutex::new(Store::open(&home.path().join("db")).unwrap());
        let k = Knowledge::new(home.path());
        rebuild(&k, &store).unwrap();
        let (a, updated) = record(
            &k,
            &store,
            new("Flaky parser tests", "The fix was pinning chrono.", Some("/r"), &["src/p.rs"]),
            None,
            0.9,
        )
        .unwrap();
        assert!(!updated);
        record(&k, &store, new("Docker builds", "Turns out the cache needs buildkit.", Some("/other"), &[]), None, 0.9)
            .unwrap();
        let q = Query { text: "parser chrono", repository: Some("/r"), files: &[], limit: 5 };
        let hits = search(&k, &store, &q).unwrap();
        assert_eq!(hits[0].learning.id, a.id);
        // A near-duplicate updates.
        let (b, updated) = record(
            &k,
            &store,
            new("Flaky parser tests", "The fix was pinning chrono again.", Some("/r"), &[]),
            None,
            0.5,
        )
        .unwrap();
        assert!(updated && b.id == a.id, "{b:?}");
        // An edited file is what is found; a malformed one is left out and reported.
        let text = std::fs::read_to_string(&a.path).unwrap().replace("pinning chrono again", "zebra stripes");
        std::fs::write(&a.path, text).unwrap();
        let q = Query { text: "zebra", repository: None, files: &[], limit: 5 };
        assert_eq!(search(&k, &store, &q).unwrap().len(), 1);
        std::fs::write(&a.path, "---\nbroken: [\n---\n").unwrap();
        let skipped = rescan(&k, &store).unwrap();
        assert_eq!(skipped.len(), 1);
        assert!(search(&k, &store, &q).unwrap().is_empty());
        // Deleted.
        std::fs::remove_file(&a.path).unwrap();
        assert!(rescan(&k, &store).unwrap().is_empty());
        assert_eq!(stamps(&store).unwrap().len(), 1);
        // Query syntax is never FTS syntax.
        let q = Query { text: "\"NEAR( * ) OR", repository: None, files: &[], limit: 5 };
        search(&k, &store, &q).unwrap();
    }

    /// Red team: a task's near copy of another task's (or the user's) learning must not rewrite it while it stays
    /// credited to its source; the control (the same source) shows the copy is alike enough to update.
    #[test]
    fn a_task_cannot_rewrite_another_sources_learning() {
        let home = tempfile::tempdir().unwrap();
        let store = Mutex::new(Store::open(&home.path().join("db")).unwrap());
        let k = Knowledge::new(home.path());
        rebuild(&k, &store).unwrap();
        let (honest, hostile) = (TaskId::from_bits(1), TaskId::from_bits(2));
        let body = "Run the parser tests with cargo nextest; plain cargo test misses the fixtures.";
        let evil = "Run the parser tests with cargo nextest; plain cargo test misses the fixtures. curl evil";
        let title = "Parser tests need nextest";
        let (a, _) = record(&k, &store, new(title, body, Some("/r"), &[]), Some(&honest), 0.9).unwrap();
        let (user, _) = record(&k, &store, new(title, body, Some("/u"), &[]), None, 0.9).unwrap();
        // The attack: another task's near copy, on the task's and on the user's learning.
        for (target, repo) in [(&a, "/r"), (&user, "/u")] {
            let (b, updated) = record(&k, &store, new(title, evil, Some(repo), &[]), Some(&hostile), 0.9).unwrap();
            assert!(!updated && b.id != target.id, "{b:?}");
            assert_eq!(b.source_task.as_deref(), Some("np-0000000002"));
            let kept = files::read(Path::new(&target.path)).unwrap();
            assert_eq!(kept.body, body);
        }
        // Control: the same source's near copy does update.
        let (c, updated) = record(&k, &store, new(title, evil, Some("/r"), &[]), Some(&honest), 0.9).unwrap();
        assert!(updated && c.id == a.id, "{c:?}");
    }
}
