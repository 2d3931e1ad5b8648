//! `$NEURAPHAGE_HOME/neuraphage.yaml`: the supervisor's settings. A missing file means defaults; a malformed one,
//! or an unknown key, stops the supervisor with the file, line and reason.
//!
//! The model tiers are the broker's share: the supervisor checks them here (so errors name the line) and sends them
//! to the broker at its start and on `neuraphage config reload` / SIGHUP.
//!
//! ```yaml
//! model-tiers:
//!   router: { provider: anthropic, model: claude-haiku-4-5, pool: main }
//!   worker: { provider: anthropic, model: claude-sonnet-4-5, pool: main }
//!   expert: { provider: anthropic, model: claude-opus-4-1, pool: main }
//! auto-escalate: true
//! escalate-after-retries: 2
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use neuraphage_ipc::broker::{BrokerSettings, ModelTier, TIER_NAMES};
use serde::Deserialize;

use crate::cost::{Price, PriceTable};

/// File name of the configuration inside the home.
pub const CONFIG_FILE: &str = "neuraphage.yaml";

/// The settings (kebab-case keys in the file).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Tasks running at once; 0 holds every task in the queue (nothing starts).
    pub max_concurrent: usize,
    /// Keep a task's worktree when it ends (its branch is always kept).
    pub keep_worktrees: bool,
    /// Model turns a task may take before the drift guard stops it.
    pub max_iterations: u32,
    /// Generations of its base's history a task's private repository holds (0: the base commit only).
    pub task_history_depth: u32,
    /// Prices of models in USD per million tokens, added to or replacing the defaults ([`crate::cost`]):
    /// `prices: {my-model: {input: 1.0, output: 2.0, cache-read: 0.1, cache-write: 1.25}}`.
    pub prices: BTreeMap<String, Price>,
    /// The model tiers by name (`router`, `worker`, `expert`).
    pub model_tiers: BTreeMap<TierName, TierEntry>,
    /// Move a task whose model calls keep failing to the next tier.
    pub auto_escalate: bool,
    /// Failed attempts on a tier before the task escalates.
    pub escalate_after_retries: u32,
    /// The reserve kept free on the home's filesystem ([`crate::disk`]): `5%` or a number of MiB; default 5 %, at
    /// most 1 GiB. Running tasks are paused when free space falls under it.
    pub disk_reserve: Option<crate::disk::Reserve>,
    /// Layered permissions ([`crate::permissions::settings`]).
    pub security: crate::permissions::settings::Security,
    /// Compact a task's conversation when its next model request would pass this percentage of the model's context
    /// window (10 to 95; default 80).
    pub compact_at_percent: u8,
    /// The context window, in tokens, of a task whose tier does not set `context-tokens` (and of every task when no
    /// tier is configured); absent: the built-in table by the tier's model, else 128 000.
    pub context_tokens: Option<u64>,
    /// Seconds an event-stream subscriber (`events --follow`, `task attach`) may take to read one item before it is
    /// dropped; while it is slow, items it cannot take are dropped and it is told what it missed.
    pub event_stream_write_secs: u64,
    /// The drift guard's limits besides `max-iterations` (`drift: {max-consecutive-failures: 10,
    /// no-progress-minutes: 10, iteration-tokens-warning: 100000}`); a task that trips one waits for the user.
    pub drift: DriftEntry,
    /// Deepest sub-task a task tree may hold: a top task is depth 1, its child 2 ([`crate::subtasks`]).
    pub max_subtask_depth: u32,
    /// Most live (not ended) sub-tasks under one top task, at every depth.
    pub max_subtasks: u32,
    /// The knowledge store (issue 17): `knowledge: {extraction: hybrid, inject: true, inject-count: 5,
    /// inject-max-bytes: 6144, relay-threshold: 0.5, rate-limit: 10, router-within-secs: 60}`.
    pub knowledge: crate::knowledge::KnowledgeConfig,
    /// The Watcher ([`crate::watcher`]): `watcher: {enabled: true, interval-secs: 30, no-progress-mins: 10,
    /// cooldown-secs: 300, max-judgements-per-hour: 4}`.
    pub watcher: crate::watcher::WatcherConfig,
    /// Desktop and spoken notifications ([`crate::notifications`]).
    pub notifications: crate::notifications::Settings,
}

/// The `drift:` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DriftEntry {
    /// Tool failures in a row (a command exiting non-zero counts) past which the task waits (0: no limit).
    pub max_consecutive_failures: u32,
    /// Minutes with no file changed and no new tool result before the task waits (0: no limit).
    pub no_progress_minutes: u64,
    /// Tokens of one model turn above which a `drift_warning` notice is recorded (0: never).
    pub iteration_tokens_warning: u64,
}

impl Default for DriftEntry {
    fn default() -> DriftEntry {
        let d = neuraphage_ipc::worker::DriftLimits::default();
        DriftEntry {
            max_consecutive_failures: d.max_consecutive_failures,
            no_progress_minutes: d.no_progress_secs / 60,
            iteration_tokens_warning: d.iteration_tokens_warning,
        }
    }
}

impl DriftEntry {
    /// As the worker's `Start` carries them.
    pub fn limits(&self) -> neuraphage_ipc::worker::DriftLimits {
        neuraphage_ipc::worker::DriftLimits {
            max_consecutive_failures: self.max_consecutive_failures,
            no_progress_secs: self.no_progress_minutes.saturating_mul(60),
            iteration_tokens_warning: self.iteration_tokens_warning,
        }
    }
}

/// A tier's name: one of `router`, `worker`, `expert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TierName {
    /// The cheapest.
    Router,
    /// The default.
    Worker,
    /// The most capable.
    Expert,
}

/// One tier: provider, model and key pool.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TierEntry {
    /// `anthropic` or `openai`.
    pub provider: ProviderName,
    /// The model.
    pub model: String,
    /// The key pool of `api-keys.yaml`.
    pub pool: String,
    /// The model's context window in tokens; absent: the built-in table.
    #[serde(default)]
    pub context_tokens: Option<u64>,
    /// Extended thinking (`thinking: {budget-tokens: N}`); absent: none.
    #[serde(default)]
    pub thinking: Option<ThinkingEntry>,
    /// Anthropic prompt-caching breakpoints (default on).
    #[serde(default = "default_true")]
    pub prompt_caching: bool,
}

/// A tier's extended thinking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ThinkingEntry {
    /// Tokens the model may think before it answers (Anthropic: at least 1024, less than `max_tokens`).
    pub budget_tokens: u32,
}

fn default_true() -> bool {
    true
}

/// A provider's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    /// The Anthropic Messages API.
    Anthropic,
    /// OpenAI-compatible chat completions.
    Openai,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_concurrent: 4,
            keep_worktrees: true,
            max_iterations: 200,
            task_history_depth: 100,
            prices: BTreeMap::new(),
            model_tiers: BTreeMap::new(),
            auto_escalate: false,
            escalate_after_retries: 2,
            disk_reserve: None,
            security: crate::permissions::settings::Security::default(),
            event_stream_write_secs: 10,
            compact_at_percent: 80,
            context_tokens: None,
            drift: DriftEntry::default(),
            max_subtask_depth: 3,
            max_subtasks: 8,
            knowledge: Default::default(),
            watcher: crate::watcher::WatcherConfig::default(),
            notifications: crate::notifications::Settings::default(),
        }
    }
}

impl Config {
    /// Load the file at `path`; defaults when it does not exist.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parse YAML text.
    pub fn parse(text: &str) -> Result<Config, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        if config.max_iterations == 0 {
            return Err("max-iterations must be at least 1".into());
        }
        if !(10..=95).contains(&config.compact_at_percent) {
            return Err(format!("compact-at-percent: {} is not between 10 and 95", config.compact_at_percent));
        }
        if config.context_tokens.is_some_and(|n| n < 1024) {
            return Err("context-tokens: a context window is at least 1024 tokens".into());
        }
        if config.drift.no_progress_minutes > 7 * 24 * 60 {
            return Err("drift.no-progress-minutes must be at most a week (10080)".into());
        }
        if config.escalate_after_retries == 0 {
            return Err("escalate-after-retries must be at least 1".into());
        }
        for (name, tier) in &config.model_tiers {
            let at = format!("model-tiers.{}", TIER_NAMES[*name as usize]);
            if tier.model.trim().is_empty() {
                return Err(format!("{at}.model: must not be empty"));
            }
            if tier.context_tokens.is_some_and(|n| n < 1024) {
                return Err(format!("{at}.context-tokens: a context window is at least 1024 tokens"));
            }
            if tier.pool.trim().is_empty() || tier.pool.len() > 64 {
                return Err(format!("{at}.pool: a pool name is 1 to 64 characters"));
            }
        }
        config.watcher.validate()?;
        crate::cost::validate(&config.prices)?;
        config.security.validate()?;
        config.notifications.validate()?;
        Ok(config)
    }

    /// The price table: the defaults with `prices` over them.
    pub fn price_table(&self) -> PriceTable {
        PriceTable::with_overrides(&self.prices)
    }

    /// The model and context window of a task on `tier` (`None`: the default): the tier as the broker picks it (its
    /// own when configured, else `worker`, else the first configured); its window is the tier's `context-tokens`,
    /// else the top-level `context-tokens`, else the built-in table by its model. With no tier configured the model
    /// is unknown (the provider's default): the top-level `context-tokens`, else
    /// [`neuraphage_ipc::models::DEFAULT_CONTEXT_WINDOW`].
    pub fn task_context(&self, tier: Option<&str>) -> (Option<String>, u64) {
        let named = |name: &str| self.model_tiers.iter().find(|(n, _)| TIER_NAMES[**n as usize] == name);
        let entry = tier
            .and_then(named)
            .or_else(|| named(neuraphage_ipc::broker::DEFAULT_TIER))
            .or_else(|| self.model_tiers.iter().next());
        match entry {
            Some((_, t)) => {
                let window = t
                    .context_tokens
                    .or(self.context_tokens)
                    .unwrap_or_else(|| neuraphage_ipc::models::context_window(&t.model));
                (Some(t.model.clone()), window)
            }
            None => (None, self.context_tokens.unwrap_or(neuraphage_ipc::models::DEFAULT_CONTEXT_WINDOW)),
        }
    }

    /// The broker's share of the settings.
    pub fn broker(&self) -> BrokerSettings {
        BrokerSettings {
            tiers: self
                .model_tiers
                .iter()
                .map(|(name, t)| ModelTier {
                    name: TIER_NAMES[*name as usize].to_owned(),
                    provider: match t.provider {
                        ProviderName::Anthropic => "anthropic",
                        ProviderName::Openai => "openai",
                    }
                    .to_owned(),
                    model: t.model.clone(),
                    pool: t.pool.clone(),
                    context_tokens: t.context_tokens,
                    thinking_budget: t.thinking.map(|t| t.budget_tokens),
                    prompt_caching: t.prompt_caching,
                })
                .collect(),
            auto_escalate: self.auto_escalate,
            escalate_after_retries: self.escalate_after_retries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let c = Config::parse("max-concurrent: 2\nkeep-worktrees: false\n").unwrap();
        assert_eq!(c, Config { max_concurrent: 2, keep_worktrees: false, ..Config::default() });
    }

    #[test]
    fn the_drift_block_sets_the_guards_limits() {
        let d = Config::default().drift.limits();
        assert_eq!(d, neuraphage_ipc::worker::DriftLimits::default());
        let c = Config::parse("drift:\n  max-consecutive-failures: 3\n  no-progress-minutes: 2\n").unwrap();
        let d = c.drift.limits();
        assert_eq!((d.max_consecutive_failures, d.no_progress_secs, d.iteration_tokens_warning), (3, 120, 100_000));
        assert!(Config::parse("drift:\n  max-failures: 3\n").is_err());
        assert!(Config::parse("drift:\n  no-progress-minutes: 99999\n").unwrap_err().contains("at most a week"));
    }

    #[test]
    fn the_watcher_block() {
        let c = Config::parse("watcher:\n  interval-secs: 1\n  no-progress-mins: 2\n").unwrap();
        assert_eq!((c.watcher.interval_secs, c.watcher.no_progress_mins, c.watcher.enabled), (1, 2, true));
        assert!(Config::parse("watcher:\n  interval-secs: 0\n").unwrap_err().contains("watcher.interval-secs"));
        let c = Config::parse("watcher:\n  max-judgements-per-hour: 2\n").unwrap();
        assert_eq!((c.watcher.max_judgements_per_hour, c.watcher.cooldown_secs), (2, 300));
        let err = Config::parse("watcher:\n  max-judgements-per-hour: 9999\n").unwrap_err();
        assert!(err.contains("watcher.max-judgements-per-hour: 9999 is not between 0 and 3600"), "{err}");
        let err = Config::parse("watcher:\n  intervals: 3\n").unwrap_err();
        assert!(err.contains("intervals") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn the_disk_reserve_is_a_percentage_or_mib() {
        assert_eq!(Config::parse("disk-reserve: 5%\n").unwrap().disk_reserve, Some(crate::disk::Reserve::Percent(5.0)));
        assert_eq!(Config::parse("disk-reserve: 512\n").unwrap().disk_reserve, Some(crate::disk::Reserve::Mib(512)));
        assert_eq!(Config::default().disk_reserve, None);
        assert!(Config::parse("disk-reserve: lots\n").unwrap_err().contains("neither a percentage"));
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let err = Config::parse("max-concurrent: 2\nmax-concurent: 3\n").unwrap_err();
        assert!(err.contains("max-concurent") && err.contains("line 2"), "{err}");
        let err = Config::parse("max-concurrent: many\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(Config::parse("max-iterations: 0\n").unwrap_err().contains("at least 1"));
    }

    #[test]
    fn prices_override_the_defaults_and_bad_ones_are_named() {
        let c = Config::parse("prices:\n  my-model: {input: 1.5, output: 2}\n").unwrap();
        assert_eq!(c.prices["my-model"], Price { input: 1.5, output: 2.0, cache_read: 0.0, cache_write: 0.0 });
        assert!(c.price_table().lookup("my-model").is_some());
        let err = Config::parse("prices:\n  m:\n    input: 1\n    outptu: 2\n").unwrap_err();
        assert!(err.contains("outptu") && err.contains("line 4"), "{err}");
        let err = Config::parse("prices:\n  m: {input: -1, output: 2}\n").unwrap_err();
        assert!(err.contains("prices.m.input"), "{err}");
    }

    #[test]
    fn compaction_settings_and_a_tasks_window() {
        let c = Config::parse("compact-at-percent: 70\ncontext-tokens: 9000\n").unwrap();
        assert_eq!((c.compact_at_percent, c.context_tokens), (70, Some(9000)));
        assert_eq!(c.task_context(None), (None, 9000));
        assert_eq!(
            Config::default().task_context(Some("worker")),
            (None, neuraphage_ipc::models::DEFAULT_CONTEXT_WINDOW)
        );
        assert!(Config::parse("compact-at-percent: 99\n").unwrap_err().contains("between 10 and 95"));
        assert!(Config::parse("context-tokens: 10\n").unwrap_err().contains("at least 1024"));
        let text = "model-tiers:\n  router: { provider: anthropic, model: m-r, pool: p, context-tokens: 5000 }\n  worker: { provider: anthropic, model: claude-x, pool: p }\n";
        let c = Config::parse(text).unwrap();
        assert_eq!(c.task_context(None), (Some("claude-x".into()), 200_000), "the table, by the model");
        assert_eq!(c.task_context(Some("router")), (Some("m-r".into()), 5000));
        assert_eq!(c.task_context(Some("expert")), (Some("claude-x".into()), 200_000), "unconfigured: worker");
        let c = Config::parse(&format!("{text}context-tokens: 7000\n")).unwrap();
        assert_eq!(c.task_context(Some("worker")).1, 7000, "the top-level window before the table");
    }

    #[test]
    fn model_tiers() {
        let text = "model-tiers:\n  worker: { provider: anthropic, model: m-w, pool: main }\n  expert:\n    provider: openai\n    model: m-e\n    pool: other\nauto-escalate: true\nescalate-after-retries: 3\n";
        let broker = Config::parse(text).unwrap().broker();
        assert_eq!(broker.tiers.len(), 2);
        assert_eq!((broker.tiers[0].name.as_str(), broker.tiers[0].model.as_str()), ("worker", "m-w"));
        assert_eq!((broker.tiers[1].name.as_str(), broker.tiers[1].provider.as_str()), ("expert", "openai"));
        assert!(broker.auto_escalate);
        assert_eq!(broker.escalate_after_retries, 3);
        let err = Config::parse("model-tiers:\n  boss: { provider: anthropic, model: m, pool: p }\n").unwrap_err();
        assert!(err.contains("boss") && err.contains("line 2"), "{err}");
        let err =
            Config::parse("model-tiers:\n  worker:\n    provider: anthropic\n    model: m\n    pol: p\n").unwrap_err();
        assert!(err.contains("pol") && err.contains("line"), "{err}");
        let err = Config::parse("model-tiers:\n  worker: { provider: gemini, model: m, pool: p }\n").unwrap_err();
        assert!(err.contains("gemini"), "{err}");
    }
}
