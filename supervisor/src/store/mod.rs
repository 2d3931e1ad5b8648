//! The task store: SQLite (WAL, `synchronous=FULL`), the source of truth for tasks, dependency edges and events.
//!
//! Every mutating method runs in one transaction and returns only after it is committed and synced, so the caller
//! may acknowledge as soon as it returns. [`schema`] has the migrations; [`tasks`] the task operations; [`costs`] the
//! usage and cost of model responses; [`events`] reads the event log forward for the event stream.

pub mod costs;
pub mod events;
pub mod inbox;
pub mod knowledge;
pub mod permissions;
pub mod running;
pub mod schema;
pub mod subtasks;
pub mod tasks;
pub mod watcher;

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OpenFlags};

use crate::error::{Result, SupervisorError};

/// File name of the store inside the home.
pub const DB_FILE: &str = "neuraphage.db";

/// An open, migrated store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Open (creating if needed) the store at `path` and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SupervisorError::Corrupt(format!("{}: cannot switch to WAL (got {mode})", path.display())));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Checked at every start: a store damaged by a disk fault is reported, never written further.
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(SupervisorError::Corrupt(format!(
                "{} is damaged ({check}); move it aside and restore a backup",
                path.display()
            )));
        }
        schema::migrations().to_latest(&mut conn)?;
        Ok(Store { conn })
    }

    /// `PRAGMA integrity_check` (thorough; [`Store::open`] runs the quicker `quick_check`).
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}

/// Milliseconds since the epoch, as stored.
fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Back from stored milliseconds.
fn from_millis(ms: i64) -> rusqlite::Result<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single().ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, format!("bad time {ms}").into())
    })
}

/// Decode a JSON column, reporting a corrupt row as a conversion failure.
fn from_json<T: serde::de::DeserializeOwned>(col: usize, text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e)))
}

/// Encode a value for a JSON column.
fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| SupervisorError::Corrupt(format!("cannot encode a stored value: {e}")))
}
