//! The key map: a key (or mouse wheel) in a given mode → a [`Command`]. One table, pure, so the bindings are
//! tested without a terminal and the help screen lists what is bound.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind};

use crate::app::Mode;

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Leave the dashboard.
    Quit,
    /// Show the keys.
    Help,
    /// Select the task above.
    Up,
    /// Select the task below.
    Down,
    /// Select the first task.
    Top,
    /// Select the last task.
    Bottom,
    /// Scroll the live pane (or the diff) back by rows.
    ScrollUp(u16),
    /// Scroll it forward.
    ScrollDown(u16),
    /// Attach to the selected task, full-screen.
    Attach,
    /// Back to the dashboard.
    Detach,
    /// Approve the pending permission request.
    Approve,
    /// Approve it and save a rule.
    ApproveAlways,
    /// Deny it (a reason is typed first, optional).
    Deny,
    /// Type a message to the task.
    Send,
    /// Pause, or resume a paused task.
    PauseResume,
    /// Kill (asks first).
    Kill,
    /// Queue a failed task again.
    Retry,
    /// Show the task's diff.
    Diff,
    /// Type a new task.
    NewTask,
    /// Type a filter.
    Filter,
    /// Cycle the status filter.
    CycleState,
    /// A typed character.
    Input(char),
    /// Delete the last typed character.
    Backspace,
    /// Enter on an input line.
    Submit,
    /// Escape: close what is open (an input, a dialog, the help, the filter).
    Cancel,
    /// Yes to a question.
    Yes,
}

/// Rows a page key scrolls.
pub const PAGE: u16 = 10;

/// The command for a key in `mode`.
pub fn command(mode: &Mode, key: KeyEvent) -> Option<Command> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c')) {
        return Some(if mode.typing() { Command::Cancel } else { Command::Quit });
    }
    if mode.typing() {
        return match key.code {
            KeyCode::Enter => Some(Command::Submit),
            KeyCode::Esc => Some(Command::Cancel),
            KeyCode::Backspace => Some(Command::Backspace),
            KeyCode::Char(c) if !ctrl => Some(Command::Input(c)),
            _ => None,
        };
    }
    match mode {
        Mode::ConfirmKill(_) => match key.code {
            KeyCode::Char('y' | 'Y') => Some(Command::Yes),
            _ => Some(Command::Cancel),
        },
        Mode::Help => Some(Command::Cancel),
        Mode::Diff(_) => match key.code {
            KeyCode::Char('j') | KeyCode::Down => Some(Command::ScrollDown(1)),
            KeyCode::Char('k') | KeyCode::Up => Some(Command::ScrollUp(1)),
            KeyCode::PageDown | KeyCode::Char(' ') => Some(Command::ScrollDown(PAGE)),
            KeyCode::PageUp => Some(Command::ScrollUp(PAGE)),
            KeyCode::Char('g') | KeyCode::Home => Some(Command::Top),
            KeyCode::Char('G') | KeyCode::End => Some(Command::Bottom),
            KeyCode::Char('q') | KeyCode::Char('d') | KeyCode::Char('D') | KeyCode::Esc => Some(Command::Cancel),
            _ => None,
        },
        Mode::Attached { .. } => match key.code {
            KeyCode::Char('j') | KeyCode::Down => Some(Command::ScrollDown(1)),
            KeyCode::Char('k') | KeyCode::Up => Some(Command::ScrollUp(1)),
            KeyCode::Char('d') | KeyCode::Esc => Some(Command::Detach),
            KeyCode::Enter | KeyCode::Char('s' | 'i') => Some(Command::Send),
            other => shared(other, ctrl),
        },
        Mode::Dashboard | Mode::Prompt { .. } => match key.code {
            KeyCode::Char('j') | KeyCode::Down => Some(Command::Down),
            KeyCode::Char('k') | KeyCode::Up => Some(Command::Up),
            KeyCode::Char('g') | KeyCode::Home => Some(Command::Top),
            KeyCode::Char('G') | KeyCode::End => Some(Command::Bottom),
            KeyCode::Enter => Some(Command::Attach),
            KeyCode::Char('d') => Some(Command::Detach),
            KeyCode::Char('s') => Some(Command::Send),
            KeyCode::Char('n') => Some(Command::NewTask),
            KeyCode::Char('/') => Some(Command::Filter),
            KeyCode::Char('f') => Some(Command::CycleState),
            KeyCode::Esc => Some(Command::Cancel),
            other => shared(other, ctrl),
        },
    }
}

/// Keys that mean the same on the dashboard and attached.
fn shared(code: KeyCode, ctrl: bool) -> Option<Command> {
    match code {
        KeyCode::Char('u') if ctrl => Some(Command::ScrollUp(PAGE)),
        KeyCode::Char('d') if ctrl => Some(Command::ScrollDown(PAGE)),
        KeyCode::PageUp => Some(Command::ScrollUp(PAGE)),
        KeyCode::PageDown => Some(Command::ScrollDown(PAGE)),
        KeyCode::Char('q') => Some(Command::Quit),
        KeyCode::Char('?') => Some(Command::Help),
        KeyCode::Char('a' | 'y') => Some(Command::Approve),
        KeyCode::Char('A') => Some(Command::ApproveAlways),
        KeyCode::Char('x') => Some(Command::Deny),
        KeyCode::Char('p') => Some(Command::PauseResume),
        KeyCode::Char('K') => Some(Command::Kill),
        KeyCode::Char('r') => Some(Command::Retry),
        KeyCode::Char('D') => Some(Command::Diff),
        _ => None,
    }
}

/// The command for a mouse event: the wheel scrolls the live pane or the diff.
pub fn mouse(event: MouseEvent) -> Option<Command> {
    match event.kind {
        MouseEventKind::ScrollUp => Some(Command::ScrollUp(3)),
        MouseEventKind::ScrollDown => Some(Command::ScrollDown(3)),
        _ => None,
    }
}

/// The help screen's lines: key, what it does.
pub const HELP: &[(&str, &str)] = &[
    ("j / k, ↓ / ↑", "select the next / previous task (attached: scroll)"),
    ("g / G", "first / last task"),
    ("Enter", "attach to the task full-screen (Enter or s there: type a message)"),
    ("d, Esc", "detach (back to the dashboard)"),
    ("a / y", "approve the task's pending permission request"),
    ("A", "approve always (also saves a rule)"),
    ("x", "deny the pending request, saying why (optional)"),
    ("s", "send the task a message (answers its question)"),
    ("p", "pause / resume"),
    ("K", "kill the task (asks first)"),
    ("r", "retry a failed task"),
    ("D", "show the task's diff (j/k, PgUp/PgDn scroll)"),
    ("n", "new task"),
    ("/", "filter by text; f: cycle the status filter; Esc clears"),
    ("PgUp / PgDn, wheel", "scroll the live pane"),
    ("?", "this help"),
    ("q, Ctrl-C", "quit (tasks go on)"),
];

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn the_same_key_means_what_the_mode_says() {
        assert_eq!(command(&Mode::Dashboard, key(KeyCode::Char('j'))), Some(Command::Down));
        assert_eq!(command(&Mode::Attached { input: None }, key(KeyCode::Char('j'))), Some(Command::ScrollDown(1)));
        assert_eq!(
            command(&Mode::Attached { input: Some(String::new()) }, key(KeyCode::Char('j'))),
            Some(Command::Input('j'))
        );
        assert_eq!(command(&Mode::Dashboard, key(KeyCode::Char('K'))), Some(Command::Kill));
        let confirm = Mode::ConfirmKill(neuraphage_ipc::TaskId::from_bits(1));
        assert_eq!(command(&confirm, key(KeyCode::Char('y'))), Some(Command::Yes));
        assert_eq!(command(&confirm, key(KeyCode::Char('q'))), Some(Command::Cancel));
        assert_eq!(command(&Mode::Help, key(KeyCode::Char('x'))), Some(Command::Cancel));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(command(&Mode::Dashboard, ctrl_c), Some(Command::Quit));
        assert_eq!(command(&Mode::Attached { input: Some("x".into()) }, ctrl_c), Some(Command::Cancel));
    }
}
