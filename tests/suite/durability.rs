//! Nothing acknowledged is lost: `kill -9` of the supervisor right after acknowledged writes.

use std::collections::BTreeSet;

use neuraphage_ipc::{ControlReply, ControlRequest, NewTask, ReplyFrame, RequestFrame};
use neuraphage_tests::{RawClient, TestHome};
use pretty_assertions::assert_eq;

#[test]
fn kill_9_right_after_cli_acknowledgements_loses_nothing() {
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    let mut acked = Vec::new();
    for i in 0..10 {
        acked.push(home.ok(&["task", "new", &format!("task {i}")]).trim().to_owned());
    }
    home.ok(&["task", "depend", &acked[1], "--on", &acked[0]]);
    home.ok(&["task", "kill", &acked[2]]);
    home.kill9_supervisors();

    home.start_supervisor();
    let after: BTreeSet<String> = home.task_ids().into_iter().collect();
    assert_eq!(after, acked.iter().cloned().collect::<BTreeSet<_>>());
    let show = home.json(&["task", "show", &acked[1], "--json"]);
    assert_eq!(show["blocked_by"][0]["id"], acked[0].as_str());
    assert_eq!(home.json(&["task", "show", &acked[2], "--json"])["status"], "Cancelled");
    let ok: String = home.open_store().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn kill_9_in_the_middle_of_a_pipelined_burst_keeps_every_acknowledged_task() {
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    let mut client = RawClient::connect(&home.paths).unwrap();
    client.handshake().unwrap();
    // Pipeline 300 creations, read 100 acknowledgements, then kill -9 while the rest are in flight.
    for id in 0..300u64 {
        let new = NewTask::described(format!("burst {id}"));
        client.send(&RequestFrame { id, request: ControlRequest::CreateTask(new) }).unwrap();
    }
    let mut acked = BTreeSet::new();
    for _ in 0..100 {
        let reply: ReplyFrame = client.recv().unwrap();
        match reply.reply {
            ControlReply::Task(t) => assert!(acked.insert(t.id.to_string())),
            other => panic!("{other:?}"),
        }
    }
    home.kill9_supervisors();

    home.start_supervisor();
    let stored: BTreeSet<String> = home.task_ids().into_iter().collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(stored.len() >= 100 && stored.len() <= 300, "{} stored", stored.len());
    // Every stored task has its creation event: no half-written task.
    let orphans: i64 = home
        .open_store()
        .query_row(
            "SELECT count(*) FROM tasks t WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.task = t.id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    let ok: String = home.open_store().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
}
