//! The command-line grammar as a user meets it. (Also makes `cargo test` build the `neuraphage` binary that the
//! cross-process tests in `tests/` drive.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn neuraphage(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_neuraphage")).args(args).env_remove("NEURAPHAGE_HOME").output().unwrap()
}

#[test]
fn help_lists_the_commands() {
    let out = neuraphage(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for command in ["daemon", "task", "demo"] {
        assert!(text.contains(command), "{text}");
    }
    let task = String::from_utf8(neuraphage(&["task", "--help"]).stdout).unwrap();
    for command in ["new", "list", "show", "depend", "kill"] {
        assert!(task.contains(command), "{task}");
    }
}

#[test]
fn usage_errors_exit_2_and_say_what_was_wrong() {
    let out = neuraphage(&["task", "new", "x", "--priority", "9"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("--priority") && stderr.contains('9'), "{stderr}");
    let out = neuraphage(&["task", "depend", "np-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("--on"));
}
