//! The `security:` section of `neuraphage.yaml`: policy (deny), user rules (allow / ask), runtime limits, the
//! permission mode and how long a request waits. Checked when the file is read: a bad pattern or value is refused
//! with its key and the reason.
//!
//! ```yaml
//! security:
//!   permission-mode: auto        # auto | ask | deny
//!   permission-timeout: 5m       # 300, 300s, 5m, 1h
//!   policy:
//!     builtin-rules: true        # the built-in blocked commands and paths below stay in force
//!     blocked-commands: ["docker run --privileged *"]
//!     blocked-paths: [/srv]
//!   permissions:
//!     allowed-commands: ["cargo *", "git status"]
//!     ask-commands: ["git push *"]
//!     allowed-paths: [src]
//!     ask-paths: [".github/workflows/**"]
//!   runtime:
//!     max-bash-commands-per-minute: 50
//!     max-file-writes-per-minute: 100
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::pattern::CommandPattern;

/// Commands blocked unless `builtin-rules: false` (the design's defaults; recursive `rm` of `/` or `~` and fork bombs
/// are also caught by shape, whatever their spelling: see [`super::policy`]).
pub const BUILTIN_BLOCKED_COMMANDS: &[&str] = &[
    "rm -rf /",
    "rm -rf /\\*",
    "rm -rf ~",
    "rm -rf ~/\\*",
    ":(){ :|:& };:",
    "chmod 777 *",
    "chmod -R 777 *",
    "curl * | sh *",
    "curl * | bash *",
    "wget * | sh *",
    "wget * | bash *",
];

/// Paths blocked unless `builtin-rules: false`.
pub const BUILTIN_BLOCKED_PATHS: &[&str] = &["/etc", "/usr", "/System", "/var", "/boot", "/sys", "/proc"];

/// Longest pattern list of one key, and longest pattern.
const MAX_PATTERNS: usize = 1000;
const MAX_PATTERN_BYTES: usize = 1024;

/// What happens to a call that no rule allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// What no rule names runs (the sandbox is the boundary); `ask-*` rules ask.
    #[default]
    Auto,
    /// Whatever no allow rule names asks.
    Ask,
    /// Whatever would ask is refused (for unattended runs).
    Deny,
}

impl Mode {
    /// The mode's name in the file.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Ask => "ask",
            Mode::Deny => "deny",
        }
    }
}

/// `security:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Security {
    /// Layer 1.
    pub policy: Policy,
    /// Layer 2.
    pub permissions: UserRules,
    /// Layer 3.
    pub runtime: Runtime,
    /// Layer 4.
    pub permission_mode: Mode,
    /// How long a request waits for an answer before it is denied.
    #[serde(deserialize_with = "duration")]
    pub permission_timeout: Duration,
}

impl Default for Security {
    fn default() -> Security {
        Security {
            policy: Policy::default(),
            permissions: UserRules::default(),
            runtime: Runtime::default(),
            permission_mode: Mode::Auto,
            permission_timeout: Duration::from_secs(300),
        }
    }
}

/// `security.policy`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Policy {
    /// Keep the built-in blocked commands and paths (the lists below are added to them).
    pub builtin_rules: bool,
    /// Command patterns never run.
    pub blocked_commands: Vec<String>,
    /// Paths never touched.
    pub blocked_paths: Vec<String>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { builtin_rules: true, blocked_commands: Vec::new(), blocked_paths: Vec::new() }
    }
}

/// `security.permissions`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct UserRules {
    /// Command patterns that run without asking.
    pub allowed_commands: Vec<String>,
    /// Command patterns that ask (in every mode but deny, where they are refused).
    pub ask_commands: Vec<String>,
    /// Paths used without asking.
    pub allowed_paths: Vec<String>,
    /// Paths that ask.
    pub ask_paths: Vec<String>,
}

/// `security.runtime`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Runtime {
    /// Bash calls per task per minute before it waits for the user (none: no limit).
    pub max_bash_commands_per_minute: Option<u32>,
    /// Write / Edit calls per task per minute before it waits for the user (none: no limit).
    pub max_file_writes_per_minute: Option<u32>,
}

impl Security {
    /// Check every pattern and value; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let lists = [
            ("security.policy.blocked-commands", &self.policy.blocked_commands, true),
            ("security.policy.blocked-paths", &self.policy.blocked_paths, false),
            ("security.permissions.allowed-commands", &self.permissions.allowed_commands, true),
            ("security.permissions.ask-commands", &self.permissions.ask_commands, true),
            ("security.permissions.allowed-paths", &self.permissions.allowed_paths, false),
            ("security.permissions.ask-paths", &self.permissions.ask_paths, false),
        ];
        let ctx = super::pattern::PathContext { workdir: "/w".into(), home: "/h".into() };
        for (key, list, commands) in lists {
            if list.len() > MAX_PATTERNS {
                return Err(format!("{key}: at most {MAX_PATTERNS} patterns"));
            }
            for (i, p) in list.iter().enumerate() {
                if p.len() > MAX_PATTERN_BYTES || p.contains('\0') {
                    return Err(format!("{key}[{i}]: a pattern is at most {MAX_PATTERN_BYTES} bytes, without NUL"));
                }
                if commands {
                    if CommandPattern::new(p).is_none() {
                        return Err(format!("{key}[{i}] {p:?}: empty, or a pipeline with an empty stage"));
                    }
                } else {
                    super::pattern::PathPattern::new(p, &ctx).map_err(|e| format!("{key}[{i}]: {e}"))?;
                }
            }
        }
        for (key, v) in [
            ("security.runtime.max-bash-commands-per-minute", self.runtime.max_bash_commands_per_minute),
            ("security.runtime.max-file-writes-per-minute", self.runtime.max_file_writes_per_minute),
        ] {
            if v == Some(0) {
                return Err(format!("{key}: must be at least 1 (leave it out for no limit)"));
            }
        }
        if self.permission_timeout.is_zero() || self.permission_timeout > Duration::from_secs(7 * 24 * 3600) {
            return Err("security.permission-timeout: between 1 second and 7 days".into());
        }
        Ok(())
    }
}

/// `300`, `300s`, `5m`, `1h`, `1d`.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse_duration(&t).ok_or_else(|| {
            serde::de::Error::custom(format!("{t:?} is not a duration (a number of seconds, or 30s, 5m, 1h, 1d)"))
        }),
    }
}

/// A duration as written in the file.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}
