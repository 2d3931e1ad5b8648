//! The bus alone: order, filters, and what a subscriber that falls behind is told.

use chrono::Utc;
use neuraphage_ipc::{EventKind, Priority};
use pretty_assertions::assert_eq;

use super::*;

fn id(n: u64) -> TaskId {
    TaskId::from_bits(n)
}

fn event(seq: u64, task: u64) -> TaskEvent {
    TaskEvent { seq, task: id(task), at: Utc::now(), kind: EventKind::Created { priority: Priority::DEFAULT } }
}

/// A fake store: the events, read back after a sequence number.
fn reader(events: &[TaskEvent]) -> impl FnMut(u64, usize) -> Result<Vec<TaskEvent>, String> + '_ {
    move |after, limit| Ok(events.iter().filter(|e| e.seq > after).take(limit).cloned().collect())
}

fn seqs(sub: &Subscription) -> Vec<u64> {
    std::iter::from_fn(|| sub.try_next())
        .map(|item| match item {
            StreamItem::Event(e) => e.seq,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

#[test]
fn live_events_follow_the_cursor_in_order_and_by_task() {
    let bus = Arc::new(EventBus::default());
    let mut store: Vec<TaskEvent> = (1..=3).map(|s| event(s, 1)).collect();
    let (all, cursor) = bus.subscribe(None, false, || Ok::<_, String>(3)).unwrap();
    assert_eq!(cursor, 3);
    let (one, _) = bus.subscribe(Some(id(2)), false, || Ok::<_, String>(99)).unwrap();
    store.extend([event(4, 1), event(5, 2), event(6, 1)]);
    bus.publish_committed(reader(&store));
    assert_eq!(seqs(&all), vec![4, 5, 6]);
    assert_eq!(seqs(&one), vec![5]);
    // Published once: a second call finds nothing new.
    bus.publish_committed(reader(&store));
    assert!(all.try_next().is_none());
}

#[test]
fn with_no_subscriber_nothing_is_read_and_the_cursor_is_forgotten() {
    let bus = Arc::new(EventBus::default());
    bus.publish_committed(|_, _| -> Result<Vec<TaskEvent>, String> { panic!("read with nobody listening") });
    let (sub, _) = bus.subscribe(None, false, || Ok::<_, String>(0)).unwrap();
    drop(sub);
    assert_eq!(bus.subscribers(), 0);
    bus.publish_committed(|_, _| -> Result<Vec<TaskEvent>, String> { panic!("read with nobody listening") });
    let (_sub, cursor) = bus.subscribe(None, false, || Ok::<_, String>(7)).unwrap();
    assert_eq!(cursor, 7, "a new cursor is read from the store");
}

#[test]
fn a_subscriber_that_lags_is_told_how_many_it_missed_and_from_where() {
    let bus = Arc::new(EventBus::default());
    let (sub, _) = bus.subscribe(None, true, || Ok::<_, String>(0)).unwrap();
    let extra = 10u64;
    let total = QUEUE_ITEMS as u64 + extra;
    let store: Vec<TaskEvent> = (1..=total).map(|s| event(s, 1)).collect();
    bus.publish_committed(reader(&store));
    // Deltas while behind are counted too; nothing is queued until the subscriber has caught up.
    bus.publish_delta(&id(1), &StreamDelta::Text { index: 0, text: "lost".into() });
    let mut got = Vec::new();
    let missed = loop {
        match sub.try_next().unwrap() {
            StreamItem::Event(e) => got.push(e.seq),
            other => break other,
        }
    };
    assert_eq!(got, (1..=QUEUE_ITEMS as u64).collect::<Vec<_>>());
    let first = QUEUE_ITEMS as u64 + 1;
    assert_eq!(missed, StreamItem::Missed { count: extra, resume_from: first, through: total, deltas: 1 });
    // Caught up: live items flow again.
    bus.publish_delta(&id(1), &StreamDelta::Text { index: 0, text: "seen".into() });
    assert!(matches!(sub.try_next(), Some(StreamItem::Delta { .. })));
    assert!(sub.try_next().is_none());
}

#[test]
fn queued_bytes_are_bounded_too() {
    let bus = Arc::new(EventBus::default());
    let (sub, _) = bus.subscribe(Some(id(1)), true, || Ok::<_, String>(0)).unwrap();
    let big = "x".repeat(64 * 1024);
    let sent = 2 * QUEUE_BYTES / big.len();
    for _ in 0..sent {
        bus.publish_delta(&id(1), &StreamDelta::Text { index: 0, text: big.clone() });
    }
    let items: Vec<StreamItem> = std::iter::from_fn(|| sub.try_next()).collect();
    let queued = items.iter().filter(|i| matches!(i, StreamItem::Delta { .. })).count();
    assert!(queued < QUEUE_BYTES / big.len() + 1, "{queued} deltas queued");
    let Some(StreamItem::Missed { count: 0, deltas, .. }) = items.last() else { panic!("{:?}", items.last()) };
    assert_eq!(*deltas as usize + queued, sent);
}

#[tokio::test]
async fn next_waits_for_an_item() {
    let bus = Arc::new(EventBus::default());
    let (sub, _) = bus.subscribe(None, true, || Ok::<_, String>(0)).unwrap();
    let waiter = tokio::spawn(async move { sub.next().await });
    tokio::task::yield_now().await;
    bus.publish_delta(&id(1), &StreamDelta::Text { index: 0, text: "hi".into() });
    let item = waiter.await.unwrap();
    assert_eq!(item, StreamItem::Delta { task: id(1), delta: StreamDelta::Text { index: 0, text: "hi".into() } });
}
