//! The supervisor's error type.

use std::path::PathBuf;

use neuraphage_ipc::{ControlError, ErrorCode};

/// Everything that can go wrong in the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A request was refused; nothing was changed. Sent back to the client as is.
    #[error("{0}")]
    Refused(ControlError),
    /// Another supervisor holds this home (or runtime folder).
    #[error(
        "{what} {path} is held by another neuraphage-supervisor ({holder}); stop it first (`neuraphage daemon stop`)"
    )]
    AlreadyRunning {
        /// "home" or "runtime folder".
        what: &'static str,
        /// The folder.
        path: PathBuf,
        /// Who holds it, as the lock file says ("pid 123").
        holder: String,
    },
    /// A folder or file of the home could not be prepared.
    #[error("{path}: {reason}")]
    Home {
        /// The path.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// SQLite failed.
    #[error("task store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store's schema could not be brought up to date.
    #[error("task store schema: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// A stored row could not be read back.
    #[error("task store holds a corrupt row: {0}")]
    Corrupt(String),
    /// Any other I/O failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Result of supervisor operations.
pub type Result<T, E = SupervisorError> = std::result::Result<T, E>;

impl SupervisorError {
    /// A refusal of the given class.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> SupervisorError {
        SupervisorError::Refused(ControlError::new(code, message))
    }

    /// What the client is told.
    pub fn to_control_error(&self) -> ControlError {
        match self {
            SupervisorError::Refused(e) => e.clone(),
            other => ControlError::new(ErrorCode::Internal, format!("supervisor error, nothing was changed: {other}")),
        }
    }
}

/// Build a [`SupervisorError::Home`] from any displayable error.
pub fn home_error(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> SupervisorError {
    SupervisorError::Home { path: path.into(), reason: reason.to_string() }
}
