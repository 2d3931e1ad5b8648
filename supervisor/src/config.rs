//! `$NEURAPHAGE_HOME/neuraphage.yaml`: the supervisor's settings. A missing file means defaults; a malformed one,
//! or an unknown key, stops the supervisor with the file, line and reason.

use std::collections::BTreeMap;
use std::path::Path;

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
    /// Prices of models in USD per million tokens, added to or replacing the defaults ([`crate::cost`]):
    /// `prices: {my-model: {input: 1.0, output: 2.0, cache-read: 0.1, cache-write: 1.25}}`.
    pub prices: BTreeMap<String, Price>,
}

impl Default for Config {
    fn default() -> Config {
        Config { max_concurrent: 4, keep_worktrees: true, max_iterations: 50, prices: BTreeMap::new() }
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
        crate::cost::validate(&config.prices)?;
        Ok(config)
    }

    /// The price table: the defaults with `prices` over them.
    pub fn price_table(&self) -> PriceTable {
        PriceTable::with_overrides(&self.prices)
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
}
