//! A task's private repository (issue 11, classes 1, 5, 6, 7 and 8): each attack runs from inside a real sandboxed
//! worker, each with a control outside that shows the probe could have succeeded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TEST_API_KEY, TestHome, file_on_branch};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(180);

/// A model that makes the given tool calls one after the other, then ends.
fn scripted(calls: Vec<(&'static str, Value)>) -> Model {
    Model::start(policy(move |r| match calls.get(r.tool_result_count()) {
        Some((name, input)) => Step::Reply(Reply::tool(*name, input.clone())),
        None => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }))
}

fn bash(command: impl Into<String>) -> (&'static str, Value) {
    ("Bash", json!({ "command": command.into() }))
}

fn commit(message: &str) -> (&'static str, Value) {
    ("Commit", json!({ "message": message }))
}

fn new_task(home: &TestHome, repo: &Path, extra: &[&str]) -> String {
    let mut args = vec!["task", "new", "work", "--repo", repo.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    home.json(&args)["id"].as_str().unwrap().to_owned()
}

/// Every blob's content reachable from the commits of `branch` in `repo`.
fn blobs_on_branch(repo: &Path, branch: &str) -> Vec<Vec<u8>> {
    let r = git2::Repository::open(repo).unwrap();
    let mut walk = r.revwalk().unwrap();
    walk.push(r.refname_to_id(&format!("refs/heads/{branch}")).unwrap()).unwrap();
    let mut out = Vec::new();
    for id in walk {
        let tree = r.find_commit(id.unwrap()).unwrap().tree().unwrap();
        tree.walk(git2::TreeWalkMode::PreOrder, |_, e| {
            if let Ok(blob) = r.find_blob(e.id()) {
                out.push(blob.content().to_vec());
            }
            git2::TreeWalkResult::Ok
        })
        .unwrap();
    }
    out
}

fn git(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git").args(args).current_dir(dir).env_remove("GIT_DIR").env_remove("GIT_WORK_TREE").output().unwrap()
}

#[test]
fn the_symlink_race_on_commit_never_commits_a_secret_outside_the_worktree() {
    let mut home = TestHome::new();
    // A fake user home with a private key, and an api-keys.yaml holding the broker's key and a marked secret.
    let user_home = home.root().join("user-home");
    std::fs::create_dir_all(user_home.join(".ssh")).unwrap();
    let key = user_home.join(".ssh/id_ed25519");
    std::fs::write(&key, "FAKE-SSH-PRIVATE-KEY-91c2\n").unwrap();
    home.write_config("");
    let repo = home.git_repo("repo");
    // A loop swaps folders holding decoys with symlinks to the secrets' folders, as fast as it can, while the
    // model asks for a commit again and again.
    let swap = format!(
        "setsid bash -c 'while :; do rm -rf d e; mkdir d e; echo decoy > d/id_ed25519; echo decoy > e/api-keys.yaml; \
         rm -rf d e; ln -s {ssh} d; ln -s {nh} e; done' >/dev/null 2>&1 < /dev/null & sleep 1; ls -la; echo swapping",
        ssh = user_home.join(".ssh").display(),
        nh = home.paths.home.display()
    );
    let mut calls = vec![bash(swap)];
    calls.extend((0..40).map(|i| commit(if i % 2 == 0 { "race" } else { "race again" })));
    let model = scripted(calls);
    let keys_file = home.paths.home.join("api-keys.yaml");
    std::fs::write(
        &keys_file,
        format!(
            "# FAKE-API-KEY-SECRET-77ad\nproviders:\n  - provider: anthropic\n    api-key: {TEST_API_KEY}\n    base-url: {}\n",
            model.double.anthropic_base_url()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&keys_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    // The control: the secrets are readable by the user the supervisor runs as.
    assert!(std::fs::read_to_string(&key).unwrap().contains("FAKE-SSH-PRIVATE-KEY"));
    assert!(std::fs::read_to_string(&keys_file).unwrap().contains("FAKE-API-KEY-SECRET"));
    home.start_supervisor_with(&[("HOME", user_home.to_str().unwrap())]);
    let id = new_task(&home, &repo, &[]);
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let outputs = home.tool_outputs(&id);
    let committed = outputs.iter().filter(|o| o.starts_with("Committed ")).count();
    assert!(committed >= 5, "the race ran with many commits: {outputs:?}");
    let branch = format!("neuraphage/{id}");
    let blobs = blobs_on_branch(&repo, &branch);
    // The probe could have won: the commits did see the symlinks to the secrets' folders.
    assert!(
        blobs.iter().any(|b| b == user_home.join(".ssh").as_os_str().as_encoded_bytes()),
        "no commit saw the symlink; the race did not run"
    );
    for blob in &blobs {
        let text = String::from_utf8_lossy(blob);
        assert!(!text.contains("FAKE-SSH-PRIVATE-KEY") && !text.contains("FAKE-API-KEY-SECRET"), "{text}");
    }
}

#[test]
fn inside_a_task_git_sees_only_its_own_history_while_the_users_repository_holds_the_rest() {
    let mut home = TestHome::new();
    let repo = home.git_repo("repo");
    let r = git2::Repository::open(&repo).unwrap();
    r.remote("origin", "https://user:FAKE-TOKEN-5e1f@example.invalid/r.git").unwrap();
    // Another task's branch, and a file the user staged but did not commit.
    let sig = git2::Signature::now("t", "t@t").unwrap();
    let head = r.head().unwrap().peel_to_commit().unwrap();
    let other = r.commit(None, &sig, &sig, "OTHER-TASK-WORK", &head.tree().unwrap(), &[&head]).unwrap();
    r.reference("refs/heads/neuraphage/np-other", other, false, "").unwrap();
    std::fs::write(repo.join("staged.txt"), "STAGED-SECRET-4a2b\n").unwrap();
    let mut index = r.index().unwrap();
    index.add_path(Path::new("staged.txt")).unwrap();
    index.write().unwrap();
    let staged = index.get_path(Path::new("staged.txt"), 0).unwrap().id;
    let probe = format!(
        "git log --all --format=%s; echo log=$?; git cat-file -p {other}; echo other=$?; \
         git cat-file -p {staged}; echo staged=$?; git config --get remote.origin.url; echo remote=$?; \
         cat {repo}/.git/config; echo user-config=$?; \
         echo changed >> README.md; git status --short; echo status=$?; git diff; echo end-of-probe",
        repo = repo.display()
    );
    let model = scripted(vec![bash(probe)]);
    home.start_with_model(&model);
    let id = new_task(&home, &repo, &[]);
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let out = home.first_tool_output(&id);
    assert!(out.contains("end-of-probe"), "{out}");
    // Git works inside: the base's history, the task's own change.
    assert!(out.contains("init\n") && out.contains("log=0"), "{out}");
    assert!(out.contains(" M README.md") && out.contains("+changed") && out.contains("status=0"), "{out}");
    // And shows nothing of the user's.
    for secret in ["OTHER-TASK-WORK", "STAGED-SECRET", "FAKE-TOKEN"] {
        assert!(!out.contains(secret), "{secret} reached the task: {out}");
    }
    assert!(!out.contains("other=0") && !out.contains("staged=0") && !out.contains("remote=0"), "{out}");
    assert!(!out.contains("user-config=0"), "{out}");
    // The control: outside, in the user's repository, each one is there.
    assert!(String::from_utf8_lossy(&git(&repo, &["log", "--all", "--format=%s"]).stdout).contains("OTHER-TASK-WORK"));
    assert!(String::from_utf8_lossy(&git(&repo, &["cat-file", "-p", &staged.to_string()]).stdout).contains("STAGED"));
    let url = git(&repo, &["config", "--get", "remote.origin.url"]);
    assert!(String::from_utf8_lossy(&url.stdout).contains("FAKE-TOKEN"));
}

#[test]
fn planted_git_metadata_is_used_neither_by_the_supervisor_nor_by_a_persons_git_in_the_worktree() {
    let mut home = TestHome::new();
    home.write_config("keep-worktrees: true\n");
    let repo = home.git_repo("repo");
    let markers = home.root().join("markers");
    std::fs::create_dir_all(&markers).unwrap();
    let plant = |dir: &str, name: &str| {
        format!(
            "mkdir -p {dir}/.git/hooks {dir}/.git/objects {dir}/.git/refs/heads; echo 'ref: refs/heads/master' > {dir}/.git/HEAD; \
             printf '[core]\\n\\trepositoryformatversion = 0\\n\\tfsmonitor = \"touch {m}/{name}-fsmonitor\"\\n' > {dir}/.git/config; \
             printf '#!/bin/sh\\ntouch {m}/{name}-hook\\n' > {dir}/.git/hooks/pre-commit; chmod +x {dir}/.git/hooks/pre-commit; ",
            m = markers.display()
        )
    };
    let command = format!(
        "rm -f .git; {} mkdir -p sub; {} echo work > work.txt; ls -a . sub; echo planted",
        plant(".", "root"),
        plant("sub", "sub")
    );
    let model = scripted(vec![bash(command), commit("work")]);
    home.start_with_model(&model);
    let id = new_task(&home, &repo, &[]);
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let out = home.tool_outputs(&id);
    assert!(out[0].contains("planted") && !out[0].contains("denied"), "the task planted its metadata: {out:?}");
    assert!(out[1].starts_with("Committed "), "{out:?}");
    // The supervisor saw the nested .git and said so.
    let events = home.show(&id)["events"].as_array().unwrap().clone();
    assert!(events.iter().any(|e| e["kind"] == "snapshot_note" && e["data"]["path"] == "sub/.git"), "{events:#?}");
    // A person runs git in the worktree (and in its subfolder) after the task: git refuses, nothing planted runs.
    let worktree = home.paths.home.join("tasks").join(&id).join("worktree");
    for dir in [worktree.clone(), worktree.join("sub")] {
        let status = git(&dir, &["status"]);
        assert!(!status.status.success(), "git served {}: {status:?}", dir.display());
        assert!(String::from_utf8_lossy(&status.stderr).contains("gitfile"), "{status:?}");
    }
    assert_eq!(std::fs::read_dir(&markers).unwrap().count(), 0, "a planted command ran");
    // No .git on the branch.
    let r = git2::Repository::open(&repo).unwrap();
    let tree = r.find_reference(&format!("refs/heads/neuraphage/{id}")).unwrap().peel_to_tree().unwrap();
    assert!(tree.get_path(Path::new("work.txt")).is_ok());
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
        assert!(!format!("{dir}{}", e.name().unwrap_or("")).contains(".git/"), "{dir}");
        git2::TreeWalkResult::Ok
    })
    .unwrap();
    // The control: the same planted repository, where git does use it, runs the command.
    let control = home.root().join("control");
    std::fs::create_dir_all(&control).unwrap();
    assert!(git(&control, &["init", "-q"]).status.success());
    let fsmonitor = format!("touch {}/control-fsmonitor", markers.display());
    assert!(git(&control, &["config", "core.fsmonitor", &fsmonitor]).status.success());
    git(&control, &["status"]);
    assert!(markers.join("control-fsmonitor").exists(), "the control's fsmonitor did not run");
}

#[test]
fn a_git_folder_planted_where_no_snapshot_looks_is_moved_out_before_a_person_opens_the_worktree() {
    let mut home = TestHome::new();
    home.write_config("keep-worktrees: true\n");
    let repo = home.git_repo("repo");
    let markers = home.root().join("markers");
    std::fs::create_dir_all(&markers).unwrap();
    // A `.git` with an fsmonitor, deep in a folder the worktree's .gitignore excludes (the snapshot never enters it).
    let command = format!(
        "echo build/ > .gitignore; d=build/a/b; mkdir -p $d/.git/objects $d/.git/refs/heads; \
         echo 'ref: refs/heads/master' > $d/.git/HEAD; \
         printf '[core]\\n\\trepositoryformatversion = 0\\n\\tfsmonitor = \"touch {m}/ignored-fsmonitor\"\\n' > $d/.git/config; \
         echo planted",
        m = markers.display()
    );
    let model = scripted(vec![bash(command), commit("work")]);
    home.start_with_model(&model);
    let id = new_task(&home, &repo, &[]);
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let out = home.tool_outputs(&id);
    assert!(out[0].contains("planted"), "{out:?}");
    let task_dir = home.paths.home.join("tasks").join(&id);
    let deep = task_dir.join("worktree/build/a/b");
    assert!(deep.is_dir() && !deep.join(".git").exists(), "the planted .git is still in the worktree");
    assert!(std::fs::read_dir(task_dir.join("quarantine")).unwrap().count() >= 1);
    // A person's git there finds the root's note, refuses it, and runs nothing planted.
    let status = git(&deep, &["status"]);
    assert!(!status.status.success() && String::from_utf8_lossy(&status.stderr).contains("gitfile"), "{status:?}");
    assert_eq!(std::fs::read_dir(&markers).unwrap().count(), 0, "a planted command ran");
}

fn object_files(repo: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo.join(".git/objects"), &mut out);
    out.sort();
    out
}

#[test]
fn task_diff_of_a_running_task_adds_nothing_to_the_users_object_store() {
    let mut home = TestHome::new();
    let repo = home.git_repo("repo");
    let model = scripted(vec![bash("echo LIVE-UNCOMMITTED-e3d1 > live.txt; sleep 120")]);
    home.start_with_model(&model);
    let id = new_task(&home, &repo, &[]);
    home.worker_in_tool(&id, WITHIN);
    let before = object_files(&repo);
    let blob = git2::Oid::hash_object(git2::ObjectType::Blob, b"LIVE-UNCOMMITTED-e3d1\n").unwrap();
    // The file is written as the tool starts: ask until the diff shows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let patch = loop {
        let patch = home.ok(&["task", "diff", &id]);
        if patch.contains("LIVE-UNCOMMITTED") || std::time::Instant::now() > deadline {
            break patch;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(patch.contains("+LIVE-UNCOMMITTED-e3d1"), "{patch}");
    assert_eq!(object_files(&repo), before, "task diff wrote into the user's object store");
    assert!(!git2::Repository::open(&repo).unwrap().odb().unwrap().exists(blob));
    home.ok(&["task", "kill", &id]);
    home.wait_ended(&[&id], WITHIN);
    // The final commit is made as the task ends: wait for its event.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !home.show(&id)["events"].as_array().unwrap().iter().any(|e| e["kind"] == "committed") {
        assert!(std::time::Instant::now() < deadline, "no final commit: {:#}", home.show(&id));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The control: once committed (the task's end), the blob is in the user's repository.
    assert!(git2::Repository::open(&repo).unwrap().odb().unwrap().exists(blob));
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_20_mb_gitignore_does_not_hurt_the_supervisor_and_the_commit_still_works() {
    let mut home = TestHome::new();
    let repo = home.git_repo("repo");
    let command = "yes 'some/ignored/pattern-[a-z]*/**/x?' | head -c 20000000 > .gitignore; echo kept > kept.txt; \
                   ls -l .gitignore";
    let model = scripted(vec![bash(command), commit("with a huge gitignore")]);
    let pid = home.start_with_model(&model);
    let id = new_task(&home, &repo, &[]);
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let out = home.tool_outputs(&id);
    assert!(out[0].contains("20000000"), "{out:?}");
    assert!(out[1].starts_with("Committed "), "{out:?}");
    assert_eq!(file_on_branch(&repo, &format!("neuraphage/{id}"), "kept.txt").as_deref(), Some("kept\n"));
    let events = home.show(&id)["events"].as_array().unwrap().clone();
    assert!(events.iter().any(|e| e["kind"] == "snapshot_note" && e["data"]["path"] == ".gitignore"), "{events:#?}");
    let peak = peak_rss_kib(pid);
    assert!(peak < 200 * 1024, "the supervisor's peak RSS was {peak} KiB");
}

#[test]
fn real_work_inside_a_task_cargo_build_and_test_with_a_vendored_path_dependency_make_and_git() {
    let mut home = TestHome::new();
    let repo = home.git_repo("repo");
    let sysroot = String::from_utf8(Command::new("rustc").arg("--print").arg("sysroot").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    // The crate, its vendored dependency and a Makefile, committed in the user's repository.
    let files = [
        ("Cargo.toml", "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ndep = { path = \"vendor/dep\" }\n".to_owned()),
        ("src/main.rs", "fn main() { println!(\"{}\", dep::answer()); }\n#[test]\nfn answers() { assert_eq!(dep::answer(), 42); }\n".to_owned()),
        ("vendor/dep/Cargo.toml", "[package]\nname = \"dep\"\nversion = \"0.1.0\"\nedition = \"2021\"\n".to_owned()),
        ("vendor/dep/src/lib.rs", "pub fn answer() -> u32 { 42 }\n".to_owned()),
        (".gitignore", "target/\n".to_owned()),
        ("Makefile", "hello:\n\techo made-$$((6*7))\n".to_owned()),
    ];
    for (path, text) in &files {
        std::fs::create_dir_all(repo.join(path).parent().unwrap()).unwrap();
        std::fs::write(repo.join(path), text).unwrap();
    }
    let r = git2::Repository::open(&repo).unwrap();
    let mut index = r.index().unwrap();
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
    let tree = r.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@t").unwrap();
    let head = r.head().unwrap().peel_to_commit().unwrap();
    r.commit(Some("HEAD"), &sig, &sig, "the crate", &tree, &[&head]).unwrap();
    // A profile that can run the toolchain.
    let default = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-profiles/profiles/default.toml"),
    )
    .unwrap();
    let profile = default.replace("read-exec = [\"/usr\"", &format!("read-exec = [\"{sysroot}\", \"/usr\""));
    home.write_config("");
    std::fs::create_dir_all(home.paths.home.join("profiles")).unwrap();
    std::fs::write(home.paths.home.join("profiles/build.toml"), profile).unwrap();
    let command = "cargo build --offline 2>&1 | tail -3; echo build=${PIPESTATUS[0]}; \
                   cargo test --offline 2>&1 | grep 'test result'; ./target/debug/app; make; \
                   git log --format=%s; echo 'fn extra() {}' >> src/main.rs; git diff --stat; echo end-of-work";
    let model = scripted(vec![bash(command)]);
    let path = format!("{sysroot}/bin:/usr/local/bin:/usr/bin:/bin");
    let env = model.env();
    let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    pairs.push(("PATH", &path));
    home.start_supervisor_with(&pairs);
    let id = new_task(&home, &repo, &["--profile", "build"]);
    let ended = home.wait_ended(&[&id], Duration::from_secs(600)).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let out = home.first_tool_output(&id);
    assert!(out.contains("build=0"), "{out}");
    assert!(out.contains("test result: ok. 1 passed"), "{out}");
    assert!(out.contains("\n42\n") && out.contains("made-42"), "{out}");
    assert!(out.contains("the crate\ninit\n"), "git log: {out}");
    assert!(out.contains("src/main.rs | 1 +"), "git diff: {out}");
    // The build's output stays out of the commit (.gitignore), the change is in it.
    let branch = format!("neuraphage/{id}");
    assert!(file_on_branch(&repo, &branch, "src/main.rs").unwrap().contains("fn extra"));
    assert!(file_on_branch(&repo, &branch, "target/debug/app").is_none());
}
