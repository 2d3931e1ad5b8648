//! Resolving the paths the model names, so that no tool reaches outside the working directory.
//!
//! A path is joined to the working directory when relative, normalised lexically (`.` dropped, `..` applied), then
//! its longest existing prefix is canonicalised (which resolves every symlink in it) and the missing rest appended.
//! The result must lie inside the canonical working directory; the tools then use that resolved path, so what was
//! checked is what is touched. A missing component that exists as a dangling or looping symlink is refused, since
//! writing through it could create a file anywhere. The sandbox remains the real boundary; this is the polite one
//! that explains itself to the model.

use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use super::ToolContext;

/// The canonical working directory.
pub fn workdir(ctx: &ToolContext) -> Result<PathBuf, String> {
    fs::canonicalize(&ctx.workdir)
        .map_err(|e| format!("The working directory {} is not available: {e}", ctx.workdir.display()))
}

/// Resolves `raw`, the value of the input field `field`, to a canonical path inside the working directory.
pub fn resolve(ctx: &ToolContext, field: &str, raw: &str) -> Result<PathBuf, String> {
    resolve_within(ctx, field, raw, &[])
}

/// Like [`resolve`], but also allows paths inside the outputs folder (where `Bash` saves full outputs), for reading.
pub fn resolve_readable(ctx: &ToolContext, field: &str, raw: &str) -> Result<PathBuf, String> {
    resolve_within(ctx, field, raw, &[ctx.outputs_dir.as_path()])
}

/// How to show a resolved path to the model: relative to the working directory when inside it.
pub fn display(ctx: &ToolContext, path: &Path) -> String {
    let root = workdir(ctx).unwrap_or_else(|_| ctx.workdir.clone());
    match path.strip_prefix(&root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

fn resolve_within(ctx: &ToolContext, field: &str, raw: &str, extra_roots: &[&Path]) -> Result<PathBuf, String> {
    if raw.trim().is_empty() {
        return Err(format!("`{field}` is empty; give a path inside the working directory"));
    }
    if raw.contains('\0') {
        return Err(format!("`{field}` contains a NUL character"));
    }
    let root = workdir(ctx)?;
    let raw_path = Path::new(raw);
    let lexical = normalise(&if raw_path.is_absolute() { raw_path.to_path_buf() } else { root.join(raw_path) });
    let resolved = canonicalize_existing_prefix(&lexical).map_err(|why| format!("`{field}` `{raw}` {why}"))?;
    let extra = extra_roots.iter().filter_map(|dir| fs::canonicalize(dir).ok());
    if resolved.starts_with(&root) || extra.into_iter().any(|dir| resolved.starts_with(dir)) {
        return Ok(resolved);
    }
    let lexically_inside = lexical.starts_with(&root) || lexical.starts_with(normalise(&ctx.workdir));
    if lexically_inside {
        Err(format!(
            "`{field}` `{raw}` leads through a symlink to {}, outside the working directory {}; refused",
            resolved.display(),
            root.display()
        ))
    } else {
        Err(format!(
            "`{field}` `{raw}` is outside the working directory {}; only paths inside it are allowed",
            root.display()
        ))
    }
}

/// Applies `.` and `..` without touching the filesystem (`..` at the root stays at the root).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Canonicalises the longest existing prefix of an absolute, normalised path and appends the rest.
fn canonicalize_existing_prefix(path: &Path) -> Result<PathBuf, String> {
    let mut base = path.to_path_buf();
    let mut rest: Vec<OsString> = Vec::new();
    loop {
        match fs::canonicalize(&base) {
            Ok(canonical) => {
                if let Some(first_missing) = rest.last()
                    && fs::symlink_metadata(canonical.join(first_missing)).is_ok()
                {
                    return Err(format!(
                        "passes through {}, a symlink that does not resolve (dangling or looping); refused",
                        canonical.join(first_missing).display()
                    ));
                }
                let mut out = canonical;
                out.extend(rest.iter().rev());
                return Ok(out);
            }
            Err(e) => match base.file_name() {
                Some(name) => {
                    rest.push(name.to_owned());
                    base.pop();
                }
                None => return Err(format!("cannot be resolved: {e}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::testing::context;

    #[test]
    fn relative_and_absolute_paths_inside_resolve() {
        let (_dir, ctx) = context();
        let root = workdir(&ctx).unwrap();
        assert_eq!(resolve(&ctx, "file_path", "a/b.txt").unwrap(), root.join("a/b.txt"));
        assert_eq!(resolve(&ctx, "file_path", "./a/../c.txt").unwrap(), root.join("c.txt"));
        let absolute = ctx.workdir.join("x/y.rs");
        assert_eq!(resolve(&ctx, "file_path", absolute.to_str().unwrap()).unwrap(), root.join("x/y.rs"));
        assert_eq!(display(&ctx, &root.join("x/y.rs")), "x/y.rs");
        assert_eq!(display(&ctx, &root), ".");
    }

    #[test]
    fn dotdot_escape_is_refused() {
        let (_dir, ctx) = context();
        let err = resolve(&ctx, "file_path", "../outputs/x").unwrap_err();
        assert!(err.contains("outside the working directory") && err.contains("file_path"), "{err}");
        let err = resolve(&ctx, "path", "a/../../../../etc/passwd").unwrap_err();
        assert!(err.contains("outside the working directory") && err.contains("`path`"), "{err}");
    }

    #[test]
    fn absolute_path_outside_is_refused() {
        let (_dir, ctx) = context();
        let err = resolve(&ctx, "file_path", "/etc/passwd").unwrap_err();
        assert!(err.contains("outside the working directory"), "{err}");
    }

    #[test]
    fn symlink_leading_outside_is_refused() {
        let (_dir, ctx) = context();
        std::os::unix::fs::symlink("/etc", ctx.workdir.join("etc_link")).unwrap();
        for raw in ["etc_link", "etc_link/passwd", "etc_link/new/file"] {
            let err = resolve(&ctx, "file_path", raw).unwrap_err();
            assert!(err.contains("symlink") && err.contains("/etc"), "{raw}: {err}");
        }
        // A symlink that stays inside is fine.
        std::fs::create_dir(ctx.workdir.join("real")).unwrap();
        std::os::unix::fs::symlink("real", ctx.workdir.join("alias")).unwrap();
        assert_eq!(resolve(&ctx, "file_path", "alias/f").unwrap(), workdir(&ctx).unwrap().join("real/f"));
    }

    #[test]
    fn dangling_symlink_is_refused() {
        let (_dir, ctx) = context();
        std::os::unix::fs::symlink("/nonexistent-np-target/file", ctx.workdir.join("dangling")).unwrap();
        let err = resolve(&ctx, "file_path", "dangling").unwrap_err();
        assert!(err.contains("does not resolve"), "{err}");
    }

    #[test]
    fn empty_path_is_refused_and_outputs_dir_is_readable_only() {
        let (_dir, ctx) = context();
        assert!(resolve(&ctx, "file_path", " ").unwrap_err().contains("empty"));
        let saved = ctx.outputs_dir.join("bash-1.log");
        assert!(resolve(&ctx, "file_path", saved.to_str().unwrap()).is_err());
        assert!(resolve_readable(&ctx, "file_path", saved.to_str().unwrap()).is_ok());
    }
}
