use crate::permissions::pattern::PathContext;
use crate::permissions::policy::{Rules, Subject, Verdict, subject};
use crate::permissions::settings::{Mode, Policy, Security};

fn rules(mode: Mode) -> Rules {
    let security = Security {
        permission_mode: mode,
        policy: Policy { blocked_paths: vec!["secretdir".into(), ".env".into()], ..Policy::default() },
        ..Security::default()
    };
    let ctx = PathContext { workdir: "/home/u/tasks/t/worktree".into(), home: "/home/u".into() };
    Rules::new(&security, &[], ctx)
}

fn bash(r: &Rules, cmd: &str) -> Verdict {
    r.judge("Bash", &Subject::Command(cmd.into()))
}

fn tool(r: &Rules, name: &str, input: serde_json::Value) -> Verdict {
    r.judge(name, &subject(name, &input))
}

#[track_caller]
fn denied(v: Verdict, rule: &str) {
    assert!(matches!(&v, Verdict::Deny { by, reason } if by.contains(rule) && reason.contains("refused")), "{v:?}");
}

#[track_caller]
fn bash_denied(r: &Rules, cmd: &str, rule: &str) {
    let v = bash(r, cmd);
    assert!(matches!(&v, Verdict::Deny { by, .. } if by.contains(rule)), "{cmd}: {v:?}");
}

#[track_caller]
fn allowed(v: Verdict) {
    assert!(matches!(&v, Verdict::Allow { .. }), "{v:?}");
}

#[track_caller]
fn bash_allowed(r: &Rules, cmd: &str) {
    let v = bash(r, cmd);
    assert!(matches!(&v, Verdict::Allow { .. }), "{cmd}: {v:?}");
}

#[test]
fn every_argument_word_is_a_path_for_configured_blocked_paths() {
    for mode in [Mode::Auto, Mode::Ask, Mode::Deny] {
        let r = rules(mode);
        for cmd in [
            "cat secretdir/s.txt",
            "mkdir secretdir",
            "cat .env",
            "cat ./.env",
            "rm -rf secretdir",
            "cp .env /tmp/x",
            "grep -r x secretdir",
            "echo X > $'secretdir/s.txt'",
            "touch $'secretdir'/s.txt",
            "cat < .env",
            "./secretdir/run.sh",
            "sort --output=secretdir/x a",
            "curl -osecretdir/x https://example.com",
        ] {
            bash_denied(&r, cmd, "blocked-paths");
        }
    }
    let r = rules(Mode::Auto);
    for cmd in ["cargo build", "git status", "ls src", "cat README.md", "echo secret", "cat .envrc", "ls /usr/bin"] {
        bash_allowed(&r, cmd);
    }
}

#[test]
fn globs_that_could_name_a_blocked_path_are_refused() {
    let r = rules(Mode::Auto);
    for cmd in [
        "cat secretdi?/s.txt",
        "cat secret*/s.txt",
        "cat s*/*",
        "cat */s.txt",
        "cat .e*",
        "cat [s]ecretdir/s.txt",
        "cat **/s.txt",
        "cat /home/u/tasks/t/w*/secretdir/s.txt",
        "echo X > secret*/new",
    ] {
        bash_denied(&r, cmd, "blocked-paths");
    }
    for cmd in ["cat *.rs", "ls src/*", "cat sec*x/s.txt", "cat /tmp/*"] {
        bash_allowed(&r, cmd);
    }
}

#[test]
fn built_in_write_detection_covers_option_spellings_and_globs() {
    let r = rules(Mode::Auto);
    for cmd in [
        "sed -Ei s/a/b/ /etc/hosts",
        "sed -E -i s/a/b/ /etc/hosts",
        "sed --in-place s/a/b/ /etc/hosts",
        "sed --in-place=.bak s/a/b/ /etc/hosts",
        "sort -o /etc/passwd x",
        "sort -o/etc/passwd x",
        "curl -o /etc/x https://example.com",
        "curl --output /etc/x https://example.com",
        "tar -C /etc -xf a.tar",
        "tar -xf a.tar -C/etc",
        "cp -t /etc x",
        "install x /etc/x",
        "dd if=x of=/etc/x",
        "perl -pi -e s/a/b/ /etc/hosts",
        "echo x > /et?/x",
        "echo x > /e*/x",
        "find /etc -delete",
    ] {
        bash_denied(&r, cmd, "blocked-paths \"/etc\"");
    }
    // Reading what the built-in rules guard against writes still runs.
    for cmd in ["sed -n 1p /etc/hosts", "sort /etc/passwd", "cat /proc/cpuinfo", "ls /usr/bin", "find /etc -name x"] {
        bash_allowed(&r, cmd);
    }
}

#[test]
fn grep_and_glob_may_not_reach_a_blocked_path() {
    let r = rules(Mode::Auto);
    denied(tool(&r, "Grep", serde_json::json!({"pattern": "TOPSECRET"})), "blocked-paths \"secretdir\"");
    denied(tool(&r, "Grep", serde_json::json!({"pattern": "x", "path": "."})), "blocked-paths");
    denied(tool(&r, "Grep", serde_json::json!({"pattern": "x", "path": "secretdir"})), "blocked-paths");
    denied(tool(&r, "Grep", serde_json::json!({"pattern": "x", "path": ".."})), "blocked-paths");
    denied(tool(&r, "Glob", serde_json::json!({"pattern": "secretdir/*"})), "blocked-paths \"secretdir\"");
    denied(tool(&r, "Glob", serde_json::json!({"pattern": "**/*.txt"})), "blocked-paths");
    denied(tool(&r, "Glob", serde_json::json!({"pattern": "*", "path": "."})), "blocked-paths");
    denied(tool(&r, "Glob", serde_json::json!({"pattern": "s.txt", "path": "secretdir"})), "blocked-paths");
    allowed(tool(&r, "Grep", serde_json::json!({"pattern": "x", "path": "src"})));
    allowed(tool(&r, "Glob", serde_json::json!({"pattern": "*.rs"})));
    allowed(tool(&r, "Glob", serde_json::json!({"pattern": "**/*.rs", "path": "src"})));
}
