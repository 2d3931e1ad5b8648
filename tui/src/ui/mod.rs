//! Drawing: the whole screen from an [`App`], one module per pane — [`tasks`], [`live`], [`stats`],
//! [`notifications`], [`banner`] — and the full-screen views and dialogs in [`overlay`]. Pure: the same state draws
//! the same screen (the snapshot tests rely on it). Everything a task wrote is escaped on its way in
//! ([`crate::text`]).

pub mod banner;
pub mod live;
pub mod notifications;
pub mod overlay;
pub mod stats;
pub mod tasks;

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::{Block, BorderType};

use crate::app::{App, Mode, Purpose};
use crate::theme::Theme;

/// Draw the screen.
pub fn draw(frame: &mut Frame<'_>, app: &App, theme: &Theme) {
    let area = frame.area();
    match &app.mode {
        Mode::Attached { input } => {
            overlay::attached(frame, area, app, theme, input.as_deref().map(|t| ("message › ".to_owned(), t)))
        }
        Mode::Prompt { purpose: purpose @ Purpose::DenyReason { attached: true, .. }, text } => {
            overlay::attached(frame, area, app, theme, Some((overlay::prompt_label(purpose), text)))
        }
        Mode::Diff(view) => overlay::diff(frame, area, view, theme),
        mode => {
            dashboard(frame, area, app, theme);
            match mode {
                Mode::Help => overlay::help(frame, area, theme),
                Mode::ConfirmKill(id) => overlay::confirm_kill(frame, area, app, id, theme),
                _ => {}
            }
        }
    }
}

fn dashboard(frame: &mut Frame<'_>, area: Rect, app: &App, theme: &Theme) {
    let banner = banner::text(app);
    let notifications = if area.height >= 32 { 8 } else { 5 };
    let [top, main, bottom, footer] = Layout::vertical([
        Constraint::Length(u16::from(banner.is_some())),
        Constraint::Min(8),
        Constraint::Length(notifications),
        Constraint::Length(1),
    ])
    .areas(area);
    if let Some(banner) = banner {
        banner::draw(frame, top, &banner, theme);
    }
    let [left, right] = Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(main);
    let [list, stats] = Layout::vertical([Constraint::Min(4), Constraint::Length(7)]).areas(left);
    tasks::draw(frame, list, app, theme);
    stats::draw(frame, stats, app, theme);
    live::draw(frame, right, app, theme);
    notifications::draw(frame, bottom, app, theme);
    overlay::footer(frame, footer, app, theme);
}

/// A pane's frame: rounded corners, its title.
pub fn pane<'a>(title: impl Into<ratatui::text::Line<'a>>, theme: &Theme) -> Block<'a> {
    Block::bordered().border_type(BorderType::Rounded).border_style(theme.border()).title(title.into())
}

/// How long ago, in one short word: `12s`, `5m`, `3h`, `2d`.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - since).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A fractional bar (▏▎▍▌▋▊▉█) of `width` cells filled to `fraction`, then `░` for the rest.
pub fn bar(width: usize, fraction: f64) -> (String, String) {
    const EIGHTHS: [char; 9] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    let eighths = (width as f64 * 8.0 * fraction.clamp(0.0, 1.0)).round() as usize;
    let mut filled = "█".repeat(eighths / 8);
    let mut used = eighths / 8;
    if !eighths.is_multiple_of(8) && used < width {
        filled.push(EIGHTHS[eighths % 8]);
        used += 1;
    }
    (filled, "░".repeat(width.saturating_sub(used)))
}

/// Short state names for the Tasks pane.
pub fn state_word(state: neuraphage_ipc::TaskState) -> &'static str {
    use neuraphage_ipc::TaskState::*;
    match state {
        Queued => "queued",
        Running => "running",
        WaitingForUser => "waiting",
        Blocked => "blocked",
        Paused => "paused",
        Completed => "done",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}
