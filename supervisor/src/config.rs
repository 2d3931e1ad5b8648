//! `$NEURAPHAGE_HOME/neuraphage.yaml`: the supervisor's settings. A missing file means defaults; a malformed one,
//! or an unknown key, stops the supervisor with the file, line and reason.

use std::path::Path;

use serde::Deserialize;

/// File name of the configuration inside the home.
pub const CONFIG_FILE: &str = "neuraphage.yaml";

/// The settings (kebab-case keys in the file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Tasks running at once; 0 holds every task in the queue (nothing starts).
    pub max_concurrent: usize,
    /// Keep a task's worktree when it ends (its branch is always kept).
    pub keep_worktrees: bool,
    /// Model turns a task may take before the drift guard stops it.
    pub max_iterations: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config { max_concurrent: 4, keep_worktrees: true, max_iterations: 50 }
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
        Ok(config)
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
}
