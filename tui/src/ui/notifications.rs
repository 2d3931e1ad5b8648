//! The Notifications pane: newest first — a task needs input and for what, completed, failed, a key revoked.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::app::App;
use crate::notices::NoticeKind;
use crate::text::{first_line, one_line};
use crate::theme::Theme;

/// Draw the pane.
pub fn draw(frame: &mut Frame<'_>, area: Rect, app: &App, theme: &Theme) {
    let block = super::pane(Line::styled(" Notifications ", theme.accent()), theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if app.notices.is_empty() {
        frame.render_widget(Paragraph::new(Line::styled("nothing yet", theme.dim())), inner);
        return;
    }
    let width = inner.width as usize;
    let lines: Vec<Line<'_>> = app
        .notices
        .iter()
        .take(inner.height as usize)
        .map(|n| {
            let style = match n.kind {
                NoticeKind::NeedsInput => theme.status(neuraphage_ipc::TaskState::WaitingForUser).1,
                NoticeKind::Completed => theme.ok(),
                NoticeKind::Failed | NoticeKind::KeyRevoked => theme.error(),
            };
            let time = n.at.with_timezone(&app.utc_offset).format("%H:%M").to_string();
            let desc =
                app.tasks.get(&n.task).map(|t| format!(" ({})", first_line(&t.description, 24))).unwrap_or_default();
            let head = format!("{}{desc} ", n.task);
            let text = crate::text::shorten(&one_line(&n.text), width.saturating_sub(6 + head.chars().count()));
            Line::from(vec![Span::styled(format!("{time} "), theme.dim()), Span::raw(head), Span::styled(text, style)])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}
