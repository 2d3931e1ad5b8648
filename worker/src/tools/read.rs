//! `Read {file_path, offset?, limit?}`: a text file's lines, numbered like `cat -n`.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind};

use neuraphage_ipc::llm::ToolDefinition;
use serde::Deserialize;
use serde_json::json;

use super::{ToolContext, path};

/// Lines returned when `limit` is not given.
const DEFAULT_LIMIT: u64 = 2000;
/// Longest line shown, in characters; longer lines are cut.
const MAX_LINE_CHARS: usize = 2000;

/// The tool's input.
#[derive(Debug, Deserialize)]
pub(super) struct Input {
    file_path: String,
    #[serde(default, deserialize_with = "super::lenient_u64")]
    offset: Option<u64>,
    #[serde(default, deserialize_with = "super::lenient_u64")]
    limit: Option<u64>,
}

/// The tool, for the model.
pub(super) fn definition() -> ToolDefinition {
    ToolDefinition {
        name: "Read".into(),
        description: "Reads a text file from the working directory. Lines are numbered like `cat -n` (line number, \
            tab, line). By default returns up to 2000 lines from the start; give `offset` (1-based first line) and \
            `limit` (number of lines) to read a part of a long file. Lines longer than 2000 characters are cut. \
            Binary files are refused. Read a file before editing it."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The file to read: relative to the working directory, or absolute inside it"},
                "offset": {"type": "integer", "minimum": 1, "description": "The line number to start at (1-based). Only for files too long to read at once"},
                "limit": {"type": "integer", "minimum": 1, "description": "How many lines to read (default 2000)"}
            },
            "required": ["file_path"]
        }),
    }
}

/// Runs the tool.
pub(super) fn run(ctx: &ToolContext, input: Input) -> Result<String, String> {
    let file_path = path::resolve_readable(ctx, "file_path", &input.file_path)?;
    let shown = path::display(ctx, &file_path);
    let start = input.offset.unwrap_or(1).max(1);
    let limit = input.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 {
        return Err("`limit` must be at least 1".into());
    }
    let metadata = match std::fs::metadata(&file_path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(format!("File does not exist: {shown}")),
        Err(e) => return Err(format!("Cannot read {shown}: {e}")),
    };
    if metadata.is_dir() {
        return Err(format!("{shown} is a directory, not a file; list it with Glob or Bash `ls`"));
    }
    if !metadata.is_file() {
        return Err(format!("{shown} is not a regular file (a device, socket or pipe); Read shows files only"));
    }
    let file = File::open(&file_path).map_err(|e| format!("Cannot open {shown}: {e}"))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let head = reader.fill_buf().map_err(|e| format!("Cannot read {shown}: {e}"))?;
    if super::looks_binary(head) {
        return Err(format!("{shown} is a binary file ({} bytes); Read shows text files only", metadata.len()));
    }
    if head.is_empty() {
        return Ok(format!("(the file {shown} exists and is empty)"));
    }

    let budget = ctx.limit();
    let mut out = String::new();
    let mut out_chars = 0usize;
    let mut last_shown = None;
    let mut cut_by_budget = false;
    let mut total = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => total += 1,
            Err(e) => return Err(format!("Cannot read {shown}: {e}")),
        }
        if total < start || total >= start.saturating_add(limit) || cut_by_budget {
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\n').trim_end_matches('\r');
        let (text, cut) = super::prefix_chars(text, MAX_LINE_CHARS);
        let entry = if cut {
            format!("{total:>6}\t{text} [... line cut at {MAX_LINE_CHARS} characters]\n")
        } else {
            format!("{total:>6}\t{text}\n")
        };
        let entry_chars = entry.chars().count();
        if out_chars + entry_chars > budget && last_shown.is_some() {
            cut_by_budget = true;
            continue;
        }
        out_chars += entry_chars;
        out.push_str(&entry);
        last_shown = Some(total);
    }
    let Some(last) = last_shown else {
        return Err(format!("{shown} has {total} lines; `offset` {start} is past the end"));
    };
    if cut_by_budget {
        out.push_str(&format!(
            "[Output cut at {budget} characters: showed lines {start}-{last} of {total}; continue with offset {}]\n",
            last + 1
        ));
    } else if last < total {
        out.push_str(&format!("[Showed lines {start}-{last} of {total}; continue with offset {}]\n", last + 1));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::tools::testing::context;
    use crate::tools::{ToolContext, ToolOutcome, run};

    async fn read(ctx: &ToolContext, input: serde_json::Value) -> ToolOutcome {
        run(ctx, "Read", &input).await
    }

    #[tokio::test]
    async fn numbers_lines_like_cat_n() {
        let (_dir, ctx) = context();
        std::fs::write(ctx.workdir.join("a.txt"), "alpha\nbeta\r\n\ngamma").unwrap();
        let out = read(&ctx, json!({"file_path": "a.txt"})).await;
        assert!(!out.is_error, "{out:?}");
        assert_eq!(out.content, "     1\talpha\n     2\tbeta\n     3\t\n     4\tgamma\n");
    }

    #[tokio::test]
    async fn offset_and_limit_select_lines_and_say_where_to_continue() {
        let (_dir, ctx) = context();
        let text: String = (1..=50).map(|n| format!("line {n}\n")).collect();
        std::fs::write(ctx.workdir.join("f.txt"), text).unwrap();
        let out = read(&ctx, json!({"file_path": "f.txt", "offset": 10, "limit": "3"})).await;
        assert!(!out.is_error, "{out:?}");
        assert!(out.content.starts_with("    10\tline 10\n    11\tline 11\n    12\tline 12\n"), "{}", out.content);
        assert!(out.content.contains("lines 10-12 of 50; continue with offset 13"), "{}", out.content);
        let out = read(&ctx, json!({"file_path": "f.txt", "offset": 51})).await;
        assert!(out.is_error && out.content.contains("has 50 lines"), "{out:?}");
        let out = read(&ctx, json!({"file_path": "f.txt", "limit": 0})).await;
        assert!(out.is_error && out.content.contains("`limit`"), "{out:?}");
    }

    #[tokio::test]
    async fn long_lines_are_cut() {
        let (_dir, ctx) = context();
        std::fs::write(ctx.workdir.join("long.txt"), "é".repeat(2500)).unwrap();
        let out = read(&ctx, json!({"file_path": "long.txt"})).await;
        assert!(out.content.contains(&format!("\t{} [... line cut at 2000 characters]", "é".repeat(2000))));
    }

    #[tokio::test]
    async fn output_limit_cuts_at_a_whole_line() {
        let (_dir, mut ctx) = context();
        ctx.output_limit = 100;
        let text: String = (1..=100).map(|n| format!("row {n}\n")).collect();
        std::fs::write(ctx.workdir.join("f.txt"), text).unwrap();
        let out = read(&ctx, json!({"file_path": "f.txt"})).await;
        assert!(!out.is_error);
        assert!(out.content.contains("Output cut at 100 characters: showed lines 1-7 of 100; continue with offset 8"));
    }

    #[tokio::test]
    async fn refuses_binary_missing_directory_and_escapes() {
        let (_dir, ctx) = context();
        std::fs::write(ctx.workdir.join("bin"), [0x7f, b'E', b'L', b'F', 0, 1, 2]).unwrap();
        let out = read(&ctx, json!({"file_path": "bin"})).await;
        assert!(out.is_error && out.content.contains("binary file (7 bytes)"), "{out:?}");
        let out = read(&ctx, json!({"file_path": "nope.txt"})).await;
        assert!(out.is_error && out.content == "File does not exist: nope.txt", "{out:?}");
        std::fs::create_dir(ctx.workdir.join("d")).unwrap();
        let out = read(&ctx, json!({"file_path": "d"})).await;
        assert!(out.is_error && out.content.contains("is a directory"), "{out:?}");
        assert!(std::process::Command::new("mkfifo").arg(ctx.workdir.join("fifo")).status().unwrap().success());
        let out = read(&ctx, json!({"file_path": "fifo"})).await;
        assert!(out.is_error && out.content.contains("not a regular file"), "{out:?}");
        let out = read(&ctx, json!({"file_path": "/etc/passwd"})).await;
        assert!(out.is_error && out.content.contains("outside the working directory"), "{out:?}");
        std::os::unix::fs::symlink("/etc", ctx.workdir.join("etc")).unwrap();
        let out = read(&ctx, json!({"file_path": "etc/passwd"})).await;
        assert!(out.is_error && out.content.contains("symlink"), "{out:?}");
    }

    #[tokio::test]
    async fn empty_file_and_saved_outputs_are_readable() {
        let (_dir, ctx) = context();
        std::fs::write(ctx.workdir.join("empty"), "").unwrap();
        let out = read(&ctx, json!({"file_path": "empty"})).await;
        assert!(!out.is_error && out.content.contains("is empty"), "{out:?}");
        let saved = ctx.outputs_dir.join("bash-1.log");
        std::fs::write(&saved, "full output\n").unwrap();
        let out = read(&ctx, json!({"file_path": saved})).await;
        assert_eq!(out.content, "     1\tfull output\n");
    }
}
