//! Pricing model calls: a price table (USD per million tokens of input, output, cache writes and cache reads, per
//! model) with current public defaults, overridable under `prices:` in `neuraphage.yaml`.
//!
//! A model is priced by its exact name, or by a table name followed by a dated-snapshot suffix (`-20250929`,
//! `-2025-04-14`): `claude-sonnet-4-5-20250929` is priced as `claude-sonnet-4-5`, while `gpt-5-nano` is not priced
//! as `gpt-5`. A model the table does not know is priced at 0 and marked unpriced, never guessed.
//!
//! Costs are whole nano-dollars (10⁻⁹ USD) so sums are exact; prices are kept to 1/1000 USD per million tokens.

use std::collections::BTreeMap;

use neuraphage_ipc::llm::Usage;
use serde::Deserialize;

/// One model's prices, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Price {
    /// Input tokens at the normal rate.
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read: f64,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_write: f64,
}

const fn price(input: f64, output: f64, cache_read: f64, cache_write: f64) -> Price {
    Price { input, output, cache_read, cache_write }
}

/// The defaults. Anthropic: platform.claude.com/docs/en/about-claude/pricing ("Model pricing"; cache write = the
/// 5-minute write price), as published in November 2026. OpenAI: the published per-1M-token prices (input, cached
/// input, output; OpenAI charges no cache write) as of November 2026. Check them before relying on a bill; override
/// any in `neuraphage.yaml`.
pub const DEFAULT_PRICES: &[(&str, Price)] = &[
    ("claude-opus-5", price(5.0, 25.0, 0.50, 6.25)),
    ("claude-opus-4-8", price(5.0, 25.0, 0.50, 6.25)),
    ("claude-opus-4-7", price(5.0, 25.0, 0.50, 6.25)),
    ("claude-opus-4-6", price(5.0, 25.0, 0.50, 6.25)),
    ("claude-opus-4-5", price(5.0, 25.0, 0.50, 6.25)),
    ("claude-opus-4-1", price(15.0, 75.0, 1.50, 18.75)),
    ("claude-opus-4", price(15.0, 75.0, 1.50, 18.75)),
    ("claude-sonnet-4-6", price(3.0, 15.0, 0.30, 3.75)),
    ("claude-sonnet-4-5", price(3.0, 15.0, 0.30, 3.75)),
    ("claude-sonnet-4", price(3.0, 15.0, 0.30, 3.75)),
    ("claude-haiku-4-5", price(1.0, 5.0, 0.10, 1.25)),
    ("claude-3-5-haiku", price(0.80, 4.0, 0.08, 1.0)),
    ("claude-3-haiku", price(0.25, 1.25, 0.03, 0.30)),
    ("gpt-5.4", price(2.50, 15.0, 0.25, 0.0)),
    ("gpt-5.2", price(1.75, 14.0, 0.175, 0.0)),
    ("gpt-5", price(1.25, 10.0, 0.125, 0.0)),
    ("gpt-5-mini", price(0.25, 2.0, 0.025, 0.0)),
    ("gpt-4.1", price(2.0, 8.0, 0.50, 0.0)),
    ("gpt-4o", price(2.50, 10.0, 1.25, 0.0)),
    ("gpt-4o-mini", price(0.15, 0.60, 0.075, 0.0)),
];

/// What one response cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priced {
    /// Nano-dollars (0 when unpriced).
    pub nano_usd: u64,
    /// Whether the table knew the model.
    pub priced: bool,
}

/// The price table in force: the defaults with the configuration's entries over them.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

impl Default for PriceTable {
    fn default() -> Self {
        PriceTable::with_overrides(&BTreeMap::new())
    }
}

impl PriceTable {
    /// The defaults, with `overrides` added or replacing.
    pub fn with_overrides(overrides: &BTreeMap<String, Price>) -> PriceTable {
        let mut prices: BTreeMap<String, Price> = DEFAULT_PRICES.iter().map(|(m, p)| (m.to_string(), *p)).collect();
        prices.extend(overrides.iter().map(|(m, p)| (m.clone(), *p)));
        PriceTable { prices }
    }

    /// The price of `model`, if the table knows it (exactly, or with a dated-snapshot suffix).
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        if let Some(p) = self.prices.get(model) {
            return Some(p);
        }
        // The longest table name that is the model's name without a date suffix.
        self.prices
            .iter()
            .filter(|(name, _)| {
                model.strip_prefix(name.as_str()).and_then(|rest| rest.strip_prefix('-')).is_some_and(is_date_suffix)
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| p)
    }

    /// What `usage` of `model` cost.
    pub fn price(&self, model: &str, usage: &Usage) -> Priced {
        let Some(p) = self.lookup(model) else { return Priced { nano_usd: 0, priced: false } };
        let part = |tokens: u64, usd_per_mtok: f64| tokens.saturating_mul(nano_per_token(usd_per_mtok));
        let nano_usd = part(usage.input_tokens, p.input)
            .saturating_add(part(usage.output_tokens, p.output))
            .saturating_add(part(usage.cache_read_input_tokens, p.cache_read))
            .saturating_add(part(usage.cache_creation_input_tokens, p.cache_write));
        Priced { nano_usd, priced: true }
    }
}

/// USD per million tokens → nano-dollars per token (exact to 1/1000 USD per million).
fn nano_per_token(usd_per_mtok: f64) -> u64 {
    (usd_per_mtok * 1000.0).round() as u64
}

/// `20250929` or `2025-04-14`.
fn is_date_suffix(rest: &str) -> bool {
    let digits = rest.chars().filter(char::is_ascii_digit).count();
    digits == 8 && rest.chars().all(|c| c.is_ascii_digit() || c == '-') && !rest.starts_with('-')
}

/// Check the prices of the configuration (non-negative, finite, at most $1,000,000 per million tokens).
pub fn validate(prices: &BTreeMap<String, Price>) -> Result<(), String> {
    for (model, p) in prices {
        if model.trim().is_empty() {
            return Err("prices: a model name is empty".into());
        }
        for (field, value) in
            [("input", p.input), ("output", p.output), ("cache-read", p.cache_read), ("cache-write", p.cache_write)]
        {
            if !value.is_finite() || !(0.0..=1_000_000.0).contains(&value) {
                return Err(format!(
                    "prices.{model}.{field}: {value} is not a price in USD per million tokens (0 to 1000000)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_input_tokens: cache_read,
            cache_creation_input_tokens: cache_write,
        }
    }

    #[test]
    fn every_kind_of_token_is_priced_exactly() {
        let table = PriceTable::default();
        // Sonnet 4.5: $3 in, $15 out, $0.30 cache read, $3.75 cache write per million.
        let p = table.price("claude-sonnet-4-5", &usage(1_000_000, 1_000_000, 1_000_000, 1_000_000));
        assert_eq!(p, Priced { nano_usd: (3_000 + 15_000 + 300 + 3_750) * 1_000_000, priced: true });
        let p = table.price("claude-sonnet-4-5", &usage(10, 5, 0, 0));
        assert_eq!(p.nano_usd, 10 * 3_000 + 5 * 15_000);
        // Sub-cent prices stay exact.
        assert_eq!(table.price("gpt-4o-mini", &usage(0, 0, 1, 0)).nano_usd, 75);
    }

    #[test]
    fn dated_snapshots_match_but_other_models_do_not() {
        let table = PriceTable::default();
        assert_eq!(table.lookup("claude-sonnet-4-5-20250929"), table.lookup("claude-sonnet-4-5"));
        assert_eq!(table.lookup("gpt-4.1-2025-04-14"), table.lookup("gpt-4.1"));
        assert_eq!(table.lookup("claude-opus-4-1-20250805"), table.lookup("claude-opus-4-1"));
        assert!(table.lookup("gpt-5-nano").is_none());
        assert!(table.lookup("claude-sonnet-4-5-preview").is_none());
        let p = table.price("llama-local", &usage(100, 100, 0, 0));
        assert_eq!(p, Priced { nano_usd: 0, priced: false });
    }

    #[test]
    fn overrides_replace_and_add() {
        let overrides = BTreeMap::from([
            ("claude-sonnet-4-5".to_owned(), price(1.0, 2.0, 0.0, 0.0)),
            ("llama-local".to_owned(), price(0.001, 0.002, 0.0, 0.0)),
        ]);
        let table = PriceTable::with_overrides(&overrides);
        assert_eq!(table.price("claude-sonnet-4-5", &usage(1, 1, 0, 0)).nano_usd, 3_000);
        assert_eq!(table.price("llama-local", &usage(1000, 1000, 0, 0)), Priced { nano_usd: 3_000, priced: true });
        assert_eq!(table.lookup("claude-haiku-4-5"), PriceTable::default().lookup("claude-haiku-4-5"));
    }

    #[test]
    fn bad_prices_are_refused_by_name() {
        let bad = BTreeMap::from([("m".to_owned(), price(-1.0, 1.0, 0.0, 0.0))]);
        assert!(validate(&bad).unwrap_err().contains("prices.m.input"));
        let bad = BTreeMap::from([("m".to_owned(), price(1.0, f64::NAN, 0.0, 0.0))]);
        assert!(validate(&bad).unwrap_err().contains("prices.m.output"));
    }
}
