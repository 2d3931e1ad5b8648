//! The dashboard's errors.

/// Why the dashboard could not run.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    /// No supervisor answers on the control socket.
    #[error("{0}")]
    NotRunning(String),
    /// The terminal could not be set up or written.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
    /// Standard input or output is not a terminal.
    #[error("`neuraphage tui` needs a terminal (stdin and stdout); use `neuraphage events --follow` in a pipe")]
    NotATerminal,
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}
