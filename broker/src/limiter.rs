//! One API key's rate limits: requests, input tokens, output tokens (and the combined tokens limit some providers
//! advertise) per window, kept as a sliding log of reservations so that concurrent callers can never together push
//! the key past its limit plus one request's reservation.
//!
//! A caller [`KeyLimiter::try_reserve`]s its estimated cost (input tokens estimated from the request, output tokens
//! as `max_tokens`, as Anthropic charges them up front) before it sends, and [`KeyLimiter::settle`]s with the usage
//! the provider reported afterwards (or refunds a request the provider refused). Limits start as configured and are
//! then learnt from the provider's rate-limit headers ([`RateHeaders`]): Anthropic's `anthropic-ratelimit-*` (reset
//! as an RFC 3339 time) and OpenAI's `x-ratelimit-*` (reset as a duration such as `6m0s`). While no limit is known a
//! key sends one request at a time, so the first answer teaches the limits before a burst can exceed them.
//!
//! Why not `governor`: its GCRA cells admit a fixed cost up front and cannot settle a reservation to the cost later
//! reported, nor take a limit learnt mid-window; a sliding log of a few thousand entries per key is exact and cheap.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

/// The dimensions a key is limited in.
pub const DIMENSIONS: usize = 4;
/// Index of requests.
pub const REQUESTS: usize = 0;
/// Index of input tokens.
pub const INPUT: usize = 1;
/// Index of output tokens.
pub const OUTPUT: usize = 2;
/// Index of input and output tokens together (OpenAI's `tokens`, Anthropic's `tokens`).
pub const TOKENS: usize = 3;
/// Names of the dimensions, for messages.
pub const NAMES: [&str; DIMENSIONS] = ["requests", "input tokens", "output tokens", "tokens"];

/// Slack added to a reservation's window: the provider starts counting when the request reaches it, a moment after
/// the reservation. (A settled request counts from when its answer arrived, which is later still.)
const MARGIN: Duration = Duration::from_millis(5);

/// The cost of one request in each dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost(pub [u64; DIMENSIONS]);

impl Cost {
    /// One request of `input` and `output` tokens.
    pub fn request(input: u64, output: u64) -> Cost {
        Cost([1, input, output, input.saturating_add(output)])
    }
}

/// A reservation held by a request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation(u64);

#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    expires: Instant,
    cost: [u64; DIMENSIONS],
    in_flight: bool,
}

/// What one response's rate-limit headers said about one dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dimension {
    /// The limit per window.
    pub limit: Option<u64>,
    /// What remains now.
    pub remaining: Option<u64>,
    /// When the remaining amount is back to the limit.
    pub reset: Option<Duration>,
}

/// A response's rate-limit headers, per dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders(pub [Dimension; DIMENSIONS]);

impl RateHeaders {
    /// Read Anthropic's `anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,remaining,reset}`
    /// and OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`. `None` when there are none.
    pub fn parse(headers: &HeaderMap, now: chrono::DateTime<chrono::Utc>) -> Option<RateHeaders> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let number = |name: &str| get(name).and_then(|v| v.parse::<u64>().ok());
        let mut out = RateHeaders::default();
        let mut any = false;
        for (i, anthropic, openai) in [
            (REQUESTS, "requests", Some("requests")),
            (INPUT, "input-tokens", None),
            (OUTPUT, "output-tokens", None),
            (TOKENS, "tokens", Some("tokens")),
        ] {
            let mut d = Dimension {
                limit: number(&format!("anthropic-ratelimit-{anthropic}-limit")),
                remaining: number(&format!("anthropic-ratelimit-{anthropic}-remaining")),
                reset: get(&format!("anthropic-ratelimit-{anthropic}-reset")).and_then(|v| rfc3339_in(v, now)),
            };
            if let Some(openai) = openai
                && d.limit.is_none()
            {
                d = Dimension {
                    limit: number(&format!("x-ratelimit-limit-{openai}")),
                    remaining: number(&format!("x-ratelimit-remaining-{openai}")),
                    reset: get(&format!("x-ratelimit-reset-{openai}")).and_then(go_duration),
                };
            }
            any |= d.limit.is_some();
            out.0[i] = d;
        }
        any.then_some(out)
    }
}

/// How long until an RFC 3339 time (zero if past).
fn rfc3339_in(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(value).ok()?.with_timezone(&chrono::Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// A Go-style duration as OpenAI writes its resets: `6m0s`, `1s`, `20ms`, `1h2m3.5s`, `0.5s`.
pub fn go_duration(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit..];
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

/// One key's limits and what has been reserved against them in the current window.
#[derive(Debug)]
pub struct KeyLimiter {
    window: Duration,
    limits: [Option<u64>; DIMENSIONS],
    used: [u64; DIMENSIONS],
    entries: Vec<Entry>,
    next_id: u64,
    /// Whether the limits are known (configured, or learnt from an answer, which may have said there are none).
    known: bool,
    in_flight: u32,
    paused_until: Option<Instant>,
    /// The earliest expiry of a settled entry: nothing leaves the window before it (keeps `expire` O(1) mostly).
    next_expiry: Option<Instant>,
}

impl KeyLimiter {
    /// A key limited per `window` by `limits` (`None`: not known yet; it is learnt from the first answer).
    pub fn new(window: Duration, limits: [Option<u64>; DIMENSIONS]) -> KeyLimiter {
        KeyLimiter {
            window,
            limits,
            used: [0; DIMENSIONS],
            entries: Vec::new(),
            next_id: 0,
            known: limits.iter().any(Option::is_some),
            in_flight: 0,
            paused_until: None,
            next_expiry: None,
        }
    }

    /// The limits known now.
    pub fn limits(&self) -> [Option<u64>; DIMENSIONS] {
        self.limits
    }

    /// Drop what left the window. A request in flight stays counted until it is settled, however long it takes: the
    /// provider may have received it late.
    fn expire(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|at| at > now) {
            return;
        }
        let used = &mut self.used;
        let mut next: Option<Instant> = None;
        self.entries.retain(|e| {
            let keep = e.expires > now || e.in_flight;
            if !keep {
                for (u, c) in used.iter_mut().zip(e.cost) {
                    *u = u.saturating_sub(c);
                }
            } else if !e.in_flight {
                next = Some(next.map_or(e.expires, |n| n.min(e.expires)));
            }
            keep
        });
        self.next_expiry = next;
    }

    fn settled_expiry(&mut self, at: Instant) {
        self.next_expiry = Some(self.next_expiry.map_or(at, |n| n.min(at)));
    }

    /// The fraction of the tightest limit still free (1.0 when nothing is known to limit the key).
    pub fn headroom(&mut self, now: Instant) -> f64 {
        self.expire(now);
        self.limits
            .iter()
            .zip(self.used)
            .filter_map(|(l, u)| l.map(|l| if l == 0 { 0.0 } else { l.saturating_sub(u) as f64 / l as f64 }))
            .fold(1.0, f64::min)
    }

    /// Reserve `cost` now, or say when it may fit. A cost larger than a whole limit is let through alone, when
    /// nothing else is reserved (else it would never go).
    pub fn try_reserve(&mut self, now: Instant, cost: Cost) -> Result<Reservation, Instant> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Err(until);
            }
            self.paused_until = None;
        }
        self.expire(now);
        if !self.known && self.in_flight > 0 {
            // Probing: one request at a time until an answer says what the limits are. The settle wakes the queue.
            return Err(now + self.window);
        }
        let fits = |used: &[u64; DIMENSIONS]| {
            self.limits.iter().zip(used).zip(cost.0).all(|((l, u), c)| match l {
                None => true,
                Some(l) => u.saturating_add(c) <= *l || (*u == 0),
            })
        };
        if !fits(&self.used) {
            // The earliest time enough of the log expires for the cost to fit.
            let mut order: Vec<&Entry> = self.entries.iter().filter(|e| !(e.in_flight && e.expires <= now)).collect();
            order.sort_by_key(|e| e.expires);
            let mut used = self.used;
            for e in order {
                for (u, c) in used.iter_mut().zip(e.cost) {
                    *u = u.saturating_sub(c);
                }
                if fits(&used) {
                    return Err(e.expires);
                }
            }
            return Err(now + self.window);
        }
        self.next_id += 1;
        let id = self.next_id;
        for (u, c) in self.used.iter_mut().zip(cost.0) {
            *u = u.saturating_add(c);
        }
        let expires = now + self.window + MARGIN;
        self.entries.push(Entry { id, expires, cost: cost.0, in_flight: true });
        self.in_flight += 1;
        Ok(Reservation(id))
    }

    /// Settle a reservation: `Some(actual)` replaces its estimate with what the provider reported; `None` refunds it
    /// (the provider refused the request without counting it). `answered_at`, when the answer's headers arrived,
    /// bounds from above when the provider received it: the request counts until a window after that, so a
    /// provider whose window starts at receipt never sees more than its limit, whatever delays there were.
    pub fn settle(&mut self, reservation: Reservation, actual: Option<Cost>, answered_at: Option<Instant>) {
        let Some(pos) = self.entries.iter().rposition(|e| e.id == reservation.0) else {
            // Already expired from the window: nothing left to adjust.
            self.in_flight = self.in_flight.saturating_sub(1);
            return;
        };
        if self.entries[pos].in_flight {
            self.entries[pos].in_flight = false;
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        match actual {
            None => {
                let entry = self.entries.swap_remove(pos);
                for (u, c) in self.used.iter_mut().zip(entry.cost) {
                    *u = u.saturating_sub(c);
                }
            }
            Some(actual) => {
                let window = self.window;
                let entry = &mut self.entries[pos];
                if let Some(at) = answered_at {
                    entry.expires = entry.expires.max(at + window);
                }
                for ((u, old), new) in self.used.iter_mut().zip(entry.cost.iter_mut()).zip(actual.0) {
                    *u = u.saturating_sub(*old).saturating_add(new);
                    *old = new;
                }
                let expires = entry.expires;
                self.settled_expiry(expires);
            }
        }
    }

    /// Learn from an answer's rate-limit headers (`None`: the answer had none). A limit the provider states
    /// replaces ours; where it says less remains than we count, the difference (someone else's use of the key) is
    /// counted until the provider's reset.
    pub fn learn(&mut self, now: Instant, headers: Option<&RateHeaders>) {
        self.known = true;
        let Some(headers) = headers else { return };
        self.expire(now);
        let mut external = [0u64; DIMENSIONS];
        let mut reset = Duration::ZERO;
        for (i, d) in headers.0.iter().enumerate() {
            let Some(limit) = d.limit else { continue };
            self.limits[i] = Some(limit);
            if let Some(remaining) = d.remaining {
                let ours = limit.saturating_sub(self.used[i]);
                if remaining < ours {
                    external[i] = ours - remaining;
                    reset = reset.max(d.reset.unwrap_or(self.window).min(self.window));
                }
            }
        }
        if external.iter().any(|&e| e > 0) && !reset.is_zero() {
            self.next_id += 1;
            for (u, e) in self.used.iter_mut().zip(external) {
                *u = u.saturating_add(e);
            }
            self.entries.push(Entry { id: self.next_id, expires: now + reset, cost: external, in_flight: false });
            self.settled_expiry(now + reset);
        }
    }

    /// Send nothing on this key before `until` (the provider's `retry-after`).
    pub fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }

    /// What is reserved now, per dimension.
    pub fn used(&mut self, now: Instant) -> [u64; DIMENSIONS] {
        self.expire(now);
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    fn limits(requests: u64, input: u64, output: u64) -> [Option<u64>; DIMENSIONS] {
        [Some(requests), Some(input), Some(output), None]
    }

    #[test]
    fn reservations_stop_at_the_limit_and_the_window_frees_them() {
        let t0 = Instant::now();
        let mut k = KeyLimiter::new(W, limits(2, 1000, 1000));
        let a = k.try_reserve(t0, Cost::request(10, 10)).unwrap();
        k.try_reserve(t0 + Duration::from_secs(10), Cost::request(10, 10)).unwrap();
        assert_eq!(k.try_reserve(t0 + Duration::from_secs(20), Cost::request(10, 10)), Err(t0 + W + MARGIN));
        k.settle(a, Some(Cost::request(5, 5)), None);
        assert!(k.try_reserve(t0 + W + MARGIN, Cost::request(10, 10)).is_ok());
    }

    #[test]
    fn output_is_reserved_as_max_tokens_and_settled_to_the_usage() {
        let t0 = Instant::now();
        let mut k = KeyLimiter::new(W, limits(100, 10_000, 1000));
        let a = k.try_reserve(t0, Cost::request(10, 800)).unwrap();
        assert!(k.try_reserve(t0, Cost::request(10, 800)).is_err(), "800 + 800 > 1000 output tokens");
        k.settle(a, Some(Cost::request(10, 50)), None);
        assert!(k.try_reserve(t0, Cost::request(10, 800)).is_ok(), "50 + 800 fits");
        assert_eq!(k.used(t0)[OUTPUT], 850);
    }

    #[test]
    fn a_request_counts_until_a_window_after_its_answer_and_while_in_flight() {
        let t0 = Instant::now();
        let mut k = KeyLimiter::new(W, limits(1, 1000, 1000));
        let a = k.try_reserve(t0, Cost::request(1, 1)).unwrap();
        assert!(k.try_reserve(t0 + 2 * W, Cost::request(1, 1)).is_err(), "still in flight");
        k.settle(a, Some(Cost::request(1, 1)), Some(t0 + Duration::from_secs(1)));
        assert!(k.try_reserve(t0 + W + MARGIN, Cost::request(1, 1)).is_err(), "answered a second after it was sent");
        assert!(k.try_reserve(t0 + W + Duration::from_secs(1), Cost::request(1, 1)).is_ok());
    }

    #[test]
    fn a_refused_request_is_refunded() {
        let t0 = Instant::now();
        let mut k = KeyLimiter::new(W, limits(1, 1000, 1000));
        let a = k.try_reserve(t0, Cost::request(1, 1)).unwrap();
        k.settle(a, None, None);
        assert!(k.try_reserve(t0, Cost::request(1, 1)).is_ok());
    }

    #[test]
    fn unknown_limits_send_one_at_a_time_until_learnt() {
        let t0 = Instant::now();
        let mut k = KeyLimiter::new(W, [None; DIMENSIONS]);
        let a = k.try_reserve(t0, Cost::request(1, 1)).unwrap();
        assert!(k.try_reserve(t0, Cost::request(1, 1)).is_err());
        let mut h = RateHeaders::default();
        h.0[REQUESTS] = Dimension { limit: Some(3), remaining: Some(2), reset: Some(W) };
        k.learn(t0, Some(&h));
        k.settle(a, Some(Cost::request(1, 1)), None);
        assert_eq!(k.limits()[REQUESTS], Some(3));
        assert!(k.try_reserve(t0, Cost::request(1, 1)).is_ok());
        assert!(k.try_reserve(t0, Cost::request(1, 1)).is_ok());
        assert!(k.try_reserve(t0, Cost::request(1, 1)).is_err());
    }

    #[test]
    fn use_the_provider_reports_and_we_did_not_make_counts_until_its_reset() {
        let t0 = Instant::now();
        let mut k = KeyLimiter::new(W, limits(10, 1000, 1000));
        let mut h = RateHeaders::default();
        h.0[REQUESTS] = Dimension { limit: Some(10), remaining: Some(1), reset: Some(Duration::from_secs(5)) };
        k.learn(t0, Some(&h));
        assert!(k.try_reserve(t0, Cost::request(1, 1)).is_ok());
        assert!(k.try_reserve(t0, Cost::request(1, 1)).is_err());
        assert!(k.try_reserve(t0 + Duration::from_secs(5), Cost::request(1, 1)).is_ok());
    }

    #[test]
    fn retry_after_pauses_the_key() {
        let t0 = Instant::now();
        let mut k = KeyLimiter::new(W, limits(10, 1000, 1000));
        k.pause_until(t0 + Duration::from_secs(3));
        assert_eq!(k.try_reserve(t0, Cost::request(1, 1)), Err(t0 + Duration::from_secs(3)));
        assert!(k.try_reserve(t0 + Duration::from_secs(3), Cost::request(1, 1)).is_ok());
    }

    #[test]
    fn many_threads_never_reserve_past_the_limit() {
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

    #[test]
    fn headers_of_both_providers() {
        let now = chrono::Utc::now();
        let mut h = HeaderMap::new();
        h.insert("anthropic-ratelimit-requests-limit", "50".parse().unwrap());
        h.insert("anthropic-ratelimit-requests-remaining", "49".parse().unwrap());
        let reset = (now + chrono::Duration::seconds(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        h.insert("anthropic-ratelimit-requests-reset", reset.parse().unwrap());
        h.insert("anthropic-ratelimit-output-tokens-limit", "8000".parse().unwrap());
        let r = RateHeaders::parse(&h, now).unwrap();
        assert_eq!(r.0[REQUESTS].limit, Some(50));
        assert_eq!(r.0[REQUESTS].remaining, Some(49));
        let secs = r.0[REQUESTS].reset.unwrap().as_secs();
        assert!((29..=30).contains(&secs), "{secs}");
        assert_eq!(r.0[OUTPUT].limit, Some(8000));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit-tokens", "150000".parse().unwrap());
        h.insert("x-ratelimit-remaining-tokens", "149984".parse().unwrap());
        h.insert("x-ratelimit-reset-tokens", "6m0s".parse().unwrap());
        let r = RateHeaders::parse(&h, now).unwrap();
        assert_eq!(r.0[TOKENS].limit, Some(150_000));
        assert_eq!(r.0[TOKENS].reset, Some(Duration::from_secs(360)));
        assert!(RateHeaders::parse(&HeaderMap::new(), now).is_none());
        assert_eq!(go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(go_duration("1h2m3.5s"), Some(Duration::from_secs_f64(3723.5)));
        assert_eq!(go_duration("soon"), None);
    }
}
