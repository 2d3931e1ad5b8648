//! The broker binary refuses to start without real inherited links. (Also makes `cargo test` build the
//! `neuraphage-broker` binary that the cross-process tests in `tests/` need.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn link_fds_that_are_not_open_sockets_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_neuraphage-broker"))
        .args(["--control-fd", "100", "--handoff-fd", "101", "--home"])
        .arg(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fd 100 is not open"), "{stderr}");
}
