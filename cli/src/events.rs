//! `neuraphage events`: the event stream, as JSON lines or as one escaped line per item; and the rendering of
//! stream items that `task attach` shares.

use std::fmt::Write as _;

use neuraphage_ipc::events::{StreamItem, Subscribe};
use neuraphage_ipc::llm::StreamDelta;
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::{EventKind, TaskEvent};

use crate::cli::EventsArgs;
use crate::client::Client;
use crate::error::CliError;
use crate::escape::{json_safe, visible};
use crate::output;

/// Print the stream until it ends (without `--follow`: once caught up).
pub async fn run(paths: &Paths, args: EventsArgs) -> Result<(), CliError> {
    let subscribe = Subscribe {
        task: args.task,
        since: Some(args.since.unwrap_or(0)),
        follow: args.follow,
        deltas: args.follow && args.deltas,
        until_end: false,
    };
    let mut stream = Client::connect(paths).await?.subscribe(subscribe).await?;
    loop {
        let item = tokio::select! {
            item = stream.next() => item?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(item) = item else { return Ok(()) };
        if args.json {
            output::out(&json_line(&item)?)?;
        } else if let Some(line) = item_line(&item) {
            output::out(&line)?;
        }
        if !args.follow && matches!(item, StreamItem::CaughtUp { .. }) {
            return Ok(());
        }
    }
}

/// One JSON line, with no character a terminal would act on.
pub fn json_line<T: serde::Serialize>(value: &T) -> Result<String, CliError> {
    Ok(format!("{}\n", json_safe(&serde_json::to_string(value)?)))
}

/// One line for a person (escaped), or none for items not worth one.
pub fn item_line(item: &StreamItem) -> Option<String> {
    Some(match item {
        StreamItem::Event(event) => format!("{}\n", event_line(event)),
        StreamItem::Delta { task, delta: StreamDelta::Text { text, .. } } => {
            format!("{:>8} {task} text {}\n", "", visible(text))
        }
        StreamItem::Delta { task, delta: StreamDelta::ToolUseStart { name, .. } } => {
            format!("{:>8} {task} tool use {}\n", "", visible(name))
        }
        StreamItem::Delta { .. } => return None,
        StreamItem::CaughtUp { seq } => format!("-- caught up at {seq}; live from here --\n"),
        StreamItem::Missed { .. } => format!("{}\n", missed_line(item)),
        StreamItem::End { status } => format!("-- the task ended: {} --\n", output::status_line(status)),
    })
}

/// What a subscriber that fell behind was told, in words.
pub fn missed_line(item: &StreamItem) -> String {
    let StreamItem::Missed { count, resume_from, through, deltas } = item else { return String::new() };
    let mut s = String::from("-- fell behind:");
    if *count > 0 {
        let _ =
            write!(s, " missed {count} events ({resume_from}..={through}; re-read with --since {})", resume_from - 1);
    }
    if *deltas > 0 {
        let _ = write!(s, " missed {deltas} pieces of streamed text (the conversation has them once the turn ends)");
    }
    s.push_str(" --");
    s
}

/// `seq time task kind: detail`, escaped.
pub fn event_line(e: &TaskEvent) -> String {
    format!("{:>8} {} {} {}", e.seq, e.at.format("%H:%M:%S"), e.task, output::event_text(e))
}

/// An event's detail on one line, escaped.
pub fn detail(kind: &EventKind) -> String {
    match kind {
        EventKind::StatusChanged { to, .. } => output::status_line(to),
        EventKind::ToolCall { tool, input, .. } => format!("{} {}", visible(tool), visible(input)),
        EventKind::ToolResult { tool, is_error, result, .. } => {
            let how = if *is_error { "error" } else { "ok" };
            format!("{} {how}: {}", visible(tool), visible(result))
        }
        EventKind::Cost { model, input_tokens, output_tokens, cost_nano_usd, .. } => {
            format!("{} {input_tokens} in, {output_tokens} out, ${:.6}", visible(model), *cost_nano_usd as f64 / 1e9)
        }
        other => {
            let data = serde_json::to_value(other).ok().and_then(|v| v.get("data").cloned()).unwrap_or_default();
            visible(&data.to_string())
        }
    }
}
