//! The broker's lock table in process (no sockets, no model): an uncontended Lock + Unlock of 1 and of 32 resources;
//! the refusal of a request that closes a wait-for cycle through a chain of N waiting tasks (the cycle search); and
//! the hand-over of a resource from a holder whose link closes to its waiter. Run with `bench/run.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use neuraphage_bench::Run;
use neuraphage_broker::locks::LockTable;
use neuraphage_ipc::TaskId;
use neuraphage_ipc::lock::LockOutcome;

const LONG: Duration = Duration::from_secs(60);

fn task(n: usize) -> TaskId {
    format!("np-{n:010x}").parse().unwrap()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 2_000 } else { 50_000 };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("{}", Run::header());
    rt.block_on(async {
        for width in [1usize, 32] {
            let table = LockTable::new(Duration::ZERO);
            let lease = table.lease(task(1));
            let names: Vec<String> = (0..width).map(|i| format!("path:src/file{i}.rs")).collect();
            let mut latencies = Vec::with_capacity(rounds);
            let wall = Instant::now();
            for _ in 0..rounds {
                let t = Instant::now();
                assert!(matches!(lease.acquire(names.clone(), LONG).await, LockOutcome::Granted { .. }));
                lease.release(Vec::new());
                latencies.push(t.elapsed());
            }
            let label = format!("lock+unlock {width} resource(s)");
            println!("{}", Run { label, clients: 1, latencies, wall: wall.elapsed() }.row());
        }
        for chain in [10usize, 100] {
            // Task i holds r{i} and waits for r{i+1}; the last task asking for r0 closes the cycle.
            let table = LockTable::new(Duration::ZERO);
            let leases: Vec<_> = (0..=chain).map(|i| table.lease(task(i))).collect();
            for (i, lease) in leases.iter().enumerate() {
                lease.acquire(vec![format!("name:r{i}")], LONG).await;
            }
            let mut waiting = Vec::new();
            for i in 0..chain {
                let lease = table.lease(task(i));
                let want = vec![format!("name:r{}", i + 1)];
                waiting.push(tokio::spawn(async move { lease.acquire(want, LONG).await }));
            }
            while table.view().locks.iter().filter(|l| !l.waiters.is_empty()).count() < chain {
                tokio::task::yield_now().await;
            }
            let last = &leases[chain];
            let mut latencies = Vec::new();
            let wall = Instant::now();
            for _ in 0..rounds / 10 {
                let t = Instant::now();
                let outcome = last.acquire(vec!["name:r0".into()], LONG).await;
                assert!(matches!(outcome, LockOutcome::Refused { ref cycle, .. } if cycle.len() == chain + 2));
                latencies.push(t.elapsed());
            }
            let label = format!("deadlock refusal, chain {chain}");
            println!("{}", Run { label, clients: 1, latencies, wall: wall.elapsed() }.row());
            waiting.iter().for_each(|w| w.abort());
        }
        let table = LockTable::new(Duration::ZERO);
        let mut latencies = Vec::new();
        let wall = Instant::now();
        for round in 0..rounds / 10 {
            let holder = table.lease(task(1));
            holder.acquire(vec!["name:db".into()], LONG).await;
            let waiter = table.lease(task(2));
            let (tx, rx) = tokio::sync::oneshot::channel();
            let waiting = tokio::spawn(async move {
                let outcome = waiter.acquire(vec!["name:db".into()], LONG).await;
                let _ = tx.send(Instant::now());
                (outcome, waiter)
            });
            while table.view().locks[0].waiters.is_empty() {
                tokio::task::yield_now().await;
            }
            let t = Instant::now();
            drop(holder);
            let granted_at = rx.await.unwrap();
            latencies.push(granted_at - t);
            let (outcome, _waiter) = waiting.await.unwrap();
            assert!(matches!(outcome, LockOutcome::Granted { .. }), "round {round}");
        }
        let label = "hand-over on link close".to_owned();
        println!("{}", Run { label, clients: 2, latencies, wall: wall.elapsed() }.row());
    });
}
