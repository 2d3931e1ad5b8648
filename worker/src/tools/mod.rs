//! The agent's tools, run inside the task's worker process (already sandboxed, cwd = the task's git worktree).
//!
//! The six file and shell tools keep the names and input fields coding models already know from Claude Code: `Read`,
//! `Write`, `Edit`, `Bash`, `Glob`, `Grep`; `Commit` (see [`commit`]) is carried out by the agent loop over the
//! supervisor link, and `Lock` / `Unlock` (see [`lock`]), the task's side of the broker's lock table, over the broker
//! link. `Skill` (see [`skill`]) returns a skill's body and `TodoWrite` (see [`todo`]) saves the task's plan (the
//! agent loop puts it in the call's checkpoint). [`definitions`] lists them for the model, [`run`] runs one call,
//! [`is_idempotent`] tells the agent loop which calls may simply be repeated after a crash, and [`is_read_only`]
//! which consecutive calls of one turn may run at once.
//!
//! Every failure (a tool error, an unknown tool, arguments that do not parse) comes back as a [`ToolOutcome`] with
//! `is_error: true` and a message naming what was wrong; nothing here panics the worker or ends it. Arguments are
//! parsed leniently: unknown extra fields are ignored, and integers and booleans written as strings are accepted.
//!
//! Paths (`file_path`, `path`) may be absolute or relative to the working directory; they must stay inside it,
//! after `..` is normalised and symlinks are resolved (see [`path`]). Paths in results are shown relative to the
//! working directory, so they can be passed back as they are.
//!
//! Files: `read.rs`, `write.rs` (and the atomic write `edit.rs` shares), `edit.rs`, `bash.rs`, `glob.rs` (and the
//! `.gitignore`-respecting walker `grep.rs` shares), `grep.rs`, `path.rs` (path resolution), `saved.rs` (the file
//! that keeps a cut output in full).

pub mod ask;
mod bash;
pub mod commit;
mod edit;
mod glob;
mod grep;
pub mod learn;
pub mod lock;
pub mod path;
mod read;
mod saved;
pub mod skill;
pub mod task;
pub mod todo;
mod write;

use std::path::PathBuf;

use neuraphage_ipc::llm::ToolDefinition;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// How many characters of a tool's output go back to the model unless the context says otherwise.
pub const DEFAULT_OUTPUT_LIMIT: usize = 30_000;

/// Where the tools work and how much they may return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolContext {
    /// The task's worktree: relative paths resolve against it and every path must stay inside it.
    pub workdir: PathBuf,
    /// Where `Bash` saves the full output of a command whose output was cut (one new file per cut output).
    pub outputs_dir: PathBuf,
    /// The task's scratch folder; `Bash` commands get it as `TMPDIR` when it exists.
    pub tmp_dir: PathBuf,
    /// Most characters of output returned to the model (default [`DEFAULT_OUTPUT_LIMIT`]).
    pub output_limit: usize,
    /// The task's skills, for the `Skill` tool.
    pub skills: std::sync::Arc<crate::skills::Skills>,
}

impl ToolContext {
    /// A context with the default output limit.
    pub fn new(workdir: impl Into<PathBuf>, outputs_dir: impl Into<PathBuf>, tmp_dir: impl Into<PathBuf>) -> Self {
        ToolContext {
            workdir: workdir.into(),
            outputs_dir: outputs_dir.into(),
            tmp_dir: tmp_dir.into(),
            output_limit: DEFAULT_OUTPUT_LIMIT,
            skills: Default::default(),
        }
    }

    /// The output limit, never below a small floor (so head and tail of a cut output both show something).
    fn limit(&self) -> usize {
        self.output_limit.max(64)
    }
}

/// What a tool call returns to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    /// The tool's output, or what went wrong.
    pub content: String,
    /// True when the call failed; the model is told so.
    pub is_error: bool,
}

impl ToolOutcome {
    /// A successful result.
    pub fn ok(content: impl Into<String>) -> Self {
        ToolOutcome { content: content.into(), is_error: false }
    }

    /// A failed result.
    pub fn error(content: impl Into<String>) -> Self {
        ToolOutcome { content: content.into(), is_error: true }
    }
}

impl From<Result<String, String>> for ToolOutcome {
    fn from(result: Result<String, String>) -> Self {
        match result {
            Ok(content) => ToolOutcome::ok(content),
            Err(content) => ToolOutcome::error(content),
        }
    }
}

/// The names of every tool, in the order [`definitions`] lists them.
pub const TOOL_NAMES: [&str; 15] = [
    "Read",
    "Write",
    "Edit",
    "Bash",
    "Glob",
    "Grep",
    "Commit",
    "Lock",
    "Unlock",
    "AskUser",
    "TodoWrite",
    "Skill",
    "Task",
    "TaskResult",
    "Learn",
];

/// Every tool, for the model: name, description and the JSON Schema of its input.
pub fn definitions() -> Vec<ToolDefinition> {
    vec![
        read::definition(),
        write::definition(),
        edit::definition(),
        bash::definition(),
        glob::definition(),
        grep::definition(),
        commit::definition(),
        lock::lock_definition(),
        lock::unlock_definition(),
        ask::definition(),
        todo::definition(),
        skill::definition(),
        task::definition(),
        task::result_definition(),
        learn::definition(),
    ]
}

/// The tools offered to a task whose persona allows only `allowed` (`None`: all), in [`definitions`]' order.
pub fn offered(allowed: Option<&[String]>) -> Vec<ToolDefinition> {
    let mut defs = definitions();
    if let Some(allowed) = allowed {
        defs.retain(|d| allowed.iter().any(|a| a == &d.name));
    }
    defs
}

/// The error result of a call to a tool the task's persona does not allow, if it does not.
pub fn persona_refusal(allowed: Option<&[String]>, name: &str) -> Option<String> {
    let allowed = allowed?;
    if allowed.iter().any(|a| a == name) {
        return None;
    }
    let shown: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    Some(format!(
        "{shown}: this task's persona does not allow this tool, so it did not run; the tools it allows: {}",
        allowed.join(", ")
    ))
}

/// Whether running the same call twice has the same effect as running it once (`Read`, `Glob`, `Grep`).
pub fn is_idempotent(tool: &str) -> bool {
    matches!(tool, "Read" | "Glob" | "Grep" | skill::NAME)
}

/// Whether a call only reads (`Read`, `Glob`, `Grep`, `Skill`): consecutive ones of one turn may run at once.
pub fn is_read_only(tool: &str) -> bool {
    matches!(tool, "Read" | "Glob" | "Grep" | skill::NAME)
}

/// Runs one tool call. Never panics and never fails: every problem is a [`ToolOutcome`] with `is_error`.
pub async fn run(ctx: &ToolContext, name: &str, input: &Value) -> ToolOutcome {
    if let Some(raw) = input.get(neuraphage_ipc::llm::INVALID_INPUT_KEY).and_then(Value::as_str) {
        let shown: String = raw.chars().take(200).collect();
        return ToolOutcome::error(format!(
            "{name}: the tool input is not a valid JSON object (cut off or malformed), so the tool did not run: {shown}"
        ));
    }
    match name {
        "Read" => match parse::<read::Input>(name, input) {
            Ok(input) => blocking(ctx, move |ctx| read::run(&ctx, input)).await,
            Err(outcome) => outcome,
        },
        "Write" => match parse::<write::Input>(name, input) {
            Ok(input) => blocking(ctx, move |ctx| write::run(&ctx, input)).await,
            Err(outcome) => outcome,
        },
        "Edit" => match parse::<edit::Input>(name, input) {
            Ok(input) => blocking(ctx, move |ctx| edit::run(&ctx, input)).await,
            Err(outcome) => outcome,
        },
        "Bash" => match parse::<bash::Input>(name, input) {
            Ok(input) => bash::run(ctx, input).await,
            Err(outcome) => outcome,
        },
        "Glob" => match parse::<glob::Input>(name, input) {
            Ok(input) => blocking(ctx, move |ctx| glob::run(&ctx, input)).await,
            Err(outcome) => outcome,
        },
        "Grep" => match parse::<grep::Input>(name, input) {
            Ok(input) => blocking(ctx, move |ctx| grep::run(&ctx, input)).await,
            Err(outcome) => outcome,
        },
        commit::NAME => match commit::message(input) {
            Ok(_) => ToolOutcome::error("Commit: only the agent loop can commit (over the supervisor link)"),
            Err(outcome) => outcome,
        },
        "Lock" | "Unlock" => match lock::parse_call(name, input) {
            Err(outcome) => outcome,
            Ok(_) => ToolOutcome::error(format!("{name} is answered by the broker through the agent loop, not here")),
        },
        ask::NAME => match ask::parse(input) {
            Ok(_) => ToolOutcome::error("AskUser is answered by the user through the agent loop, not here"),
            Err(outcome) => outcome,
        },
        todo::NAME => match todo::parse(input) {
            Ok(items) => todo::result(&items),
            Err(outcome) => outcome,
        },
        learn::NAME => match learn::parse(input) {
            Ok(_) => ToolOutcome::error("Learn is carried out by the supervisor through the agent loop, not here"),
            Err(outcome) => outcome,
        },
        skill::NAME => match parse::<skill::Input>(name, input) {
            Ok(input) => skill::run(ctx, input),
            Err(outcome) => outcome,
        },
        task::NAME => match task::create(input) {
            Ok(_) => ToolOutcome::error("Task is carried out by the supervisor through the agent loop, not here"),
            Err(outcome) => outcome,
        },
        task::RESULT_NAME => match task::result(input) {
            Ok(_) => ToolOutcome::error("TaskResult is answered by the supervisor through the agent loop, not here"),
            Err(outcome) => outcome,
        },
        _ => ToolOutcome::error(format!("There is no tool named `{name}`; the tools are {}.", TOOL_NAMES.join(", "))),
    }
}

/// Runs a filesystem tool on the blocking pool; a panic in it becomes an error result.
async fn blocking<F>(ctx: &ToolContext, f: F) -> ToolOutcome
where
    F: FnOnce(ToolContext) -> Result<String, String> + Send + 'static,
{
    let ctx = ctx.clone();
    match tokio::task::spawn_blocking(move || f(ctx)).await {
        Ok(result) => result.into(),
        Err(e) => ToolOutcome::error(format!("The tool failed internally: {e}")),
    }
}

/// Parses a tool's input; the error names the tool and the field at fault.
fn parse<T: DeserializeOwned>(tool: &str, input: &Value) -> Result<T, ToolOutcome> {
    // A model (or a broker that could not parse partial JSON) sometimes hands the object over as a JSON string.
    let decoded;
    let input = match input {
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(value @ Value::Object(_)) => {
                decoded = value;
                &decoded
            }
            _ => return Err(ToolOutcome::error(format!("{tool}: the input must be a JSON object, got a string"))),
        },
        Value::Object(_) => input,
        other => {
            let kind = match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                _ => "an array",
            };
            return Err(ToolOutcome::error(format!("{tool}: the input must be a JSON object, got {kind}")));
        }
    };
    serde_path_to_error::deserialize(input).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        if field == "." {
            ToolOutcome::error(format!("{tool}: invalid input: {inner}"))
        } else {
            ToolOutcome::error(format!("{tool}: invalid field `{field}`: {inner}"))
        }
    })
}

/// Deserialises an optional non-negative integer, also accepting `"12"` and `12.0`.
fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9e15).map(|f| f as u64))
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected a non-negative integer, got {n}"))),
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected a non-negative integer, got \"{s}\""))),
        Some(other) => Err(D::Error::custom(format!("expected a non-negative integer, got {other}"))),
    }
}

/// Deserialises an optional boolean, also accepting `"true"` and `"false"`.
fn lenient_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(other) => Err(D::Error::custom(format!("expected true or false, got {other}"))),
    }
}

/// The first `max` characters of `text`, and whether anything was cut.
fn prefix_chars(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().nth(max) {
        Some((at, _)) => (&text[..at], true),
        None => (text, false),
    }
}

/// The last `max` characters of `text`.
fn suffix_chars(text: &str, max: usize) -> &str {
    let count = text.chars().count();
    match text.char_indices().nth(count.saturating_sub(max)) {
        Some((at, _)) => &text[at..],
        None => "",
    }
}

/// Whether the start of a file's bytes looks binary (a NUL in the first 8 KiB, as git and ripgrep judge).
fn looks_binary(bytes: &[u8]) -> bool {
    bytes[..bytes.len().min(8192)].contains(&0)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Test support: a context over fresh temp folders.
    use super::ToolContext;

    /// A temp folder holding `work/`, `outputs/` and `tmp/`, and a context over them.
    pub(crate) fn context() -> (tempfile::TempDir, ToolContext) {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["work", "outputs", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let ctx = ToolContext::new(dir.path().join("work"), dir.path().join("outputs"), dir.path().join("tmp"));
        (dir, ctx)
    }
}

#[cfg(test)]
mod tests;
