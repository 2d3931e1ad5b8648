//! Reading the event log forward, for the event stream: pages of events after a sequence number, for one task or
//! all, and the last sequence number. (Events are written by the other store modules, in their transactions.)

use neuraphage_ipc::{TaskEvent, TaskId};
use rusqlite::{OptionalExtension, params};

use super::{Store, from_json, from_millis};
use crate::error::Result;

impl Store {
    /// Up to `limit` stored events with `after < seq <= through`, oldest first, of one task or all. A row that does
    /// not read back is logged and left out (so one bad row cannot stop a stream).
    pub fn events_after(
        &self,
        after: u64,
        through: u64,
        task: Option<&TaskId>,
        limit: usize,
    ) -> Result<Vec<TaskEvent>> {
        let (after, through, limit) = (clamp(after), clamp(through), limit.min(i64::MAX as usize) as i64);
        let mut stmt = match task {
            Some(_) => self.conn.prepare_cached(
                "SELECT seq, task, at, data FROM events WHERE task = ?4 AND seq > ?1 AND seq <= ?2 ORDER BY seq
                 LIMIT ?3",
            )?,
            None => self.conn.prepare_cached(
                "SELECT seq, task, at, data FROM events WHERE seq > ?1 AND seq <= ?2 AND ?4 IS NULL ORDER BY seq
                 LIMIT ?3",
            )?,
        };
        let rows = stmt.query_map(params![after, through, limit, task.map(TaskId::as_str)], event_row)?;
        let mut events = Vec::new();
        for row in rows {
            events.extend(row?);
        }
        Ok(events)
    }

    /// The last stored event's sequence number (0 when there is none).
    pub fn last_event_seq(&self) -> Result<u64> {
        let seq: Option<i64> =
            self.conn.query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0)).optional()?.flatten();
        Ok(seq.unwrap_or(0).max(0) as u64)
    }
}

/// One `seq, task, at, data` row of the events table as an event; a row that does not read back is logged and
/// `None` (so one bad row cannot stop a stream or a listing).
pub(super) fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<TaskEvent>> {
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

fn clamp(seq: u64) -> i64 {
    seq.min(i64::MAX as u64) as i64
}
