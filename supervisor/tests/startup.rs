//! The supervisor binary refuses a home it cannot use, with the reason. (Also makes `cargo test` build the
//! `neuraphage-supervisor` binary that the cross-process tests in `tests/` drive.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn an_unusable_home_is_refused_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home-is-a-file");
    std::fs::write(&home, "x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_neuraphage-supervisor"))
        .env("NEURAPHAGE_HOME", &home)
        .env("NEURAPHAGE_RUNTIME_DIR", dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(home.to_str().unwrap()), "{stderr}");
}

#[test]
fn version_and_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_neuraphage-supervisor")).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("NEURAPHAGE_HOME"));
}
