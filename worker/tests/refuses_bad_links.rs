//! The worker binary refuses to start without real inherited links. (Also makes `cargo test` build the
//! `neuraphage-worker` binary that the cross-process tests in `tests/` need.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

/// Run the worker with the given link fds and real folders; what it says.
fn worker_with_fds(supervisor: &str, broker: &str, handoff: &str) -> Output {
    let tmp = std::env::temp_dir();
    Command::new(env!("CARGO_BIN_EXE_neuraphage-worker"))
        .args(["--supervisor-fd", supervisor, "--broker-fd", broker, "--handoff-fd", handoff])
        .arg("--workdir")
        .arg(&tmp)
        .arg("--tmp")
        .arg(&tmp)
        .arg("--outputs")
        .arg(&tmp)
        .arg("--sandbox")
        .arg(tmp.join("no-such-plan.json"))
        .output()
        .unwrap()
}

#[test]
fn link_fds_that_are_not_open_sockets_are_refused() {
    let out = worker_with_fds("100", "101", "102");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fd 100 is not open"), "{stderr}");
}

#[test]
fn stdio_is_not_accepted_as_a_link() {
    let out = worker_with_fds("1", "2", "0");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad inherited fds"));
}
