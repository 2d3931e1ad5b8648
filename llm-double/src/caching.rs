//! The TEST DOUBLE's model of the providers' prompt caches, by their documented rules, so that usage computed
//! from a request bills cache reads and writes as the provider would.
//!
//! **Anthropic** ("Prompt caching"): a request's `cache_control` marks (on tool definitions, system blocks and
//! message content blocks; at most [`MAX_BREAKPOINTS`], never on a thinking block, never on an empty text block —
//! else 400) define prefixes over [`tokens::anthropic_pieces`]. The cache, per API key and model, holds prefix hashes
//! written at breakpoints for [`TTL`] (refreshed on a hit). A request reads the longest cached prefix ending at a
//! block boundary at or before a breakpoint (up to [`LOOKBACK`] blocks before each), is billed the rest up to its
//! last breakpoint as `cache_creation_input_tokens` (and writes it), and the rest after it as `input_tokens`.
//! A prefix shorter than [`MIN_CACHEABLE_TOKENS`] is never cached.
//!
//! **OpenAI** (automatic prompt caching): the longest common prefix with an earlier prompt of the same key and model
//! within [`TTL`], when at least [`MIN_CACHEABLE_TOKENS`], counted in steps of [`OPENAI_STEP`] tokens, is
//! `prompt_tokens_details.cached_tokens`.
//!
//! Memory is bounded: [`MAX_ENTRIES`] prefixes and [`MAX_PROMPTS`] prompts per key, oldest dropped first.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::script::{HttpError, TokenUsage};
use crate::tokens;

/// The most `cache_control` marks one request may carry.
pub const MAX_BREAKPOINTS: usize = 4;
/// The shortest prefix cached (Claude Sonnet / Opus; OpenAI's minimum too).
pub const MIN_CACHEABLE_TOKENS: u64 = 1024;
/// How far before a breakpoint earlier block boundaries are checked for a hit.
pub const LOOKBACK: usize = 20;
/// How long an unused cache entry lives (Anthropic's default 5-minute cache).
pub const TTL: Duration = Duration::from_secs(300);
/// OpenAI's cache-hit granularity past the minimum.
pub const OPENAI_STEP: u64 = 128;
/// Cached prefixes kept per API key.
pub const MAX_ENTRIES: usize = 4096;
/// Earlier OpenAI prompts kept per API key.
pub const MAX_PROMPTS: usize = 64;

/// Refuses what the Messages API refuses about `cache_control`: more than four marks, a mark on a thinking or
/// redacted-thinking block, a mark on an empty text block.
pub fn check_breakpoints(body: &Value) -> Result<(), Box<HttpError>> {
    let refuse = |message: String| Err(Box::new(HttpError::new(400).message(message)));
    let mut found = 0usize;
    let mut each = |path: String, block: &Value| -> Result<(), Box<HttpError>> {
        if block.get("cache_control").is_none() {
            return Ok(());
        }
        found += 1;
        match block.get("type").and_then(Value::as_str) {
            Some(kind @ ("thinking" | "redacted_thinking")) => {
                refuse(format!("{path}.{kind}.cache_control: Extra inputs are not permitted"))
            }
            Some("text") if block.get("text").and_then(Value::as_str).is_none_or(str::is_empty) => {
                refuse(format!("{path}.text: cache_control cannot be set for empty text blocks"))
            }
            _ => Ok(()),
        }
    };
    for (i, tool) in body.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        each(format!("tools.{i}"), tool)?;
    }
    for (i, block) in body.get("system").and_then(Value::as_array).into_iter().flatten().enumerate() {
        each(format!("system.{i}"), block)?;
    }
    for (i, message) in body.get("messages").and_then(Value::as_array).into_iter().flatten().enumerate() {
        for (j, block) in message.get("content").and_then(Value::as_array).into_iter().flatten().enumerate() {
            each(format!("messages.{i}.content.{j}"), block)?;
        }
    }
    if found > MAX_BREAKPOINTS {
        return refuse(format!(
            "A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {found}."
        ));
    }
    Ok(())
}

/// Whether each piece of [`tokens::anthropic_pieces`] carries a `cache_control` mark, in the same order.
fn marks(body: &Value) -> Vec<bool> {
    let marked = |v: &Value| v.get("cache_control").is_some();
    let mut out = Vec::new();
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        out.extend(tools.iter().map(marked));
    }
    match body.get("system") {
        Some(Value::Array(blocks)) => out.extend(blocks.iter().map(marked)),
        Some(Value::String(_)) => out.push(false),
        _ => {}
    }
    for message in body.get("messages").and_then(Value::as_array).into_iter().flatten() {
        match message.get("content") {
            Some(Value::Array(blocks)) => out.extend(blocks.iter().map(marked)),
            Some(_) => out.push(false),
            None => {}
        }
    }
    out
}

/// Each prefix's hash and tokens: entry `i` covers pieces `0..=i`. The model is hashed in (caches are per model).
fn prefixes(model: &str, pieces: &[(String, u64)]) -> Vec<(u64, u64)> {
    let mut hasher = DefaultHasher::new();
    model.hash(&mut hasher);
    let mut total = 0u64;
    pieces
        .iter()
        .map(|(text, n)| {
            text.hash(&mut hasher);
            total = total.saturating_add(*n);
            (hasher.finish(), total)
        })
        .collect()
}

/// What one request reads and writes, computed before it is admitted and applied after.
#[derive(Debug, Default, Clone)]
pub(crate) struct Plan {
    /// The input side of the usage (output is the reply's).
    pub(crate) usage: TokenUsage,
    key: String,
    /// Anthropic: prefix hashes to write or refresh.
    touch: Vec<u64>,
    /// OpenAI: this prompt's prefixes, remembered for later requests.
    prompt: Option<Vec<(u64, u64)>>,
}

#[derive(Debug, Default)]
struct KeyCache {
    /// Prefix hash → last used.
    prefixes: HashMap<u64, Instant>,
    /// Earlier OpenAI prompts: when, and their prefixes.
    prompts: VecDeque<(Instant, Vec<(u64, u64)>)>,
}

/// The caches of every API key.
#[derive(Debug, Default)]
pub(crate) struct PromptCache {
    keys: HashMap<String, KeyCache>,
}

impl PromptCache {
    fn live(&self, key: &str, hash: u64, now: Instant) -> bool {
        self.keys
            .get(key)
            .and_then(|k| k.prefixes.get(&hash))
            .is_some_and(|used| now.saturating_duration_since(*used) < TTL)
    }

    /// The billing of an Anthropic Messages request `body` sent with `key`.
    pub(crate) fn plan_anthropic(&self, key: &str, body: &Value, now: Instant) -> Plan {
        let pieces = tokens::anthropic_pieces(body);
        let total: u64 = pieces.iter().map(|(_, n)| n).sum();
        let mut plan = Plan { key: key.to_owned(), ..Plan::default() };
        let marks = marks(body);
        let model = body.get("model").and_then(Value::as_str).unwrap_or_default();
        let breakpoints: Vec<usize> =
            if marks.len() == pieces.len() { (0..marks.len()).filter(|i| marks[*i]).collect() } else { Vec::new() };
        let Some(&last) = breakpoints.last() else {
            plan.usage.input_tokens = total;
            return plan;
        };
        let prefix = prefixes(model, &pieces);
        // The longest live prefix at a block boundary at most LOOKBACK blocks before some breakpoint.
        let mut hit: Option<usize> = None;
        for &b in &breakpoints {
            let found = (b.saturating_sub(LOOKBACK)..=b)
                .rev()
                .find(|&j| prefix[j].1 >= MIN_CACHEABLE_TOKENS && self.live(key, prefix[j].0, now));
            hit = hit.max(found);
        }
        let read = hit.map_or(0, |j| prefix[j].1);
        let upto = prefix[last].1;
        if upto >= MIN_CACHEABLE_TOKENS {
            plan.usage.cache_read_input_tokens = read;
            plan.usage.cache_creation_input_tokens = upto - read;
            plan.usage.input_tokens = total - upto;
            plan.touch =
                breakpoints.iter().filter(|&&b| prefix[b].1 >= MIN_CACHEABLE_TOKENS).map(|&b| prefix[b].0).collect();
            plan.touch.extend(hit.map(|j| prefix[j].0));
        } else {
            plan.usage.input_tokens = total;
        }
        plan
    }

    /// The billing of an OpenAI chat completions request `body` sent with `key`.
    pub(crate) fn plan_openai(&self, key: &str, body: &Value, now: Instant) -> Plan {
        let pieces = tokens::openai_pieces(body);
        let model = body.get("model").and_then(Value::as_str).unwrap_or_default();
        let prefix = prefixes(model, &pieces);
        let total = prefix.last().map_or(0, |p| p.1);
        let mut common = 0u64;
        for (at, earlier) in self.keys.get(key).map(|k| &k.prompts).into_iter().flatten() {
            if now.saturating_duration_since(*at) >= TTL {
                continue;
            }
            let shared = prefix.iter().zip(earlier).take_while(|(a, b)| a.0 == b.0).count();
            if let Some(k) = shared.checked_sub(1) {
                common = common.max(prefix[k].1);
            }
        }
        let cached = if common >= MIN_CACHEABLE_TOKENS { common / OPENAI_STEP * OPENAI_STEP } else { 0 };
        Plan {
            usage: TokenUsage {
                input_tokens: total - cached,
                cache_read_input_tokens: cached,
                ..TokenUsage::default()
            },
            key: key.to_owned(),
            touch: Vec::new(),
            prompt: Some(prefix),
        }
    }

    /// Applies a request's writes and refreshes.
    pub(crate) fn commit(&mut self, plan: Plan, now: Instant) {
        let cache = self.keys.entry(plan.key).or_default();
        for hash in plan.touch {
            cache.prefixes.insert(hash, now);
        }
        if cache.prefixes.len() > MAX_ENTRIES {
            cache.prefixes.retain(|_, used| now.saturating_duration_since(*used) < TTL);
            while cache.prefixes.len() > MAX_ENTRIES {
                let Some(oldest) = cache.prefixes.iter().min_by_key(|(_, used)| **used).map(|(h, _)| *h) else { break };
                cache.prefixes.remove(&oldest);
            }
        }
        if let Some(prompt) = plan.prompt {
            cache.prompts.push_back((now, prompt));
            while cache.prompts.len() > MAX_PROMPTS {
                cache.prompts.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const MARK: &str = "cache_control";

    /// A request: one tool, a system prompt of `system_bytes`, then `turns` user texts of `turn_bytes` each
    /// (alternating with assistant texts), the last user turn marked, and the tool and system marked.
    fn body(system_bytes: usize, turns: usize, turn_bytes: usize) -> Value {
        let mut messages = Vec::new();
        for t in 0..turns {
            if t > 0 {
                messages.push(json!({"role": "assistant", "content": [{"type": "text", "text": format!("a{t}")}]}));
            }
            messages.push(
                json!({"role": "user", "content": [{"type": "text", "text": format!("{t}{}", "u".repeat(turn_bytes))}]}),
            );
        }
        let mut body = json!({
            "model": "m",
            "tools": [{"name": "Read", "description": "d", "input_schema": {}, MARK: {"type": "ephemeral"}}],
            "system": [{"type": "text", "text": "s".repeat(system_bytes), MARK: {"type": "ephemeral"}}],
            "messages": messages,
        });
        let last = body["messages"].as_array().map_or(0, Vec::len) - 1;
        body["messages"][last]["content"][0][MARK] = json!({"type": "ephemeral"});
        body
    }

    #[test]
    fn a_prefix_is_written_then_read_and_only_what_is_new_is_created() {
        let now = Instant::now();
        let mut cache = PromptCache::default();
        let first = body(8000, 1, 400);
        let total = tokens::count_anthropic(&first);
        let plan = cache.plan_anthropic("k", &first, now);
        assert_eq!(plan.usage.cache_read_input_tokens, 0);
        assert_eq!(plan.usage.cache_creation_input_tokens, total, "everything up to the last breakpoint");
        assert_eq!(plan.usage.input_tokens, 0);
        cache.commit(plan, now);
        // The next turn: the same prefix plus an assistant text and a user turn; the old last turn's mark is gone,
        // but its boundary is within the lookback of the new breakpoint.
        let second = body(8000, 2, 400);
        let plan = cache.plan_anthropic("k", &second, now);
        assert_eq!(plan.usage.cache_read_input_tokens, total);
        assert_eq!(plan.usage.cache_creation_input_tokens, tokens::count_anthropic(&second) - total);
        // Another key, or the entry expired: nothing read.
        assert_eq!(cache.plan_anthropic("other", &second, now).usage.cache_read_input_tokens, 0);
        assert_eq!(cache.plan_anthropic("k", &second, now + TTL).usage.cache_read_input_tokens, 0);
        // A hit refreshes the entry.
        cache.commit(cache.plan_anthropic("k", &second, now + TTL / 2), now + TTL / 2);
        assert_eq!(cache.plan_anthropic("k", &first, now + TTL).usage.cache_read_input_tokens, total);
    }

    #[test]
    fn short_prefixes_and_unmarked_requests_are_not_cached() {
        let now = Instant::now();
        let mut cache = PromptCache::default();
        let small = body(100, 1, 10);
        let plan = cache.plan_anthropic("k", &small, now);
        assert_eq!(
            (plan.usage.input_tokens, plan.usage.cache_creation_input_tokens),
            (tokens::count_anthropic(&small), 0)
        );
        cache.commit(plan, now);
        assert_eq!(cache.plan_anthropic("k", &small, now).usage.cache_read_input_tokens, 0);
        let mut plain = body(8000, 1, 10);
        plain["tools"][0].as_object_mut().map(|t| t.remove(MARK));
        plain["system"][0].as_object_mut().map(|t| t.remove(MARK));
        plain["messages"][0]["content"][0].as_object_mut().map(|t| t.remove(MARK));
        let plan = cache.plan_anthropic("k", &plain, now);
        assert_eq!(plan.usage.input_tokens, tokens::count_anthropic(&plain));
    }

    #[test]
    fn tokens_after_the_last_breakpoint_are_plain_input() {
        let now = Instant::now();
        let cache = PromptCache::default();
        let mut b = body(8000, 2, 400);
        // Move the last mark back to the system prompt only.
        b["messages"][2]["content"][0].as_object_mut().map(|t| t.remove(MARK));
        let plan = cache.plan_anthropic("k", &b, now);
        let pieces = tokens::anthropic_pieces(&b);
        let upto: u64 = pieces[..2].iter().map(|p| p.1).sum();
        assert_eq!(plan.usage.cache_creation_input_tokens, upto);
        assert_eq!(plan.usage.input_tokens, tokens::count_anthropic(&b) - upto);
    }

    #[test]
    fn breakpoint_rules_are_enforced() {
        assert!(check_breakpoints(&body(10, 2, 10)).is_ok());
        let mut five = body(10, 3, 10);
        for i in [0, 2] {
            five["messages"][i]["content"][0][MARK] = json!({"type": "ephemeral"});
        }
        let err = check_breakpoints(&five).expect_err("five");
        assert_eq!(err.status, 400);
        assert!(err.message.as_deref().is_some_and(|m| m.contains("maximum of 4") && m.contains("Found 5")));
        let thinking = json!({"messages": [{"role": "assistant", "content": [
            {"type": "thinking", "thinking": "t", "signature": "s", MARK: {"type": "ephemeral"}}]}]});
        assert!(check_breakpoints(&thinking).is_err());
        let empty = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "", MARK: {}}]}]});
        assert!(check_breakpoints(&empty).is_err());
    }

    #[test]
    fn openai_caches_the_longest_common_prefix_in_steps() {
        let now = Instant::now();
        let mut cache = PromptCache::default();
        let system = json!({"role": "system", "content": "s".repeat(6000)});
        let first = json!({"model": "m", "messages": [system, {"role": "user", "content": "one"}]});
        let plan = cache.plan_openai("k", &first, now);
        assert_eq!(plan.usage.cache_read_input_tokens, 0);
        cache.commit(plan, now);
        let second = json!({"model": "m", "messages": [system, {"role": "user", "content": "two"}]});
        let plan = cache.plan_openai("k", &second, now);
        let shared = tokens::openai_pieces(&second)[0].1;
        assert_eq!(plan.usage.cache_read_input_tokens, shared / OPENAI_STEP * OPENAI_STEP);
        assert_eq!(plan.usage.input_tokens, tokens::count_openai(&second) - plan.usage.cache_read_input_tokens);
        assert_eq!(cache.plan_openai("k", &second, now + TTL).usage.cache_read_input_tokens, 0);
    }
}
