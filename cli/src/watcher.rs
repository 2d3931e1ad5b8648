//! `neuraphage watcher log`: the Watcher's interventions across tasks, newest first.

use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::personas::WatcherEntry;
use neuraphage_ipc::{ControlReply, ControlRequest};

use crate::client::{Client, unexpected};
use crate::error::CliError;
use crate::escape::visible;
use crate::output;

/// `neuraphage watcher log [--limit N] [--json]`.
pub async fn log(paths: &Paths, limit: u32, json: bool) -> Result<(), CliError> {
    let reply = Client::connect(paths).await?.call(ControlRequest::WatcherLog { limit }).await?;
    let ControlReply::WatcherLog(entries) = reply else { return Err(unexpected(reply)) };
    if json { output::json(&entries) } else { output::out(&render(&entries)) }
}

/// The log as text, escaped (the diagnosis is a model's words about what a task wrote).
pub fn render(entries: &[WatcherEntry]) -> String {
    if entries.is_empty() {
        return "no interventions\n".to_owned();
    }
    let mut s = String::new();
    for e in entries {
        let helped = match e.helped {
            Some(true) => " [helped]",
            Some(false) => " [did not help]",
            None => "",
        };
        s.push_str(&format!(
            "{} {} {} {} ({}%){helped}: {}\n",
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.task,
            visible(&e.rule),
            visible(&e.recommendation),
            e.confidence,
            visible(&e.diagnosis),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped() {
        let e = WatcherEntry {
            seq: 1,
            task: neuraphage_ipc::TaskId::from_bits(7),
            at: chrono::Utc::now(),
            rule: "same_failing_action".into(),
            recommendation: "nudge".into(),
            diagnosis: "bad\u{1b}]0;x\u{7}".into(),
            confidence: 90,
            helped: Some(true),
        };
        let out = render(&[e]);
        assert!(!out.contains('\u{1b}') && out.contains("[helped]") && out.contains("90%"), "{out}");
    }
}
