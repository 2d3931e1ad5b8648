use super::*;

const W: Duration = Duration::from_secs(60);
const MS: Duration = Duration::from_millis(1);

fn limits(requests: u64, input: u64, output: u64) -> [Option<u64>; DIMENSIONS] {
    [Some(requests), Some(input), Some(output), None]
}

fn said(limit: u64, remaining: u64, reset: Duration) -> RateHeaders {
    let mut h = RateHeaders::default();
    h.0[REQUESTS] = Dimension { limit: Some(limit), remaining: Some(remaining), reset: Some(reset), precision: MS };
    h
}

#[test]
fn a_full_bucket_goes_at_once_then_one_request_per_refill_interval() {
    let t0 = Instant::now();
    let mut k = KeyLimiter::new(W, limits(600, 1_000_000, 1_000_000));
    for _ in 0..600 {
        k.try_reserve(t0, Cost::request(1, 1)).unwrap();
    }
    let next = k.try_reserve(t0, Cost::request(1, 1)).unwrap_err();
    assert!(next > t0 + Duration::from_millis(99) && next <= t0 + Duration::from_millis(102), "{:?}", next - t0);
    k.try_reserve(next, Cost::request(1, 1)).unwrap();
    let after = k.try_reserve(next, Cost::request(1, 1)).unwrap_err();
    assert!(after - next <= Duration::from_millis(102), "one refill interval: {:?}", after - next);
}

#[test]
fn the_head_sets_the_level_and_the_bucket_size_but_never_raises_the_level() {
    let t0 = Instant::now();
    let mut k = KeyLimiter::new(W, [None; DIMENSIONS]);
    let a = k.try_reserve(t0, Cost::request(1, 1)).unwrap();
    // 600 a minute in a bucket of 60: 59 remain, full again in a tenth of a second.
    k.observe(t0, a, Some(&said(600, 59, Duration::from_millis(100))));
    assert!(!k.windowed());
    assert_eq!(k.limits()[REQUESTS], Some(600));
    for _ in 0..59 {
        k.try_reserve(t0, Cost::request(1, 1)).unwrap();
    }
    assert!(k.try_reserve(t0, Cost::request(1, 1)).is_err(), "the bucket is 60, not 600");
    let learnt = k.take_learnt().unwrap();
    assert!((learnt.capacity[REQUESTS].unwrap() - 60.0).abs() < 0.01, "{learnt:?}");
    assert_eq!(k.take_learnt(), None, "reported once");
    // A later head that says more remains than we count changes nothing.
    let b = k.try_reserve(t0 + Duration::from_secs(1), Cost::request(1, 1)).unwrap();
    let before = k.levels(t0 + Duration::from_secs(1))[REQUESTS].unwrap();
    k.observe(t0 + Duration::from_secs(1), b, Some(&said(600, 60, Duration::ZERO)));
    assert_eq!(k.levels(t0 + Duration::from_secs(1))[REQUESTS], Some(before));
}

#[test]
fn what_was_sent_after_the_answered_request_is_not_assumed_counted() {
    let t0 = Instant::now();
    let mut k = KeyLimiter::new(W, limits(600, 1_000_000, 1_000_000));
    let a = k.try_reserve(t0, Cost::request(1, 1)).unwrap();
    for _ in 0..9 {
        k.try_reserve(t0, Cost::request(1, 1)).unwrap();
    }
    // The provider counted only `a`: 20 remain of its bucket; nine more are on their way.
    k.observe(t0, a, Some(&said(600, 20, Duration::from_secs(4))));
    assert!((k.levels(t0)[REQUESTS].unwrap() - 11.0).abs() < 0.01);
}

#[test]
fn a_cold_start_lets_a_few_out_then_waits_for_the_first_head() {
    let t0 = Instant::now();
    let mut k = KeyLimiter::new(W, [None; DIMENSIONS]);
    let first = k.try_reserve(t0, Cost::request(1, 1)).unwrap();
    for _ in 1..COLD_START {
        k.try_reserve(t0, Cost::request(1, 1)).unwrap();
    }
    assert!(k.try_reserve(t0, Cost::request(1, 1)).is_err());
    k.observe(t0, first, Some(&said(50, 46, Duration::from_millis(4800))));
    assert!(k.try_reserve(t0, Cost::request(1, 1)).is_ok());
}

#[test]
fn a_provider_without_headers_leaves_the_key_unlimited_after_its_first_answer() {
    let t0 = Instant::now();
    let mut k = KeyLimiter::new(W, [None; DIMENSIONS]);
    let a = k.try_reserve(t0, Cost::request(1, 1)).unwrap();
    k.observe(t0, a, None);
    for _ in 0..100 {
        k.try_reserve(t0, Cost::request(1, 1)).unwrap();
    }
}

#[test]
fn a_window_provider_is_recognised_and_held_to_its_window() {
    let t0 = Instant::now();
    let w = Duration::from_secs(1);
    let mut k = KeyLimiter::new(w, [None; DIMENSIONS]);
    let a = k.try_reserve(t0, Cost::request(1, 1)).unwrap();
    // 10 a second by window: 9 remain, the window resets in a second (a bucket of 10 would be full in 0.1 s).
    k.observe(t0, a, Some(&said(10, 9, Duration::from_secs(1))));
    assert!(k.windowed());
    k.settle(t0, a, Some(Cost::request(1, 1)));
    for _ in 0..9 {
        k.try_reserve(t0, Cost::request(1, 1)).unwrap();
    }
    let at = k.try_reserve(t0 + Duration::from_millis(500), Cost::request(1, 1)).unwrap_err();
    assert!(at >= t0 + w, "the bucket has refilled five, but the window holds ten until {:?}", at - t0);
}

#[test]
fn output_is_reserved_as_max_tokens_and_settled_to_the_usage() {
    let t0 = Instant::now();
    let mut k = KeyLimiter::new(W, limits(100, 10_000, 1000));
    let a = k.try_reserve(t0, Cost::request(10, 800)).unwrap();
    assert!(k.try_reserve(t0, Cost::request(10, 800)).is_err(), "800 + 800 > 1000 output tokens");
    k.settle(t0, a, Some(Cost::request(10, 50)));
    assert!(k.try_reserve(t0, Cost::request(10, 800)).is_ok(), "50 + 800 fits");
    assert!((k.levels(t0)[OUTPUT].unwrap() - 150.0).abs() < 0.01);
}

#[test]
fn a_refused_request_is_refunded_and_retry_after_pauses_the_key() {
    let t0 = Instant::now();
    let mut k = KeyLimiter::new(W, limits(1, 1000, 1000));
    let a = k.try_reserve(t0, Cost::request(1, 1)).unwrap();
    k.settle(t0, a, None);
    k.pause_until(t0 + Duration::from_secs(3));
    assert_eq!(k.try_reserve(t0, Cost::request(1, 1)), Err(t0 + Duration::from_secs(3)));
    assert!(k.try_reserve(t0 + Duration::from_secs(3), Cost::request(1, 1)).is_ok());
}

#[test]
fn learnt_limits_are_restored_with_part_of_the_bucket() {
    let t0 = Instant::now();
    let mut k = KeyLimiter::new(W, [None; DIMENSIONS]);
    let a = k.try_reserve(t0, Cost::request(1, 1)).unwrap();
    k.observe(t0, a, Some(&said(600, 59, Duration::from_millis(100))));
    let learnt = k.take_learnt().unwrap();
    let mut again = KeyLimiter::new(W, [None; DIMENSIONS]);
    again.restore(&learnt);
    assert_eq!(again.limits()[REQUESTS], Some(600));
    let now = Instant::now();
    let level = again.levels(now)[REQUESTS].unwrap();
    assert!((14.0..=16.0).contains(&level), "a quarter of 60: {level}");
    // Restored: no cold start.
    for _ in 0..10 {
        again.try_reserve(now, Cost::request(1, 1)).unwrap();
    }
    let mut other = KeyLimiter::new(Duration::from_secs(1), [None; DIMENSIONS]);
    other.restore(&learnt);
    assert_eq!(other.limits()[REQUESTS], None, "learnt for another window");
}

#[test]
fn many_threads_never_reserve_past_the_bucket() {
    let k = std::sync::Arc::new(std::sync::Mutex::new(KeyLimiter::new(W, limits(50, 1_000_000, 1_000_000))));
    let t0 = Instant::now();
    let granted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (k, granted) = (k.clone(), granted.clone());
            std::thread::spawn(move || {
                for _ in 0..100 {
                    if k.lock().unwrap().try_reserve(t0, Cost::request(1, 1)).is_ok() {
                        granted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(granted.load(std::sync::atomic::Ordering::Relaxed), 50);
}
