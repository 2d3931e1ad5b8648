//! Cost wire types: what a task's model calls used and cost, for `task show` and `neuraphage cost`.
//!
//! Costs travel as whole nano-dollars (10⁻⁹ USD) so sums are exact; [`CostTotals::cost_usd`] converts for display.

use serde::{Deserialize, Serialize};

/// How `neuraphage cost` groups its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostGrouping {
    /// One line per task.
    #[default]
    Task,
    /// One line per model.
    Model,
    /// One line per UTC day.
    Day,
}

/// Tokens and cost of some model calls.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CostTotals {
    /// Model responses counted.
    pub responses: u64,
    /// Input tokens at the normal rate.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// The cost, in nano-dollars (10⁻⁹ USD), of the priced responses.
    pub cost_nano_usd: u64,
    /// Responses from models the price table does not know: priced at 0.
    pub unpriced_responses: u64,
    /// Those models, sorted.
    pub unpriced_models: Vec<String>,
}

impl CostTotals {
    /// The cost in US dollars.
    pub fn cost_usd(&self) -> f64 {
        self.cost_nano_usd as f64 / 1e9
    }
}

/// One line of `neuraphage cost`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostLine {
    /// The task id, model name or UTC day (`YYYY-MM-DD`), by the grouping asked for.
    pub key: String,
    /// Its totals.
    #[serde(flatten)]
    pub totals: CostTotals,
}
