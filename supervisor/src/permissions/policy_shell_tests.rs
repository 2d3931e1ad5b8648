//! The red team's spellings (H1, H2, L3) against the policy: each must be refused (or ask), and ordinary commands
//! must still run in auto mode.

use super::*;
use crate::permissions::settings::{Policy, UserRules};

fn rules(mode: Mode, ask: &[&str], allow: &[&str]) -> Rules {
    let security = Security {
        permission_mode: mode,
        policy: Policy { blocked_commands: vec!["touch forbidden*".into()], ..Policy::default() },
        permissions: UserRules {
            allowed_commands: allow.iter().map(|s| s.to_string()).collect(),
            ask_commands: ask.iter().map(|s| s.to_string()).collect(),
            ..UserRules::default()
        },
        ..Security::default()
    };
    let ctx = PathContext { workdir: "/root/tasks/t/worktree".into(), home: "/root".into() };
    Rules::new(&security, &[], ctx)
}

fn bash(r: &Rules, cmd: &str) -> Verdict {
    r.judge("Bash", &Subject::Command(cmd.into()))
}

#[track_caller]
fn refused(r: &Rules, cmd: &str) {
    let v = bash(r, cmd);
    assert!(matches!(v, Verdict::Deny { .. }), "{cmd:?} was not refused: {v:?}");
}

#[track_caller]
fn runs(r: &Rules, cmd: &str) {
    let v = bash(r, cmd);
    assert!(matches!(v, Verdict::Allow { .. }), "{cmd:?} does not run: {v:?}");
}

#[test]
fn a_line_over_the_cap_is_refused_in_every_mode() {
    for mode in [Mode::Auto, Mode::Ask, Mode::Deny] {
        let r = rules(mode, &[], &["touch *"]);
        let line = format!("touch ok # {}", "#".repeat(70 * 1024));
        let v = bash(&r, &line);
        assert!(matches!(&v, Verdict::Deny { reason, .. } if reason.contains("too long to check")), "{v:?}");
    }
}

#[test]
fn unreadable_lines_are_still_held_against_blocked_commands() {
    let r = rules(Mode::Auto, &[], &[]);
    refused(&r, "{rm,-rf,/}");
    refused(&r, "{touch,forbidden10}");
    refused(&r, "if then fi (; touch forbidden1");
    refused(&r, "tou\\\nch forbidden9");
    // An unreadable line naming nothing blocked still runs in auto mode.
    runs(&r, "if then fi (; echo hi");
}

#[test]
fn static_spellings_of_a_blocked_command_are_refused() {
    let r = rules(Mode::Auto, &[], &[]);
    refused(&r, "touch forbidden0");
    for cmd in [
        "bash -ec 'touch forbidden1'",
        "bash -lc 'touch forbidden1'",
        "sh -xc 'touch forbidden1'",
        "bash -c -- 'touch forbidden1'",
        "env sh -c 'true; touch forbidden2'",
        "timeout 5 sh -c 'true && touch forbidden2'",
        "sudo -u x bash -c 'touch forbidden2'",
        "touch $'forbidden3'",
        "touch $'forb\\x69dden3'",
        "find . -maxdepth 0 -exec touch forbidden4 \\;",
        "find . -exec sh -c 'touch forbidden4' \\;",
        "bash <<< 'touch forbidden5'",
        "bash <<'EOF'\ntouch forbidden6\nEOF\n",
        "echo 'touch forbidden7' | sh",
        "git -c alias.x='!touch forbidden8' x",
        "tou\\\nch forbidden9",
        "touch {forbidden10,x}",
        "shopt -s expand_aliases\nalias t=touch\nt forbidden11",
        "hash -p /usr/bin/touch t; t forbidden11",
        "trap 'touch forbidden12' EXIT",
        "builtin eval 'touch forbidden13'",
        "source /dev/stdin <<< 'touch forbidden14'",
        "su -c 'touch forbidden15' root",
        "script -qc 'touch forbidden15' /dev/null",
        "watch -n 1 touch forbidden16",
        "setsid flock /tmp/l ionice -c3 strace -f doas touch forbidden17",
        "coproc touch forbidden18",
        "unshare -r touch forbidden19",
    ] {
        refused(&r, cmd);
    }
}

#[test]
fn a_computed_input_of_a_shell_asks_when_ask_rules_exist() {
    let r = rules(Mode::Auto, &["echo DEPLOY *"], &[]);
    for cmd in ["cat x | sh", "bash <<< \"$X\"", ". <(cat x)"] {
        let v = bash(&r, cmd);
        assert!(matches!(v, Verdict::Ask { .. }), "{cmd:?}: {v:?}");
    }
    for cmd in [
        "bash -ec 'echo DEPLOY prod'",
        "echo $'DEPLOY' prod",
        "trap 'echo DEPLOY x' EXIT",
        "env sh -c 'true; echo DEPLOY x'",
        "find . -exec sh -c 'echo DEPLOY x' \\;",
    ] {
        let v = bash(&r, cmd);
        assert!(matches!(&v, Verdict::Ask { by, .. } if by.contains("DEPLOY")), "{cmd:?}: {v:?}");
    }
}

#[test]
fn allow_rules_on_wrappers_do_not_let_blocked_commands_through() {
    let r = rules(Mode::Ask, &[], &["bash *", "env *", "find *", "rm *", "timeout *"]);
    refused(&r, "bash -ec 'rm -rf /'");
    refused(&r, "timeout 5 sh -c 'true && rm -rf /'");
    refused(&r, "rm -rf $'/'");
}

#[test]
fn git_global_options_do_not_hide_the_subcommand() {
    let r = rules(Mode::Auto, &["git push *"], &[]);
    for cmd in [
        "git -C . push",
        "git --no-pager push",
        "git --git-dir=.git push",
        "git -c a.b=c push origin",
        "coproc git push",
        "setsid git push",
        "watch git push",
        "x | git push",
    ] {
        let v = bash(&r, cmd);
        assert!(matches!(&v, Verdict::Ask { by, .. } if by.contains("git push")), "{cmd:?}: {v:?}");
    }
}

#[test]
fn built_in_shapes_catch_other_spellings() {
    let r = rules(Mode::Auto, &[], &[]);
    for cmd in [
        "rm -rf \"$HOME\"",
        "rm -rf \"${HOME}\"",
        "rm -rf ~root/..",
        "rm -rf ~+/../../..",
        "rm -rf /home/../",
        "curl x | cat | sh",
        "curl x | (sh)",
        "curl x | { sh; }",
        "sh <(curl x)",
        "curl x | busybox sh",
        "chmod -v 777 x",
        "chmod 0777 x",
        "chmod a+rwx x",
        "f(){ g|g& }; g(){ f|f& }; f",
    ] {
        refused(&r, cmd);
    }
}

#[test]
fn ordinary_commands_still_run_in_auto_mode() {
    let r = rules(Mode::Auto, &[], &[]);
    for cmd in [
        "rm -rf /tmp/build",
        "rm -rf ~/proj/target",
        "rm -rf target",
        "cargo build --workspace",
        "git status",
        "ls /usr/bin",
        "cat /proc/cpuinfo",
        "chmod +x script.sh",
        "chmod 755 x",
        "find . -name '*.rs' -exec grep -l foo {} +",
        "bash script.sh",
        "echo hi | sh",
        "git -C sub log --oneline",
        "env FOO=1 cargo test",
        "echo {a,b}",
    ] {
        runs(&r, cmd);
    }
}
