//! The lock table's rules, on tokio's paused clock (no sleeps, no timing assertions).

use std::time::Duration;

use neuraphage_ipc::TaskId;
use neuraphage_ipc::lock::LockOutcome;
use pretty_assertions::assert_eq;

use super::*;

fn task(n: u8) -> TaskId {
    format!("np-{n:010x}").parse().unwrap()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn granted(list: &[&str]) -> LockOutcome {
    LockOutcome::Granted { resources: names(list) }
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn all_or_nothing_in_sorted_order_and_reentrant() {
    let table = LockTable::new(Duration::ZERO);
    let a = table.lease(task(1));
    let b = table.lease(task(2));
    assert_eq!(a.acquire(names(&["name:z", "path:a/b", "name:z"]), LONG).await, granted(&["name:z", "path:a/b"]));
    // The same task may ask again for what it holds.
    assert_eq!(a.acquire(names(&["name:z"]), LONG).await, granted(&["name:z"]));
    // B asks for one free and one held resource: after its wait it has neither.
    let outcome = b.acquire(names(&["name:free", "path:a/b"]), Duration::from_secs(5)).await;
    let LockOutcome::Refused { reason, cycle } = outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("timed out") && reason.contains("np-0000000001"), "{reason}");
    assert!(cycle.is_empty());
    let view = table.view();
    assert_eq!(view.locks.iter().map(|l| l.resource.as_str()).collect::<Vec<_>>(), ["name:z", "path:a/b"]);
    assert!(view.locks.iter().all(|l| l.holder == task(1) && l.waiters.is_empty()));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gets_the_lock_when_the_holder_releases_or_its_link_drops() {
    let table = LockTable::new(Duration::ZERO);
    let a = table.lease(task(1));
    let b = table.lease(task(2));
    assert_eq!(a.acquire(names(&["name:x"]), LONG).await, granted(&["name:x"]));
    let waiting = tokio::spawn(async move { (b.acquire(names(&["name:x"]), LONG).await, b) });
    tokio::task::yield_now().await;
    assert_eq!(table.view().locks[0].waiters, vec![task(2)]);
    assert_eq!(a.release(Vec::new()), LockOutcome::Released { resources: names(&["name:x"]) });
    let (outcome, b) = waiting.await.unwrap();
    assert_eq!(outcome, granted(&["name:x"]));
    // A waits for B; B's link closes (its worker died): A gets it.
    let waiting = tokio::spawn(async move { (a.acquire(names(&["name:x"]), LONG).await, a) });
    tokio::task::yield_now().await;
    drop(b);
    let (outcome, a) = waiting.await.unwrap();
    assert_eq!(outcome, granted(&["name:x"]));
    assert_eq!(table.view().locks[0].holder, task(1));
    // And A's own link closing frees it too.
    drop(a);
    assert!(table.view().locks.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_would_close_a_cycle_is_refused_with_the_cycle() {
    let table = LockTable::new(Duration::ZERO);
    let (a, b, c) = (table.lease(task(1)), table.lease(task(2)), table.lease(task(3)));
    assert_eq!(a.acquire(names(&["name:x"]), LONG).await, granted(&["name:x"]));
    assert_eq!(b.acquire(names(&["name:y"]), LONG).await, granted(&["name:y"]));
    assert_eq!(c.acquire(names(&["name:z"]), LONG).await, granted(&["name:z"]));
    // A waits for B, B waits for C; C asking for A's resource closes C → A → B → C.
    let a_waits = tokio::spawn(async move { (a.acquire(names(&["name:y"]), LONG).await, a) });
    tokio::task::yield_now().await;
    let b_waits = tokio::spawn(async move { (b.acquire(names(&["name:z"]), LONG).await, b) });
    tokio::task::yield_now().await;
    let outcome = c.acquire(names(&["name:x"]), LONG).await;
    let LockOutcome::Refused { reason, cycle } = outcome else { panic!("{outcome:?}") };
    assert_eq!(cycle, vec![task(3), task(1), task(2), task(3)]);
    assert!(
        reason.contains("deadlock") && reason.contains("np-0000000003 → np-0000000001 → np-0000000002 → np-0000000003"),
        "{reason}"
    );
    // C gives up what it holds: B, then A, get theirs.
    c.release(Vec::new());
    let (outcome, b) = b_waits.await.unwrap();
    assert_eq!(outcome, granted(&["name:z"]));
    b.release(names(&["name:y"]));
    let (outcome, _a) = a_waits.await.unwrap();
    assert_eq!(outcome, granted(&["name:y"]));
}

#[tokio::test(start_paused = true)]
async fn after_a_restart_holders_reclaim_and_others_wait_for_the_grace_to_end() {
    let table = LockTable::new(RESTART_GRACE);
    let (a, b) = (table.lease(task(1)), table.lease(task(2)));
    let b_waits = tokio::spawn(async move { (b.acquire(names(&["name:x", "name:free"]), LONG).await, b) });
    tokio::task::yield_now().await;
    assert_eq!(table.view().grace_remaining_ms, Some(RESTART_GRACE.as_millis() as u64));
    assert!(!b_waits.is_finished(), "a new acquisition waits during the grace period");
    assert_eq!(a.reclaim(names(&["name:x"])), granted(&["name:x"]));
    // The grace ends; B still waits for A, then gets both once A releases.
    tokio::time::sleep(RESTART_GRACE).await;
    assert_eq!(table.view().grace_remaining_ms, None);
    assert!(!b_waits.is_finished());
    a.release(Vec::new());
    let (outcome, b) = b_waits.await.unwrap();
    assert_eq!(outcome, granted(&["name:free", "name:x"]));
    // A re-claim of what another task holds is refused.
    let LockOutcome::Refused { reason, .. } = a.reclaim(names(&["name:x"])) else { panic!() };
    assert!(reason.contains("np-0000000002"), "{reason}");
    drop(b);
}

#[tokio::test(start_paused = true)]
async fn bad_requests_are_refused_with_the_reason() {
    let table = LockTable::new(Duration::ZERO);
    let a = table.lease(task(1));
    for (request, says) in [
        (Vec::new(), "at least one"),
        (names(&["src/main.rs"]), "no kind"),
        ((0..40).map(|i| format!("name:{i}")).collect(), "limit is 32"),
    ] {
        let LockOutcome::Refused { reason, .. } = a.acquire(request, LONG).await else { panic!() };
        assert!(reason.contains(says), "{reason}");
    }
    assert!(table.view().locks.is_empty());
}
