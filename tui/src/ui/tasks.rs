//! The Tasks pane: one row per task — status glyph and colour, id, description, state, time in state — waiting
//! tasks first, sub-tasks indented; only the rows in view are built, so 500 tasks cost what 30 do.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::App;
use crate::text::{first_line, width};
use crate::theme::Theme;

/// Draw the pane.
pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App, theme: &Theme) {
    let filter = app.tasks.filter();
    let mut title = format!(" Tasks {}/{} ", app.tasks.shown(), app.tasks.len());
    if let Some(state) = filter.state {
        title.push_str(&format!("[{}] ", super::state_word(state)));
    }
    if !filter.text.is_empty() {
        title.push_str(&format!("/{} ", crate::text::shorten(&crate::text::one_line(&filter.text), 20)));
    }
    let block = super::pane(Line::styled(title, theme.accent()), theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let height = inner.height as usize;
    if height == 0 {
        return;
    }
    if app.tasks.shown() == 0 {
        let text = if app.tasks.is_empty() { "no tasks yet — n: new task" } else { "no task matches the filter" };
        frame.render_widget(Paragraph::new(Line::styled(text, theme.dim())), inner);
        return;
    }
    // Keep the selection in view, moving the window as little as possible.
    let selected = app.selected.as_ref().and_then(|id| app.tasks.index_of(id));
    let mut offset = app.list_offset.get().min(app.tasks.shown().saturating_sub(height));
    if let Some(s) = selected {
        if s < offset {
            offset = s;
        } else if s >= offset + height {
            offset = s + 1 - height;
        }
    }
    app.list_offset.set(offset);
    let w = inner.width as usize;
    let show_state = w >= 50;
    let lines: Vec<Line<'_>> = app
        .tasks
        .window(offset, height)
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let state = row.task.status.state();
            let (glyph, style) = theme.status(state);
            let indent = "  ".repeat(row.depth as usize);
            let id = row.task.id.as_str().trim_start_matches(neuraphage_ipc::task::TASK_ID_PREFIX);
            let age = super::age(row.task.updated_at, app.now);
            let right =
                if show_state { format!(" {:<9}{age:>4}", super::state_word(state)) } else { format!(" {age:>4}") };
            let fixed = 2 + indent.len() + id.len() + 1 + width(&right);
            let desc = first_line(&row.task.description, w.saturating_sub(fixed));
            let pad = w.saturating_sub(fixed + width(&desc));
            let mut line = Line::from(vec![
                Span::styled(format!("{glyph} "), style),
                Span::raw(indent),
                Span::styled(id.to_owned(), theme.dim()),
                Span::raw(" "),
                Span::raw(desc),
                Span::raw(" ".repeat(pad)),
                Span::styled(right, style),
            ]);
            if Some(offset + i) == selected {
                line = line.patch_style(theme.selected());
            }
            line
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).style(Style::new()), inner);
}
