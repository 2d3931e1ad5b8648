//! The selected task's live pane: its state, its plan with a progress bar, then its log — streamed text as it
//! arrives, each tool call on one line with its outcome, what was asked and said — from the end, scrolled back by
//! the keys or the wheel. Only the rows in view are wrapped.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use neuraphage_ipc::task::PlanStatus;
use neuraphage_ipc::{RunningPhase, Task, TaskStatus};

use crate::app::App;
use crate::live::{Entry, LiveLog, NoteKind};
use crate::text::{lines, one_line, shorten, wrap};
use crate::theme::Theme;

/// Most plan items listed (the bar counts them all).
const PLAN_SHOWN: usize = 8;

/// Draw the pane for the selected task.
pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App, theme: &Theme) {
    let task = app.selected_task();
    let title = match task {
        Some(t) => {
            format!(" {} · {} ", t.id, crate::text::first_line(&t.description, area.width.saturating_sub(20) as usize))
        }
        None => " Task ".to_owned(),
    };
    let block = super::pane(Line::styled(title, theme.accent()), theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(task) = task else {
        frame.render_widget(Paragraph::new(Line::styled("no task selected", theme.dim())), inner);
        return;
    };
    let log = app.logs.get(&task.id);
    let rows = content(task, log, app, theme, inner.width as usize, inner.height as usize, app.scroll);
    frame.render_widget(Paragraph::new(rows), inner);
}

/// The pane's rows: header and plan on top, then the log's last rows (scrolled back by `scroll`).
pub fn content<'a>(
    task: &Task,
    log: Option<&LiveLog>,
    app: &App,
    theme: &Theme,
    width: usize,
    height: usize,
    scroll: u16,
) -> Vec<Line<'a>> {
    let mut top = header(task, app, theme, width);
    if let Some(log) = log.filter(|l| !l.plan.is_empty()) {
        top.extend(plan(log, theme, width));
    }
    top.truncate(height.saturating_sub(1).max(1));
    let room = height.saturating_sub(top.len());
    let mut body = match log {
        Some(log) => tail(log, theme, width, room + scroll as usize),
        None => Vec::new(),
    };
    if body.is_empty() && room > 0 {
        body.push(Line::styled("(nothing yet: the model's text and tool calls show here as they happen)", theme.dim()));
    }
    // Rows from the end: skip `scroll` from the bottom, keep `room`.
    let end = body.len().saturating_sub(scroll as usize);
    let start = end.saturating_sub(room);
    top.extend(body.drain(start..end));
    top
}

fn header<'a>(task: &Task, app: &App, theme: &Theme, width: usize) -> Vec<Line<'a>> {
    let state = task.status.state();
    let (glyph, style) = theme.status(state);
    let detail = match &task.status {
        TaskStatus::Running { phase } => match phase {
            RunningPhase::ToolExecution { tool } => format!("running {}", one_line(tool)),
            RunningPhase::LlmQueued { detail } => format!("queued: {}", one_line(detail)),
            RunningPhase::LlmRequest => "waiting for the model".to_owned(),
            other => format!("{other:?}").to_lowercase(),
        },
        TaskStatus::Blocked { on } => format!("blocked on {}", one_line(on)),
        TaskStatus::Failed { error, .. } => format!("failed: {}", one_line(error)),
        TaskStatus::Completed { summary } => {
            format!("completed{}", summary.as_deref().map(|s| format!(": {}", one_line(s))).unwrap_or_default())
        }
        TaskStatus::Cancelled { .. } => "cancelled".to_owned(),
        TaskStatus::Paused => "paused (p resumes)".to_owned(),
        TaskStatus::Queued => "queued".to_owned(),
        TaskStatus::WaitingForUser { .. } => "waits on you".to_owned(),
    };
    let head =
        format!("{glyph} {} · {}", shorten(&detail, width.saturating_sub(12)), super::age(task.updated_at, app.now));
    let mut rows = vec![Line::styled(head, style)];
    if let TaskStatus::WaitingForUser { prompt } = &task.status {
        for line in lines(prompt, 6) {
            for row in wrap(&line, width) {
                rows.push(Line::styled(row, theme.banner()));
            }
        }
        rows.push(Line::styled("a approve · A always · x deny · s answer / send", theme.dim()));
    }
    rows
}

fn plan<'a>(log: &LiveLog, theme: &Theme, width: usize) -> Vec<Line<'a>> {
    let (done, total) = log.progress();
    let fraction = if total == 0 { 0.0 } else { done as f64 / total as f64 };
    let label = format!("Plan {done}/{total} ");
    let pct = format!(" {:>3.0}%", fraction * 100.0);
    let (full, empty) = super::bar(width.saturating_sub(label.len() + pct.len()).min(40), fraction);
    let mut rows = vec![Line::from(vec![
        Span::styled(label, theme.accent()),
        Span::styled(full, theme.gradient(fraction)),
        Span::styled(empty, theme.dim()),
        Span::raw(pct),
    ])];
    // The items around the one in progress.
    let at = log.plan.iter().position(|i| i.status != PlanStatus::Done).unwrap_or(0);
    let start = at.saturating_sub(2).min(log.plan.len().saturating_sub(PLAN_SHOWN));
    for item in log.plan.iter().skip(start).take(PLAN_SHOWN) {
        let (mark, style) = match item.status {
            PlanStatus::Done => ("✓", theme.ok()),
            PlanStatus::InProgress => ("▸", theme.accent()),
            PlanStatus::Pending => ("○", theme.dim()),
        };
        rows.push(Line::from(vec![
            Span::styled(format!(" {mark} "), style),
            Span::raw(shorten(&one_line(&item.content), width.saturating_sub(3))),
        ]));
    }
    rows
}

/// The log's last `want` rows, wrapped to `width`, oldest first.
fn tail<'a>(log: &LiveLog, theme: &Theme, width: usize, want: usize) -> Vec<Line<'a>> {
    let mut rows: Vec<Line<'a>> = Vec::new();
    if log.gaps > 0 {
        rows.push(Line::styled("(some streamed text was missed)", theme.dim()));
    }
    let mut from_end: Vec<Vec<Line<'a>>> = Vec::new();
    let mut count = 0;
    for entry in log.entries().iter().rev() {
        let entry_rows = entry_rows(entry, theme, width, want.saturating_sub(count));
        count += entry_rows.len();
        from_end.push(entry_rows);
        if count >= want {
            break;
        }
    }
    for entry_rows in from_end.into_iter().rev() {
        rows.extend(entry_rows);
    }
    rows
}

/// One entry's rows (at most its last `want` for long text).
fn entry_rows<'a>(entry: &Entry, theme: &Theme, width: usize, want: usize) -> Vec<Line<'a>> {
    match entry {
        Entry::Text(text) => {
            let mut out: Vec<Line<'a>> = Vec::new();
            for line in lines(text, want.max(1)).into_iter().rev() {
                let wrapped = wrap(&line, width);
                for row in wrapped.into_iter().rev() {
                    out.push(Line::raw(row));
                }
                if out.len() >= want {
                    break;
                }
            }
            out.reverse();
            out
        }
        Entry::Tool { tool, input, outcome, .. } => {
            let (mark, style, result) = match outcome {
                None => ("…", theme.tool(), String::new()),
                Some((false, r)) => ("✓", theme.ok(), r.clone()),
                Some((true, r)) => ("✗", theme.error(), r.clone()),
            };
            let head = format!("⚙ {} {}", one_line(tool), one_line(input));
            let tail = if result.is_empty() { String::new() } else { format!(" → {}", one_line(&result)) };
            let room = width.saturating_sub(2);
            let head = shorten(&head, room.saturating_sub(tail.chars().count().min(room / 2)));
            let tail = shorten(&tail, room.saturating_sub(head.chars().count()));
            vec![Line::from(vec![
                Span::styled(head, theme.tool()),
                Span::styled(tail, theme.dim()),
                Span::styled(format!(" {mark}"), style),
            ])]
        }
        Entry::Note(kind, text) => {
            let style = match kind {
                NoteKind::Status => theme.dim(),
                NoteKind::Attention => theme.banner(),
                NoteKind::Failure => theme.error(),
                NoteKind::User => theme.accent(),
            };
            let line = format!("» {}", one_line(text));
            wrap(&line, width)
                .into_iter()
                .map(|r| Line::styled(r, style))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .take(want.max(1))
                .rev()
                .collect()
        }
    }
}
