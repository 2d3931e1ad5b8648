//! `Write {file_path, content}`: creates or replaces a file, atomically; also the atomic write `Edit` uses.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use neuraphage_ipc::llm::ToolDefinition;
use serde::Deserialize;
use serde_json::json;

use super::{ToolContext, path};

/// The tool's input.
#[derive(Debug, Deserialize)]
pub(super) struct Input {
    file_path: String,
    content: String,
}

/// The tool, for the model.
pub(super) fn definition() -> ToolDefinition {
    ToolDefinition {
        name: "Write".into(),
        description: "Writes a file in the working directory, replacing it if it exists and creating missing parent \
            folders. The file is replaced atomically. Prefer Edit for changing part of an existing file; Read a file \
            before overwriting it."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The file to write: relative to the working directory, or absolute inside it"},
                "content": {"type": "string", "description": "The whole new content of the file"}
            },
            "required": ["file_path", "content"]
        }),
    }
}

/// Runs the tool.
pub(super) fn run(ctx: &ToolContext, input: Input) -> Result<String, String> {
    let file_path = path::resolve(ctx, "file_path", &input.file_path)?;
    let shown = path::display(ctx, &file_path);
    if file_path.is_dir() {
        return Err(format!("{shown} is a directory; give the path of a file"));
    }
    let existed = file_path.exists();
    if let Some(parent) = file_path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("Cannot create the folder {}: {e}", path::display(ctx, parent)))?;
    }
    write_atomic(&file_path, input.content.as_bytes()).map_err(|e| format!("Cannot write {shown}: {e}"))?;
    let lines = input.content.lines().count();
    let verb = if existed { "Replaced" } else { "Created" };
    Ok(format!("{verb} {shown} ({} bytes, {lines} lines)", input.content.len()))
}

/// Writes `bytes` to `target` through a new temp file in the same folder and a rename, so readers see the old
/// content or the new, never a part. An existing file's permissions are kept.
pub(super) fn write_atomic(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let permissions = fs::metadata(target).ok().map(|m| m.permissions());
    let (temp, mut file) = loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp: PathBuf = dir.join(format!(".{name}.np-{}-{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => break (temp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let result = (|| {
        file.write_all(bytes)?;
        if let Some(permissions) = permissions {
            file.set_permissions(permissions)?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use serde_json::json;

    use crate::tools::run;
    use crate::tools::testing::context;

    #[tokio::test]
    async fn creates_parent_folders_and_replaces() {
        let (_dir, ctx) = context();
        let out = run(&ctx, "Write", &json!({"file_path": "deep/er/new.txt", "content": "one\ntwo\n"})).await;
        assert!(!out.is_error, "{out:?}");
        assert_eq!(out.content, "Created deep/er/new.txt (8 bytes, 2 lines)");
        assert_eq!(std::fs::read_to_string(ctx.workdir.join("deep/er/new.txt")).unwrap(), "one\ntwo\n");
        let out = run(&ctx, "Write", &json!({"file_path": "deep/er/new.txt", "content": "three"})).await;
        assert_eq!(out.content, "Replaced deep/er/new.txt (5 bytes, 1 lines)");
        assert_eq!(std::fs::read_to_string(ctx.workdir.join("deep/er/new.txt")).unwrap(), "three");
        // No temp files are left behind.
        let names: Vec<_> =
            std::fs::read_dir(ctx.workdir.join("deep/er")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec!["new.txt"]);
    }

    #[tokio::test]
    async fn keeps_permissions_of_a_replaced_file() {
        let (_dir, ctx) = context();
        let script = ctx.workdir.join("run.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let absolute = script.to_str().unwrap();
        let out = run(&ctx, "Write", &json!({"file_path": absolute, "content": "#!/bin/sh\necho hi\n"})).await;
        assert!(!out.is_error, "{out:?}");
        assert_eq!(std::fs::metadata(&script).unwrap().permissions().mode() & 0o777, 0o755);
    }

    #[tokio::test]
    async fn refuses_escapes_directories_and_bad_input() {
        let (dir, ctx) = context();
        let out = run(&ctx, "Write", &json!({"file_path": "../escaped.txt", "content": "x"})).await;
        assert!(out.is_error && out.content.contains("outside the working directory"), "{out:?}");
        assert!(!dir.path().join("escaped.txt").exists());
        let out = run(&ctx, "Write", &json!({"file_path": "/tmp/np-escape.txt", "content": "x"})).await;
        assert!(out.is_error && out.content.contains("outside the working directory"), "{out:?}");
        std::os::unix::fs::symlink("/etc", ctx.workdir.join("etc")).unwrap();
        let out = run(&ctx, "Write", &json!({"file_path": "etc/np-test", "content": "x"})).await;
        assert!(out.is_error && out.content.contains("symlink"), "{out:?}");
        std::fs::create_dir(ctx.workdir.join("d")).unwrap();
        let out = run(&ctx, "Write", &json!({"file_path": "d", "content": "x"})).await;
        assert!(out.is_error && out.content.contains("is a directory"), "{out:?}");
        let out = run(&ctx, "Write", &json!({"file_path": "f.txt"})).await;
        assert!(out.is_error && out.content.contains("missing field `content`"), "{out:?}");
        let out = run(&ctx, "Write", &json!({"file_path": "f.txt", "content": 12})).await;
        assert!(out.is_error && out.content.contains("`content`"), "{out:?}");
    }
}
