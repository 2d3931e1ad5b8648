//! The knowledge index in the store (migration V11): one `knowledge` row per learning file with its stamp, its
//! FTS5 row (`knowledge_fts`, same rowid), and the Syncer's relays. The files are the truth
//! ([`crate::knowledge::files`]); everything here can be rebuilt from them.

use std::collections::HashMap;

use neuraphage_ipc::TaskId;
use neuraphage_ipc::knowledge::{Learning, Relay};
use rusqlite::{Row, params};

use super::{Store, from_json, from_millis, to_json, to_millis};
use crate::error::Result;
use crate::knowledge::files::Stamp;

const COLUMNS: &str = "k.id, k.kind, k.title, k.tags, k.source_task, k.repository, k.files, k.created, k.confidence, \
                       k.body, k.path";

fn learning(r: &Row<'_>) -> rusqlite::Result<Learning> {
    Ok(Learning {
        id: r.get(0)?,
        kind: r.get(1)?,
        title: r.get(2)?,
        tags: from_json(3, &r.get::<_, String>(3)?)?,
        source_task: r.get(4)?,
        repository: r.get(5)?,
        files: from_json(6, &r.get::<_, String>(6)?)?,
        created: from_millis(r.get(7)?)?,
        confidence: r.get(8)?,
        body: r.get(9)?,
        path: r.get(10)?,
    })
}

fn insert(tx: &rusqlite::Transaction<'_>, l: &Learning, stamp: Stamp) -> Result<()> {
    tx.execute(
        "INSERT INTO knowledge (id, kind, title, tags, source_task, repository, files, created, confidence, body, \
         path, mtime_ns, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            l.id,
            l.kind,
            l.title,
            to_json(&l.tags)?,
            l.source_task,
            l.repository,
            to_json(&l.files)?,
            to_millis(l.created),
            l.confidence,
            l.body,
            l.path,
            stamp.mtime_ns,
            stamp.size
        ],
    )?;
    let n = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO knowledge_fts (rowid, title, body, tags, files) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![n, l.title, l.body, l.tags.join(" "), l.files.join(" ")],
    )?;
    Ok(())
}

fn delete(tx: &rusqlite::Transaction<'_>, id: &str) -> Result<()> {
    let n: Option<i64> =
        tx.query_row("SELECT n FROM knowledge WHERE id = ?1", [id], |r| r.get(0)).map(Some).or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    if let Some(n) = n {
        tx.execute("DELETE FROM knowledge_fts WHERE rowid = ?1", [n])?;
        tx.execute("DELETE FROM knowledge WHERE n = ?1", [n])?;
    }
    Ok(())
}

fn task_id(col: usize, text: String) -> rusqlite::Result<TaskId> {
    text.parse()
        .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, e.into()))
}

impl Store {
    /// The stamp of every indexed learning, by id.
    pub fn knowledge_stamps(&self) -> Result<HashMap<String, Stamp>> {
        let mut stmt = self.conn.prepare_cached("SELECT id, mtime_ns, size FROM knowledge")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, Stamp { mtime_ns: r.get(1)?, size: r.get(2)? })))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// In one transaction: (re)index `upserts`, drop `deletes`.
    pub fn knowledge_apply(&mut self, upserts: &[(Learning, Stamp)], deletes: &[String]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for id in deletes {
            delete(&tx, id)?;
        }
        for (l, stamp) in upserts {
            delete(&tx, &l.id)?;
            insert(&tx, l, *stamp)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Replace the whole index with `all` (at start: the files are the truth).
    pub fn knowledge_rebuild(&mut self, all: &[(Learning, Stamp)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM knowledge_fts", [])?;
        tx.execute("DELETE FROM knowledge", [])?;
        for (l, stamp) in all {
            insert(&tx, l, *stamp)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every indexed learning, oldest first.
    pub fn knowledge_all(&self) -> Result<Vec<Learning>> {
        let sql = format!("SELECT {COLUMNS} FROM knowledge k ORDER BY k.created, k.id");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        Ok(stmt.query_map([], learning)?.collect::<rusqlite::Result<_>>()?)
    }

    /// One learning.
    pub fn knowledge_get(&self, id: &str) -> Result<Option<Learning>> {
        let sql = format!("SELECT {COLUMNS} FROM knowledge k WHERE k.id = ?1");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query_map([id], learning)?;
        Ok(rows.next().transpose()?)
    }

    /// FTS5 `query` (already built from quoted words), best first, with its bm25 rank (lower is better; the title
    /// weighs most, then tags and files, then the body).
    pub fn knowledge_match(&self, query: &str, limit: usize) -> Result<Vec<(Learning, f64)>> {
        let sql = format!(
            "SELECT {COLUMNS}, bm25(knowledge_fts, 8.0, 1.0, 4.0, 3.0) AS rank FROM knowledge_fts \
             JOIN knowledge k ON k.n = knowledge_fts.rowid WHERE knowledge_fts MATCH ?1 ORDER BY rank LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![query, limit as i64], |r| Ok((learning(r)?, r.get::<_, f64>(11)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest learnings of a repository.
    pub fn knowledge_of_repository(&self, repository: &str, limit: usize) -> Result<Vec<Learning>> {
        let sql = format!("SELECT {COLUMNS} FROM knowledge k WHERE k.repository = ?1 ORDER BY k.created DESC LIMIT ?2");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        Ok(stmt.query_map(params![repository, limit as i64], learning)?.collect::<rusqlite::Result<_>>()?)
    }

    /// Keep a relay.
    pub fn record_relay(&mut self, relay: &Relay) -> Result<()> {
        self.conn.execute(
            "INSERT INTO knowledge_relays (learning, from_task, to_task, score, inbox, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                relay.learning,
                relay.from.as_str(),
                relay.to.as_str(),
                relay.score,
                relay.inbox as i64,
                to_millis(relay.at)
            ],
        )?;
        Ok(())
    }

    /// The newest relays.
    pub fn relays(&self, limit: usize) -> Result<Vec<Relay>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT learning, from_task, to_task, score, inbox, at FROM knowledge_relays ORDER BY seq DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(Relay {
                learning: r.get(0)?,
                from: task_id(1, r.get(1)?)?,
                to: task_id(2, r.get(2)?)?,
                score: r.get(3)?,
                inbox: r.get::<_, i64>(4)? as u64,
                at: from_millis(r.get(5)?)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The inputs (JSON text) of a task's latest tool calls, newest first (what files it touched, for the Syncer).
    pub fn tool_call_inputs(&self, task: &TaskId, limit: usize) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT data FROM events WHERE task = ?1 AND kind = 'tool_call' ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![task.as_str(), limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for data in rows {
            let data: serde_json::Value = serde_json::from_str(&data?).unwrap_or_default();
            if let Some(input) = data["data"]["input"].as_str() {
                out.push(input.to_owned());
            }
        }
        Ok(out)
    }
}
