//! The Watcher in the store: a task's newest events of some kinds (its snapshot), the newest events of one kind
//! across tasks (`neuraphage watcher log`, on the `events_by_kind` index of V12) — both bounded, rows that do not
//! read back left out —, and the status it stops a running session with, stored with its intervention (V12).

use neuraphage_ipc::{EventKind, TaskEvent, TaskId, TaskState, TaskStatus};
use rusqlite::{OptionalExtension, params};

use super::events::event_row;
use super::tasks::{append_event, load};
use super::{Store, to_json};
use crate::error::Result;

impl Store {
    /// Record the Watcher's `intervened` event on task `id` and, when it stops the running session (`stop`: pause,
    /// abort, escalate), the status to end it with — in one transaction, so a supervisor that dies before the session
    /// ends still ends the task so at its next start. Returns whether a stop was stored (only for a running task).
    ///
    /// `session` is the judged session's `worker_started` seq ([`Store::session_seq`]): a stop for a session that has
    /// ended since is not stored (it would end the next session, which was never judged).
    pub fn watcher_intervened(
        &mut self,
        id: &TaskId,
        session: u64,
        intervened: &EventKind,
        stop: Option<&TaskStatus>,
    ) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let running = load(&tx, id)?.status.state() == TaskState::Running && session_seq(&tx, id)? == session;
        append_event(&tx, id, intervened)?;
        let stored = match stop.filter(|_| running) {
            Some(status) => {
                tx.execute("UPDATE tasks SET watcher_stop = ?2 WHERE id = ?1", params![id.as_str(), to_json(status)?])?;
                true
            }
            None => false,
        };
        tx.commit()?;
        Ok(stored)
    }

    /// The seq of task `id`'s newest `worker_started` event (0: none): which session it is in.
    pub fn session_seq(&self, id: &TaskId) -> Result<u64> {
        session_seq(&self.conn, id)
    }

    /// The status the Watcher stopped task `id`'s session with, until that session's end is stored.
    pub fn watcher_stop(&self, id: &TaskId) -> Result<Option<TaskStatus>> {
        let json: Option<String> = self
            .conn
            .query_row("SELECT watcher_stop FROM tasks WHERE id = ?1", [id.as_str()], |r| r.get(0))
            .optional()?
            .flatten();
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Task `id`'s newest `limit` events whose kind is one of `kinds`, oldest first.
    pub fn recent_events(&self, id: &TaskId, kinds: &[&str], limit: usize) -> Result<Vec<TaskEvent>> {
        let kinds = serde_json::to_string(kinds).unwrap_or_else(|_| "[]".into());
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, task, at, data FROM events
             WHERE task = ?1 AND kind IN (SELECT value FROM json_each(?2)) ORDER BY seq DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![id.as_str(), kinds, limit.min(100_000) as i64], event_row)?;
        let mut events: Vec<TaskEvent> = rows.filter_map(|r| r.ok().flatten()).collect();
        events.reverse();
        Ok(events)
    }

    /// The newest `limit` events of kind `kind` across tasks, newest first.
    pub fn newest_of_kind(&self, kind: &str, limit: usize) -> Result<Vec<TaskEvent>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, task, at, data FROM events WHERE kind = ?1 ORDER BY seq DESC LIMIT ?2")?;
        let rows = stmt.query_map(params![kind, limit.min(100_000) as i64], event_row)?;
        Ok(rows.filter_map(|r| r.ok().flatten()).collect())
    }
}

fn session_seq(conn: &rusqlite::Connection, id: &TaskId) -> Result<u64> {
    let seq: i64 = conn.query_row(
        "SELECT coalesce(max(seq), 0) FROM events WHERE task = ?1 AND kind = 'worker_started'",
        [id.as_str()],
        |r| r.get(0),
    )?;
    Ok(seq as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tasks::TaskDraft;
    use neuraphage_ipc::RunningPhase;

    /// A store holding one queued task, and a Watcher intervention recommending `recommendation`.
    fn one_task_and_an_intervention(recommendation: &str) -> (tempfile::TempDir, Store, TaskId, EventKind) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("db")).unwrap();
        let id = s.create_task(&TaskDraft::new("d")).unwrap().id;
        let event = EventKind::WatcherIntervened {
            rule: "r".into(),
            recommendation: recommendation.into(),
            diagnosis: "d".into(),
            confidence: 0,
        };
        (dir, s, id, event)
    }

    #[test]
    fn a_stop_is_stored_with_its_event_for_a_running_task_and_spent_by_the_session_end() {
        let (_dir, mut s, id, event) = one_task_and_an_intervention("pause");
        let pause = TaskStatus::WaitingForUser { prompt: "Paused by the Watcher".into() };
        // Not running: the event only.
        assert!(!s.watcher_intervened(&id, 0, &event, Some(&pause)).unwrap());
        assert_eq!(s.watcher_stop(&id).unwrap(), None);
        s.transition(&id, TaskStatus::Running { phase: RunningPhase::Initializing }).unwrap();
        s.record(&id, EventKind::WorkerStarted { pid: 1, workdir: String::new() }).unwrap();
        let judged = s.session_seq(&id).unwrap();
        assert!(judged > 0);
        // Red team: a verdict on that session, stored after a new session started, stops nothing.
        s.record(&id, EventKind::WorkerStarted { pid: 2, workdir: String::new() }).unwrap();
        assert!(!s.watcher_intervened(&id, judged, &event, Some(&pause)).unwrap());
        assert_eq!(s.watcher_stop(&id).unwrap(), None);
        // The control: on the session it judged, it is stored.
        let judged = s.session_seq(&id).unwrap();
        assert!(s.watcher_intervened(&id, judged, &event, Some(&pause)).unwrap());
        assert_eq!(s.watcher_stop(&id).unwrap(), Some(pause.clone()));
        assert_eq!(s.newest_of_kind("watcher_intervened", 10).unwrap().len(), 3);
        s.end_session(&id, pause.clone()).unwrap();
        assert_eq!(s.watcher_stop(&id).unwrap(), None);
        assert_eq!(s.task(&id).unwrap().status, pause);
    }

    #[test]
    fn a_stop_left_by_a_session_whose_end_was_not_stored_never_ends_the_next_session() {
        let (_dir, mut s, id, event) = one_task_and_an_intervention("abort");
        let abort = TaskStatus::Failed { error: "Aborted by the Watcher".into(), recoverable: false };
        s.transition(&id, TaskStatus::Running { phase: RunningPhase::Initializing }).unwrap();
        s.record(&id, EventKind::WorkerStarted { pid: 1, workdir: String::new() }).unwrap();
        let judged = s.session_seq(&id).unwrap();
        assert!(s.watcher_intervened(&id, judged, &event, Some(&abort)).unwrap());
        // `task kill` is stored; the supervisor dies before the session's end is (no `end_session`).
        s.cancel(&id, None).unwrap();
        // The control: the stop is still stored (what the probe below could have found).
        assert_eq!(s.watcher_stop(&id).unwrap(), Some(abort.clone()));
        // A follow-up queues it again and a new session starts: the old stop is not this session's.
        s.send_message(&id, "go on", false).unwrap();
        s.transition(&id, TaskStatus::Running { phase: RunningPhase::Initializing }).unwrap();
        assert_eq!(s.watcher_stop(&id).unwrap(), None, "a stop of an earlier session would end this one");
    }
}
