//! `Glob`: matching, newest first, `.gitignore` and `.git`, the cap, and refused paths.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::{Input, run_capped};
use crate::tools::testing::context;
use crate::tools::{ToolContext, ToolOutcome, run};

async fn glob(ctx: &ToolContext, input: serde_json::Value) -> ToolOutcome {
    run(ctx, "Glob", &input).await
}

/// Writes `name` (creating folders) with a modification time `age_s` seconds ago.
fn file(ctx: &ToolContext, name: &str, age_s: u64) {
    let path = ctx.workdir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, name).unwrap();
    let when = SystemTime::now() - Duration::from_secs(age_s);
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(when).unwrap();
}

#[tokio::test]
async fn matches_relative_paths_newest_first() {
    let (_dir, ctx) = context();
    file(&ctx, "src/old.rs", 300);
    file(&ctx, "src/new.rs", 10);
    file(&ctx, "src/deep/mid.rs", 100);
    file(&ctx, "top.rs", 200);
    file(&ctx, "notes.md", 1);
    let out = glob(&ctx, json!({"pattern": "**/*.rs"})).await;
    assert_eq!(out, ToolOutcome::ok("src/new.rs\nsrc/deep/mid.rs\ntop.rs\nsrc/old.rs\n"));
    // `*` does not cross `/`.
    let out = glob(&ctx, json!({"pattern": "*.rs"})).await;
    assert_eq!(out.content, "top.rs\n");
    // A search folder: the pattern is relative to it, the results to the working directory.
    let out = glob(&ctx, json!({"pattern": "*.rs", "path": "src"})).await;
    assert_eq!(out.content, "src/new.rs\nsrc/old.rs\n");
    let absolute = format!("{}/src/**/*.rs", ctx.workdir.display());
    let out = glob(&ctx, json!({"pattern": absolute})).await;
    assert_eq!(out.content, "src/new.rs\nsrc/deep/mid.rs\nsrc/old.rs\n");
    let out = glob(&ctx, json!({"pattern": "**/*.{md,txt}"})).await;
    assert_eq!(out.content, "notes.md\n");
}

#[tokio::test]
async fn respects_gitignore_and_skips_dot_git() {
    let (_dir, ctx) = context();
    file(&ctx, ".gitignore", 0);
    std::fs::write(ctx.workdir.join(".gitignore"), "target/\n*.log\n!keep.log\n").unwrap();
    file(&ctx, "src/lib.rs", 0);
    file(&ctx, "src/.gitignore", 0);
    std::fs::write(ctx.workdir.join("src/.gitignore"), "gen.rs\n").unwrap();
    file(&ctx, "src/gen.rs", 0);
    file(&ctx, "src/inner/x.log", 0);
    file(&ctx, "target/debug/out.rs", 0);
    file(&ctx, "debug.log", 0);
    file(&ctx, "keep.log", 0);
    file(&ctx, ".git/config", 0);
    file(&ctx, ".github/ci.yml", 0);
    let out = glob(&ctx, json!({"pattern": "**/*"})).await;
    let mut lines: Vec<_> = out.content.lines().collect();
    lines.sort();
    assert_eq!(lines, [".github/ci.yml", ".gitignore", "keep.log", "src/.gitignore", "src/lib.rs"]);
    // The working directory's .gitignore applies below it too.
    let out = glob(&ctx, json!({"pattern": "**/*", "path": "src/inner"})).await;
    assert!(out.content.starts_with("No files found"), "{out:?}");
}

#[tokio::test]
async fn caps_results_with_a_note() {
    let (_dir, ctx) = context();
    for n in 0..12 {
        file(&ctx, &format!("f{n:02}.txt"), 100 - n);
    }
    let input = Input { pattern: "*.txt".into(), path: None };
    let out = run_capped(&ctx, input, 5).unwrap();
    assert_eq!(
        out,
        "f11.txt\nf10.txt\nf09.txt\nf08.txt\nf07.txt\n[12 files matched; showing the 5 most recently modified. \
         Narrow the pattern or path.]\n"
    );
}

#[tokio::test]
async fn no_match_invalid_pattern_and_refused_paths() {
    let (_dir, ctx) = context();
    file(&ctx, "a/b.rs", 0);
    let out = glob(&ctx, json!({"pattern": "*.rs"})).await;
    assert!(!out.is_error && out.content.contains("No files found") && out.content.contains("use **/"), "{out:?}");
    let out = glob(&ctx, json!({"pattern": "a/[b.rs"})).await;
    assert!(out.is_error && out.content.contains("`pattern`"), "{out:?}");
    let out = glob(&ctx, json!({"pattern": "*", "path": ".."})).await;
    assert!(out.is_error && out.content.contains("outside the working directory"), "{out:?}");
    let out = glob(&ctx, json!({"pattern": "*", "path": "/etc"})).await;
    assert!(out.is_error && out.content.contains("outside the working directory"), "{out:?}");
    std::os::unix::fs::symlink("/etc", ctx.workdir.join("etc")).unwrap();
    let out = glob(&ctx, json!({"pattern": "*", "path": "etc"})).await;
    assert!(out.is_error && out.content.contains("symlink"), "{out:?}");
    let out = glob(&ctx, json!({"pattern": "/etc/*"})).await;
    assert!(out.is_error && out.content.contains("is absolute"), "{out:?}");
    let out = glob(&ctx, json!({"pattern": "*", "path": "missing"})).await;
    assert!(out.is_error && out.content.contains("does not exist"), "{out:?}");
    // The symlink itself is listed but not followed.
    let out = glob(&ctx, json!({"pattern": "**/passwd"})).await;
    assert!(out.content.starts_with("No files found"), "{out:?}");
}
