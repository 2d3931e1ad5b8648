//! `Grep {pattern, path?, glob?, -i?, output_mode?}`: searches file contents with a regular expression.
//!
//! Files are walked like `Glob` does (`.gitignore` respected, `.git` skipped, in name order); binary files (a NUL in
//! the first 8 KiB) and files over 32 MiB are skipped. Output lines are `path:line_number:line`, long lines cut
//! at 500 characters, at most 1000 lines and the context's output limit, with a note when cut. Beyond the brief's
//! fields, `-i` (case-insensitive) and `output_mode` (`content`, the default here, `files_with_matches`, `count`)
//! are honoured because models trained on Claude Code send them.

use std::path::PathBuf;

use globset::{GlobBuilder, GlobMatcher};
use neuraphage_ipc::llm::ToolDefinition;
use regex::bytes::RegexBuilder;
use serde::Deserialize;
use serde_json::json;

use super::{ToolContext, glob::walker, path};

/// Most output lines.
const MAX_LINES: usize = 1000;
/// Longest matching line shown, in characters.
const MAX_LINE_CHARS: usize = 500;
/// Files larger than this are not searched.
const MAX_FILE_BYTES: u64 = 32 << 20;

/// The tool's input.
#[derive(Debug, Deserialize)]
pub(super) struct Input {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default, rename = "-i", deserialize_with = "super::lenient_bool")]
    case_insensitive: Option<bool>,
    #[serde(default)]
    output_mode: Option<String>,
}

/// The tool, for the model.
pub(super) fn definition() -> ToolDefinition {
    ToolDefinition {
        name: "Grep".into(),
        description: "Searches file contents with a regular expression (Rust regex syntax, like ripgrep) in the files \
            under `path` (default: the working directory), respecting .gitignore and skipping binary files. \
            Returns matching lines as `path:line_number:line`, at most 1000. Filter files with `glob` (e.g. `*.rs`, \
            `*.{ts,tsx}`, or `src/**/*.py`, which matches paths)."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "The regular expression to search for"},
                "path": {"type": "string", "description": "A file or folder to search (default: the working directory)"},
                "glob": {"type": "string", "description": "Only search files matching this glob; without `/` it matches file names"},
                "-i": {"type": "boolean", "description": "Case-insensitive search"},
                "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"], "description": "content (default): matching lines; files_with_matches: file paths; count: matches per file"}
            },
            "required": ["pattern"]
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Content,
    Files,
    Count,
}

/// Runs the tool.
pub(super) fn run(ctx: &ToolContext, input: Input) -> Result<String, String> {
    run_capped(ctx, input, MAX_LINES)
}

fn run_capped(ctx: &ToolContext, input: Input, max_lines: usize) -> Result<String, String> {
    let mode = match input.output_mode.as_deref().map(str::trim) {
        None | Some("") | Some("content") => Mode::Content,
        Some("files_with_matches") => Mode::Files,
        Some("count") => Mode::Count,
        Some(other) => {
            return Err(format!("`output_mode` must be content, files_with_matches or count, not `{other}`"));
        }
    };
    // Multi-line mode so that `^`/`$` behave per line both on a whole file (the quick check) and on each line.
    let regex = RegexBuilder::new(&input.pattern)
        .case_insensitive(input.case_insensitive.unwrap_or(false))
        .multi_line(true)
        .crlf(true)
        .build()
        .map_err(|e| format!("`pattern` is not a valid regular expression: {e}"))?;
    let root =
        path::resolve_readable(ctx, "path", input.path.as_deref().filter(|p| !p.trim().is_empty()).unwrap_or("."))?;
    let shown_root = path::display(ctx, &root);
    let filter = match input.glob.as_deref().map(str::trim).filter(|g| !g.is_empty()) {
        Some(glob) => Some(file_filter(glob)?),
        None => None,
    };

    let files: Box<dyn Iterator<Item = PathBuf>> = if root.is_file() {
        Box::new(std::iter::once(root.clone()))
    } else if root.is_dir() {
        let walk = walker(ctx, &root).build().flatten();
        let root = root.clone();
        Box::new(walk.filter(|e| e.file_type().is_some_and(|t| t.is_file())).map(|e| e.into_path()).filter(move |p| {
            let Some((matcher, by_path)) = &filter else { return true };
            match p.strip_prefix(&root) {
                Ok(relative) if *by_path => matcher.is_match(relative),
                _ => p.file_name().is_some_and(|name| matcher.is_match(name)),
            }
        }))
    } else {
        return Err(format!("`path` {shown_root} does not exist"));
    };

    let budget = ctx.limit();
    let mut out = String::new();
    let mut lines_out = 0usize;
    let mut cut = false;
    let mut push = |entry: String, out: &mut String| {
        if lines_out >= max_lines || (out.len() + entry.len() > budget && lines_out > 0) {
            return false;
        }
        out.push_str(&entry);
        lines_out += 1;
        true
    };
    'files: for file in files {
        if std::fs::metadata(&file).map(|m| m.len() > MAX_FILE_BYTES).unwrap_or(true) {
            continue;
        }
        let Ok(bytes) = std::fs::read(&file) else { continue };
        if super::looks_binary(&bytes) || !regex.is_match(&bytes) {
            continue;
        }
        let shown = path::display(ctx, &file);
        let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let mut count = 0usize;
        for (index, line) in body.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !regex.is_match(line) {
                continue;
            }
            count += 1;
            if mode == Mode::Content {
                let text = String::from_utf8_lossy(line);
                let (text, long) = super::prefix_chars(&text, MAX_LINE_CHARS);
                let more = if long { " [...]" } else { "" };
                if !push(format!("{shown}:{}:{text}{more}\n", index + 1), &mut out) {
                    cut = true;
                    break 'files;
                }
            }
        }
        let entry = match mode {
            Mode::Content => continue,
            _ if count == 0 => continue,
            Mode::Files => format!("{shown}\n"),
            Mode::Count => format!("{shown}:{count}\n"),
        };
        if !push(entry, &mut out) {
            cut = true;
            break;
        }
    }
    if out.is_empty() {
        return Ok(format!("No matches for `{}` in {shown_root}", input.pattern));
    }
    if cut {
        out.push_str(&format!("[Results cut after {lines_out} lines; narrow the pattern, path or glob.]\n"));
    }
    Ok(out)
}

/// The `glob` filter: matched against the path relative to the search folder when it has a `/`, else the file name.
fn file_filter(glob: &str) -> Result<(GlobMatcher, bool), String> {
    let matcher = GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("`glob` `{glob}` is not a valid glob: {e}"))?
        .compile_matcher();
    Ok((matcher, glob.contains('/')))
}

#[cfg(test)]
#[path = "grep_tests.rs"]
mod tests;
