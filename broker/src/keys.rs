//! `$NEURAPHAGE_HOME/api-keys.yaml`: API keys the broker reads, and nobody else, in named pools.
//!
//! The file must be private (no group or other permission bits, e.g. mode 0600), or it is refused. Values may be
//! `${VAR}` references, resolved from the broker's own environment. A pool is keys of one provider; the tiers of
//! `neuraphage.yaml` name the pool they use. Limits per key are optional starting points: the broker learns the real
//! ones from the provider's rate-limit headers.
//!
//! ```yaml
//! pools:
//!   main:
//!     provider: anthropic                   # or openai
//!     base-url: https://api.anthropic.com   # optional, as the official SDKs take it
//!     model: claude-sonnet-4-5              # optional: the default model
//!     window-seconds: 60                    # optional: the providers' limits are per minute
//!     keys:
//!       - api-key: ${ANTHROPIC_API_KEY_1}
//!         name: first                       # optional label for logs (never the key)
//!         requests-per-minute: 50           # optional starting limits
//!         input-tokens-per-minute: 30000
//!         output-tokens-per-minute: 8000
//!       - api-key: ${ANTHROPIC_API_KEY_2}
//! providers:                                # the older form: each entry a pool of one key, named after its provider
//!   - provider: openai
//!     api-key: ${OPENAI_API_KEY}
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::limiter::{DIMENSIONS, INPUT, OUTPUT, REQUESTS};
use crate::provider::{ProviderConfig, ProviderKind};

/// The window the providers' limits are per.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// A pool of keys of one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Its name.
    pub name: String,
    /// Its provider.
    pub kind: ProviderKind,
    /// The window its limits are per.
    pub window: Duration,
    /// Its keys.
    pub keys: Vec<KeyConfig>,
}

/// One key of a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyConfig {
    /// Its label (`pool#1`, or its `name`).
    pub label: String,
    /// How to reach the provider with it.
    pub provider: ProviderConfig,
    /// Starting limits per window (requests, input, output, tokens); `None`: learnt.
    pub limits: [Option<u64>; DIMENSIONS],
}

/// File name inside the home.
pub const KEYS_FILE: &str = "api-keys.yaml";

/// Why the keys file was not used. The message names the file and, where it can, the line.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct KeysError {
    /// The file.
    pub path: String,
    /// What was wrong.
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KeysFile {
    #[serde(default)]
    pools: BTreeMap<String, PoolEntry>,
    #[serde(default)]
    providers: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PoolEntry {
    provider: Kind,
    base_url: Option<String>,
    model: Option<String>,
    window_seconds: Option<f64>,
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KeyEntry {
    api_key: String,
    name: Option<String>,
    requests_per_minute: Option<u64>,
    input_tokens_per_minute: Option<u64>,
    output_tokens_per_minute: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Entry {
    provider: Kind,
    api_key: String,
    base_url: Option<String>,
    model: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Anthropic,
    Openai,
}

/// The pools named in `home/api-keys.yaml` (none if the file does not exist).
pub fn load(home: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Vec<PoolConfig>, KeysError> {
    let path = home.join(KEYS_FILE);
    let err = |reason: String| KeysError { path: path.display().to_string(), reason };
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e.to_string())),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!("refused: mode {mode:o} lets other users read the keys; run chmod 600 on it")));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    parse(&text, env).map_err(err)
}

/// Parse the file's text, resolving `${VAR}` references with `env`. Errors name the place (`pools.main.keys[1]
/// .api-key`) or the line.
pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Vec<PoolConfig>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let file: KeysFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let kind_of = |k: Kind| match k {
        Kind::Anthropic => ProviderKind::Anthropic,
        Kind::Openai => ProviderKind::OpenAi,
    };
    let mut pools = Vec::new();
    for (name, entry) in file.pools {
        let at = format!("pools.{name}");
        if name.is_empty() || name.len() > 64 {
            return Err(format!("{at}: a pool name is 1 to 64 characters"));
        }
        let kind = kind_of(entry.provider);
        let window = match entry.window_seconds {
            None => DEFAULT_WINDOW,
            Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Duration::from_secs_f64(s),
            Some(s) => return Err(format!("{at}.window-seconds: {s} is not between 0 and 86400")),
        };
        if entry.keys.is_empty() {
            return Err(format!("{at}.keys: a pool needs at least one key"));
        }
        let mut keys = Vec::new();
        for (i, key) in entry.keys.into_iter().enumerate() {
            let at = format!("{at}.keys[{i}]");
            let mut config =
                ProviderConfig::new(kind, resolve(&key.api_key, &env).map_err(|e| format!("{at}.api-key: {e}"))?);
            if let Some(url) = &entry.base_url {
                config.base_url = resolve(url, &env).map_err(|e| format!("pools.{name}.base-url: {e}"))?;
            }
            if let Some(model) = &entry.model {
                config.model = model.clone();
            }
            let mut limits = [None; DIMENSIONS];
            limits[REQUESTS] = key.requests_per_minute;
            limits[INPUT] = key.input_tokens_per_minute;
            limits[OUTPUT] = key.output_tokens_per_minute;
            if limits.contains(&Some(0)) {
                return Err(format!("{at}: a per-minute limit must be at least 1"));
            }
            let label = key.name.unwrap_or_else(|| format!("{name}#{}", i + 1));
            keys.push(KeyConfig { label, provider: config, limits });
        }
        pools.push(PoolConfig { name, kind, window, keys });
    }
    for (i, entry) in file.providers.into_iter().enumerate() {
        let at = format!("providers[{i}]");
        let kind = kind_of(entry.provider);
        let mut config =
            ProviderConfig::new(kind, resolve(&entry.api_key, &env).map_err(|e| format!("{at}.api-key: {e}"))?);
        if let Some(url) = entry.base_url {
            config.base_url = resolve(&url, &env).map_err(|e| format!("{at}.base-url: {e}"))?;
        }
        if let Some(model) = entry.model {
            config.model = model;
        }
        let name = if pools.iter().any(|p| p.name == kind.name()) {
            format!("{}-{i}", kind.name())
        } else {
            kind.name().to_owned()
        };
        let key = KeyConfig { label: format!("{name}#1"), provider: config, limits: [None; DIMENSIONS] };
        pools.push(PoolConfig { name, kind, window: DEFAULT_WINDOW, keys: vec![key] });
    }
    Ok(pools)
}

/// The pools the environment enables (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`, see [`crate::provider::from_env`]),
/// each a pool of one key named after its provider, for those `pools` does not name already.
pub fn env_pools(pools: &mut Vec<PoolConfig>, configs: Vec<ProviderConfig>) {
    for config in configs {
        let name = config.kind.name().to_owned();
        if pools.iter().any(|p| p.name == name) {
            continue;
        }
        let kind = config.kind;
        let key = KeyConfig { label: format!("{name}#env"), provider: config, limits: [None; DIMENSIONS] };
        pools.push(PoolConfig { name, kind, window: DEFAULT_WINDOW, keys: vec![key] });
    }
}

/// `${VAR}` → the variable's value (which must be set); anything else as written.
fn resolve(value: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let value = value.trim();
    match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
        Some(var) => env(var)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("${{{var}}} is not set in the broker's environment")),
        None => Ok(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(key: &str) -> Option<String> {
        (key == "KEY_1").then(|| "sk-from-env".to_owned())
    }

    #[test]
    fn entries_and_env_references() {
        let text = "providers:\n  - provider: anthropic\n    api-key: ${KEY_1}\n  - provider: openai\n    api-key: sk-o\n    base-url: http://127.0.0.1:9/v1\n    model: m\n";
        let pools = parse(text, env).unwrap();
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].keys[0].provider.api_key, "sk-from-env");
        assert_eq!(pools[1].keys[0].provider.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(pools[1].keys[0].provider.model, "m");
        assert_eq!((pools[0].name.as_str(), pools[1].name.as_str()), ("anthropic", "openai"));
    }

    #[test]
    fn pools_of_keys() {
        let text = "pools:\n  main:\n    provider: anthropic\n    window-seconds: 2\n    keys:\n      - api-key: ${KEY_1}\n        requests-per-minute: 50\n      - api-key: sk-2\n        name: second\n";
        let pools = parse(text, env).unwrap();
        assert_eq!(pools.len(), 1);
        let main = &pools[0];
        assert_eq!((main.name.as_str(), main.window), ("main", Duration::from_secs(2)));
        assert_eq!(main.keys[0].label, "main#1");
        assert_eq!(main.keys[0].limits[REQUESTS], Some(50));
        assert_eq!(main.keys[1].label, "second");
        assert_eq!(main.keys[1].provider.api_key, "sk-2");
        let e = parse(
            "pools:\n  main:\n    provider: anthropic\n    keys:\n      - api-key: x\n      - api-key: ${NOPE}\n",
            env,
        )
        .unwrap_err();
        assert!(e.contains("pools.main.keys[1].api-key"), "{e}");
        let e = parse("pools:\n  main:\n    provider: anthropic\n    keys:\n      - api-key: x\n        rpm: 3\n", env)
            .unwrap_err();
        assert!(e.contains("rpm") && e.contains("line 6"), "{e}");
        let e = parse("pools:\n  main:\n    provider: anthropic\n    keys: []\n", env).unwrap_err();
        assert!(e.contains("pools.main.keys"), "{e}");
    }

    #[test]
    fn errors_name_the_place() {
        let e = parse("providers:\n  - provider: anthropic\n    api-key: ${NOPE}\n", env).unwrap_err();
        assert!(e.contains("providers[0].api-key") && e.contains("NOPE"), "{e}");
        let e = parse("providers:\n  - provider: anthropic\n    api_key: x\n", env).unwrap_err();
        assert!(e.contains("line 3") || e.contains("api_key"), "{e}");
        let e = parse("providers:\n  - provider: gemini\n    api-key: x\n", env).unwrap_err();
        assert!(e.contains("gemini"), "{e}");
    }

    #[test]
    fn a_readable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYS_FILE);
        std::fs::write(&path, "providers: []\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(dir.path(), env).unwrap_err().to_string().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load(dir.path(), env).unwrap().is_empty());
        assert!(load(&dir.path().join("missing"), env).unwrap().is_empty());
    }
}
