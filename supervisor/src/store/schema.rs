//! The store's schema, as numbered migrations (SQLite `user_version`). Never edit a released migration: add one.

use rusqlite_migration::{M, Migrations};

/// Version 1: tasks, dependency edges, and the append-only event log.
const V1: &str = r#"
CREATE TABLE tasks (
    id          TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    priority    INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 4),
    repo        TEXT,
    profile     TEXT,
    parent      TEXT REFERENCES tasks(id),
    state       TEXT NOT NULL,   -- TaskState name, for filtering and counting
    status      TEXT NOT NULL,   -- TaskStatus with its details, as JSON
    created_at  INTEGER NOT NULL, -- unix milliseconds
    updated_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX tasks_by_state ON tasks(state);

-- `task` waits for `other` (kind 'blocked_by'), or `task` is a sub-task of `other` (kind 'child_of').
CREATE TABLE edges (
    task       TEXT NOT NULL REFERENCES tasks(id),
    other      TEXT NOT NULL REFERENCES tasks(id),
    kind       TEXT NOT NULL CHECK (kind IN ('blocked_by', 'child_of')),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (task, other, kind),
    CHECK (task <> other)
) STRICT;
CREATE INDEX edges_by_other ON edges(other, kind);

-- Append-only: rows are inserted, never updated or deleted.
CREATE TABLE events (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL REFERENCES tasks(id),
    at   INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL  -- EventKind as JSON
) STRICT;
CREATE INDEX events_by_task ON events(task, seq);
CREATE TRIGGER events_are_append_only_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
"#;

/// Version 2: where a task's work lives (base commit, branch) and its checkpoints.
const V2: &str = r#"
ALTER TABLE tasks ADD COLUMN base_commit TEXT;
ALTER TABLE tasks ADD COLUMN branch TEXT;

-- One row per acknowledged checkpoint; the conversation itself is in the task's conversation repository, at `commit`.
CREATE TABLE checkpoints (
    task      TEXT NOT NULL REFERENCES tasks(id),
    seq       INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    iteration INTEGER NOT NULL,
    data      TEXT NOT NULL,  -- CheckpointKind as JSON
    commit_id TEXT NOT NULL,
    at        INTEGER NOT NULL,
    PRIMARY KEY (task, seq)
) STRICT;
"#;

/// Version 3: what every model response used and cost (append-only; priced when recorded).
const V3_COSTS: &str = r#"
CREATE TABLE costs (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    task               TEXT NOT NULL REFERENCES tasks(id),
    at                 INTEGER NOT NULL,  -- unix milliseconds
    model              TEXT NOT NULL,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cache_read_tokens  INTEGER NOT NULL,
    cost_nano_usd      INTEGER NOT NULL,  -- 10^-9 USD, by the price table in force when recorded
    priced             INTEGER NOT NULL CHECK (priced IN (0, 1))  -- 0: the table did not know the model
) STRICT;
CREATE INDEX costs_by_task ON costs(task);
CREATE TRIGGER costs_are_append_only_update BEFORE UPDATE ON costs
    BEGIN SELECT RAISE(ABORT, 'costs are append-only'); END;
"#;

/// Version 4: the model tier a task runs on (NULL: the default tier); escalation updates it.
const V4_TIER: &str = r#"
ALTER TABLE tasks ADD COLUMN tier TEXT;
"#;

/// Version 5: user input. `inbox`: every message the user sent a task, kept until a checkpoint's conversation holds
/// it (`delivered_at`, set in that checkpoint's transaction); an answer names the `AskUser` call it answers.
/// `questions`: a task's latest `AskUser` question, pending until `answer` is set.
const V5_INBOX: &str = r#"
CREATE TABLE inbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    task         TEXT NOT NULL REFERENCES tasks(id),
    at           INTEGER NOT NULL,
    text         TEXT NOT NULL,
    answers      TEXT,     -- the AskUser call (tool_use id) it answers, if any
    delivered_at INTEGER   -- NULL until a checkpoint's conversation holds it
) STRICT;
CREATE INDEX inbox_pending ON inbox(task, id) WHERE delivered_at IS NULL;
CREATE TABLE questions (
    task        TEXT PRIMARY KEY REFERENCES tasks(id),
    tool_use_id TEXT NOT NULL,
    question    TEXT NOT NULL,  -- the prompt shown (question and numbered options)
    asked_at    INTEGER NOT NULL,
    answer      INTEGER REFERENCES inbox(id)  -- NULL while pending
) STRICT;
"#;

/// Version 6 (issue 12, layered permissions): requests that asked the user, their decisions, and rules saved from
/// answers.
const V6_PERMISSIONS: &str = r#"
CREATE TABLE permission_requests (
    task         TEXT NOT NULL REFERENCES tasks(id),
    tool_use_id  TEXT NOT NULL,
    tool         TEXT NOT NULL,
    subject      TEXT NOT NULL,   -- the command line or path
    command      INTEGER NOT NULL CHECK (command IN (0, 1)),
    prompt       TEXT NOT NULL,
    asked_by     TEXT NOT NULL,   -- the rule or setting that asked
    requested_at INTEGER NOT NULL,
    decision     TEXT CHECK (decision IN ('allow', 'deny')),  -- NULL: waiting
    decided_by   TEXT,            -- user, timeout
    reason       TEXT,
    decided_at   INTEGER,
    delivered    INTEGER NOT NULL DEFAULT 0,  -- 1: a worker was given the decision
    PRIMARY KEY (task, tool_use_id)
) STRICT;
CREATE INDEX permission_requests_waiting ON permission_requests(decision, requested_at);

CREATE TABLE permission_rules (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    allow      INTEGER NOT NULL CHECK (allow IN (0, 1)),
    command    INTEGER NOT NULL CHECK (command IN (0, 1)),  -- 1: an exact command line, 0: a path
    pattern    TEXT NOT NULL,
    tool       TEXT NOT NULL,
    from_task  TEXT,
    created_at INTEGER NOT NULL
) STRICT;
"#;

/// Version 7 (issue 13): the task's plan as its latest `TodoWrite` set it (JSON list of `PlanItem`; NULL: none),
/// written in the transaction of the checkpoint that carries it.
const V7_PLAN: &str = r#"
ALTER TABLE tasks ADD COLUMN plan TEXT;
"#;

/// Version 8: advice (a Watcher nudge, a relayed learning) travels through the inbox like a user message, marked
/// with where it comes from; only `user` input can answer a question or move a task's status.
const V8_ADVICE: &str = r#"
ALTER TABLE inbox ADD COLUMN source TEXT NOT NULL DEFAULT 'user';
"#;

/// Version 9: a task's persona (issue 16) and whether the Watcher leaves it alone.
const V9_PERSONA: &str = r#"
ALTER TABLE tasks ADD COLUMN persona TEXT;
ALTER TABLE tasks ADD COLUMN no_watch INTEGER NOT NULL DEFAULT 0;
"#;

/// Version 10 (issue 16, sub-tasks): the parent's `Task` call that created a child (at most one child per call, so
/// a resumed parent asking again gets the same child) and whether the parent waits for it.
const V10_SUBTASKS: &str = r#"
ALTER TABLE tasks ADD COLUMN subtask_call TEXT;
ALTER TABLE tasks ADD COLUMN subtask_wait INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX tasks_by_subtask_call ON tasks(parent, subtask_call) WHERE subtask_call IS NOT NULL;
CREATE INDEX tasks_by_parent ON tasks(parent) WHERE parent IS NOT NULL;
"#;

/// Version 11 (issue 17): the knowledge index. The files under `knowledge/` are the truth; this is rebuilt from them
/// at every start and kept in step by a rescan ([`crate::knowledge::index`]). `knowledge_fts` rows share the rowid
/// of their `knowledge` row. `knowledge_relays`: the Syncer's relays (append-only).
const V11_KNOWLEDGE: &str = r#"
CREATE TABLE knowledge (
    n           INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    title       TEXT NOT NULL,
    tags        TEXT NOT NULL,  -- JSON list
    source_task TEXT,
    repository  TEXT,
    files       TEXT NOT NULL,  -- JSON list
    created     INTEGER NOT NULL,
    confidence  REAL NOT NULL,
    body        TEXT NOT NULL,
    path        TEXT NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    size        INTEGER NOT NULL
) STRICT;
CREATE INDEX knowledge_by_repository ON knowledge(repository);
CREATE VIRTUAL TABLE knowledge_fts USING fts5(title, body, tags, files, tokenize = 'porter unicode61');
CREATE TABLE knowledge_relays (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    learning  TEXT NOT NULL,
    from_task TEXT NOT NULL,
    to_task   TEXT NOT NULL,
    score     REAL NOT NULL,
    inbox     INTEGER NOT NULL,
    at        INTEGER NOT NULL
) STRICT;
"#;

/// Version 12 (issue 16 follow-ups): durability and the Watcher's log.
/// - `parent_told`: a sub-task's end told to its parent — NULL: nothing to tell; 0: it ended (set in the transaction
///   of its status) and its parent has not been told; 1: told (set in the transaction that records `SubtaskEnded`).
///   A crash in between leaves 0, and the next start tells the parent, once.
/// - `watcher_stop`: the status (JSON) the Watcher ended a running session with (pause, abort, escalate), stored with
///   its `WatcherIntervened` event, cleared when the session's end is stored; a supervisor that died in between ends
///   the task with it at the next start instead of queuing it again.
/// - `events_by_kind`: the newest events of one kind across tasks (`neuraphage watcher log`) without a scan.
const V12_DURABLE: &str = r#"
ALTER TABLE tasks ADD COLUMN parent_told INTEGER;
ALTER TABLE tasks ADD COLUMN watcher_stop TEXT;
CREATE INDEX tasks_parent_untold ON tasks(id) WHERE parent_told = 0;
CREATE INDEX events_by_kind ON events(kind);
"#;

/// Version 13: `pause_requested` — `task pause` of a running task, stored before its acknowledgement (the worker
/// stops at its next checkpoint); a supervisor that died before then pauses the task at the next start instead of
/// queuing it again. Spent by any status change away from Running.
const V13_PAUSE: &str = r#"
ALTER TABLE tasks ADD COLUMN pause_requested INTEGER NOT NULL DEFAULT 0;
"#;

/// Every migration, in order.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1),
        M::up(V2),
        M::up(V3_COSTS),
        M::up(V4_TIER),
        M::up(V5_INBOX),
        M::up(V6_PERMISSIONS),
        M::up(V7_PLAN),
        M::up(V8_ADVICE),
        M::up(V9_PERSONA),
        M::up(V10_SUBTASKS),
        M::up(V11_KNOWLEDGE),
        M::up(V12_DURABLE),
        M::up(V13_PAUSE),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }
}
