//! `Bash`: output, exit codes, timeouts that kill the process group, the output cap and the saved full output.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::tools::testing::context;
use crate::tools::{ToolContext, ToolOutcome, run};

async fn bash(ctx: &ToolContext, input: serde_json::Value) -> ToolOutcome {
    run(ctx, "Bash", &input).await
}

/// Whether a process is gone (or a zombie waiting for its new parent to reap it).
fn dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn eventually_dead(pid: &str) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The path of the saved full output that a result names.
fn saved_path(ctx: &ToolContext, content: &str) -> std::path::PathBuf {
    let dir = ctx.outputs_dir.to_str().unwrap();
    let at = content.find(dir).unwrap_or_else(|| panic!("no saved path in {content}"));
    content[at..].split_whitespace().next().unwrap().into()
}

#[tokio::test]
async fn runs_in_the_workdir_with_both_streams_and_no_stdin() {
    let (_dir, ctx) = context();
    let out =
        bash(&ctx, json!({"command": "pwd -P; echo out; sleep 0.2; echo err >&2; sleep 0.2; cat; echo tmp=$TMPDIR"}))
            .await;
    assert!(!out.is_error, "{out:?}");
    let workdir = std::fs::canonicalize(&ctx.workdir).unwrap();
    let tmp = ctx.tmp_dir.display();
    assert_eq!(out.content, format!("{}\nout\nerr\ntmp={tmp}\n", workdir.display()));
}

#[tokio::test]
async fn non_zero_exit_and_signals_are_errors_with_the_code() {
    let (_dir, ctx) = context();
    let out = bash(&ctx, json!({"command": "echo partial; exit 3"})).await;
    assert!(out.is_error);
    assert_eq!(out.content, "partial\nExit code: 3");
    let out = bash(&ctx, json!({"command": "kill -9 $$"})).await;
    assert!(out.is_error);
    assert_eq!(out.content, "(no output)\nKilled by signal 9");
    let out = bash(&ctx, json!({"command": "true"})).await;
    assert_eq!(out, ToolOutcome::ok("(no output)"));
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let (_dir, ctx) = context();
    let started = Instant::now();
    let command = "echo started; sleep 30 & echo $! > bg.pid; sleep 30";
    let out = bash(&ctx, json!({"command": command, "timeout": "500"})).await;
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(out.is_error, "{out:?}");
    assert_eq!(out.content, "started\nCommand timed out after 500 ms; its process group was killed.");
    let pid = std::fs::read_to_string(ctx.workdir.join("bg.pid")).unwrap();
    assert!(eventually_dead(&pid), "background sleep {pid} survived");
}

#[tokio::test]
async fn background_jobs_do_not_outlive_the_command() {
    let (_dir, ctx) = context();
    let started = Instant::now();
    let out = bash(&ctx, json!({"command": "sleep 30 & echo $! > bg.pid; echo done"})).await;
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(out, ToolOutcome::ok("done\n"));
    let pid = std::fs::read_to_string(ctx.workdir.join("bg.pid")).unwrap();
    assert!(eventually_dead(&pid), "background sleep {pid} survived");
}

#[tokio::test]
async fn long_output_is_cut_and_saved_in_full() {
    let (_dir, mut ctx) = context();
    ctx.output_limit = 100;
    let out = bash(&ctx, json!({"command": "seq 1 10000"})).await;
    assert!(!out.is_error, "{out:?}");
    assert!(out.content.starts_with("1\n2\n3\n"), "{}", out.content);
    assert!(out.content.ends_with("9999\n10000\n"), "{}", out.content);
    assert!(out.content.contains("output cut: 48894 bytes in all"), "{}", out.content);
    let saved = saved_path(&ctx, &out.content);
    let expected: String = (1..=10000).map(|n| format!("{n}\n")).collect();
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), expected);
    // The saved output can be read back with Read.
    let read = run(&ctx, "Read", &json!({"file_path": saved, "offset": 10000})).await;
    assert_eq!(read.content, " 10000\t10000\n");
}

#[tokio::test]
async fn output_past_the_memory_threshold_is_streamed_to_the_file() {
    let (_dir, ctx) = context();
    let command = "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo END";
    let out = bash(&ctx, json!({"command": command})).await;
    assert!(!out.is_error, "{out:?}");
    assert!(out.content.contains("output cut: 3000005 bytes in all"), "{}", &out.content[15_000..15_400]);
    assert!(out.content.ends_with("aaa\nEND\n"));
    assert!(out.content.chars().count() < 30_400, "{}", out.content.len());
    let saved = saved_path(&ctx, &out.content);
    assert_eq!(std::fs::metadata(saved).unwrap().len(), 3_000_005);
}

#[tokio::test]
async fn empty_command_is_an_error() {
    let (_dir, ctx) = context();
    let out = bash(&ctx, json!({"command": "  "})).await;
    assert!(out.is_error && out.content.contains("`command` is empty"), "{out:?}");
    let out = bash(&ctx, json!({"command": "echo hi", "timeout": "soon"})).await;
    assert!(out.is_error && out.content.contains("`timeout`"), "{out:?}");
}
