//! The broker's request path against the LLM test double enforcing its own per-key limit (in one process: the
//! broker library's routes, pools and limiters, the double on a loopback port).
//!
//! 1. Saturation, with the double metering by window (50 requests per 2 s) and by bucket (600 a minute in a bucket
//!    of 60, as Anthropic documents it): 20 priority-4 tasks call through one key whose limits the broker learns
//!    from the double's headers, and a priority-0 task joins once the key is saturated, running a 300 ms tool
//!    between calls. Reported: utilisation (requests the double accepted ÷ its rate over the saturated period), the
//!    double's 429s, Jain's fairness index of the priority-4 tasks' shares, the widest gap between sends, and the
//!    priority-0 task's call time (its queueing wait plus a loopback answer) p50 and p99.
//! 2. Added latency: the same call made directly with the provider client, and through the routes (queue, limiter
//!    reserve and settle) with headroom to spare; p50 and p99 of each, and their difference. The worker ⇄ broker
//!    socket hop is not in this figure.
//!
//! Run with `bench/run.sh`, or `cargo bench -p neuraphage-bench --bench rate_limit` (`-- --quick`: shorter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neuraphage_bench::Run;
use neuraphage_broker::keys::{KeyConfig, PoolConfig};
use neuraphage_broker::limiter::DIMENSIONS;
use neuraphage_broker::provider::{Provider, ProviderConfig, ProviderKind};
use neuraphage_broker::router::{Caller, Routes};
use neuraphage_ipc::TaskId;
use neuraphage_ipc::broker::BrokerSettings;
use neuraphage_ipc::llm::{ChatRequest, Message};
use neuraphage_llm_double::{DoubleConfig, DoubleKey, KeyLimits, LlmDouble, Reply, Step, StopReason, policy};

const KEY: &str = "sk-bench-rate-limit";
const TASKS: u64 = 20;
const LIMIT: u64 = 50;
const WINDOW: Duration = Duration::from_secs(2);

fn request(task: u64) -> ChatRequest {
    ChatRequest {
        model: None,
        system: "bench".into(),
        messages: vec![Message::user_text(format!("task bench-{task}"))],
        tools: Vec::new(),
        max_tokens: 1024,
        tier: None,
    }
}

fn pool(double: &LlmDouble, window: Duration) -> PoolConfig {
    let mut provider = ProviderConfig::new(ProviderKind::Anthropic, KEY);
    provider.base_url = double.anthropic_base_url();
    PoolConfig {
        name: "main".into(),
        kind: ProviderKind::Anthropic,
        window,
        keys: vec![KeyConfig { label: "main#1".into(), provider, limits: [None; DIMENSIONS] }],
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let length = if quick { Duration::from_secs(16) } else { Duration::from_secs(40) };
        saturation(Mode::Window, length).await;
        saturation(Mode::Bucket, length).await;
        latency(if quick { 300 } else { 2000 }).await;
        own_time(if quick { 2_000 } else { 20_000 }).await;
    });
}

/// The request path's own work per call, without HTTP: estimate, queue (acquire), limiter reserve and settle, for
/// one caller alone and for 20 callers at once on one key with headroom.
async fn own_time(calls: usize) {
    let roomy = KeyLimits { requests: Some(100_000_000), ..KeyLimits::default() };
    let double = LlmDouble::start_with(DoubleConfig {
        keys: vec![(KEY.into(), DoubleKey { limits: roomy, ..DoubleKey::default() })],
        ..DoubleConfig::default()
    })
    .await
    .unwrap();
    let (routes, _) =
        Routes::build(&[pool(&double, Duration::from_secs(60))], &BrokerSettings::default(), None).unwrap();
    let pool = routes.pools["main"].clone();
    let request = request(0);
    println!("the request path's own time per call (no HTTP): estimate + acquire + settle");
    println!("{}", Run::header());
    for callers in [1usize, 20] {
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let (pool, request) = (pool.clone(), request.clone());
                tokio::spawn(async move {
                    let task = TaskId::from_bits(c as u64 + 1);
                    let mut latencies = Vec::new();
                    for _ in 0..calls / callers {
                        let t = Instant::now();
                        let input = neuraphage_broker::router::estimate_input_tokens(&request);
                        let cost = neuraphage_broker::limiter::Cost::request(input, 1024);
                        let grant = pool.acquire(&task, 2, cost, None, &mut |_, _| {}).await.unwrap();
                        grant.settle(Some(neuraphage_broker::limiter::Cost::request(10, 5)), None);
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut run =
            Run { label: "acquire + settle".into(), clients: callers, latencies: Vec::new(), wall: Duration::ZERO };
        for t in tasks {
            run.latencies.extend(t.await.unwrap());
        }
        run.wall = start.elapsed();
        println!("{}", run.row());
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("  p50 {:.1} µs, p99 {:.1} µs", us(run.percentile(50.0)), us(run.percentile(99.0)));
    }
    double.shutdown().await;
}

/// How the double meters the key.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// 50 requests per 2 s sliding window.
    Window,
    /// 600 requests a minute in a bucket of 60, refilled continuously (Anthropic's documented metering).
    Bucket,
}

async fn saturation(mode: Mode, length: Duration) {
    let served: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let log = served.clone();
    let (limits, window, rate, settle) = match mode {
        Mode::Window => {
            (KeyLimits { requests: Some(LIMIT), ..KeyLimits::default() }, WINDOW, LIMIT as f64 / 2.0, WINDOW)
        }
        Mode::Bucket => (
            KeyLimits { requests: Some(600), buckets: Some([60, 0, 0]), ..KeyLimits::default() },
            Duration::from_secs(60),
            10.0,
            Duration::from_secs(8),
        ),
    };
    let double = LlmDouble::start_with(DoubleConfig {
        keys: vec![(KEY.into(), DoubleKey { limits, ..DoubleKey::default() })],
        window: Some(window),
        policy: Some(policy(move |r| {
            log.lock().unwrap().push((Instant::now(), r.first_user_text().unwrap_or_default()));
            Step::Reply(Reply::text("ok").stop(StopReason::EndTurn))
        })),
        ..DoubleConfig::default()
    })
    .await
    .unwrap();
    let (routes, _) = Routes::build(&[pool(&double, window)], &BrokerSettings::default(), None).unwrap();
    let routes = Arc::new(routes);
    let start = Instant::now();
    let end = start + length;
    let callers: Vec<_> = (0..TASKS)
        .map(|t| {
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut caller = Caller::new(TaskId::from_bits(t + 1), 4, None);
                let request = request(t);
                while Instant::now() < end {
                    routes.complete(&mut caller, &request, &mut |_| {}, &mut |_| {}).await.unwrap();
                }
            })
        })
        .collect();
    // A priority-0 task joins once the key is saturated; between calls it runs a tool for 300 ms.
    let urgent = {
        let routes = routes.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((start + settle).into()).await;
            let mut caller = Caller::new(TaskId::from_bits(999), 0, None);
            let request = request(999);
            let mut waits = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                routes.complete(&mut caller, &request, &mut |_| {}, &mut |_| {}).await.unwrap();
                waits.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            waits
        })
    };
    for c in callers {
        c.await.unwrap();
    }
    let waits = urgent.await.unwrap();
    // The saturated period: after the limit was learnt (and, in bucket mode, the first bucket spent) until the
    // last task stopped asking.
    let from = start + settle;
    let served = served.lock().unwrap().clone();
    let last = served.last().map(|s| s.0).unwrap_or(end);
    let in_period: Vec<&(Instant, String)> = served.iter().filter(|s| s.0 >= from && s.0 <= end).collect();
    let period = end.min(last).saturating_duration_since(from);
    let capacity = rate * period.as_secs_f64();
    let utilisation = in_period.len() as f64 / capacity;
    let mut shares: HashMap<&str, f64> = HashMap::new();
    for (_, who) in &in_period {
        if who != "task bench-999" {
            *shares.entry(who.as_str()).or_default() += 1.0;
        }
    }
    let values: Vec<f64> = shares.values().copied().collect();
    let sum: f64 = values.iter().sum();
    let jain = sum * sum / (values.len() as f64 * values.iter().map(|v| v * v).sum::<f64>());
    let refused = double.rate_limited_count();
    let times: Vec<Instant> = in_period.iter().map(|s| s.0).collect();
    let widest = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    println!(
        "saturation, {mode:?} mode: {TASKS} priority-4 tasks and one priority-0 task (300 ms tool runs) on one key,"
    );
    println!("  {limits:?} per {window:?}, learnt from headers; {length:?}");
    println!(
        "  served {} requests; in the saturated period ({period:.1?}): {} of a possible {capacity:.1}; widest gap {widest:?}",
        served.len(),
        in_period.len()
    );
    println!("  utilisation {:.1} %", utilisation * 100.0);
    println!("  429s from the double: {refused} (all of the run)");
    println!(
        "  Jain's fairness index across {} priority-4 tasks: {jain:.4} (shares {:.0}..{:.0})",
        values.len(),
        values.iter().copied().fold(f64::MAX, f64::min),
        values.iter().copied().fold(0.0, f64::max)
    );
    let run = Run { label: "priority 0".into(), clients: 1, latencies: waits, wall: Duration::ZERO };
    println!(
        "  priority-0 call (queueing wait + a loopback answer): p50 {:.1?}, p99 {:.1?}, {} calls",
        run.percentile(50.0),
        run.percentile(99.0),
        run.latencies.len()
    );
    double.shutdown().await;
}

async fn latency(calls: usize) {
    // Limits far above what the run uses (the direct calls count on the same key, as the double's headers say).
    let roomy = KeyLimits { requests: Some(100_000_000), ..KeyLimits::default() };
    let double = LlmDouble::start_with(DoubleConfig {
        keys: vec![(KEY.into(), DoubleKey { limits: roomy, ..DoubleKey::default() })],
        policy: Some(policy(|_| Step::Reply(Reply::text("ok").stop(StopReason::EndTurn)))),
        ..DoubleConfig::default()
    })
    .await
    .unwrap();
    let config = pool(&double, Duration::from_secs(60));
    let direct = Provider::new(config.keys[0].provider.clone()).unwrap();
    let (routes, _) = Routes::build(&[config], &BrokerSettings::default(), None).unwrap();
    let request = request(0);
    let mut caller = Caller::new(TaskId::from_bits(1), 2, None);
    // Warm both paths (connections, the limit learnt from the first answer).
    for _ in 0..50 {
        direct.complete(&request, &mut |_| {}).await.unwrap();
        routes.complete(&mut caller, &request, &mut |_| {}, &mut |_| {}).await.unwrap();
    }
    let mut direct_run = Run { label: "direct".into(), clients: 1, latencies: Vec::new(), wall: Duration::ZERO };
    let mut routed_run =
        Run { label: "through the broker".into(), clients: 1, latencies: Vec::new(), wall: Duration::ZERO };
    // Interleaved, each first in turn, so both see the same machine load.
    for i in 0..calls {
        for routed in [i % 2 == 0, i % 2 == 1] {
            let t = Instant::now();
            if routed {
                routes.complete(&mut caller, &request, &mut |_| {}, &mut |_| {}).await.unwrap();
                routed_run.latencies.push(t.elapsed());
            } else {
                direct.complete(&request, &mut |_| {}).await.unwrap();
                direct_run.latencies.push(t.elapsed());
            }
        }
    }
    direct_run.wall = direct_run.latencies.iter().sum();
    routed_run.wall = routed_run.latencies.iter().sum();
    println!("added latency per call ({calls} calls each, interleaved):");
    println!("{}", Run::header());
    println!("{}", direct_run.row());
    println!("{}", routed_run.row());
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let diff = |p: f64| us(routed_run.percentile(p)) - us(direct_run.percentile(p));
    println!("  added: p50 {:.0} µs, p99 {:.0} µs", diff(50.0), diff(99.0));
    let max = |r: &Run| r.latencies.iter().max().copied().unwrap_or_default();
    println!("  slowest call: direct {:?}, through the broker {:?}", max(&direct_run), max(&routed_run));
    double.shutdown().await;
}
