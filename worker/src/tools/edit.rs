//! `Edit {file_path, old_string, new_string, replace_all?}`: replaces an exact string in a text file.

use std::io::ErrorKind;

use neuraphage_ipc::llm::ToolDefinition;
use serde::Deserialize;
use serde_json::json;

use super::{ToolContext, path, write::write_atomic};

/// The tool's input.
#[derive(Debug, Deserialize)]
pub(super) struct Input {
    file_path: String,
    old_string: String,
    new_string: String,
    #[serde(default, deserialize_with = "super::lenient_bool")]
    replace_all: Option<bool>,
}

/// The tool, for the model.
pub(super) fn definition() -> ToolDefinition {
    ToolDefinition {
        name: "Edit".into(),
        description: "Replaces exact text in a file. `old_string` must occur exactly once in the file (copy it from \
            Read's output without the line-number prefix, with its exact whitespace and indentation; include \
            surrounding lines to make it unique), unless `replace_all` is true, which replaces every occurrence. \
            The file is rewritten atomically."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The file to edit: relative to the working directory, or absolute inside it"},
                "old_string": {"type": "string", "description": "The exact text to replace"},
                "new_string": {"type": "string", "description": "The text to put in its place (must differ from old_string)"},
                "replace_all": {"type": "boolean", "default": false, "description": "Replace every occurrence of old_string"}
            },
            "required": ["file_path", "old_string", "new_string"]
        }),
    }
}

/// Runs the tool.
pub(super) fn run(ctx: &ToolContext, input: Input) -> Result<String, String> {
    if input.old_string == input.new_string {
        return Err("`old_string` and `new_string` are the same; there is nothing to change".into());
    }
    if input.old_string.is_empty() {
        return Err("`old_string` is empty; to create a file or replace all of it, use Write".into());
    }
    let file_path = path::resolve(ctx, "file_path", &input.file_path)?;
    let shown = path::display(ctx, &file_path);
    if file_path.exists() && !file_path.is_file() {
        let what = if file_path.is_dir() { "a directory" } else { "not a regular file" };
        return Err(format!("{shown} is {what}; Edit changes files only"));
    }
    let bytes = match std::fs::read(&file_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(format!("File does not exist: {shown}; create it with Write"));
        }
        Err(e) => return Err(format!("Cannot read {shown}: {e}")),
    };
    if super::looks_binary(&bytes) {
        return Err(format!("{shown} is a binary file; Edit changes text files only"));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8 text; Edit changes text only"))?;

    let (mut old, mut new) = (input.old_string, input.new_string);
    // Models copy lines from Read with `\n` endings; a file with `\r\n` endings still matches.
    if !text.contains(&old) && text.contains("\r\n") && old.contains('\n') && !old.contains("\r\n") {
        let crlf_old = old.replace('\n', "\r\n");
        if text.contains(&crlf_old) {
            old = crlf_old;
            new = new.replace("\r\n", "\n").replace('\n', "\r\n");
        }
    }
    let count = text.matches(old.as_str()).count();
    let replace_all = input.replace_all.unwrap_or(false);
    if count == 0 {
        return Err(format!(
            "`old_string` was not found in {shown} (0 occurrences); Read the file and copy the text exactly, \
             including whitespace and indentation"
        ));
    }
    if count > 1 && !replace_all {
        return Err(format!(
            "`old_string` was found {count} times in {shown}; it must occur exactly once. Include more surrounding \
             lines to make it unique, or set replace_all to true to replace every occurrence"
        ));
    }
    let first_line = text.find(old.as_str()).map(|at| text[..at].matches('\n').count() + 1).unwrap_or(1);
    let edited = if replace_all { text.replace(old.as_str(), &new) } else { text.replacen(old.as_str(), &new, 1) };
    write_atomic(&file_path, edited.as_bytes()).map_err(|e| format!("Cannot write {shown}: {e}"))?;
    Ok(if count == 1 {
        format!("Edited {shown}: replaced 1 occurrence at line {first_line}")
    } else {
        format!("Edited {shown}: replaced {count} occurrences (the first at line {first_line})")
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::tools::testing::context;
    use crate::tools::{ToolContext, ToolOutcome, run};

    async fn edit(ctx: &ToolContext, input: serde_json::Value) -> ToolOutcome {
        run(ctx, "Edit", &input).await
    }

    fn contents(ctx: &ToolContext, name: &str) -> String {
        std::fs::read_to_string(ctx.workdir.join(name)).unwrap()
    }

    #[tokio::test]
    async fn replaces_a_unique_string() {
        let (_dir, ctx) = context();
        std::fs::write(ctx.workdir.join("a.rs"), "fn a() {}\nfn b() {}\n").unwrap();
        let out = edit(&ctx, json!({"file_path": "a.rs", "old_string": "fn b()", "new_string": "fn c()"})).await;
        assert!(!out.is_error, "{out:?}");
        assert_eq!(out.content, "Edited a.rs: replaced 1 occurrence at line 2");
        assert_eq!(contents(&ctx, "a.rs"), "fn a() {}\nfn c() {}\n");
    }

    #[tokio::test]
    async fn counts_occurrences_and_replace_all_replaces_them() {
        let (_dir, ctx) = context();
        std::fs::write(ctx.workdir.join("a.txt"), "x y x z x").unwrap();
        let out = edit(&ctx, json!({"file_path": "a.txt", "old_string": "x", "new_string": "w"})).await;
        assert!(out.is_error && out.content.contains("found 3 times"), "{out:?}");
        assert_eq!(contents(&ctx, "a.txt"), "x y x z x");
        let input = json!({"file_path": "a.txt", "old_string": "x", "new_string": "w", "replace_all": true});
        let out = edit(&ctx, input).await;
        assert!(!out.is_error && out.content.contains("replaced 3 occurrences"), "{out:?}");
        assert_eq!(contents(&ctx, "a.txt"), "w y w z w");
    }

    #[tokio::test]
    async fn errors_name_what_was_wrong() {
        let (_dir, ctx) = context();
        std::fs::write(ctx.workdir.join("a.txt"), "hello").unwrap();
        let out = edit(&ctx, json!({"file_path": "a.txt", "old_string": "bye", "new_string": "x"})).await;
        assert!(out.is_error && out.content.contains("0 occurrences"), "{out:?}");
        let out = edit(&ctx, json!({"file_path": "a.txt", "old_string": "hello", "new_string": "hello"})).await;
        assert!(out.is_error && out.content.contains("are the same"), "{out:?}");
        let out = edit(&ctx, json!({"file_path": "a.txt", "old_string": "", "new_string": "x"})).await;
        assert!(out.is_error && out.content.contains("empty"), "{out:?}");
        let out = edit(&ctx, json!({"file_path": "gone.txt", "old_string": "a", "new_string": "b"})).await;
        assert!(out.is_error && out.content.contains("File does not exist: gone.txt"), "{out:?}");
        let out = edit(&ctx, json!({"file_path": "a.txt", "old_string": "hello"})).await;
        assert!(out.is_error && out.content.contains("missing field `new_string`"), "{out:?}");
        let input = json!({"file_path": "a.txt", "old_string": "hello", "new_string": "x", "replace_all": "maybe"});
        let out = edit(&ctx, input).await;
        assert!(out.is_error && out.content.contains("`replace_all`"), "{out:?}");
        let out = edit(&ctx, json!({"file_path": "../a.txt", "old_string": "a", "new_string": "b"})).await;
        assert!(out.is_error && out.content.contains("outside the working directory"), "{out:?}");
        std::fs::write(ctx.workdir.join("bin"), b"a\0b").unwrap();
        let out = edit(&ctx, json!({"file_path": "bin", "old_string": "a", "new_string": "b"})).await;
        assert!(out.is_error && out.content.contains("binary"), "{out:?}");
        std::fs::create_dir(ctx.workdir.join("d")).unwrap();
        let out = edit(&ctx, json!({"file_path": "d", "old_string": "a", "new_string": "b"})).await;
        assert!(out.is_error && out.content.contains("is a directory"), "{out:?}");
        assert_eq!(contents(&ctx, "a.txt"), "hello");
    }

    #[tokio::test]
    async fn matches_crlf_files_with_lf_strings() {
        let (_dir, ctx) = context();
        std::fs::write(ctx.workdir.join("w.txt"), "one\r\ntwo\r\nthree\r\n").unwrap();
        let input = json!({"file_path": "w.txt", "old_string": "one\ntwo", "new_string": "1\n2"});
        let out = edit(&ctx, input).await;
        assert!(!out.is_error, "{out:?}");
        assert_eq!(contents(&ctx, "w.txt"), "1\r\n2\r\nthree\r\n");
    }
}
