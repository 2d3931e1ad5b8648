//! How results are printed: text for people, `--json` for programs.

use std::fmt::Write as _;
use std::io::Write;

use chrono::{DateTime, Utc};
use neuraphage_ipc::cost::{CostGrouping, CostLine, CostTotals};
use neuraphage_ipc::lock::LockTableView;
use neuraphage_ipc::{DaemonStatus, EventKind, RunningPhase, Task, TaskDetail, TaskEvent, TaskRef, TaskStatus};
use serde::Serialize;

use crate::error::CliError;
use crate::escape::{visible, visible_lines};

/// Widest description shown in a table row.
const DESCRIPTION_WIDTH: usize = 60;

/// Write text to stdout. A closed pipe (`| head`) is not an error.
pub fn out(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Pretty JSON on stdout, one document, with no character a terminal would act on ([`crate::escape::json_safe`]).
pub fn json<T: Serialize>(value: &T) -> Result<(), CliError> {
    out(&format!("{}\n", crate::escape::json_safe(&serde_json::to_string_pretty(value)?)))
}

/// A short age like `5s`, `3m`, `2h`, `4d`.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - since).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The first non-blank line of a description, cut to `width` characters.
fn short(description: &str, width: usize) -> String {
    let description = visible_lines(description.trim());
    let line = description.lines().next().unwrap_or("");
    let more = line.len() < description.len();
    if line.chars().count() > width {
        let cut: String = line.chars().take(width - 1).collect();
        format!("{cut}…")
    } else if more {
        format!("{line} …")
    } else {
        line.to_owned()
    }
}

/// The status with its most useful detail, for one line.
pub fn status_line(status: &TaskStatus) -> String {
    match status {
        TaskStatus::Running { phase } => match phase {
            RunningPhase::Initializing => "Running: starting".to_owned(),
            RunningPhase::AssemblingContext => "Running: assembling context".to_owned(),
            RunningPhase::LlmRequest => "Running: waiting for the model".to_owned(),
            RunningPhase::LlmQueued { detail } => format!("Running: LlmRequest, {}", visible(detail)),
            RunningPhase::ToolExecution { tool } => format!("Running: {}", visible(tool)),
            RunningPhase::Processing => "Running: thinking".to_owned(),
        },
        TaskStatus::WaitingForUser { prompt } => format!("WaitingForUser: {}", short(prompt, 40)),
        TaskStatus::Blocked { on } => format!("Blocked on {}", visible(on)),
        TaskStatus::Failed { error, recoverable } => {
            format!("Failed{}: {}", if *recoverable { " (recoverable)" } else { "" }, short(error, 40))
        }
        TaskStatus::Cancelled { reason: Some(reason) } => format!("Cancelled: {}", short(reason, 40)),
        TaskStatus::Completed { summary: Some(summary) } => format!("Completed: {}", short(summary, 40)),
        other => other.state().to_string(),
    }
}

/// `task list` as a table.
pub fn task_table(tasks: &[Task], now: DateTime<Utc>) -> String {
    if tasks.is_empty() {
        return "no tasks\n".to_owned();
    }
    let mut s = format!("{:<13}  {:<14}  {:>3}  {:>4}  DESCRIPTION\n", "ID", "STATUS", "PRI", "AGE");
    for t in tasks {
        let _ = writeln!(
            s,
            "{:<13}  {:<14}  {:>3}  {:>4}  {}",
            t.id,
            t.status.state(),
            t.priority,
            age(t.created_at, now),
            short(&t.description, DESCRIPTION_WIDTH)
        );
    }
    s
}

/// `task list --tree`: the table with each sub-task under its parent, indented two spaces per level (a task whose
/// parent is not listed is shown at the top level; order otherwise as given).
pub fn task_tree(tasks: &[Task], now: DateTime<Utc>) -> String {
    if tasks.is_empty() {
        return "no tasks\n".to_owned();
    }
    let listed: std::collections::HashSet<&neuraphage_ipc::TaskId> = tasks.iter().map(|t| &t.id).collect();
    let mut under: std::collections::HashMap<&neuraphage_ipc::TaskId, Vec<&Task>> = Default::default();
    let mut tops = Vec::new();
    for t in tasks {
        match t.parent.as_ref().filter(|p| listed.contains(p)) {
            Some(p) => under.entry(p).or_default().push(t),
            None => tops.push(t),
        }
    }
    let mut s = format!("{:<13}  {:<14}  {:>3}  {:>4}  DESCRIPTION\n", "ID", "STATUS", "PRI", "AGE");
    // Depth-first, without recursion; a parent chain is acyclic (a task's parent exists before it).
    let mut stack: Vec<(&Task, usize)> = tops.into_iter().rev().map(|t| (t, 0)).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some((t, depth)) = stack.pop() {
        if !seen.insert(&t.id) {
            continue;
        }
        let _ = writeln!(
            s,
            "{}{:<13}  {:<14}  {:>3}  {:>4}  {}",
            "  ".repeat(depth.min(16)),
            t.id,
            t.status.state(),
            t.priority,
            age(t.created_at, now),
            short(&t.description, DESCRIPTION_WIDTH)
        );
        if let Some(kids) = under.get(&t.id) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    s
}

/// `task show` as text.
pub fn task_detail(d: &TaskDetail, now: DateTime<Utc>) -> String {
    let t = &d.task;
    let mut s = String::new();
    let _ = writeln!(s, "{}  {}", t.id, status_line(&t.status));
    let _ = writeln!(s, "  priority     {}", t.priority);
    let _ = writeln!(s, "  tier         {}", visible(t.tier.as_deref().unwrap_or("worker (default)")));
    let _ =
        writeln!(s, "  created      {} ({} ago)", t.created_at.format("%Y-%m-%d %H:%M:%S UTC"), age(t.created_at, now));
    let _ = writeln!(s, "  repo         {}", visible(t.repo.as_deref().unwrap_or("-")));
    let _ = writeln!(s, "  profile      {}", visible(t.profile.as_deref().unwrap_or("default")));
    if let Some(parent) = &t.parent {
        let _ = writeln!(s, "  parent       {parent}");
    }
    let refs = |s: &mut String, title: &str, refs: &[TaskRef]| {
        if !refs.is_empty() {
            let _ = writeln!(s, "  {title}");
            for r in refs {
                let _ = writeln!(s, "    {}  {:<14}  {}", r.id, r.status, short(&r.description, DESCRIPTION_WIDTH));
            }
        }
    };
    refs(&mut s, "waits for", &d.blocked_by);
    refs(&mut s, "blocks", &d.blocks);
    refs(&mut s, "sub-tasks", &d.children);
    let _ = writeln!(s, "  tokens       {}", tokens(&d.cost));
    let _ = writeln!(s, "  cost         {}", usd(&d.cost));
    if !d.children.is_empty() {
        let _ = writeln!(s, "  tree cost    {} ({}; with its sub-tasks)", usd(&d.tree_cost), tokens(&d.tree_cost));
    }
    let _ = writeln!(s, "  description\n    {}", visible_lines(&t.description).replace('\n', "\n    "));
    s.push_str(&plan_text(&d.plan));
    let _ = writeln!(s, "  events");
    for e in &d.events {
        let _ = writeln!(s, "    #{:<6} {}  {}", e.seq, e.at.format("%H:%M:%S%.3f"), event_text(e));
    }
    s
}

/// The task's plan (its latest `TodoWrite`): "Plan: 3/7 done", then each item with a mark (`[x]` done, `[>]` in
/// progress, `[ ]` pending), escaped. Empty when there is none.
pub fn plan_text(plan: &[neuraphage_ipc::task::PlanItem]) -> String {
    use neuraphage_ipc::task::PlanStatus;
    if plan.is_empty() {
        return String::new();
    }
    let done = plan.iter().filter(|i| i.status == PlanStatus::Done).count();
    let mut s = format!("  Plan: {done}/{} done\n", plan.len());
    for item in plan {
        let mark = match item.status {
            PlanStatus::Done => "[x]",
            PlanStatus::InProgress => "[>]",
            PlanStatus::Pending => "[ ]",
        };
        let _ = writeln!(s, "    {mark} {}", visible(&item.content));
    }
    s
}

/// One event in words, escaped.
pub fn event_text(e: &TaskEvent) -> String {
    match &e.kind {
        EventKind::Created { priority } => format!("created (priority {priority})"),
        EventKind::DependencyAdded { on } => format!("waits for {on}"),
        EventKind::StatusChanged { from, to } => format!("{from} → {}", status_line(to)),
        EventKind::WorkerStarted { pid, workdir } => format!("worker started (pid {pid}) in {}", visible(workdir)),
        EventKind::Checkpoint { seq, point, commit } => {
            format!("checkpoint {seq} {} ({})", visible(point), short_commit(commit))
        }
        EventKind::WorkerExited { status } => format!("worker exited ({})", visible(status)),
        EventKind::Sandboxed { profile, kernel_abi, enforced, missing } => {
            let mut s =
                format!("sandbox {} (landlock ABI {kernel_abi}): {}", visible(profile), visible(&enforced.join("; ")));
            if !missing.is_empty() {
                s.push_str(&format!("; NOT ENFORCED on this kernel: {}", visible(&missing.join("; "))));
            }
            s
        }
        EventKind::ProxyDecision { host, port, allowed, reason } => {
            let verdict = if *allowed { "allowed" } else { "refused" };
            format!("proxy {verdict} {}:{port} ({})", visible(host), visible(reason))
        }
        EventKind::ConversationRepaired { report } => format!("conversation repaired: {}", visible(report)),
        EventKind::WorkerLost { reason, attempt, retry_in_ms } => {
            format!("worker lost ({}); restart {attempt} in {retry_in_ms} ms", visible(reason))
        }
        EventKind::Committed { branch, commit } => {
            format!("committed {} to {}", short_commit(commit), visible(branch))
        }
        EventKind::Escalated { from, to, reason } => {
            format!("escalated from tier {} to {}: {}", visible(from), visible(to), visible(reason))
        }
        EventKind::SnapshotNote { note, path } => format!("snapshot: {} {}", visible(note), visible(path)),
        EventKind::KeyRevoked { pool, key, reason } => {
            format!(
                "key {} of pool {} refused and taken out of the pool: {}",
                visible(key),
                visible(pool),
                visible(reason)
            )
        }
        EventKind::EventsCapped { capped, cap } => {
            format!("{} events reached the task's cap of {cap}; later ones are only logged", visible(capped))
        }
        EventKind::PausedBySupervisor { reason } => format!("paused: {}", visible(reason)),
        EventKind::UserMessage { id, text, delivery } => {
            format!("user message #{id} ({}): {}", visible(delivery), visible(text))
        }
        EventKind::Advice { id, from, text } => format!("advice #{id} from {}: {}", visible(from), visible(text)),
        EventKind::SubtaskCreated { child, depth } => format!("sub-task {child} created (depth {depth})"),
        EventKind::SubtaskEnded { child, outcome } => format!("sub-task {child} ended: {}", visible(outcome)),
        EventKind::KnowledgeInjected { ids } => format!("knowledge injected: {}", visible(&ids.join(", "))),
        EventKind::KnowledgeRecorded { id, title, how, updated } => {
            let verb = if *updated { "updated" } else { "recorded" };
            format!("learning {} {verb} ({}): {}", visible(id), visible(how), visible(title))
        }
        EventKind::KnowledgeRelayed { learning, from, to } => {
            format!("learning {} relayed from {from} to {to}", visible(learning))
        }
        EventKind::PlanUpdated { items } => {
            let done = items.iter().filter(|i| i.status == neuraphage_ipc::task::PlanStatus::Done).count();
            format!("plan: {done}/{} done", items.len())
        }
        EventKind::Notice { notice, message } => format!("{}: {}", visible(notice), visible(message)),
        EventKind::QuestionAsked { question, options } => {
            let mut s = format!("asks the user: {}", visible(question));
            if !options.is_empty() {
                s.push_str(&format!(" (options: {})", visible(&options.join(" | "))));
            }
            s
        }
        EventKind::QuestionAnswered { id, text } => format!("answered (message #{id}): {}", visible(text)),
        EventKind::PermissionRequested { tool, subject, by, .. } => {
            format!("permission asked: {} `{}` ({})", visible(tool), visible(subject), visible(by))
        }
        EventKind::PermissionDecided { tool, subject, allowed, by, .. } => {
            let verdict = if *allowed { "allowed" } else { "denied" };
            format!("permission {verdict}: {} `{}` by {}", visible(tool), visible(subject), visible(by))
        }
        EventKind::PersonaSelected { persona, reason } => {
            format!("persona {} ({})", visible(persona), visible(reason))
        }
        EventKind::WatcherIntervened { rule, recommendation, diagnosis, confidence } => format!(
            "watcher flagged {}: {} ({confidence}% sure): {}",
            visible(rule),
            visible(recommendation),
            visible(diagnosis)
        ),
        EventKind::WatcherOutcome { rule, helped } => {
            let how = if *helped { "helped" } else { "did not help" };
            format!("watcher's nudge for {} {how}", visible(rule))
        }
        EventKind::ToolCall { .. } | EventKind::ToolResult { .. } | EventKind::Cost { .. } => {
            format!("{} {}", e.kind.name(), crate::events::detail(&e.kind))
        }
    }
}

/// The first ten characters of a commit id, shown visible (never cut inside a character).
fn short_commit(commit: &str) -> String {
    visible(&commit.chars().take(10).collect::<String>())
}

/// A conversation (`task log`) as text.
pub fn conversation(messages: &[neuraphage_ipc::llm::Message]) -> String {
    use neuraphage_ipc::llm::{ContentBlock, Speaker};
    if messages.is_empty() {
        return "no conversation yet\n".to_owned();
    }
    let mut s = String::new();
    for m in messages {
        let who = match m.role {
            Speaker::User => "user",
            Speaker::Assistant => "model",
        };
        for block in &m.content {
            let _ = match block {
                ContentBlock::Text { text } => writeln!(s, "[{who}] {}", visible_lines(text)),
                ContentBlock::ToolUse { name, input, .. } => {
                    writeln!(s, "[{who}] → {} {}", visible(name), visible(&input.to_string()))
                }
                ContentBlock::ToolResult { content, is_error, .. } => {
                    let mark = if *is_error { "tool error" } else { "tool" };
                    writeln!(s, "[{mark}] {}", short(content, 200))
                }
                ContentBlock::Thinking { thinking, .. } => writeln!(s, "[{who} thinking] {}", short(thinking, 200)),
                ContentBlock::RedactedThinking { .. } => writeln!(s, "[{who} thinking] (redacted)"),
            };
        }
    }
    s
}

/// `daemon status` as text.
pub fn daemon_status(st: &DaemonStatus) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "neuraphage-supervisor {} is running", st.version);
    let _ = writeln!(s, "  pid       {}", st.pid);
    let _ = writeln!(
        s,
        "  uptime    {}",
        age(st.started_at, st.started_at + chrono::Duration::seconds(st.uptime_secs as i64))
    );
    let _ = writeln!(s, "  home      {}", st.home);
    let _ = writeln!(s, "  socket    {}", st.control_socket);
    let _ = writeln!(s, "  protocol  {}", st.protocol);
    let counts: Vec<String> =
        st.tasks.iter().filter(|(_, n)| **n > 0).map(|(state, n)| format!("{n} {state}")).collect();
    let total: u64 = st.tasks.values().sum();
    let _ = writeln!(
        s,
        "  tasks     {total}{}",
        if counts.is_empty() { String::new() } else { format!(" ({})", counts.join(", ")) }
    );
    s
}

/// Tokens of some responses, in words.
fn tokens(c: &CostTotals) -> String {
    format!(
        "{} in, {} out, {} cache read, {} cache write ({} responses)",
        c.input_tokens, c.output_tokens, c.cache_read_tokens, c.cache_write_tokens, c.responses
    )
}

/// A cost in dollars, with the unpriced responses said.
fn usd(c: &CostTotals) -> String {
    let mut s = format!("${:.6}", c.cost_usd());
    if c.unpriced_responses > 0 {
        let _ = write!(
            s,
            " + {} unpriced responses ({}: not in the price table, counted as $0)",
            c.unpriced_responses,
            visible(&c.unpriced_models.join(", "))
        );
    }
    s
}

/// `neuraphage locks` as text.
pub fn lock_table(t: &LockTableView) -> String {
    let mut s = String::new();
    if let Some(ms) = t.grace_remaining_ms {
        let _ = writeln!(s, "broker restarted: holders re-claim their locks for {:.1} s more", ms as f64 / 1000.0);
    }
    if t.locks.is_empty() {
        s.push_str("no locks held\n");
        return s;
    }
    let _ = writeln!(s, "{:<40}  {:<13}  {:>8}  WAITERS", "RESOURCE", "HOLDER", "HELD");
    for l in &t.locks {
        let waiters: Vec<String> = l.waiters.iter().map(|w| visible(w.as_str())).collect();
        let held = format!("{:.1}s", l.held_ms as f64 / 1000.0);
        let _ = writeln!(
            s,
            "{:<40}  {:<13}  {held:>8}  {}",
            visible(&l.resource),
            visible(l.holder.as_str()),
            waiters.join(" ")
        );
    }
    s
}

/// `neuraphage cost` as text.
pub fn cost_report(by: CostGrouping, lines: &[CostLine], total: &CostTotals) -> String {
    let title = match by {
        CostGrouping::Task => "TASK",
        CostGrouping::Model => "MODEL",
        CostGrouping::Day => "DAY",
    };
    let mut s = format!("{title:<32}  {:>9}  {:>12}  {:>12}  {:>12}\n", "RESPONSES", "INPUT", "OUTPUT", "COST (USD)");
    let mut line = |key: &str, c: &CostTotals| {
        let mark = if c.unpriced_responses > 0 { "  (unpriced: counted as $0)" } else { "" };
        let _ = writeln!(
            s,
            "{:<32}  {:>9}  {:>12}  {:>12}  {:>12.6}{mark}",
            short(&visible(key), 32),
            c.responses,
            c.input_tokens,
            c.output_tokens,
            c.cost_usd()
        );
    };
    for l in lines {
        line(&l.key, &l.totals);
    }
    line("total", total);
    if !total.unpriced_models.is_empty() {
        let _ = writeln!(
            s,
            "unpriced models (add them under prices: in neuraphage.yaml): {}",
            visible(&total.unpriced_models.join(", "))
        );
    }
    s
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
