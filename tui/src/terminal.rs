//! The terminal while the dashboard runs: raw mode, the alternate screen, mouse reporting, the window title
//! (OSC 2, the old one pushed with `CSI 22;0t` and popped with `CSI 23;0t`) and desktop alerts by escape
//! (OSC 9, or OSC 777 where the terminal speaks that: VTE, foot, urxvt). All of it is undone when [`Term`] is
//! dropped, on every exit path, and by a panic hook before a panic's message is printed.
//!
//! Nothing a task wrote reaches these escapes unescaped: alert texts go through [`crate::text::one_line`], which
//! shows every control character (BEL, ESC, ST…) as text.

use std::io::{Stdout, Write};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::execute;
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

use crate::notices::{Notice, NoticeKind};

/// Which escape raises a desktop alert: `osc9`, `osc777` or `off` (default: by the terminal).
pub const ENV_TUI_ALERT: &str = "NEURAPHAGE_TUI_ALERT";

/// Longest alert text written.
const MAX_ALERT: usize = 200;

static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// How alerts are raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertEscape {
    /// `ESC ] 9 ; text BEL` (iTerm2, WezTerm, kitty, Windows Terminal, ghostty).
    Osc9,
    /// `ESC ] 777 ; notify ; title ; body BEL` (VTE terminals, foot, urxvt).
    Osc777,
    /// None.
    Off,
}

impl AlertEscape {
    /// The escape for this environment.
    pub fn detect(var: impl Fn(&str) -> Option<String>) -> AlertEscape {
        match var(ENV_TUI_ALERT).as_deref() {
            Some("osc9") => return AlertEscape::Osc9,
            Some("osc777") => return AlertEscape::Osc777,
            Some("off") => return AlertEscape::Off,
            _ => {}
        }
        let term = var("TERM").unwrap_or_default();
        if var("VTE_VERSION").is_some_and(|v| !v.is_empty()) || term.starts_with("foot") || term.contains("rxvt") {
            AlertEscape::Osc777
        } else {
            AlertEscape::Osc9
        }
    }

    /// The bytes that raise `notice` about a task described as `desc`.
    pub fn bytes(self, notice: &Notice, desc: &str) -> Option<String> {
        let what = match notice.kind {
            NoticeKind::NeedsInput => "needs you",
            NoticeKind::Completed => "completed",
            NoticeKind::Failed => "failed",
            NoticeKind::KeyRevoked => "key revoked",
        };
        let title = format!("neuraphage: {} {what}", notice.task);
        let body = crate::text::shorten(&crate::text::one_line(&format!("{desc} — {}", notice.text)), MAX_ALERT);
        match self {
            AlertEscape::Osc9 => Some(format!("\x1b]9;{title}: {}\x07", body.replace(';', ","))),
            AlertEscape::Osc777 => Some(format!("\x1b]777;notify;{title};{}\x07", body.replace(';', ","))),
            AlertEscape::Off => None,
        }
    }
}

/// The terminal, set up; restored when dropped.
pub struct Term {
    /// ratatui's terminal over crossterm.
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

/// Undo everything [`Term::enter`] did (idempotent).
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut out = std::io::stdout();
        let _ = execute!(out, DisableMouseCapture, LeaveAlternateScreen, crossterm::cursor::Show);
        let _ = out.write_all(b"\x1b[23;0t");
        let _ = out.flush();
        let _ = disable_raw_mode();
    }
}

impl Term {
    /// Raw mode, the alternate screen, the mouse, the title pushed; and the panic hook.
    pub fn enter() -> std::io::Result<Term> {
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut out = std::io::stdout();
        let setup = (|| {
            out.write_all(b"\x1b[22;0t")?;
            execute!(out, EnterAlternateScreen, EnableMouseCapture)?;
            Terminal::new(CrosstermBackend::new(std::io::stdout()))
        })();
        match setup {
            Ok(terminal) => Ok(Term { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    /// Set the window title (our own text: counts and glyphs).
    pub fn set_title(&mut self, title: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout();
        write!(out, "\x1b]2;{}\x07", crate::text::one_line(title))?;
        out.flush()
    }

    /// Write raw escape bytes (an alert).
    pub fn write_escape(&mut self, bytes: &str) -> std::io::Result<()> {
        let mut out = std::io::stdout();
        out.write_all(bytes.as_bytes())?;
        out.flush()
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        restore();
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use neuraphage_ipc::TaskId;
    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn an_alert_carries_no_control_character_a_task_wrote() {
        let notice = Notice {
            at: Utc::now(),
            task: TaskId::from_bits(0xabc),
            kind: NoticeKind::NeedsInput,
            text: "needs input: ok?\u{7}\u{1b}]2;pwned\u{1b}\\\u{9c}".into(),
        };
        let bytes = AlertEscape::Osc777.bytes(&notice, "fix; it").unwrap();
        assert_eq!(
            bytes,
            "\u{1b}]777;notify;neuraphage: np-0000000abc needs you;fix, it — needs input: ok?\\u{7}\\u{1b}]2,pwned\\u{1b}\\\\u{9c}\u{7}"
        );
        let inner = &bytes[1..bytes.len() - 1];
        assert!(!inner.chars().any(|c| c.is_control()), "{inner:?}");
        assert_eq!(AlertEscape::detect(|k| (k == "VTE_VERSION").then(|| "7600".into())), AlertEscape::Osc777);
        assert_eq!(AlertEscape::detect(|k| (k == ENV_TUI_ALERT).then(|| "off".into())), AlertEscape::Off);
        assert_eq!(AlertEscape::detect(|_| None), AlertEscape::Osc9);
    }
}
