//! `neuraphage task attach`: the task's conversation so far, then its live stream.
//!
//! The subscription is made first (and confirmed by its `CaughtUp`), then the conversation is read, so nothing
//! that happens in between is lost (a tool call may show twice). With `--json`, or without a terminal, every item
//! is a JSON line and the command ends when the task ends. In a terminal, streamed text is printed as it arrives
//! (escaped: nothing a task writes can move the cursor, retitle the terminal or hide text); a typed line is sent to
//! the task; Ctrl-] detaches (the task goes on). The terminal stays in line mode with one change — Ctrl-] also ends
//! a line, so it arrives at once — which is undone on every exit path (Ctrl-C included).

use std::io::{BufRead, IsTerminal};

use neuraphage_ipc::events::{StreamItem, Subscribe};
use neuraphage_ipc::llm::StreamDelta;
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::{ControlReply, ControlRequest, EventKind, TaskStatus};
use nix::sys::termios::{SetArg, SpecialCharacterIndices, Termios, tcgetattr, tcsetattr};

use crate::cli::AttachArgs;
use crate::client::{Client, EventStream, unexpected};
use crate::error::CliError;
use crate::escape::{visible, visible_lines};
use crate::events::{detail, json_line, missed_line};
use crate::output;

/// Ctrl-]: detach.
const DETACH: u8 = 0x1d;

/// Attach to one task.
pub async fn run(paths: &Paths, args: AttachArgs) -> Result<(), CliError> {
    let interactive = !args.out.json && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let subscribe =
        Subscribe { task: Some(args.id.clone()), since: None, follow: true, deltas: true, until_end: !interactive };
    let mut stream = Client::connect(paths).await?.subscribe(subscribe).await?;
    // The subscription stands once it is caught up (or the task had already ended).
    let mut first = Vec::new();
    loop {
        match stream.next().await? {
            Some(item @ StreamItem::CaughtUp { .. }) => {
                first.push(item);
                break;
            }
            Some(item) => first.push(item),
            None => return Err(CliError::Failed("the supervisor ended the stream at once".into())),
        }
    }
    let (task, messages) = conversation(paths, &args.id).await?;
    if !interactive {
        for message in &messages {
            output::out(&json_line(&serde_json::json!({ "message": message }))?)?;
        }
        for item in &first {
            output::out(&json_line(item)?)?;
        }
        return follow_json(&mut stream).await;
    }
    output::out(&format!(
        "attached to {task}: type a line to send it, Ctrl-] to detach\n{}",
        output::conversation(&messages)
    ))?;
    let terminal = LineMode::enter()?;
    let result = follow_terminal(paths, &mut stream, task.as_str()).await;
    drop(terminal);
    output::out("\ndetached\n")?;
    result
}

/// The conversation so far. While a task's session starts, its conversation repository may be being set up (and
/// locked): ask again a few times, then go on without it (the live stream does not depend on it).
async fn conversation(paths: &Paths, id: &str) -> Result<(String, Vec<neuraphage_ipc::llm::Message>), CliError> {
    let mut last = None;
    for _ in 0..20 {
        match Client::connect(paths).await?.call(ControlRequest::TaskLog { task: id.to_owned() }).await {
            Ok(ControlReply::Log { task, messages }) => return Ok((task.to_string(), messages)),
            Ok(other) => return Err(unexpected(other)),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let why = last.map(|e| e.to_string()).unwrap_or_default();
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("neuraphage: the conversation so far cannot be read now ({}); following live\n", visible(&why))
            .as_bytes(),
    );
    Ok((id.to_owned(), Vec::new()))
}

async fn follow_json(stream: &mut EventStream) -> Result<(), CliError> {
    while let Some(item) = stream.next().await? {
        output::out(&json_line(&item)?)?;
        if matches!(item, StreamItem::End { .. }) {
            break;
        }
    }
    Ok(())
}

async fn follow_terminal(paths: &Paths, stream: &mut EventStream, task: &str) -> Result<(), CliError> {
    let (tx, mut lines) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    // A plain thread: a blocking read of stdin must not keep the runtime from shutting down.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    // Ctrl-] ends a line too (VEOL): split there.
                    if let Some(at) = line.iter().position(|b| *b == DETACH) {
                        line.truncate(at + 1);
                    }
                    if tx.blocking_send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut renderer = Renderer::default();
    loop {
        tokio::select! {
            item = stream.next() => match item? {
                Some(item) => output::out(&renderer.render(&item))?,
                None => return Ok(()),
            },
            line = lines.recv() => {
                let Some(line) = line else { return Ok(()) };
                if line.contains(&DETACH) {
                    return Ok(());
                }
                let text = String::from_utf8_lossy(&line).trim_end_matches('\n').to_owned();
                if text.trim().is_empty() {
                    continue;
                }
                let request = ControlRequest::SendMessage { task: task.to_owned(), text };
                let said = match Client::connect(paths).await?.call(request).await {
                    Ok(ControlReply::Sent { delivery, .. }) => format!("[sent: {}]\n", visible(&delivery)),
                    Ok(other) => return Err(unexpected(other)),
                    Err(e) => format!("[not sent: {}]\n", visible(&e.to_string())),
                };
                output::out(&said)?;
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Stream items as a person reads them: text inline, everything else on its own lines.
#[derive(Default)]
struct Renderer {
    /// The cursor is mid-line (after streamed text).
    mid_line: bool,
}

impl Renderer {
    fn render(&mut self, item: &StreamItem) -> String {
        if let StreamItem::Delta { delta: StreamDelta::Text { text, .. }, .. } = item {
            let text = visible_lines(text);
            self.mid_line = !text.ends_with('\n');
            return text;
        }
        let line = match item {
            StreamItem::Delta { delta: StreamDelta::ToolUseStart { name, .. }, .. } => {
                format!("[model calls {}]", visible(name))
            }
            StreamItem::Delta { .. } | StreamItem::CaughtUp { .. } => return String::new(),
            StreamItem::Event(e) => match &e.kind {
                EventKind::StatusChanged { to: TaskStatus::WaitingForUser { prompt }, .. } => {
                    format!("[question] {}", visible_lines(prompt))
                }
                EventKind::StatusChanged { .. } | EventKind::ToolCall { .. } | EventKind::ToolResult { .. } => {
                    format!("[{}] {}", e.kind.name(), detail(&e.kind))
                }
                _ => return String::new(),
            },
            StreamItem::Missed { .. } => missed_line(item),
            StreamItem::End { status } => format!("[the task ended: {}]", output::status_line(status)),
        };
        let lead = if std::mem::take(&mut self.mid_line) { "\n" } else { "" };
        format!("{lead}{line}\n")
    }
}

/// The terminal in line mode with Ctrl-] as an extra end of line; restored when dropped.
struct LineMode {
    saved: Option<Termios>,
}

impl LineMode {
    fn enter() -> Result<LineMode, CliError> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).map_err(|e| CliError::Failed(format!("cannot read the terminal's mode: {e}")))?;
        let mut mode = saved.clone();
        mode.control_chars[SpecialCharacterIndices::VEOL as usize] = DETACH;
        tcsetattr(&stdin, SetArg::TCSANOW, &mode)
            .map_err(|e| CliError::Failed(format!("cannot set the terminal's mode: {e}")))?;
        Ok(LineMode { saved: Some(saved) })
    }
}

impl Drop for LineMode {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use neuraphage_ipc::{TaskEvent, TaskId, TaskState};
    use pretty_assertions::assert_eq;

    use super::*;

    fn delta(text: &str) -> StreamItem {
        StreamItem::Delta { task: TaskId::from_bits(1), delta: StreamDelta::Text { index: 0, text: text.into() } }
    }

    #[test]
    fn streamed_text_is_inline_escaped_and_other_items_start_a_line() {
        let mut r = Renderer::default();
        assert_eq!(r.render(&delta("hi \u{1b}]0;pwned\u{7} \u{202e}x")), "hi \\u{1b}]0;pwned\\u{7} \\u{202e}x");
        let question = StreamItem::Event(TaskEvent {
            seq: 9,
            task: TaskId::from_bits(1),
            at: Utc::now(),
            kind: EventKind::StatusChanged {
                from: TaskState::Running,
                to: TaskStatus::WaitingForUser { prompt: "which\u{1b}[2J one?".into() },
            },
        });
        assert_eq!(r.render(&question), "\n[question] which\\u{1b}[2J one?\n");
        assert_eq!(r.render(&delta("two\nlines\n")), "two\nlines\n");
        assert_eq!(r.render(&StreamItem::CaughtUp { seq: 3 }), "");
    }
}
