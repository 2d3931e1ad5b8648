use pretty_assertions::assert_eq;

use super::*;
use crate::store::Store;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).unwrap();
    (dir, store)
}

fn draft(description: &str, after: Vec<TaskId>) -> TaskDraft {
    TaskDraft { after, ..TaskDraft::new(description) }
}

fn code(err: SupervisorError) -> ErrorCode {
    match err {
        SupervisorError::Refused(e) => e.code,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn created_tasks_are_queued_and_read_back_whole() {
    let (_d, mut s) = store();
    let t = s.create_task(&draft("fix it", vec![])).unwrap();
    assert_eq!(t.status, TaskStatus::Queued);
    assert_eq!(s.task(&t.id).unwrap(), t);
    assert_eq!(s.list(None).unwrap(), vec![t.clone()]);
    assert_eq!(s.list(Some(TaskState::Running)).unwrap(), vec![]);
    let detail = s.detail(&t.id, 10).unwrap();
    assert_eq!(detail.events.len(), 1);
    assert_eq!(detail.events[0].kind, EventKind::Created { priority: Priority::DEFAULT });
}

#[test]
fn list_is_in_priority_then_age_order() {
    let (_d, mut s) = store();
    let low = s.create_task(&TaskDraft { priority: Priority::LOW, ..draft("low", vec![]) }).unwrap();
    let a = s.create_task(&draft("a", vec![])).unwrap();
    let crit = s.create_task(&TaskDraft { priority: Priority::CRITICAL, ..draft("crit", vec![]) }).unwrap();
    let ids: Vec<TaskId> = s.list(None).unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![crit.id, a.id, low.id]);
}

#[test]
fn prefixes_resolve_and_ambiguity_names_candidates() {
    let (_d, mut s) = store();
    let a = s.create_task(&draft("a", vec![])).unwrap();
    let b = s.create_task(&draft("b", vec![])).unwrap();
    // 16 more tasks: some two of the 18 share a first hex digit.
    let mut all = vec![a.clone(), b.clone()];
    for i in 0..16 {
        all.push(s.create_task(&draft(&format!("t{i}"), vec![])).unwrap());
    }
    assert_eq!(s.resolve(a.id.as_str()).unwrap(), a.id);
    assert_eq!(s.resolve(&a.id.as_str()[3..]).unwrap(), a.id, "the np- part is optional");
    assert_eq!(s.resolve(&a.id.as_str().to_uppercase()[3..]).unwrap(), a.id);
    let shared = (0..16u8)
        .map(|d| format!("np-{d:x}"))
        .find(|p| all.iter().filter(|t| t.id.as_str().starts_with(p.as_str())).count() > 1)
        .unwrap();
    match s.resolve(&shared).unwrap_err() {
        SupervisorError::Refused(e) => {
            assert_eq!(e.code, ErrorCode::Ambiguous);
            let mut want: Vec<TaskId> =
                all.iter().map(|t| t.id.clone()).filter(|id| id.as_str().starts_with(&shared)).collect();
            want.sort();
            assert_eq!(e.candidates, want);
            assert!(want.iter().all(|id| e.message.contains(id.as_str())), "{}", e.message);
        }
        other => panic!("{other}"),
    }
    assert_eq!(code(s.resolve("np-").unwrap_err()), ErrorCode::InvalidArgument, "an empty prefix is no id");
    assert_eq!(code(s.resolve("zz").unwrap_err()), ErrorCode::InvalidArgument);
    assert_eq!(code(s.resolve("").unwrap_err()), ErrorCode::InvalidArgument);
    let missing = if a.id.as_str().ends_with('0') { "np-ffffffffff" } else { "np-0000000000" };
    if missing != a.id.as_str() && missing != b.id.as_str() {
        assert_eq!(code(s.resolve(missing).unwrap_err()), ErrorCode::NotFound);
    }
}

#[test]
fn dependencies_refuse_self_and_cycles_and_change_nothing() {
    let (_d, mut s) = store();
    let a = s.create_task(&draft("a", vec![])).unwrap();
    let b = s.create_task(&draft("b", vec![a.id.clone()])).unwrap();
    let c = s.create_task(&draft("c", vec![b.id.clone()])).unwrap();
    assert_eq!(code(s.add_dependency(&a.id, &a.id).unwrap_err()), ErrorCode::Cycle);
    let before = (s.detail(&a.id, 100).unwrap(), s.detail(&c.id, 100).unwrap());
    match s.add_dependency(&a.id, &c.id).unwrap_err() {
        SupervisorError::Refused(e) => {
            assert_eq!(e.code, ErrorCode::Cycle);
            assert!(e.message.contains(&format!("{} → {} → {}", c.id, b.id, a.id)), "{}", e.message);
        }
        other => panic!("{other}"),
    }
    assert_eq!((s.detail(&a.id, 100).unwrap(), s.detail(&c.id, 100).unwrap()), before);
    assert!(s.add_dependency(&c.id, &a.id).unwrap(), "a non-cyclic edge is added");
    assert!(!s.add_dependency(&c.id, &a.id).unwrap(), "adding it twice changes nothing");
    let detail = s.detail(&a.id, 100).unwrap();
    let blocks: Vec<TaskId> = detail.blocks.into_iter().map(|r| r.id).collect();
    assert_eq!(blocks.len(), 2);
    assert!(blocks.contains(&b.id) && blocks.contains(&c.id));
}

#[test]
fn cycle_checks_visit_each_task_once() {
    // A ladder of 40 layers, two tasks each, every task waiting for both of the layer below: 2^40 paths, 80 tasks.
    let (_d, mut s) = store();
    let mut below: Vec<TaskId> = Vec::new();
    let mut bottom = None;
    for layer in 0..40 {
        let pair: Vec<TaskId> =
            (0..2).map(|i| s.create_task(&draft(&format!("{layer}.{i}"), below.clone())).unwrap().id).collect();
        bottom.get_or_insert_with(|| pair[0].clone());
        below = pair;
    }
    let bottom = bottom.unwrap();
    assert_eq!(code(s.add_dependency(&bottom, &below[0]).unwrap_err()), ErrorCode::Cycle);
    let fresh = s.create_task(&draft("fresh", vec![])).unwrap();
    assert!(s.add_dependency(&fresh.id, &below[1]).unwrap());
}

#[test]
fn cancel_records_the_change_and_refuses_finished_tasks() {
    let (_d, mut s) = store();
    let a = s.create_task(&draft("a", vec![])).unwrap();
    let cancelled = s.cancel(&a.id, Some("changed my mind".into())).unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled { reason: Some("changed my mind".into()) });
    assert_eq!(s.cancel(&a.id, None).unwrap(), cancelled, "cancelling twice changes nothing");
    let events = s.detail(&a.id, 10).unwrap().events;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].kind, EventKind::StatusChanged { from: TaskState::Queued, to: cancelled.status.clone() });
    let b = s.create_task(&draft("b", vec![])).unwrap();
    assert_eq!(code(s.add_dependency(&b.id, &a.id).unwrap_err()), ErrorCode::Conflict);
    assert_eq!(code(s.add_dependency(&a.id, &b.id).unwrap_err()), ErrorCode::Conflict);
    assert_eq!(s.counts().unwrap()[&TaskState::Cancelled], 1);
    assert_eq!(s.counts().unwrap()[&TaskState::Queued], 1);
}

#[test]
fn events_are_append_only() {
    let (_d, mut s) = store();
    s.create_task(&draft("a", vec![])).unwrap();
    assert!(s.conn.execute("UPDATE events SET kind = 'x'", []).is_err());
    assert!(s.conn.execute("DELETE FROM events", []).is_err());
    assert_eq!(s.integrity_check().unwrap(), "ok");
}

#[test]
fn a_store_from_a_newer_release_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    drop(Store::open(&path).unwrap());
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains("schema"), "{err}");
}

#[test]
fn pages_cover_every_task_once() {
    let (_d, mut s) = store();
    for i in 0..7 {
        s.create_task(&draft(&"x".repeat(10 + i), vec![])).unwrap();
    }
    let all: Vec<TaskId> = s.list(None).unwrap().into_iter().map(|t| t.id).collect();
    let (mut seen, mut offset) = (Vec::new(), Some(0));
    while let Some(o) = offset {
        let (tasks, next) = s.page(None, o, 3, 25).unwrap();
        assert!(!tasks.is_empty() && tasks.len() <= 3);
        seen.extend(tasks.into_iter().map(|t| t.id));
        offset = next;
    }
    assert_eq!(seen, all);
}

#[test]
fn a_damaged_store_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    {
        let mut s = Store::open(&path).unwrap();
        for i in 0..200 {
            s.create_task(&draft(&format!("task {i} {}", "x".repeat(200)), vec![])).unwrap();
        }
        s.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    // Scribble over the middle of the file (b-tree pages), as a disk fault would.
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4096] {
        *b = 0xa5;
    }
    std::fs::write(&path, bytes).unwrap();
    let _ = std::fs::remove_file(dir.path().join("t.db-wal"));
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains("damaged") || err.contains("malformed") || err.contains("corrupt"), "{err}");
}
