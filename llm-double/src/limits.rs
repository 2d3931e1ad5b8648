//! The TEST DOUBLE's own rate limits: per API key, requests and input/output tokens per window, metered by a sliding
//! window or (with bucket sizes, see [`crate::bucket`]) by token buckets refilled continuously, with what each key
//! was served and refused, and the rate-limit headers each provider sends with every answer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::bucket::Buckets;
use crate::record::Endpoint;
use crate::server::set_header;

/// The request limit advertised in rate-limit headers when none is enforced.
pub(crate) const ADVERTISED_REQUESTS_PER_MINUTE: u32 = 4000;
/// The input-token limit advertised in rate-limit headers.
pub(crate) const ADVERTISED_INPUT_TOKENS_PER_MINUTE: u64 = 2_000_000;
/// The output-token limit advertised in rate-limit headers.
pub(crate) const ADVERTISED_OUTPUT_TOKENS_PER_MINUTE: u64 = 400_000;
/// The default rate-limit window.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// What the double enforces on one API key, per window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    /// Requests per window; `None`: not enforced (4000 advertised).
    pub requests: Option<u64>,
    /// Input tokens (the reply's `input_tokens` + `cache_creation_input_tokens`) per window; `None`: not enforced.
    pub input_tokens: Option<u64>,
    /// Output tokens (the reply's `output_tokens`) per window; `None`: not enforced.
    pub output_tokens: Option<u64>,
    /// Meter by token bucket rather than by window: the sizes of the requests, input-token and output-token buckets,
    /// each refilled continuously at its limit per window. `None`: a sliding window.
    pub buckets: Option<[u64; 3]>,
}

/// One API key the double knows, and what it does with its requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoubleKey {
    /// Its limits.
    pub limits: KeyLimits,
    /// Answer 401 `authentication_error` (a revoked key).
    pub revoked: bool,
    /// Answer 429 with the spend-limit error (`error.details.error_code: enforced_spend_limit_reached`, no
    /// `retry-after`), not a rate limit.
    pub spend_limited: bool,
}

/// What one key used, and what it was refused.
#[derive(Debug, Default)]
pub(crate) struct KeyRate {
    pub(crate) key: DoubleKey,
    /// (when, input tokens, output tokens) of each accepted request in the window.
    pub(crate) accepted: VecDeque<(Instant, u64, u64)>,
    pub(crate) rejected: u64,
    pub(crate) served: u64,
    pub(crate) buckets: Buckets,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct RateInfo {
    pub(crate) limits: [u64; 3],
    pub(crate) remaining: [u64; 3],
    /// Per dimension: when it is whole again (the oldest request leaves the window; the bucket is full).
    pub(crate) reset: [Duration; 3],
    /// How long a refused request should wait.
    pub(crate) retry: Duration,
    /// Metered by bucket.
    pub(crate) bucket: bool,
}

#[derive(Debug, Default)]
pub(crate) struct RateState {
    pub(crate) window: Duration,
    /// The request limit of keys not configured one by one.
    pub(crate) default_requests: Option<u32>,
    /// Only these keys are accepted when `strict`.
    pub(crate) keys: std::collections::HashMap<String, KeyRate>,
    pub(crate) strict: bool,
    pub(crate) rejected: u64,
}

impl KeyRate {
    pub(crate) fn admit(
        &mut self,
        now: Instant,
        window: Duration,
        input: u64,
        output: u64,
    ) -> Result<RateInfo, RateInfo> {
        while self.accepted.front().is_some_and(|t| now.saturating_duration_since(t.0) >= window) {
            self.accepted.pop_front();
        }
        let until_oldest_expires = |accepted: &VecDeque<(Instant, u64, u64)>| {
            accepted.front().map_or(window, |t| window.saturating_sub(now.saturating_duration_since(t.0)))
        };
        let used = [
            self.accepted.len() as u64,
            self.accepted.iter().map(|a| a.1).sum::<u64>(),
            self.accepted.iter().map(|a| a.2).sum::<u64>(),
        ];
        let l = self.key.limits;
        let limits = [l.requests, l.input_tokens, l.output_tokens];
        let advertised = [
            u64::from(ADVERTISED_REQUESTS_PER_MINUTE),
            ADVERTISED_INPUT_TOKENS_PER_MINUTE,
            ADVERTISED_OUTPUT_TOKENS_PER_MINUTE,
        ];
        let shown: [u64; 3] = std::array::from_fn(|i| limits[i].unwrap_or(advertised[i]));
        let cost = [1, input, output];
        if let Some(sizes) = l.buckets {
            let a = self.buckets.admit(now, window, limits, shown, sizes, cost);
            let info = RateInfo { limits: shown, remaining: a.remaining, reset: a.reset, retry: a.retry, bucket: true };
            if !a.admitted {
                self.rejected += 1;
                return Err(info);
            }
            self.served += 1;
            return Ok(info);
        }
        let over = (0..3).any(|i| limits[i].is_some_and(|l| used[i].saturating_add(cost[i]) > l));
        if over {
            self.rejected += 1;
            let remaining = std::array::from_fn(|i| shown[i].saturating_sub(used[i]));
            let reset = until_oldest_expires(&self.accepted);
            return Err(RateInfo { limits: shown, remaining, reset: [reset; 3], retry: reset, bucket: false });
        }
        self.accepted.push_back((now, input, output));
        self.served += 1;
        let remaining = std::array::from_fn(|i| shown[i].saturating_sub(used[i].saturating_add(cost[i])));
        let reset = until_oldest_expires(&self.accepted);
        Ok(RateInfo { limits: shown, remaining, reset: [reset; 3], retry: reset, bucket: false })
    }
}

impl RateState {
    pub(crate) fn key(&mut self, key: &str) -> Option<&mut KeyRate> {
        if !self.keys.contains_key(key) {
            if self.strict {
                return None;
            }
            let limits = KeyLimits { requests: self.default_requests.map(u64::from), ..KeyLimits::default() };
            let rate = KeyRate { key: DoubleKey { limits, ..DoubleKey::default() }, ..KeyRate::default() };
            self.keys.insert(key.to_owned(), rate);
        }
        self.keys.get_mut(key)
    }
}

/// The rate-limit headers of `endpoint`'s provider for `rate`: Anthropic's `anthropic-ratelimit-*` with RFC 3339
/// resets, OpenAI's `x-ratelimit-*` with duration resets.
pub(crate) fn rate_headers(endpoint: Endpoint, rate: &RateInfo, headers: &mut HeaderMap) {
    let [requests_limit, input_limit, output_limit] = rate.limits;
    let [requests_remaining, input_remaining, output_remaining] = rate.remaining;
    match endpoint {
        Endpoint::OpenAiChat => {
            let tokens_limit = input_limit.saturating_add(output_limit);
            let tokens_remaining = input_remaining.saturating_add(output_remaining);
            for (name, value) in [
                ("x-ratelimit-limit-requests", requests_limit.to_string()),
                ("x-ratelimit-remaining-requests", requests_remaining.to_string()),
                ("x-ratelimit-reset-requests", openai_duration(rate.reset[0])),
                ("x-ratelimit-limit-tokens", tokens_limit.to_string()),
                ("x-ratelimit-remaining-tokens", tokens_remaining.to_string()),
                ("x-ratelimit-reset-tokens", openai_duration(rate.reset[1].max(rate.reset[2]))),
            ] {
                set_header(headers, name, &value);
            }
        }
        Endpoint::AnthropicMessages | Endpoint::Other => {
            let now = chrono::Utc::now();
            let at = |d: Duration| {
                let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero());
                (now + d).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            };
            // `tokens`: in a bucket, as Anthropic documents it, the most restrictive of input and output now.
            let tight = if input_remaining as f64 / input_limit.max(1) as f64
                <= output_remaining as f64 / output_limit.max(1) as f64
            {
                1
            } else {
                2
            };
            let tokens = if rate.bucket {
                (rate.limits[tight], rate.remaining[tight], rate.reset[tight])
            } else {
                (
                    input_limit.saturating_add(output_limit),
                    input_remaining.saturating_add(output_remaining),
                    rate.reset[1],
                )
            };
            for (name, value) in [
                ("anthropic-ratelimit-requests-limit", requests_limit.to_string()),
                ("anthropic-ratelimit-requests-remaining", requests_remaining.to_string()),
                ("anthropic-ratelimit-requests-reset", at(rate.reset[0])),
                ("anthropic-ratelimit-input-tokens-limit", input_limit.to_string()),
                ("anthropic-ratelimit-input-tokens-remaining", input_remaining.to_string()),
                ("anthropic-ratelimit-input-tokens-reset", at(rate.reset[1])),
                ("anthropic-ratelimit-output-tokens-limit", output_limit.to_string()),
                ("anthropic-ratelimit-output-tokens-remaining", output_remaining.to_string()),
                ("anthropic-ratelimit-output-tokens-reset", at(rate.reset[2])),
                ("anthropic-ratelimit-tokens-limit", tokens.0.to_string()),
                ("anthropic-ratelimit-tokens-remaining", tokens.1.to_string()),
                ("anthropic-ratelimit-tokens-reset", at(tokens.2)),
            ] {
                set_header(headers, name, &value);
            }
        }
    }
}

/// OpenAI's reset spelling: `1s`, `6m0s`, `1h2m3s`.
fn openai_duration(d: Duration) -> String {
    let secs = d.as_secs_f64().ceil() as u64;
    match (secs / 3600, secs % 3600 / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_durations() {
        assert_eq!(openai_duration(Duration::from_millis(200)), "1s");
        assert_eq!(openai_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(openai_duration(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn rate_window_admits_up_to_the_limit_then_refuses() {
        let limits = KeyLimits { requests: Some(2), input_tokens: Some(100), output_tokens: None, buckets: None };
        let mut rate = KeyRate { key: DoubleKey { limits, ..DoubleKey::default() }, ..KeyRate::default() };
        let t0 = Instant::now();
        assert_eq!(rate.admit(t0, WINDOW, 10, 5).map(|i| i.remaining[0]).ok(), Some(1));
        assert!(rate.admit(t0, WINDOW, 95, 5).is_err(), "10 + 95 input tokens > 100");
        assert_eq!(rate.admit(t0, WINDOW, 10, 5).map(|i| i.remaining[1]).ok(), Some(80));
        let refused = rate.admit(t0 + Duration::from_secs(20), WINDOW, 1, 1).err().map(|i| i.reset[0]);
        assert_eq!(refused, Some(Duration::from_secs(40)));
        assert_eq!(rate.rejected, 2);
        assert!(rate.admit(t0 + WINDOW, WINDOW, 1, 1).is_ok());
    }
}
