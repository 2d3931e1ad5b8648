//! The broker paces each key as the providers meter it (issue 14): against the LLM double metering by token bucket
//! as Anthropic documents it (600 requests a minute in a bucket of 60, and token buckets), a cold start sends every
//! task's first request at once, a priority-0 task created on a drained bucket is sent at the refill rate ahead of
//! twenty priority-4 tasks, the sends under saturation are evenly spaced, and the limits learnt are kept in the
//! broker's state file under a hash of the key, never the key.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neuraphage_llm_double::{DoubleConfig, DoubleKey, KeyLimits, RecordedRequest, Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TEST_API_KEY, TestHome};
use serde_json::Value;

const WITHIN: Duration = Duration::from_secs(180);
/// One refill interval of 600 requests a minute.
const REFILL: Duration = Duration::from_millis(100);

fn tag(r: &RecordedRequest) -> String {
    let text = r.first_user_text().unwrap_or_default();
    text.split_whitespace().find(|w| w.starts_with("pc-")).unwrap_or("?").to_owned()
}

/// 600 requests a minute in a bucket of 60; 2 M input and 400 k output tokens a minute in buckets of a tenth.
fn bucket_key() -> DoubleKey {
    DoubleKey {
        limits: KeyLimits {
            requests: Some(600),
            input_tokens: Some(2_000_000),
            output_tokens: Some(400_000),
            buckets: Some([60, 200_000, 40_000]),
        },
        ..DoubleKey::default()
    }
}

fn new_task(home: &TestHome, description: &str, extra: &[&str]) -> String {
    let mut args = vec!["task", "new", description, "--json"];
    args.extend_from_slice(extra);
    home.json(&args)["id"].as_str().unwrap().to_owned()
}

/// Arrival time and tag of each request the double answered or refused.
type Arrivals = Arc<Mutex<Vec<(Instant, String)>>>;

#[test]
fn ten_tasks_on_a_key_with_no_known_limits_all_send_their_first_request_within_a_second() {
    let arrivals: Arrivals = Arc::default();
    let log = arrivals.clone();
    // Requests only: a held answer keeps its `max_tokens` counted against the output tokens, as Anthropic does.
    let requests_only = KeyLimits { requests: Some(600), buckets: Some([60, 0, 0]), ..KeyLimits::default() };
    let model = Model::start_with(DoubleConfig {
        keys: vec![(TEST_API_KEY.into(), DoubleKey { limits: requests_only, ..DoubleKey::default() })],
        // Each answer is held: its head goes at once, its events five seconds apart (half a minute in all).
        policy: Some(policy(move |r| {
            log.lock().unwrap().push((Instant::now(), tag(r)));
            let mut reply = Reply::text("a slow answer, held back event by event").stop(StopReason::EndTurn);
            reply.chunk_chars = 8;
            Step::Reply(reply.delay(Duration::from_secs(5)))
        })),
        ..DoubleConfig::default()
    });
    let mut home = TestHome::new();
    home.write_config("max-concurrent: 10\n");
    // The key comes from ANTHROPIC_API_KEY, with no limits configured and none learnt before.
    home.start_with_model(&model);
    let mut created = Vec::new();
    for i in 0..10 {
        let at = Instant::now();
        created.push((new_task(&home, &format!("slow answer pc-cold{i}"), &[]), at));
    }
    let deadline = Instant::now() + WITHIN;
    let firsts = loop {
        let seen = arrivals.lock().unwrap().clone();
        let firsts: Vec<Option<Instant>> =
            (0..10).map(|i| seen.iter().find(|(_, t)| *t == format!("pc-cold{i}")).map(|(at, _)| *at)).collect();
        if firsts.iter().all(Option::is_some) {
            break firsts.into_iter().flatten().collect::<Vec<_>>();
        }
        assert!(Instant::now() < deadline, "not every task sent a request: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let waits: Vec<Duration> =
        firsts.iter().zip(&created).map(|(first, (_, at))| first.saturating_duration_since(*at)).collect();
    eprintln!("first request after creation: {waits:?}");
    // The bound is a second; the slack covers a worker's start on a loaded machine. Without the fix the
    // nine others waited for the first answer: half a minute.
    for (i, w) in waits.iter().enumerate() {
        assert!(*w <= Duration::from_secs(3), "task {i} sent its first request {w:?} after it was created");
    }
    let first = firsts.iter().min().unwrap();
    let last = firsts.iter().max().unwrap();
    let (_, last_created) = created.last().unwrap();
    assert!(
        *last < *first + Duration::from_secs(25),
        "the last first request came {:?} after the first: it waited for an answer",
        *last - *first
    );
    assert!(last.saturating_duration_since(*last_created) <= Duration::from_secs(3));
    assert_eq!(model.double.rate_limited_count(), 0);
    for (id, _) in &created {
        home.run(&["task", "kill", id]);
    }
}

#[test]
fn a_priority_0_task_on_a_drained_bucket_is_paced_ahead_of_twenty_priority_4_tasks() {
    const LOW: usize = 20;
    // Each low task takes 30 requests (59 messages); the urgent one 6.
    let arrivals: Arrivals = Arc::default();
    let log = arrivals.clone();
    let model = Model::start_with(DoubleConfig {
        keys: vec![("sk-pc-bucket".into(), bucket_key())],
        policy: Some(policy(move |r| {
            let t = tag(r);
            log.lock().unwrap().push((Instant::now(), t.clone()));
            let turns = if t == "pc-urgent" { 11 } else { 59 };
            if r.messages().len() >= turns {
                Step::Reply(Reply::text("done").stop(StopReason::EndTurn))
            } else {
                Step::Reply(Reply::text("more").stop(StopReason::MaxTokens))
            }
        })),
        ..DoubleConfig::default()
    });
    let mut home = TestHome::new();
    home.write_keys(&format!(
        "pools:\n  main:\n    provider: anthropic\n    base-url: {}\n    keys:\n      - api-key: sk-pc-bucket\n",
        model.double.anthropic_base_url()
    ));
    // Every turn is a `max_tokens` continuation without a tool call, which the Watcher counts as the model talking
    // to itself; its judgments would also draw on the bucket this test drains: it is off here.
    home.write_config(&format!("max-concurrent: {}\nmax-iterations: 400\nwatcher:\n  enabled: false\n", LOW + 1));
    home.start_supervisor();
    let low: Vec<String> =
        (0..LOW).map(|i| new_task(&home, &format!("background pc-low{i}"), &["--priority", "4"])).collect();
    // The bucket of 60 is drained when more than 60 requests were sent and the low tasks show as queued.
    let deadline = Instant::now() + WITHIN;
    loop {
        let sent = model.double.requests().len();
        let queued = low.iter().any(|id| home.show(id)["status_detail"]["phase"]["LlmQueued"].is_object());
        if sent > 70 && queued {
            break;
        }
        assert!(Instant::now() < deadline, "the bucket never drained: {sent} requests");
        std::thread::sleep(Duration::from_millis(20));
    }
    let unfinished: Vec<String> =
        low.iter().filter(|id| !matches!(home.show(id)["status"].as_str(), Some("Completed"))).cloned().collect();
    let created = Instant::now();
    let urgent = new_task(&home, "urgent pc-urgent", &["--priority", "0"]);
    let done = &home.wait_ended(&[&urgent], WITHIN)[0];
    assert_eq!(done["status"], "Completed", "{done:#}");
    let urgent_done = Instant::now();
    // Which of the low tasks unfinished at its creation were still unfinished when it was done.
    let behind = unfinished.iter().filter(|id| !matches!(home.show(id)["status"].as_str(), Some("Completed"))).count();
    let refs: Vec<&str> = low.iter().map(String::as_str).collect();
    for t in home.wait_ended(&refs, WITHIN) {
        assert_eq!(t["status"], "Completed", "{t:#}");
    }
    let seen = arrivals.lock().unwrap().clone();
    let requests = model.double.requests().len();
    let refused = model.double.rate_limited_count();
    eprintln!("{refused} of {requests} requests refused");
    assert!(refused as f64 <= requests as f64 * 0.01, "{refused} of {requests} requests were refused (429)");

    // The urgent task: each request waits at most a refill interval plus its own turn. Its own turn is measured
    // as its quickest gap (the worker's work between an answer and the next request); the slack is for the load.
    let mine: Vec<Instant> = seen.iter().filter(|(_, t)| t == "pc-urgent").map(|(at, _)| *at).collect();
    assert_eq!(mine.len(), 6, "{seen:?}");
    let first_wait = mine[0].saturating_duration_since(created);
    let gaps: Vec<Duration> = mine.windows(2).map(|w| w[1] - w[0]).collect();
    let own = *gaps.iter().min().unwrap();
    eprintln!(
        "urgent: first request {first_wait:?} after creation; gaps {gaps:?}; done after {:?}",
        urgent_done - created
    );
    for g in &gaps {
        assert!(*g <= own + REFILL + Duration::from_millis(400), "a gap of {g:?} (own turn {own:?}): {gaps:?}");
    }
    assert!(
        behind * 10 >= unfinished.len() * 8,
        "finished before only {behind} of the {} low tasks unfinished at its creation",
        unfinished.len()
    );

    // Evenly spaced under saturation: from the bucket's drain to the first low task's last request, no gap
    // longer than three refill intervals (with slack for a loaded machine).
    let lows: Vec<&(Instant, String)> = seen.iter().filter(|(_, t)| t.starts_with("pc-low")).collect();
    let end = (0..LOW).map(|i| lows.iter().rev().find(|(_, t)| *t == format!("pc-low{i}")).unwrap().0).min().unwrap();
    let start = seen[60].0;
    let times: Vec<Instant> = seen.iter().map(|(at, _)| *at).filter(|at| *at >= start && *at <= end).collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let widest = gaps.iter().max().copied().unwrap_or_default();
    let rate = times.len() as f64 / end.saturating_duration_since(start).as_secs_f64();
    eprintln!("saturated: {} requests at {rate:.2}/s, widest gap {widest:?}", times.len());
    assert!(times.len() > 100, "too short a saturated period: {}", times.len());
    // One stall of the whole machine (an fsync storm holds every worker's checkpoint, so nothing is queued in the
    // broker meanwhile) may show as one wide gap; bursts-then-pauses, the defect this guards against, show as one
    // every few seconds.
    let bound = 3 * REFILL + Duration::from_millis(300);
    let wide: Vec<&Duration> = gaps.iter().filter(|g| **g > bound).collect();
    assert!(wide.len() <= 1, "{} gaps over {bound:?} while requests were queued: {wide:?}", wide.len());

    // Shares of the equal-priority tasks while all were running. With about 25 requests each, a worker the loaded
    // machine schedules late misses a turn or two the broker offered it, so one share may stray past 10 % of the
    // mean (27 against a mean of 24 was seen); the whole is held by Jain's index and no task below 85 % of it.
    let tags: Vec<&String> = lows.iter().map(|(_, t)| t).collect();
    let names: Vec<String> = (0..LOW).map(|i| format!("pc-low{i}")).collect();
    let from = names.iter().map(|n| tags.iter().position(|t| *t == n).unwrap()).max().unwrap();
    let to = names.iter().map(|n| tags.iter().rposition(|t| *t == n).unwrap()).min().unwrap();
    let mut shares: BTreeMap<&str, f64> = names.iter().map(|n| (n.as_str(), 0.0)).collect();
    for t in &tags[from..=to] {
        if let Some(s) = shares.get_mut(t.as_str()) {
            *s += 1.0;
        }
    }
    let n = shares.len() as f64;
    let sum: f64 = shares.values().sum();
    let jain = sum * sum / (n * shares.values().map(|v| v * v).sum::<f64>());
    let min = shares.values().copied().fold(f64::MAX, f64::min);
    eprintln!("equal-priority shares: Jain's index {jain:.4}, lowest {min} of a mean {:.1}", sum / n);
    assert!(jain >= 0.99, "unfair shares (Jain's index {jain:.4}): {shares:?}");
    assert!(min >= 0.85 * sum / n, "a task got less than 85 % of the mean share: {shares:?}");
}

#[test]
fn learnt_limits_are_kept_by_a_hash_of_the_key_and_a_malformed_file_is_ignored() {
    let model = Model::start_with(DoubleConfig {
        keys: vec![(TEST_API_KEY.into(), bucket_key())],
        policy: Some(policy(|_| Step::Reply(Reply::text("done").stop(StopReason::EndTurn)))),
        ..DoubleConfig::default()
    });
    let mut home = TestHome::new();
    let file = home.paths.home.join("broker-limits.json");
    // Control: a malformed file is ignored (logged), and the broker serves.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&home.paths.home)
        .unwrap();
    std::fs::write(&file, "{ this is not json").unwrap();
    home.start_with_model(&model);
    let id = new_task(&home, "learn pc-learn", &[]);
    assert_eq!(home.wait_ended(&[&id], WITHIN)[0]["status"], "Completed");
    let deadline = Instant::now() + WITHIN;
    let text = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("\"version\"") {
            break text;
        }
        assert!(Instant::now() < deadline, "the state file was not rewritten: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!text.contains(TEST_API_KEY) && !text.contains("sk-ant"), "the key is in the state file: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let keys = body["keys"].as_object().unwrap();
    assert_eq!(keys.len(), 1, "{text}");
    let (hash, learnt) = keys.iter().next().unwrap();
    assert_eq!(hash.len(), 64, "a SHA-256: {hash}");
    assert_eq!(learnt["limits"][0], 600, "{text}");
    let capacity = learnt["capacity"][0].as_f64().unwrap();
    assert!((58.0..=60.0).contains(&capacity), "the bucket of 60 was seen: {capacity}");
    assert_eq!(learnt["windowed"], false);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions()) & 0o777;
    assert_eq!(mode, 0o600);
    let logs: String = std::fs::read_dir(home.paths.home.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(logs.contains("learnt limits ignored"), "the malformed file was not reported");
}
