//! `neuraphage task …`: each command is one request on the control link.

use chrono::Utc;
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::{ControlReply, ControlRequest, MAX_DESCRIPTION_BYTES, NewTask};

use crate::cli::TaskCommand;
use crate::client::{Client, unexpected};
use crate::error::CliError;
use crate::output;

/// Run one `task` subcommand.
pub async fn run(paths: &Paths, command: TaskCommand) -> Result<(), CliError> {
    match command {
        TaskCommand::New(args) => {
            // Checked here too so a bad argument is reported before anything is sent; the supervisor checks again.
            if args.description.trim().is_empty() {
                return Err(CliError::Usage("the task description is empty; say what the task should do".into()));
            }
            if args.description.len() > MAX_DESCRIPTION_BYTES {
                return Err(CliError::Usage(format!(
                    "the task description is {} bytes; the limit is {MAX_DESCRIPTION_BYTES} bytes (64 KiB)",
                    args.description.len()
                )));
            }
            let repo = args.repo.as_deref().map(absolute_repo).transpose()?;
            let new = NewTask {
                description: args.description,
                repo,
                priority: args.priority,
                after: args.after,
                profile: args.profile,
                base: args.base,
                tier: args.tier,
                persona: args.persona,
                no_watch: args.no_watch,
            };
            let task = match Client::connect(paths).await?.call(ControlRequest::CreateTask(new)).await? {
                ControlReply::Task(task) => task,
                other => return Err(unexpected(other)),
            };
            if args.out.json { output::json(&task) } else { output::out(&format!("{}\n", task.id)) }
        }
        TaskCommand::List(args) => {
            let tasks = list(&mut Client::connect(paths).await?, args.status).await?;
            if args.out.json {
                output::json(&tasks)
            } else if args.tree {
                output::out(&output::task_tree(&tasks, Utc::now()))
            } else {
                output::out(&output::task_table(&tasks, Utc::now()))
            }
        }
        TaskCommand::Show(args) => {
            let detail = match Client::connect(paths).await?.call(ControlRequest::ShowTask { task: args.id }).await? {
                ControlReply::Detail(detail) => detail,
                other => return Err(unexpected(other)),
            };
            if args.out.json {
                let mut value = serde_json::to_value(&detail)?;
                value["cost"] = crate::report::with_usd(&detail.cost);
                value["tree_cost"] = crate::report::with_usd(&detail.tree_cost);
                output::json(&value)
            } else {
                output::out(&output::task_detail(&detail, Utc::now()))
            }
        }
        TaskCommand::Diff(args) => {
            let reply =
                Client::connect(paths).await?.call(ControlRequest::TaskDiff { task: args.id, max_bytes: None }).await?;
            let ControlReply::Diff { task, base_commit, patch } = reply else { return Err(unexpected(reply)) };
            if args.out.json {
                output::json(&serde_json::json!({ "task": task, "base_commit": base_commit, "patch": patch }))
            } else if base_commit.is_none() {
                output::out(&format!("{task} has no repository, so no diff\n"))
            } else {
                output::out(&crate::escape::visible_lines(&patch))
            }
        }
        TaskCommand::Log(args) => {
            let reply = Client::connect(paths).await?.call(ControlRequest::TaskLog { task: args.id }).await?;
            let ControlReply::Log { task, messages } = reply else { return Err(unexpected(reply)) };
            if args.out.json {
                output::json(&serde_json::json!({ "task": task, "messages": messages }))
            } else {
                output::out(&output::conversation(&messages))
            }
        }
        TaskCommand::Retry(args) => {
            status_change(paths, ControlRequest::RetryTask { task: args.id }, args.out.json).await
        }
        TaskCommand::Depend(args) => {
            let request = ControlRequest::AddDependency { task: args.id, on: args.on };
            let reply = Client::connect(paths).await?.call(request).await?;
            let ControlReply::DependencyAdded { task, on, added } = &reply else { return Err(unexpected(reply)) };
            if args.out.json {
                output::json(&serde_json::json!({ "task": task, "on": on, "added": added }))
            } else if *added {
                output::out(&format!("{task} now waits for {on}\n"))
            } else {
                output::out(&format!("{task} already waits for {on}\n"))
            }
        }
        TaskCommand::Kill(args) => {
            let request = ControlRequest::KillTask { task: args.id, reason: args.reason };
            status_change(paths, request, args.out.json).await
        }
        TaskCommand::Send(a) => crate::waiting::send(paths, a.id, a.message, false, a.out.json).await,
        TaskCommand::Answer(a) => crate::waiting::send(paths, a.id, a.message, true, a.out.json).await,
        TaskCommand::Pause(a) => crate::waiting::pause_or_resume(paths, a.id, true, a.out.json).await,
        TaskCommand::Resume(a) => crate::waiting::pause_or_resume(paths, a.id, false, a.out.json).await,
        TaskCommand::Approve(args) => crate::permissions::approve(paths, args).await,
        TaskCommand::Deny(args) => crate::permissions::deny(paths, args).await,
        TaskCommand::Attach(args) => crate::attach::run(paths, args).await,
    }
}

/// A request that changes one task's status and answers with the task: print it as `id  status`, or as JSON.
async fn status_change(paths: &Paths, request: ControlRequest, json: bool) -> Result<(), CliError> {
    let task = match Client::connect(paths).await?.call(request).await? {
        ControlReply::Task(task) => task,
        other => return Err(unexpected(other)),
    };
    if json {
        output::json(&task)
    } else {
        output::out(&format!("{}  {}\n", task.id, output::status_line(&task.status)))
    }
}

/// Every task (optionally of one state), page by page.
pub async fn list(
    client: &mut Client,
    state: Option<neuraphage_ipc::TaskState>,
) -> Result<Vec<neuraphage_ipc::Task>, CliError> {
    let (mut all, mut offset) = (Vec::new(), Some(0));
    while let Some(o) = offset {
        match client.call(ControlRequest::ListTasks { state, offset: o }).await? {
            ControlReply::Tasks { tasks, next } => {
                all.extend(tasks);
                offset = next.filter(|n| *n > o);
            }
            other => return Err(unexpected(other)),
        }
    }
    Ok(all)
}

/// The supervisor runs elsewhere: send it an absolute, resolved path.
fn absolute_repo(repo: &std::path::Path) -> Result<String, CliError> {
    let resolved = repo.canonicalize().map_err(|e| CliError::Failed(format!("--repo {}: {e}", repo.display())))?;
    resolved
        .into_os_string()
        .into_string()
        .map_err(|p| CliError::Failed(format!("--repo {}: the path is not valid UTF-8", p.to_string_lossy())))
}
