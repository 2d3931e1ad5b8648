//! Time to make a task's private repository (`private_repo::prepare`: the history walk, the pack copied from the
//! user's repository, the shallow file, the checkout of the worktree and its index) for a repository of 10 000
//! commits and 5 000 files, built with `git fast-import`. Depth 0 (the base only), 100 (the default) and 1 000.
//! Run with `bench/run.sh` (`--quick`: 1 000 commits, fewer runs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use neuraphage_ipc::TaskId;

/// A repository of `commits` commits: the first adds `files` files (100 per folder), each next one changes one.
fn build(dir: &Path, commits: usize, files: usize) {
    assert!(Command::new("git").args(["init", "-q"]).arg(dir).status().unwrap().success());
    let mut child =
        Command::new("git").args(["fast-import", "--quiet"]).current_dir(dir).stdin(Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufWriter::new(child.stdin.take().unwrap());
    for c in 0..commits {
        let message = format!("commit {c}\n");
        write!(
            out,
            "commit refs/heads/master\ncommitter B <b@b> {} +0000\ndata {}\n{message}",
            1_600_000_000 + c,
            message.len()
        )
        .unwrap();
        let changed: Vec<usize> = if c == 0 { (0..files).collect() } else { vec![c % files] };
        for f in changed {
            let data = format!("file {f}, version {c}\n{}\n", "x".repeat(200));
            write!(out, "M 100644 inline d{}/f{}.txt\ndata {}\n{data}\n", f / 100, f, data.len()).unwrap();
        }
    }
    drop(out);
    assert!(child.wait().unwrap().success());
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (commits, runs) = if quick { (1_000, 2) } else { (10_000, 5) };
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path().join("user");
    let started = Instant::now();
    build(&user, commits, 5_000);
    println!(
        "private repo: built a repository of {commits} commits and 5000 files in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let base = neuraphage_supervisor::worktree::resolve_base(&user, None).unwrap();
    for depth in [0u32, 100, 1_000] {
        let mut times = Vec::new();
        for run in 0..runs {
            let task = TaskId::from_bits(0x1000 + u64::from(depth) * 100 + run as u64);
            let t = dir.path().join(format!("t-{depth}-{run}"));
            let started = Instant::now();
            neuraphage_supervisor::private_repo::prepare(
                &user,
                &task,
                &base,
                depth,
                &t.join("git"),
                &t.join("worktree"),
            )
            .unwrap();
            times.push(started.elapsed().as_secs_f64() * 1e3);
            std::fs::remove_dir_all(&t).unwrap();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "private repo: depth {depth:>5}: p50 {:>7.0} ms  max {:>7.0} ms  ({runs} runs)",
            percentile(&times, 0.5),
            times[times.len() - 1]
        );
    }
}
