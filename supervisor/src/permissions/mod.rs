//! Layered permissions (issue 12), decided by the supervisor before a tool runs, in this order: the policy
//! (`security.policy`: blocked commands and paths, built-in defaults), the user's rules (`security.permissions`, and
//! rules saved from answers), runtime limits (`security.runtime`: calls per minute), and the human
//! (`security.permission-mode`: auto, ask or deny).
//!
//! [`settings`] reads `security:`; [`shell`] takes a Bash command line apart with tree-sitter-bash; [`pattern`]
//! matches command and path patterns; [`paths`] lists the paths a command line names; [`policy`] is the pure decision; [`rate`] counts calls per task; [`gate`]
//! answers a worker's `Permission` request (storing what asks, in `store/permissions.rs`); [`answer`] carries out
//! `task approve` / `task deny` / `permissions list|rm`; [`timeout`] denies requests left unanswered; [`network`] asks about hosts a profile does not list.

pub mod answer;
pub mod display;
pub mod gate;
pub mod network;
pub mod paths;
pub mod pattern;
pub mod policy;
pub mod rate;
pub mod settings;
pub mod shell;
pub mod timeout;

/// Longest command or path kept in an event (longer ones are cut, with a note).
pub const MAX_EVENT_TEXT: usize = 4096;

/// `text` cut to [`MAX_EVENT_TEXT`] bytes at a character boundary, with a note when cut.
pub fn bounded(text: &str) -> String {
    if text.len() <= MAX_EVENT_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_EVENT_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut: {} bytes in all)", &text[..end], text.len())
}
