//! The CLI's errors and the one place that maps them to exit codes.

use neuraphage_ipc::ControlError;

/// Exit code for a usage error (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the supervisor is not running.
pub const EXIT_NOT_RUNNING: u8 = 3;
/// Exit code for every other failure.
pub const EXIT_FAILURE: u8 = 1;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The supervisor refused the request; nothing was changed.
    #[error("{0}")]
    Refused(ControlError),
    /// No supervisor answers on the control socket.
    #[error("{0}")]
    NotRunning(String),
    /// The arguments are wrong in a way clap cannot see.
    #[error("{0}")]
    Usage(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NotRunning(_) => EXIT_NOT_RUNNING,
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Refused(_) | CliError::Failed(_) => EXIT_FAILURE,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        CliError::Failed(e.to_string())
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> CliError {
        CliError::Failed(format!("cannot write JSON: {e}"))
    }
}
