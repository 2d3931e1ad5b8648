//! The providers' rate-limit headers, read into one shape: Anthropic's `anthropic-ratelimit-*` (reset as an
//! RFC 3339 time) and OpenAI's `x-ratelimit-*` (reset as a duration such as `6m0s`). Both say, per dimension, the
//! limit per minute, what remains now, and when the bucket is full again.

use std::time::Duration;

use reqwest::header::HeaderMap;

use crate::limiter::{DIMENSIONS, INPUT, OUTPUT, REQUESTS, TOKENS};

/// What one response's rate-limit headers said about one dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dimension {
    /// The limit per window.
    pub limit: Option<u64>,
    /// What remains now.
    pub remaining: Option<u64>,
    /// When the remaining amount is back to the limit (the bucket is full again).
    pub reset: Option<Duration>,
    /// How coarsely `reset` was written: a millisecond, or a whole second when the header had no fraction.
    pub precision: Duration,
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
                precision: precision(get(&format!("anthropic-ratelimit-{anthropic}-reset"))),
            };
            if let Some(openai) = openai
                && d.limit.is_none()
            {
                d = Dimension {
                    limit: number(&format!("x-ratelimit-limit-{openai}")),
                    remaining: number(&format!("x-ratelimit-remaining-{openai}")),
                    reset: get(&format!("x-ratelimit-reset-{openai}")).and_then(go_duration),
                    precision: precision(get(&format!("x-ratelimit-reset-{openai}"))),
                };
            }
            any |= d.limit.is_some();
            out.0[i] = d;
        }
        if out.0[INPUT].limit.is_some() || out.0[OUTPUT].limit.is_some() {
            // Anthropic's `tokens` is "the most restrictive limit currently in effect" of the two above, not a
            // limit of its own on input and output together.
            out.0[TOKENS] = Dimension::default();
        }
        any.then_some(out)
    }
}

/// A reset written with a fraction (`…:30.250Z`, `0.5s`) or in milliseconds is exact to a millisecond; else to a
/// second.
fn precision(value: Option<&str>) -> Duration {
    let fine = value.is_some_and(|v| v.contains('.') || v.ends_with("ms") || v.ends_with("us") || v.ends_with("ns"));
    if fine { Duration::from_millis(1) } else { Duration::from_secs(1) }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_both_providers() {
        let now = chrono::Utc::now();
        let mut h = HeaderMap::new();
        h.insert("anthropic-ratelimit-requests-limit", "50".parse().unwrap());
        h.insert("anthropic-ratelimit-requests-remaining", "49".parse().unwrap());
        let reset = (now + chrono::Duration::seconds(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        h.insert("anthropic-ratelimit-requests-reset", reset.parse().unwrap());
        h.insert("anthropic-ratelimit-output-tokens-limit", "8000".parse().unwrap());
        h.insert("anthropic-ratelimit-tokens-limit", "8000".parse().unwrap());
        let r = RateHeaders::parse(&h, now).unwrap();
        assert_eq!(r.0[REQUESTS].limit, Some(50));
        assert_eq!(r.0[REQUESTS].remaining, Some(49));
        assert_eq!(r.0[REQUESTS].precision, Duration::from_secs(1));
        let secs = r.0[REQUESTS].reset.unwrap().as_secs();
        assert!((29..=30).contains(&secs), "{secs}");
        assert_eq!(r.0[OUTPUT].limit, Some(8000));
        assert_eq!(r.0[TOKENS].limit, None, "Anthropic's tokens is the tighter of input and output");
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
