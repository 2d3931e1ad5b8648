//! `Grep`: matching lines, filters, `.gitignore`, binary files, the cap, and refused paths.

use serde_json::json;

use super::{Input, run_capped};
use crate::tools::testing::context;
use crate::tools::{ToolContext, ToolOutcome, run};

async fn grep(ctx: &ToolContext, input: serde_json::Value) -> ToolOutcome {
    run(ctx, "Grep", &input).await
}

fn file(ctx: &ToolContext, name: &str, content: &[u8]) {
    let path = ctx.workdir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn sample(ctx: &ToolContext) {
    file(ctx, "src/lib.rs", b"pub fn alpha() {}\nfn beta() {}\r\npub fn gamma() {}\n");
    file(ctx, "src/web/app.ts", b"export function alpha() {}\n");
    file(ctx, "README.md", b"# Alpha\nalpha is the first\n");
}

#[tokio::test]
async fn prints_path_line_number_and_line() {
    let (_dir, ctx) = context();
    sample(&ctx);
    let out = grep(&ctx, json!({"pattern": "n (alpha|beta)"})).await;
    assert!(!out.is_error, "{out:?}");
    assert_eq!(
        out.content,
        "src/lib.rs:1:pub fn alpha() {}\nsrc/lib.rs:2:fn beta() {}\nsrc/web/app.ts:1:export function alpha() {}\n"
    );
    // `^` and `$` work per line, CRLF included.
    let out = grep(&ctx, json!({"pattern": "^fn .*\\}$"})).await;
    assert_eq!(out.content, "src/lib.rs:2:fn beta() {}\n");
    let out = grep(&ctx, json!({"pattern": "ALPHA", "-i": true, "path": "README.md"})).await;
    assert_eq!(out.content, "README.md:1:# Alpha\nREADME.md:2:alpha is the first\n");
}

#[tokio::test]
async fn glob_filters_by_name_or_path_and_modes_summarise() {
    let (_dir, ctx) = context();
    sample(&ctx);
    let out = grep(&ctx, json!({"pattern": "alpha", "glob": "*.{ts,md}"})).await;
    assert_eq!(out.content, "README.md:2:alpha is the first\nsrc/web/app.ts:1:export function alpha() {}\n");
    let out = grep(&ctx, json!({"pattern": "alpha", "glob": "src/*.rs"})).await;
    assert_eq!(out.content, "src/lib.rs:1:pub fn alpha() {}\n");
    let out = grep(&ctx, json!({"pattern": "alpha", "path": "src", "glob": "web/**"})).await;
    assert_eq!(out.content, "src/web/app.ts:1:export function alpha() {}\n");
    let out = grep(&ctx, json!({"pattern": "fn|function", "output_mode": "files_with_matches"})).await;
    assert_eq!(out.content, "src/lib.rs\nsrc/web/app.ts\n");
    let out = grep(&ctx, json!({"pattern": "fn|function", "output_mode": "count"})).await;
    assert_eq!(out.content, "src/lib.rs:3\nsrc/web/app.ts:1\n");
}

#[tokio::test]
async fn respects_gitignore_and_skips_binary_files() {
    let (_dir, ctx) = context();
    file(&ctx, ".gitignore", b"build/\n");
    file(&ctx, "build/out.txt", b"needle\n");
    file(&ctx, "blob.bin", b"needle\0\x01\x02");
    file(&ctx, ".git/HEAD", b"needle\n");
    file(&ctx, "src/found.txt", b"a needle here\n");
    let out = grep(&ctx, json!({"pattern": "needle"})).await;
    assert_eq!(out, ToolOutcome::ok("src/found.txt:1:a needle here\n"));
    let out = grep(&ctx, json!({"pattern": "nothing"})).await;
    assert_eq!(out, ToolOutcome::ok("No matches for `nothing` in ."));
}

#[tokio::test]
async fn caps_lines_and_long_lines() {
    let (_dir, ctx) = context();
    let many: String = (1..=20).map(|n| format!("hit {n}\n")).collect();
    file(&ctx, "many.txt", many.as_bytes());
    let input = Input { pattern: "hit".into(), path: None, glob: None, case_insensitive: None, output_mode: None };
    let out = run_capped(&ctx, input, 3).unwrap();
    assert_eq!(
        out,
        "many.txt:1:hit 1\nmany.txt:2:hit 2\nmany.txt:3:hit 3\n[Results cut after 3 lines; narrow the pattern, \
         path or glob.]\n"
    );
    file(&ctx, "long.txt", format!("key {}", "x".repeat(600)).as_bytes());
    let out = grep(&ctx, json!({"pattern": "key", "path": "long.txt"})).await;
    assert_eq!(out.content, format!("long.txt:1:key {} [...]\n", "x".repeat(496)));
}

#[tokio::test]
async fn bad_patterns_and_refused_paths_are_errors() {
    let (_dir, ctx) = context();
    sample(&ctx);
    let out = grep(&ctx, json!({"pattern": "fn ("})).await;
    assert!(out.is_error && out.content.contains("`pattern` is not a valid regular expression"), "{out:?}");
    let out = grep(&ctx, json!({"pattern": "fn", "glob": "[x"})).await;
    assert!(out.is_error && out.content.contains("`glob`"), "{out:?}");
    let out = grep(&ctx, json!({"pattern": "fn", "output_mode": "lines"})).await;
    assert!(out.is_error && out.content.contains("`output_mode`"), "{out:?}");
    let out = grep(&ctx, json!({"pattern": "root", "path": "../.."})).await;
    assert!(out.is_error && out.content.contains("outside the working directory"), "{out:?}");
    let out = grep(&ctx, json!({"pattern": "root", "path": "/etc/passwd"})).await;
    assert!(out.is_error && out.content.contains("outside the working directory"), "{out:?}");
    std::os::unix::fs::symlink("/etc", ctx.workdir.join("etc")).unwrap();
    let out = grep(&ctx, json!({"pattern": "root", "path": "etc/passwd"})).await;
    assert!(out.is_error && out.content.contains("symlink"), "{out:?}");
    let out = grep(&ctx, json!({"pattern": "x", "path": "missing"})).await;
    assert!(out.is_error && out.content.contains("does not exist"), "{out:?}");
}
