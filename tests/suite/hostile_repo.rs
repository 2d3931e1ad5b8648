//! A task rewrites the git metadata it can reach (its worktree's `.git` note, its private repository, a nested
//! repository) to turn the supervisor's own git operations against the user. Each attack must fail; the control
//! shows the same write does land where the task is allowed to write.

use std::path::Path;
use std::time::Duration;

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use serde_json::json;

fn run_task_with_bash(home: &mut TestHome, repo: &Path, command: String) -> serde_json::Value {
    let model = Model::start(policy(move |r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({ "command": command }))),
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }));
    home.start_with_model(&model);
    let task = home.json(&["task", "new", "hostile", "--repo", repo.to_str().unwrap(), "--json"]);
    let id = task["id"].as_str().unwrap().to_owned();
    let ended = home.wait_ended(&[&id], Duration::from_secs(90)).remove(0);
    // The supervisor removes the worktree (keep-worktrees: false) just after the task's status says it ended: give
    // it that moment before stopping it (the test asserts the removal below).
    let worktree = home.paths.home.join("tasks").join(&id).join("worktree");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while worktree.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    home.kill9_supervisors();
    ended
}

fn head_of(repo: &Path, branch: &str) -> String {
    let r = git2::Repository::open(repo).unwrap();
    r.find_branch(branch, git2::BranchType::Local).unwrap().get().target().unwrap().to_string()
}

#[test]
fn rewritten_worktree_metadata_cannot_turn_the_supervisors_git_against_the_user() {
    let mut home = TestHome::new();
    home.write_config("keep-worktrees: false\n");
    let repo = home.git_repo("user-repo");
    let victim = home.root().join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    let secret = home.root().join("secret-dir");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("id_ed25519"), "PRIVATE KEY\n").unwrap();
    let master_before = head_of(&repo, "master");
    let index_before = std::fs::read(repo.join(".git/index")).ok();
    let command = format!(
        "set -x; echo work > work.txt; \
         echo '{repo}/.git' > $GIT_DIR/gitdir; echo 'ref: refs/heads/master' > $GIT_DIR/HEAD; \
         ln -sf {victim} $GIT_DIR/logs/HEAD; rm -f $GIT_DIR/index; ln -sf {created} $GIT_DIR/index; \
         echo '[core] hooksPath = /tmp' >> $GIT_DIR/config; \
         rm -f .git; echo 'gitdir: {repo}/.git' > .git; \
         mkdir -p nested && env -u GIT_DIR -u GIT_WORK_TREE git -C nested init -q && \
         env -u GIT_DIR -u GIT_WORK_TREE git -C nested config core.worktree {secret}; \
         echo 'control: the task can write here' > control.txt; echo finished",
        repo = repo.display(),
        victim = victim.display(),
        created = home.root().join("created-by-supervisor").display(),
        secret = secret.display(),
    );
    let ended = run_task_with_bash(&mut home, &repo, command);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let id = ended["id"].as_str().unwrap();
    // The attack did run: its writes into the private repository and the .git note were refused (read-only
    // mounts), while the control's write into the worktree landed.
    // (The supervisor is stopped: read the conversation's last commit, every message's blob, with git2.)
    let conversation = git2::Repository::open(home.paths.home.join("tasks").join(id).join("conversation")).unwrap();
    let mut log = String::new();
    conversation
        .head()
        .unwrap()
        .peel_to_tree()
        .unwrap()
        .walk(git2::TreeWalkMode::PreOrder, |_, e| {
            if let Ok(blob) = e.to_object(&conversation).and_then(|o| o.peel_to_blob()) {
                log.push_str(&String::from_utf8_lossy(blob.content()));
            }
            git2::TreeWalkResult::Ok
        })
        .unwrap();
    assert!(log.contains("finished") && log.contains("Read-only file system"), "{log}");
    let r = git2::Repository::open(&repo).unwrap();
    let branch = format!("neuraphage/{id}");
    assert!(neuraphage_tests::file_on_branch(&repo, &branch, "control.txt").is_some(), "the control write landed");
    // The user's repository is intact: checkout, master, index.
    assert!(repo.join(".git").is_dir() && repo.join("README.md").is_file(), "the user's checkout was removed");
    assert_eq!(head_of(&repo, "master"), master_before, "the user's master moved");
    assert_eq!(std::fs::read(repo.join(".git/index")).ok(), index_before, "the user's index was rewritten");
    assert!(!repo.join("work.txt").exists());
    // Nothing outside was written through planted links.
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!home.root().join("created-by-supervisor").exists());
    // The work is on the task's own branch, and nothing from outside the worktree is in it.
    let tree =
        r.find_branch(&format!("neuraphage/{id}"), git2::BranchType::Local).unwrap().get().peel_to_tree().unwrap();
    assert!(tree.get_path(Path::new("work.txt")).is_ok(), "the task's work is on its branch");
    let mut names = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
        names.push(format!("{dir}{}", e.name().unwrap_or("")));
        git2::TreeWalkResult::Ok
    })
    .unwrap();
    assert!(!names.iter().any(|n| n.contains("id_ed25519") || n.contains(".git/") || n.ends_with(".git")), "{names:?}");
    // keep-worktrees: false removed the task's folders (and only those); nothing of the task's is in the user's .git
    // but its branch.
    assert!(!home.paths.home.join("tasks").join(id).join("worktree").exists());
    assert!(!home.paths.home.join("tasks").join(id).join("git").exists());
    assert!(!repo.join(".git/worktrees").exists());
}
