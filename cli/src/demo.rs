//! `neuraphage demo`: the main job, end to end, in a throw-away home.
//!
//! It starts a real supervisor (which starts the broker, and one sandboxed worker process per task), makes a small
//! sample repository, and runs several tasks on it at once, each in its own worktree and branch. Without an API key
//! the model is a built-in scripted model — the LLM test double, said so on screen — over real HTTP; with
//! `ANTHROPIC_API_KEY` or `OPENAI_API_KEY` set, the same commands use the real provider. It shows progress, then
//! each task's branch and diff, and stops everything (also on Ctrl-C).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::{ControlReply, ControlRequest, NewTask, Task, TaskId, TaskState};
use neuraphage_llm_double::{DemoPolicy, DoubleConfig, LlmDouble};

use crate::cli::DemoArgs;
use crate::client::{Client, unexpected};
use crate::error::CliError;
use crate::{daemon, output, task};

/// How long the demo waits for its tasks.
const TASK_DEADLINE: Duration = Duration::from_secs(300);

/// Run the demo.
pub async fn run(args: DemoArgs) -> Result<(), CliError> {
    let dir = tempfile::Builder::new().prefix("neuraphage-demo-").tempdir()?;
    let paths = Paths { home: dir.path().join("home"), runtime_dir: dir.path().join("run") };
    let repo = dir.path().join("sample-repo");
    make_sample_repo(&repo).map_err(|e| CliError::Failed(format!("cannot make the sample repository: {e}")))?;
    say(&format!("Neuraphage demo — a throw-away home in {}\n", dir.path().display()))?;

    let real = ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"].into_iter().find(|k| std::env::var_os(k).is_some());
    let double = match real {
        Some(key) => {
            say(&format!("model: the real provider ({key} is set)\n"))?;
            None
        }
        None => {
            let config = DoubleConfig { policy: Some(DemoPolicy.policy()), ..DoubleConfig::default() };
            let double = LlmDouble::start_with(config)
                .await
                .map_err(|e| CliError::Failed(format!("cannot start the scripted model: {e}")))?;
            say(&format!(
                "model: no API key set, so a built-in SCRIPTED MODEL answers — the LLM test double at {}, not a real AI.\n\
                 It speaks the Anthropic Messages API over real HTTP; everything else here is real.\n",
                double.anthropic_base_url()
            ))?;
            Some(double)
        }
    };
    let env: Vec<(String, String)> = match &double {
        Some(d) => vec![
            ("ANTHROPIC_BASE_URL".into(), d.anthropic_base_url()),
            ("ANTHROPIC_API_KEY".into(), "demo-key-for-the-test-double".into()),
        ],
        None => Vec::new(),
    };

    let result = tokio::select! {
        result = scenario(&paths, &repo, &env) => result,
        _ = tokio::signal::ctrl_c() => Err(CliError::Failed("interrupted".into())),
    };
    step("neuraphage daemon stop")?;
    match daemon::stop(&paths).await {
        Ok(Some(pid)) => say(&format!("stopped (pid {pid})\n"))?,
        Ok(None) => say("not running\n")?,
        Err(e) => say(&format!("could not stop the demo's supervisor: {e}\n"))?,
    }
    if let Some(double) = double {
        double.shutdown().await;
    }
    if args.keep {
        let kept = dir.keep();
        say(&format!("\nkept the demo home in {}\n", kept.display()))?;
    }
    result
}

async fn scenario(paths: &Paths, repo: &Path, env: &[(String, String)]) -> Result<(), CliError> {
    step("neuraphage daemon start")?;
    let (st, _) = daemon::start_with_env(paths, env).await?;
    say(&format!("supervisor running (pid {}), control socket {}\n", st.pid, st.control_socket))?;

    let mut client = Client::connect(paths).await?;
    let repo_s = repo.display().to_string();
    let descriptions = [
        ("Add input validation to the parser", 1),
        ("Find the TODOs and write them up", 2),
        ("Document how to run the tests", 2),
    ];
    let mut tasks = Vec::new();
    for (description, priority) in descriptions {
        let shown = format!("neuraphage task new \"{description}\" --repo {repo_s} --priority {priority}");
        let new = NewTask { repo: Some(repo_s.clone()), priority, ..NewTask::described(description) };
        tasks.push(new_task(&mut client, &shown, new).await?);
    }
    let first = short(&tasks[0].id).to_owned();
    let shown = format!("neuraphage task new \"Review the validation change\" --repo {repo_s} --after {first}");
    let new = NewTask {
        repo: Some(repo_s.clone()),
        after: vec![tasks[0].id.to_string()],
        ..NewTask::described("Review the validation change")
    };
    tasks.push(new_task(&mut client, &shown, new).await?);

    step("neuraphage task list   # (polled until every task has ended)")?;
    let finished = watch(&mut client, &tasks).await?;
    say(&output::task_table(&finished, Utc::now()))?;

    for t in &finished {
        step(&format!("neuraphage task diff {}", short(&t.id)))?;
        let branch = t.branch.as_deref().unwrap_or("(none)");
        say(&format!("# branch {branch}: {}\n", output::status_line(&t.status)))?;
        match client.call(ControlRequest::TaskDiff { task: t.id.to_string(), max_bytes: None }).await {
            Ok(ControlReply::Diff { patch, .. }) => say(if patch.is_empty() { "(no changes)\n" } else { &patch })?,
            Ok(other) => return Err(unexpected(other)),
            Err(CliError::Refused(e)) => say(&format!("{}\n", e.message))?,
            Err(e) => return Err(e),
        }
    }
    let user_checkout_clean =
        std::fs::read_dir(repo)?.filter_map(|e| e.ok()).all(|e| e.file_name() != "NEURAPHAGE_NOTES.md");
    say(&format!(
        "\nThe sample repository's own checkout is untouched: {}. Each task's work is on its branch, ready to review \
         and merge.\n",
        if user_checkout_clean { "yes" } else { "NO" }
    ))?;
    let failed: Vec<&Task> = finished.iter().filter(|t| t.status.state() != TaskState::Completed).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!("{} of {} tasks did not complete", failed.len(), finished.len())))
    }
}

/// Print each task's status as it changes until all have ended; return them as they ended.
async fn watch(client: &mut Client, tasks: &[Task]) -> Result<Vec<Task>, CliError> {
    let ids: Vec<&TaskId> = tasks.iter().map(|t| &t.id).collect();
    let mut last: BTreeMap<TaskId, String> = BTreeMap::new();
    let deadline = Instant::now() + TASK_DEADLINE;
    loop {
        let now: Vec<Task> = task::list(client, None).await?.into_iter().filter(|t| ids.contains(&&t.id)).collect();
        for t in &now {
            let line = output::status_line(&t.status);
            if last.get(&t.id) != Some(&line) {
                say(&format!("  {}  {line}\n", t.id))?;
                last.insert(t.id.clone(), line);
            }
        }
        if now.iter().all(|t| t.status.state().is_terminal() || t.status.state() == TaskState::Blocked) {
            return Ok(now);
        }
        if Instant::now() > deadline {
            return Err(CliError::Failed(format!("the tasks did not end within {TASK_DEADLINE:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn new_task(client: &mut Client, shown: &str, task: NewTask) -> Result<Task, CliError> {
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
        (
            "src/lib.rs",
            "/// Split a comma-separated list.\npub fn parse(s: &str) -> Vec<&str> {\n    // TODO: reject empty input\n    \
             s.split(',').map(str::trim).collect()\n}\n",
        ),
        ("tests/parse.rs", "#[test]\nfn splits() {\n    assert_eq!(sample::parse(\"a, b\"), vec![\"a\", \"b\"]);\n}\n"),
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
