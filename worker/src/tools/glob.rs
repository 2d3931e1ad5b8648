//! `Glob {pattern, path?}`: files whose path matches a glob, newest first; also the walker `Grep` shares.
//!
//! The walk uses the `ignore` crate: `.gitignore` (and `.ignore`, `.git/info/exclude`, the global git excludes)
//! are respected whether or not the folder is a git repository, hidden files are included, `.git` is skipped and
//! symlinks are not followed. When the search starts below the working directory, the `.gitignore` files of the
//! folders between the two apply too; none above the working directory do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use globset::GlobBuilder;
use ignore::gitignore::Gitignore;
use ignore::{Match, WalkBuilder};
use neuraphage_ipc::llm::ToolDefinition;
use serde::Deserialize;
use serde_json::json;

use super::{ToolContext, path};

/// Most paths returned.
const MAX_RESULTS: usize = 1000;

/// The tool's input.
#[derive(Debug, Deserialize)]
pub(super) struct Input {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
}

/// The tool, for the model.
pub(super) fn definition() -> ToolDefinition {
    ToolDefinition {
        name: "Glob".into(),
        description: "Finds files by name pattern, like `**/*.rs` or `src/**/*.{ts,tsx}`, matched against paths \
            relative to `path` (default: the working directory); `*` does not cross `/`, `**` does. Respects \
            .gitignore and skips .git. Returns matching file paths, most recently modified first, at most 1000."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "The glob to match file paths against"},
                "path": {"type": "string", "description": "The folder to search in (default: the working directory)"}
            },
            "required": ["pattern"]
        }),
    }
}

/// Runs the tool.
pub(super) fn run(ctx: &ToolContext, input: Input) -> Result<String, String> {
    run_capped(ctx, input, MAX_RESULTS)
}

fn run_capped(ctx: &ToolContext, input: Input, max_results: usize) -> Result<String, String> {
    let root = path::resolve(ctx, "path", input.path.as_deref().filter(|p| !p.trim().is_empty()).unwrap_or("."))?;
    let shown_root = path::display(ctx, &root);
    if !root.is_dir() {
        let what = if root.exists() { "is not a directory" } else { "does not exist" };
        return Err(format!("`path` {shown_root} {what}"));
    }
    let pattern = input.pattern.trim();
    let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
    let pattern = relative_pattern(ctx, &root, pattern)?;
    let matcher = GlobBuilder::new(&pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("`pattern` `{}` is not a valid glob: {e}", input.pattern))?
        .compile_matcher();

    let mut found: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in walker(ctx, &root).build().flatten() {
        if entry.depth() == 0 || entry.file_type().is_none_or(|t| t.is_dir()) {
            continue;
        }
        let Ok(relative) = entry.path().strip_prefix(&root) else { continue };
        if matcher.is_match(relative) {
            let modified = entry.metadata().ok().and_then(|m| m.modified().ok()).unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((modified, entry.into_path()));
        }
    }
    if found.is_empty() {
        let hint = if pattern.contains('/') {
            ""
        } else {
            " (the pattern matches paths relative to the search folder: use **/ to reach into subfolders)"
        };
        return Ok(format!("No files found matching `{pattern}` in {shown_root}{hint}"));
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let total = found.len();
    let budget = ctx.limit();
    let mut out = String::new();
    let mut shown = 0;
    for (_, file) in found.iter().take(max_results) {
        let line = path::display(ctx, file);
        if out.len() + line.len() + 1 > budget && shown > 0 {
            break;
        }
        out.push_str(&line);
        out.push('\n');
        shown += 1;
    }
    if shown < total {
        out.push_str(&format!(
            "[{total} files matched; showing the {shown} most recently modified. Narrow the pattern or path.]\n"
        ));
    }
    Ok(out)
}

/// An absolute pattern inside the search folder becomes relative to it; relative patterns stay as they are.
fn relative_pattern(ctx: &ToolContext, root: &Path, pattern: &str) -> Result<String, String> {
    if !pattern.starts_with('/') {
        return Ok(pattern.to_string());
    }
    let mut bases = vec![root.to_path_buf()];
    if let Ok(workdir) = path::workdir(ctx)
        && let Ok(below) = root.strip_prefix(workdir)
    {
        bases.push(ctx.workdir.join(below));
    }
    for base in bases {
        if let Some(rest) = pattern.strip_prefix(&format!("{}/", base.display())) {
            return Ok(rest.to_string());
        }
    }
    Err(format!("`pattern` `{pattern}` is absolute; give it relative to the search folder, like **/*.rs"))
}

/// A walker over `root` (a folder inside the working directory) that respects `.gitignore` and skips `.git`.
pub(super) fn walker(ctx: &ToolContext, root: &Path) -> WalkBuilder {
    let ancestors = Arc::new(ancestor_ignores(ctx, root));
    let mut builder = WalkBuilder::new(root);
    builder
        .hidden(false)
        .parents(false)
        .require_git(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |entry| {
            if entry.file_name() == ".git" {
                return false;
            }
            if entry.depth() == 0 {
                return true;
            }
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            for ignore in ancestors.iter().rev() {
                match ignore.matched(entry.path(), is_dir) {
                    Match::Ignore(_) => return false,
                    Match::Whitelist(_) => return true,
                    Match::None => {}
                }
            }
            true
        });
    builder
}

/// The `.gitignore` files of the working directory and the folders below it down to `root`'s parent, outermost first.
fn ancestor_ignores(ctx: &ToolContext, root: &Path) -> Vec<Gitignore> {
    let Ok(workdir) = path::workdir(ctx) else { return Vec::new() };
    let Ok(below) = root.strip_prefix(&workdir) else { return Vec::new() };
    let mut folder = workdir.clone();
    let mut folders = vec![workdir];
    for part in below.iter() {
        folder.push(part);
        folders.push(folder.clone());
    }
    folders.pop(); // `root` itself: the walker reads its ignore files
    folders
        .iter()
        .map(|dir| dir.join(".gitignore"))
        .filter(|file| file.is_file())
        .map(|file| Gitignore::new(file).0)
        .collect()
}

#[cfg(test)]
#[path = "glob_tests.rs"]
mod tests;
