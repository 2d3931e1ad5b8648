//! What covers the dashboard or replaces it: the footer (key hints, an action's outcome, an input line), the help,
//! the kill confirmation, the attached view (one task full-screen with an input line) and the diff view.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use neuraphage_ipc::TaskId;

use crate::app::{App, DiffView, Mode, Purpose};
use crate::text::{one_line, shorten, width};
use crate::theme::Theme;

/// The bottom line: the input line while typing, else the last outcome, else the key hints.
pub fn footer(frame: &mut Frame<'_>, area: Rect, app: &App, theme: &Theme) {
    if let Mode::Prompt { purpose, text } = &app.mode {
        input_line(frame, area, &prompt_label(purpose), text, theme);
        return;
    }
    let line = match &app.flash {
        Some((text, error)) => {
            Line::styled(shorten(&one_line(text), area.width as usize), if *error { theme.error() } else { theme.ok() })
        }
        None => Line::styled(
            shorten(
                "j/k move · Enter attach · a approve · x deny · s send · p pause · K kill · r retry · D diff · n new · / filter · ? help · q quit",
                area.width as usize,
            ),
            theme.dim(),
        ),
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// What an input line is for, as its label.
pub fn prompt_label(purpose: &Purpose) -> String {
    match purpose {
        Purpose::NewTask => "new task › ".to_owned(),
        Purpose::Filter => "filter › ".to_owned(),
        Purpose::Message(id) => format!("message to {id} › "),
        Purpose::DenyReason { task, .. } => format!("deny {task}, why (optional; Enter denies, Esc keeps) › "),
    }
}

/// An input line with its cursor; the text's end is kept in view.
fn input_line(frame: &mut Frame<'_>, area: Rect, label: &str, text: &str, theme: &Theme) {
    let shown = one_line(text);
    let room = (area.width as usize).saturating_sub(width(label) + 1);
    let chars: Vec<char> = shown.chars().collect();
    let mut start = 0;
    while width(&chars[start..].iter().collect::<String>()) > room && start < chars.len() {
        start += 1;
    }
    let visible: String = chars[start..].iter().collect();
    let cursor_x = area.x + (width(label) + width(&visible)) as u16;
    frame.render_widget(
        Paragraph::new(Line::from(vec![Span::styled(label.to_owned(), theme.accent()), Span::raw(visible)])),
        area,
    );
    frame.set_cursor_position(Position::new(cursor_x.min(area.right().saturating_sub(1)), area.y));
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(area.x + (area.width - w) / 2, area.y + (area.height - h) / 2, w, h)
}

/// The keys.
pub fn help(frame: &mut Frame<'_>, area: Rect, theme: &Theme) {
    let keys = crate::keys::HELP;
    let popup = centered(area, 78, keys.len() as u16 + 4);
    frame.render_widget(Clear, popup);
    let block = super::pane(Line::styled(" Keys — any key closes ", theme.accent()), theme);
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    let key_width = keys.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    let lines: Vec<Line<'_>> = keys
        .iter()
        .map(|(k, what)| {
            Line::from(vec![Span::styled(format!(" {k:<key_width$}  "), theme.accent()), Span::raw(*what)])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

/// "Kill this task?"
pub fn confirm_kill(frame: &mut Frame<'_>, area: Rect, app: &App, id: &TaskId, theme: &Theme) {
    let popup = centered(area, 60, 5);
    frame.render_widget(Clear, popup);
    let block = super::pane(Line::styled(" Kill? ", theme.error()), theme);
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    let desc = app.tasks.get(id).map(|t| crate::text::first_line(&t.description, 40)).unwrap_or_default();
    let lines = vec![
        Line::raw(format!("Kill {id} ({desc})?")),
        Line::from(vec![Span::styled("y", theme.error()), Span::raw(": kill it · any other key: keep it")]),
    ];
    frame.render_widget(Paragraph::new(lines), inner);
}

/// One task full-screen, with its input line (`input`: its label and what is typed so far).
pub fn attached(frame: &mut Frame<'_>, area: Rect, app: &App, theme: &Theme, input: Option<(String, &str)>) {
    let [main, bottom] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(area);
    let Some(task) = app.selected_task() else {
        frame.render_widget(Paragraph::new("the task is gone · d: back"), main);
        return;
    };
    let title = format!(
        " {} · {} ",
        task.id,
        crate::text::first_line(&task.description, main.width.saturating_sub(20) as usize)
    );
    let block = super::pane(Line::styled(title, theme.accent()), theme)
        .title_bottom(Line::styled(" attached · d detach ", theme.dim()));
    let inner = block.inner(main);
    frame.render_widget(block, main);
    let rows = super::live::content(
        task,
        app.logs.get(&task.id),
        app,
        theme,
        inner.width as usize,
        inner.height as usize,
        app.scroll,
    );
    frame.render_widget(Paragraph::new(rows), inner);
    match input {
        Some((label, text)) => input_line(frame, bottom, &label, text, theme),
        None => {
            let line = match &app.flash {
                Some((text, error)) => Line::styled(
                    shorten(&one_line(text), bottom.width as usize),
                    if *error { theme.error() } else { theme.ok() },
                ),
                None => Line::styled(
                    shorten(
                        "Enter/s type a message · j/k scroll · a approve · x deny · p pause · K kill · D diff · d detach · q quit",
                        bottom.width as usize,
                    ),
                    theme.dim(),
                ),
            };
            frame.render_widget(Paragraph::new(line), bottom);
        }
    }
}

/// A task's diff, scrollable.
pub fn diff(frame: &mut Frame<'_>, area: Rect, view: &DiffView, theme: &Theme) {
    let total = view.lines.len();
    let title = format!(" Diff {} · line {} of {total} ", view.task, (view.scroll + 1).min(total.max(1)));
    let mut block = super::pane(Line::styled(title, theme.accent()), theme)
        .title_bottom(Line::styled(" j/k PgUp/PgDn g/G scroll · q/Esc close ", theme.dim()));
    if view.cut > 0 {
        block = block.title_bottom(Line::styled(
            format!(" {} more lines not shown: `neuraphage task diff {}` ", view.cut, view.task),
            theme.error(),
        ));
    }
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if view.loading {
        frame.render_widget(Paragraph::new(Line::styled("reading the diff…", theme.dim())), inner);
        return;
    }
    let lines: Vec<Line<'_>> = view
        .lines
        .iter()
        .skip(view.scroll)
        .take(inner.height as usize)
        .map(|l| {
            let style = if l.starts_with("+++") || l.starts_with("---") || l.starts_with("diff ") {
                theme.accent()
            } else if l.starts_with('+') {
                theme.added()
            } else if l.starts_with('-') {
                theme.removed()
            } else if l.starts_with("@@") {
                theme.hunk()
            } else {
                ratatui::style::Style::new()
            };
            Line::styled(shorten(&one_line(&l.replace('\t', "    ")), inner.width as usize), style)
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}
