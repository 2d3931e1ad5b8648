//! What the Watcher reads from the event log: a task's newest events of some kinds (its snapshot), and the newest
//! events of one kind across tasks (`neuraphage watcher log`). Both bounded; rows that do not read back are left out.

use neuraphage_ipc::{TaskEvent, TaskId};
use rusqlite::params;

use super::{Store, from_json, from_millis};
use crate::error::Result;

impl Store {
    /// Task `id`'s newest `limit` events whose kind is one of `kinds`, oldest first.
    pub fn recent_events(&self, id: &TaskId, kinds: &[&str], limit: usize) -> Result<Vec<TaskEvent>> {
        let kinds = serde_json::to_string(kinds).unwrap_or_else(|_| "[]".into());
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, task, at, data FROM events
             WHERE task = ?1 AND kind IN (SELECT value FROM json_each(?2)) ORDER BY seq DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![id.as_str(), kinds, limit.min(100_000) as i64], row)?;
        let mut events: Vec<TaskEvent> = rows.filter_map(|r| r.ok().flatten()).collect();
        events.reverse();
        Ok(events)
    }

    /// The newest `limit` events of kind `kind` across tasks, newest first.
    pub fn newest_of_kind(&self, kind: &str, limit: usize) -> Result<Vec<TaskEvent>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, task, at, data FROM events WHERE kind = ?1 ORDER BY seq DESC LIMIT ?2")?;
        let rows = stmt.query_map(params![kind, limit.min(100_000) as i64], row)?;
        Ok(rows.filter_map(|r| r.ok().flatten()).collect())
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<TaskEvent>> {
    let seq = r.get::<_, i64>(0)? as u64;
    let decoded = (|| -> rusqlite::Result<TaskEvent> {
        let task: String = r.get(1)?;
        Ok(TaskEvent {
            seq,
            task: task.parse().map_err(|e: String| super::tasks::conversion(1, e))?,
            at: from_millis(r.get(2)?)?,
            kind: from_json(3, &r.get::<_, String>(3)?)?,
        })
    })();
    match decoded {
        Ok(e) => Ok(Some(e)),
        Err(e) => {
            tracing::warn!(seq, error = %e, "an event row does not read back; left out");
            Ok(None)
        }
    }
}
