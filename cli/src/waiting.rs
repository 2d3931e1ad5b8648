//! `task send`, `task answer`, `task pause`, `task resume` and `neuraphage waiting`: a person talking to tasks.

use chrono::Utc;
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::waiting::{MAX_MESSAGE_BYTES, WaitingTask};
use neuraphage_ipc::{ControlReply, ControlRequest, TaskStatus};

use crate::client::{Client, unexpected};
use crate::error::CliError;
use crate::escape::visible;
use crate::output;

/// The message as typed, or stdin for `-` (at most [`MAX_MESSAGE_BYTES`]).
fn message(text: String) -> Result<String, CliError> {
    let text = if text == "-" {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::io::stdin().lock().take(MAX_MESSAGE_BYTES as u64 + 1).read_to_end(&mut bytes)?;
        String::from_utf8(bytes).map_err(|_| CliError::Usage("the message on stdin is not UTF-8".into()))?
    } else {
        text
    };
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(CliError::Usage(format!("the message is over the limit of {MAX_MESSAGE_BYTES} bytes (64 KiB)")));
    }
    if text.trim().is_empty() {
        return Err(CliError::Usage("the message is empty".into()));
    }
    Ok(text)
}

/// `task send ID MESSAGE` (`answer`: `task answer ID TEXT`).
pub async fn send(paths: &Paths, id: String, text: String, answer: bool, json: bool) -> Result<(), CliError> {
    let text = message(text)?;
    let request = if answer {
        ControlRequest::AnswerQuestion { task: id, text }
    } else {
        ControlRequest::SendMessage { task: id, text }
    };
    let reply = Client::connect(paths).await?.call(request).await?;
    let ControlReply::Sent { task, delivery } = reply else { return Err(unexpected(reply)) };
    if json {
        output::json(&serde_json::json!({ "task": task, "delivery": delivery }))
    } else {
        output::out(&format!("{task}  sent: {}\n", visible(&delivery)))
    }
}

/// `task pause ID` / `task resume ID`.
pub async fn pause_or_resume(paths: &Paths, id: String, pause: bool, json: bool) -> Result<(), CliError> {
    let request = if pause { ControlRequest::PauseTask { task: id } } else { ControlRequest::ResumeTask { task: id } };
    let reply = Client::connect(paths).await?.call(request).await?;
    let ControlReply::Task(task) = reply else { return Err(unexpected(reply)) };
    if json {
        return output::json(&task);
    }
    let note = match (&task.status, pause) {
        (TaskStatus::Running { .. }, true) => " (pausing at its next checkpoint)",
        _ => "",
    };
    output::out(&format!("{}  {}{note}\n", task.id, output::status_line(&task.status)))
}

/// `neuraphage waiting [--json]`.
pub async fn waiting(paths: &Paths, json: bool) -> Result<(), CliError> {
    let reply = Client::connect(paths).await?.call(ControlRequest::ListWaiting).await?;
    let ControlReply::Waiting { tasks } = reply else { return Err(unexpected(reply)) };
    if json { output::json(&tasks) } else { output::out(&render(&tasks)) }
}

/// The text listing: one block per task, oldest wait first, every string escaped.
fn render(tasks: &[WaitingTask]) -> String {
    if tasks.is_empty() {
        return "no task waits on you\n".to_owned();
    }
    let now = Utc::now();
    let mut s = String::new();
    for t in tasks {
        let kind = if t.question { "question" } else { "waiting" };
        let line = t.description.lines().next().unwrap_or("");
        let desc: String = line.chars().take(60).collect();
        s.push_str(&format!("{}  {kind}, {}  {}\n", t.id, output::age(t.since, now), visible(&desc)));
        if let Some(parent) = &t.parent {
            s.push_str(&format!("    sub-task of {parent}\n"));
        }
        for line in t.prompt.lines() {
            s.push_str(&format!("    {}\n", visible(line)));
        }
    }
    s
}
