//! The cost of the sandbox.
//!
//! 1. Applying it: `neuraphage sandbox check` runs a worker that applies the plan to itself (rlimits, Landlock ruleset
//!    with every rule path opened, capabilities and securebits, keyring, seccomp) exactly as a task's worker does,
//!    and reports how long `SandboxPlan::apply` took; the whole check (process start, probes) is timed too.
//! 2. Spawn to sandboxed, with and without the outer boundary: the bench spawns `neuraphage-worker --check` on a plan
//!    of the shipped profile, namespaces on (stage 1 execs bubblewrap, stage 2 applies the plan) and off, and takes
//!    the worker's `CLOCK_MONOTONIC` at the moment the plan is applied less the moment before the spawn.
//!
//! 40 runs each (5 with `--quick`). Run with `bench/run.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::Path;
use std::time::Instant;

use neuraphage_sandbox_profiles::TaskFolders;
use neuraphage_sandbox_profiles::profile::{self, Context};
use neuraphage_tests::TestHome;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn monotonic_ns() -> u64 {
    let mut ts = nix::libc::timespec { tv_sec: 0, tv_nsec: 0 };
    #[allow(unsafe_code)]
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds from spawning a worker in `--check` mode to the moment its sandbox is applied, `runs` times.
fn spawn_to_sandboxed(home: &Path, name: &str, namespaces: bool, runs: usize) -> Vec<f64> {
    let ctx = Context::of_this_process(home, None);
    let profile = profile::load(name, &ctx).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folders = TaskFolders {
        workdir: dir.path().join("worktree"),
        tmp: dir.path().join("tmp"),
        outputs: dir.path().join("outputs"),
        git_dir: None,
        worktree_gitfile: None,
    };
    let outside = dir.path().join("outside");
    for d in [&folders.workdir, &folders.tmp, &folders.outputs, &outside] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(outside.join("probe"), b"x").unwrap();
    let mut plan = profile.plan(&folders, &ctx).unwrap();
    plan.namespaces.enabled = namespaces;
    plan.namespaces.required = namespaces;
    let plan_file = dir.path().join("sandbox.json");
    plan.save(&plan_file).unwrap();
    let worker = neuraphage_tests::bin("neuraphage-worker");
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = monotonic_ns();
        let out = std::process::Command::new(&worker)
            .arg("--check")
            .arg("--sandbox")
            .arg(&plan_file)
            .args(["--workdir".as_ref(), folders.workdir.as_os_str(), "--tmp".as_ref(), outside.as_os_str()])
            .args(["--outputs".as_ref(), folders.outputs.as_os_str()])
            .current_dir(&folders.workdir)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a report");
        assert!(report["refused"].is_null(), "{report:#}");
        let ns_layer = report["layers"].as_array().unwrap().iter().find(|l| l["layer"] == "namespaces").cloned();
        assert_eq!(ns_layer.map(|l| l["enforced"] == true), Some(namespaces), "{report:#}");
        let at = report["sandboxed_at_ns"].as_u64().unwrap();
        times.push(at.saturating_sub(started) as f64 / 1e6);
    }
    times.sort_by(f64::total_cmp);
    times
}

fn main() {
    let home = TestHome::new();
    let runs = if std::env::args().any(|a| a == "--quick") { 5 } else { 40 };
    for profile in ["default", "untrusted", "networked"] {
        let mut apply = Vec::new();
        let mut whole = Vec::new();
        for _ in 0..runs {
            let started = Instant::now();
            let report = home.json(&["sandbox", "check", "--profile", profile, "--json"]);
            whole.push(started.elapsed().as_secs_f64() * 1e3);
            apply.push(report["apply_us"].as_u64().expect("apply_us") as f64);
        }
        apply.sort_by(f64::total_cmp);
        whole.sort_by(f64::total_cmp);
        println!(
            "sandbox {profile:<10} apply p50 {:>6.0} µs  p99 {:>6.0} µs   whole check (CLI + worker + probes) p50 {:.1} ms",
            percentile(&apply, 0.5),
            percentile(&apply, 0.99),
            percentile(&whole, 0.5)
        );
    }
    std::fs::create_dir_all(&home.paths.home).unwrap();
    for (label, namespaces) in [("without namespaces", false), ("with namespaces (bubblewrap)", true)] {
        let times = spawn_to_sandboxed(&home.paths.home, "default", namespaces, runs);
        println!(
            "spawn to sandboxed, default profile, {label:<28} p50 {:>6.2} ms  p99 {:>6.2} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
    }
}
