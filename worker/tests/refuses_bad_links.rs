//! The worker binary refuses to start without real inherited links. (Also makes `cargo test` build the
//! `neuraphage-worker` binary that the cross-process tests in `tests/` need.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn link_fds_that_are_not_open_sockets_are_refused() {
    let tmp = std::env::temp_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_neuraphage-worker"))
        .args(["--supervisor-fd", "100", "--broker-fd", "101", "--handoff-fd", "102"])
        .arg("--workdir")
        .arg(&tmp)
        .arg("--tmp")
        .arg(&tmp)
        .arg("--outputs")
        .arg(&tmp)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fd 100 is not open"), "{stderr}");
}

#[test]
fn stdio_is_not_accepted_as_a_link() {
    let tmp = std::env::temp_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_neuraphage-worker"))
        .args(["--supervisor-fd", "1", "--broker-fd", "2", "--handoff-fd", "0"])
        .arg("--workdir")
        .arg(&tmp)
        .arg("--tmp")
        .arg(&tmp)
        .arg("--outputs")
        .arg(&tmp)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad inherited fds"));
}
