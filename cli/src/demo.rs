//! `neuraphage demo`: the main job, shown end to end in a throw-away home with no API key.
//!
//! For now it starts a real supervisor in a temporary home, makes a small sample repository, creates tasks with
//! priorities and dependencies, shows a refused cycle, cancels a task, lists and shows them, and stops the daemon.
//! Workers that run the tasks come with a later release, so the tasks stay Queued; the demo says so.

use std::path::Path;

use chrono::Utc;
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::{ControlReply, ControlRequest, NewTask, Task, TaskId};

use crate::cli::DemoArgs;
use crate::client::{Client, unexpected};
use crate::error::CliError;
use crate::{daemon, output};

/// Run the demo.
pub async fn run(args: DemoArgs) -> Result<(), CliError> {
    let dir = tempfile::Builder::new().prefix("neuraphage-demo-").tempdir()?;
    let paths = Paths { home: dir.path().join("home"), runtime_dir: dir.path().join("run") };
    let repo = dir.path().join("sample-repo");
    make_sample_repo(&repo).map_err(|e| CliError::Failed(format!("cannot make the sample repository: {e}")))?;
    say(&format!("Neuraphage demo — a throw-away home in {}\n", dir.path().display()))?;

    let result = scenario(&paths, &repo).await;
    step("neuraphage daemon stop")?;
    match daemon::stop(&paths).await {
        Ok(Some(pid)) => say(&format!("stopped (pid {pid})\n"))?,
        Ok(None) => say("not running\n")?,
        Err(e) => say(&format!("could not stop the demo's supervisor: {e}\n"))?,
    }
    if args.keep {
        let kept = dir.keep();
        say(&format!("\nkept the demo home in {}\n", kept.display()))?;
    }
    result
}

async fn scenario(paths: &Paths, repo: &Path) -> Result<(), CliError> {
    step("neuraphage daemon start")?;
    let (st, _) = daemon::start(paths).await?;
    say(&format!("supervisor running (pid {}), control socket {}\n", st.pid, st.control_socket))?;

    let mut client = Client::connect(paths).await?;
    let repo_s = repo.display().to_string();
    let flaky = new(
        &mut client,
        &format!("neuraphage task new \"Fix the flaky parser test\" --repo {repo_s} --priority 0"),
        NewTask { repo: Some(repo_s.clone()), priority: 0, ..NewTask::described("Fix the flaky parser test") },
    )
    .await?;
    let flag = new(
        &mut client,
        &format!("neuraphage task new \"Add a --verbose flag\" --repo {repo_s}"),
        NewTask { repo: Some(repo_s.clone()), ..NewTask::described("Add a --verbose flag") },
    )
    .await?;
    let docs = new(
        &mut client,
        &format!("neuraphage task new \"Document --verbose in the README\" --after {}", flag.id),
        NewTask {
            repo: Some(repo_s.clone()),
            priority: 3,
            after: vec![flag.id.to_string()],
            ..NewTask::described("Document --verbose in the README")
        },
    )
    .await?;
    let spike = new(
        &mut client,
        "neuraphage task new \"Try a faster hash map\" --priority 4",
        NewTask { priority: 4, ..NewTask::described("Try a faster hash map") },
    )
    .await?;

    step(&format!("neuraphage task depend {} --on {}", short(&flag.id), short(&flaky.id)))?;
    let request = ControlRequest::AddDependency { task: flag.id.to_string(), on: flaky.id.to_string() };
    match client.call(request).await? {
        ControlReply::DependencyAdded { task, on, .. } => say(&format!("{task} now waits for {on}\n"))?,
        other => return Err(unexpected(other)),
    }

    step(&format!("neuraphage task depend {} --on {}   # would close a cycle", short(&flaky.id), short(&docs.id)))?;
    let request = ControlRequest::AddDependency { task: flaky.id.to_string(), on: docs.id.to_string() };
    match client.call(request).await {
        Err(CliError::Refused(e)) => say(&format!("refused, nothing stored: {}\n", e.message))?,
        Ok(other) => return Err(unexpected(other)),
        Err(e) => return Err(e),
    }

    step(&format!("neuraphage task kill {}", short(&spike.id)))?;
    let request = ControlRequest::KillTask { task: spike.id.to_string(), reason: Some("not now".into()) };
    match client.call(request).await? {
        ControlReply::Task(t) => say(&format!("{}  {}\n", t.id, output::status_line(&t.status)))?,
        other => return Err(unexpected(other)),
    }

    step("neuraphage task list")?;
    match client.call(ControlRequest::ListTasks { state: None }).await? {
        ControlReply::Tasks(tasks) => say(&output::task_table(&tasks, Utc::now()))?,
        other => return Err(unexpected(other)),
    }

    step(&format!("neuraphage task show {}", short(&flag.id)))?;
    match client.call(ControlRequest::ShowTask { task: short(&flag.id).to_owned() }).await? {
        ControlReply::Detail(d) => say(&output::task_detail(&d, Utc::now()))?,
        other => return Err(unexpected(other)),
    }

    step("neuraphage daemon status")?;
    say(&output::daemon_status(&daemon::status(paths).await?))?;
    say("\nThe tasks are stored and ordered, but stay Queued: the workers that run them arrive in the next release.\n")
}

async fn new(client: &mut Client, shown: &str, task: NewTask) -> Result<Task, CliError> {
    step(shown)?;
    match client.call(ControlRequest::CreateTask(task)).await? {
        ControlReply::Task(task) => {
            say(&format!("{}\n", task.id))?;
            Ok(task)
        }
        other => Err(unexpected(other)),
    }
}

/// An id prefix, as a user would type it.
fn short(id: &TaskId) -> &str {
    &id.as_str()[..7]
}

fn step(command: &str) -> Result<(), CliError> {
    say(&format!("\n$ {command}\n"))
}

fn say(text: &str) -> Result<(), CliError> {
    output::out(text)
}

/// A tiny Rust crate with one commit.
fn make_sample_repo(dir: &Path) -> Result<(), git2::Error> {
    let repo = git2::Repository::init(dir)?;
    let files = [
        ("README.md", "# sample\n\nA tiny parser used by the Neuraphage demo.\n"),
        ("Cargo.toml", "[package]\nname = \"sample\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
        ("src/lib.rs", "pub fn parse(s: &str) -> Vec<&str> {\n    s.split(',').map(str::trim).collect()\n}\n"),
    ];
    let mut index = repo.index()?;
    for (name, text) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| git2::Error::from_str(&e.to_string()))?;
        }
        std::fs::write(&path, text).map_err(|e| git2::Error::from_str(&e.to_string()))?;
        index.add_path(Path::new(name))?;
    }
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::now("Neuraphage demo", "demo@neuraphage.invalid")?;
    repo.commit(Some("HEAD"), &sig, &sig, "sample: a tiny parser", &tree, &[])?;
    Ok(())
}
