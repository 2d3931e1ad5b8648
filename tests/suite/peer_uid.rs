//! Only the supervisor's own uid may use the control socket.
//!
//! Two attacks, both as `nobody` against a supervisor running as root: a plain client (stopped by the socket's mode
//! and its folder's), and one that keeps CAP_DAC_OVERRIDE so file permissions do not stop it (stopped by the
//! SO_PEERCRED check). Skipped, saying so, when the test does not run as root.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use neuraphage_tests::{TestHome, bin};

const NOBODY: &str = "65534";

fn as_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: this attack needs root to switch to uid {NOBODY}");
    false
}

/// A copy of the CLI in a folder anyone may enter, so the attack does not depend on where the build tree lives.
fn cli_for_nobody() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("neuraphage");
    std::fs::copy(bin("neuraphage"), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, copy)
}

/// `neuraphage task list` as nobody, optionally keeping CAP_DAC_OVERRIDE.
fn task_list_as_nobody(home: &TestHome, keep_dac_override: bool) -> std::process::Output {
    let (_dir, cli) = cli_for_nobody();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"]);
    if keep_dac_override {
        cmd.args(["--inh-caps", "+dac_override", "--ambient-caps", "+dac_override"]);
    }
    cmd.arg(&cli).args(["task", "list"]);
    cmd.env("NEURAPHAGE_HOME", &home.paths.home).env("NEURAPHAGE_RUNTIME_DIR", &home.paths.runtime_dir);
    cmd.env_remove("XDG_RUNTIME_DIR");
    cmd.output().expect("setpriv")
}

#[test]
fn another_uid_is_refused_by_the_socket_permissions() {
    if !as_root() {
        return;
    }
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    home.ok(&["task", "new", "secret task"]);
    let out = task_list_as_nobody(&home, false);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("permission denied") || stderr.contains("Permission denied"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret task"));
}

#[test]
fn another_uid_that_gets_past_file_permissions_is_refused_by_peer_credentials() {
    if !as_root() {
        return;
    }
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    home.ok(&["task", "new", "secret task"]);
    // Control: CAP_DAC_OVERRIDE really does get past the 0700 folder and the 0600 socket.
    let folder_mode = std::fs::metadata(&home.paths.runtime_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(folder_mode, 0o700);
    let out = task_list_as_nobody(&home, true);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("uid 65534 refused"), "the SO_PEERCRED check should refuse it: {stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("secret task"));
    // The supervisor serves its own uid as before.
    assert!(home.ok(&["task", "list"]).contains("secret task"));
}
