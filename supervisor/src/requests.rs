//! Answers control requests: validates what the client sent, then reads or writes the store.
//!
//! [`Daemon::handle`] is synchronous (SQLite and git2 block); the server calls it on a blocking thread. A mutating
//! request's reply is built only after its transaction has committed. Bad input is refused with a message that says
//! what was wrong and where, and changes nothing.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use git2::{Repository, RepositoryOpenFlags};
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::{
    ControlReply, ControlRequest, DaemonStatus, ErrorCode, MAX_DESCRIPTION_BYTES, NewTask, PROTOCOL_VERSION, Priority,
    TaskId,
};

use crate::error::{Result, SupervisorError};
use crate::store::Store;
use crate::store::tasks::TaskDraft;

/// How many recent events `task show` returns.
pub const SHOW_EVENTS: usize = 50;

/// Longest sandbox profile name.
const MAX_PROFILE_NAME: usize = 64;

/// The supervisor's shared state, as requests see it.
#[derive(Debug)]
pub struct Daemon {
    store: Mutex<Store>,
    paths: Paths,
    started_at: DateTime<Utc>,
    started: Instant,
}

impl Daemon {
    /// Wrap an open store.
    pub fn new(store: Store, paths: Paths) -> Daemon {
        Daemon { store: Mutex::new(store), paths, started_at: Utc::now(), started: Instant::now() }
    }

    /// Answer one request. [`ControlRequest::Shutdown`] is the server's to act on; here it is only acknowledged.
    pub fn handle(&self, request: ControlRequest) -> ControlReply {
        match self.dispatch(request) {
            Ok(reply) => reply,
            Err(err) => {
                if !matches!(err, SupervisorError::Refused(_)) {
                    tracing::error!(error = %err, "request failed");
                }
                ControlReply::Error(err.to_control_error())
            }
        }
    }

    fn store(&self) -> Result<std::sync::MutexGuard<'_, Store>> {
        // A panic while holding the lock cannot leave SQLite half-written (the transaction rolls back), so a
        // poisoned lock is safe to keep using.
        Ok(self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn dispatch(&self, request: ControlRequest) -> Result<ControlReply> {
        Ok(match request {
            ControlRequest::DaemonStatus => ControlReply::Status(self.status()?),
            ControlRequest::Shutdown => ControlReply::ShuttingDown { pid: std::process::id() },
            ControlRequest::CreateTask(new) => {
                let draft = self.validate(new)?;
                let task = self.store()?.create_task(&draft)?;
                tracing::info!(task = %task.id, priority = %task.priority, "task created");
                ControlReply::Task(task)
            }
            ControlRequest::ListTasks { state } => ControlReply::Tasks(self.store()?.list(state)?),
            ControlRequest::ShowTask { task } => {
                let store = self.store()?;
                let id = store.resolve(&task)?;
                ControlReply::Detail(Box::new(store.detail(&id, SHOW_EVENTS)?))
            }
            ControlRequest::AddDependency { task, on } => {
                let mut store = self.store()?;
                let (task, on) = (store.resolve(&task)?, store.resolve(&on)?);
                let added = store.add_dependency(&task, &on)?;
                tracing::info!(%task, %on, added, "dependency");
                ControlReply::DependencyAdded { task, on, added }
            }
            ControlRequest::KillTask { task, reason } => {
                let mut store = self.store()?;
                let id = store.resolve(&task)?;
                let task = store.cancel(&id, reason)?;
                tracing::info!(task = %id, "task cancelled");
                ControlReply::Task(task)
            }
        })
    }

    fn status(&self) -> Result<DaemonStatus> {
        Ok(DaemonStatus {
            pid: std::process::id(),
            started_at: self.started_at,
            uptime_secs: self.started.elapsed().as_secs(),
            home: self.paths.home.display().to_string(),
            control_socket: self.paths.control_socket().display().to_string(),
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            tasks: self.store()?.counts()?,
        })
    }

    /// Check a new task's fields and resolve its dependencies.
    fn validate(&self, new: NewTask) -> Result<TaskDraft> {
        let description = validate_description(new.description)?;
        let priority = Priority::try_from(new.priority).map_err(|_| {
            invalid(format!("priority {} is outside 0..4 (0 = critical, 2 = default, 4 = low)", new.priority))
        })?;
        let repo = new.repo.as_deref().map(validate_repo).transpose()?;
        let profile = new.profile.map(validate_profile).transpose()?;
        let store = self.store()?;
        let mut after: Vec<TaskId> = Vec::new();
        for typed in &new.after {
            let id = store.resolve(typed)?;
            if !after.contains(&id) {
                after.push(id);
            }
        }
        Ok(TaskDraft { description, priority, repo, profile, parent: None, after })
    }
}

fn invalid(message: String) -> SupervisorError {
    SupervisorError::refused(ErrorCode::InvalidArgument, message)
}

fn validate_description(description: String) -> Result<String> {
    if description.trim().is_empty() {
        return Err(invalid("the task description is empty; say what the task should do".into()));
    }
    if description.len() > MAX_DESCRIPTION_BYTES {
        return Err(invalid(format!(
            "the task description is {} bytes; the limit is {MAX_DESCRIPTION_BYTES} bytes (64 KiB)",
            description.len()
        )));
    }
    if let Some(at) = description.find('\0') {
        return Err(invalid(format!("the task description contains a NUL byte at byte {at}")));
    }
    Ok(description)
}

/// The repository must be the top of a non-bare git work tree. Opening it with git2 runs nothing from it.
fn validate_repo(repo: &str) -> Result<String> {
    let path = Path::new(repo);
    if !path.is_absolute() {
        return Err(invalid(format!("--repo {repo}: the supervisor needs an absolute path")));
    }
    if !path.is_dir() {
        return Err(invalid(format!("--repo {repo}: no such folder")));
    }
    let no_search = RepositoryOpenFlags::NO_SEARCH;
    let opened = Repository::open_ext(path, no_search, std::iter::empty::<&std::ffi::OsStr>());
    let repository = match opened {
        Ok(r) => r,
        Err(e) => {
            let hint = match Repository::discover(path).ok().and_then(|r| r.workdir().map(Path::to_path_buf)) {
                Some(top) => format!("; it is inside the repository at {}, pass that instead", top.display()),
                None => String::new(),
            };
            return Err(invalid(format!("--repo {repo} is not a git repository ({}){hint}", e.message())));
        }
    };
    let Some(workdir) = repository.workdir() else {
        return Err(invalid(format!("--repo {repo} is a bare repository; a task needs one with a working tree")));
    };
    let top = workdir.canonicalize().map_err(|e| invalid(format!("--repo {repo}: {e}")))?;
    if top != path.canonicalize().map_err(|e| invalid(format!("--repo {repo}: {e}")))? {
        return Err(invalid(format!("--repo {repo} is inside the repository at {}, pass that instead", top.display())));
    }
    top.to_str().map(str::to_owned).ok_or_else(|| invalid(format!("--repo {repo}: the path is not valid UTF-8")))
}

fn validate_profile(name: String) -> Result<String> {
    let ok_start = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok_start || !ok_chars || name.len() > MAX_PROFILE_NAME {
        return Err(invalid(format!(
            "--profile {name:?}: a profile name is 1 to {MAX_PROFILE_NAME} letters, digits, '-' or '_', starting with a letter or digit"
        )));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(SupervisorError::Refused(e)) => e.message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn descriptions_are_checked() {
        assert!(refused(validate_description(" \n".into())).contains("empty"));
        assert!(refused(validate_description("x".repeat(MAX_DESCRIPTION_BYTES + 1))).contains("65537 bytes"));
        assert!(refused(validate_description("a\0b".into())).contains("byte 1"));
        assert_eq!(validate_description("x".repeat(MAX_DESCRIPTION_BYTES)).unwrap().len(), MAX_DESCRIPTION_BYTES);
    }

    #[test]
    fn repos_must_be_the_top_of_a_work_tree() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().canonicalize().unwrap();
        assert!(refused(validate_repo(top.to_str().unwrap())).contains("not a git repository"));
        Repository::init(&top).unwrap();
        std::fs::create_dir(top.join("sub")).unwrap();
        assert_eq!(validate_repo(top.to_str().unwrap()).unwrap(), top.to_str().unwrap());
        let msg = refused(validate_repo(top.join("sub").to_str().unwrap()));
        assert!(msg.contains("inside the repository"), "{msg}");
        assert!(refused(validate_repo("relative")).contains("absolute"));
        assert!(refused(validate_repo(top.join("missing").to_str().unwrap())).contains("no such folder"));
        let bare = tempfile::tempdir().unwrap();
        Repository::init_bare(bare.path()).unwrap();
        assert!(refused(validate_repo(bare.path().to_str().unwrap())).contains("bare"));
    }

    #[test]
    fn profile_names_are_checked() {
        assert_eq!(validate_profile("untrusted".into()).unwrap(), "untrusted");
        assert!(refused(validate_profile("../etc".into())).contains("profile name"));
        assert!(refused(validate_profile(String::new())).contains("profile name"));
    }
}
