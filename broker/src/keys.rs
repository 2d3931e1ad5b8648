//! `$NEURAPHAGE_HOME/api-keys.yaml`: API keys the broker reads, and nobody else.
//!
//! The file must be private (no group or other permission bits, e.g. mode 0600), or it is refused. Values may be
//! `${VAR}` references, resolved from the broker's own environment. Key pools and model tiers extend this format in
//! a later release.
//!
//! ```yaml
//! providers:
//!   - provider: anthropic          # or openai
//!     api-key: ${ANTHROPIC_API_KEY}
//!     base-url: https://api.anthropic.com   # optional, as the official SDKs take it
//!     model: claude-sonnet-4-5     # optional
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::Deserialize;

use crate::provider::{ProviderConfig, ProviderKind};

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
    providers: Vec<Entry>,
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

/// The providers named in `home/api-keys.yaml` (none if the file does not exist).
pub fn load(home: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Vec<ProviderConfig>, KeysError> {
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

/// Parse the file's text, resolving `${VAR}` references with `env`.
pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Vec<ProviderConfig>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let file: KeysFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    file.providers
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = format!("providers[{i}]");
            let kind = match entry.provider {
                Kind::Anthropic => ProviderKind::Anthropic,
                Kind::Openai => ProviderKind::OpenAi,
            };
            let mut config =
                ProviderConfig::new(kind, resolve(&entry.api_key, &env).map_err(|e| format!("{at}.api-key: {e}"))?);
            if let Some(url) = entry.base_url {
                config.base_url = resolve(&url, &env).map_err(|e| format!("{at}.base-url: {e}"))?;
            }
            if let Some(model) = entry.model {
                config.model = model;
            }
            Ok(config)
        })
        .collect()
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
        let configs = parse(text, env).unwrap();
        assert_eq!(configs.len(), 2);
        assert_eq!(configs[0].api_key, "sk-from-env");
        assert_eq!(configs[1].base_url, "http://127.0.0.1:9/v1");
        assert_eq!(configs[1].model, "m");
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
