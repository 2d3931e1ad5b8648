//! The banner over the dashboard: how many tasks wait on the user, for how long, and what the oldest asks; or that
//! the link to the supervisor is lost.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use crate::app::{App, Link};
use crate::theme::Theme;

/// The banner's text, if one is shown.
pub fn text(app: &App) -> Option<String> {
    if let Link::Lost(why) = &app.link {
        return Some(format!(" ⚠ no link to the supervisor ({}); reconnecting…", crate::text::one_line(why)));
    }
    let waiting = app.tasks.waiting();
    let oldest = waiting.first()?;
    let n = waiting.len();
    let what = App::prompt_of(oldest).map(|p| crate::text::first_line(p, 200)).unwrap_or_default();
    Some(format!(
        " ◐ {n} task{} wait{} on you · oldest {} ({}): {what}",
        if n == 1 { "" } else { "s" },
        if n == 1 { "s" } else { "" },
        super::age(oldest.updated_at, app.now),
        oldest.id,
    ))
}

/// Draw it.
pub fn draw(frame: &mut Frame<'_>, area: Rect, text: &str, theme: &Theme) {
    frame.render_widget(Paragraph::new(Line::raw(text.to_owned())).style(theme.banner()), area);
}
