//! The cost of applying a task's sandbox: `neuraphage sandbox check` runs a worker that applies the plan to itself
//! (rlimits, Landlock ruleset with every rule path opened, capabilities and securebits, keyring, seccomp) exactly as
//! a task's worker does, and reports how long `SandboxPlan::apply` took; the whole check (process start, probes)
//! is timed too. 40 runs per shipped profile. Run with `bench/run.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::Instant;

use neuraphage_tests::TestHome;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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
}
