//! Where the control link lives: the environment variables that place Neuraphage's folders, in one place.
//!
//! The data folder holds the store, task folders and logs; the runtime folder holds sockets. Both the supervisor
//! (which creates them) and its clients (which connect) resolve them here, so they always agree.

use std::ffi::OsString;
use std::path::PathBuf;

/// The data folder (default `~/.config/neuraphage`).
pub const ENV_HOME: &str = "NEURAPHAGE_HOME";
/// The runtime folder for sockets (default `$XDG_RUNTIME_DIR/neuraphage`, else `$NEURAPHAGE_HOME/run`).
pub const ENV_RUNTIME_DIR: &str = "NEURAPHAGE_RUNTIME_DIR";
/// The session's runtime folder, as set by the login manager.
pub const ENV_XDG_RUNTIME_DIR: &str = "XDG_RUNTIME_DIR";
/// The user's home folder.
pub const ENV_USER_HOME: &str = "HOME";
/// Log filter for every binary (tracing's `EnvFilter` syntax, e.g. `debug` or `neuraphage_supervisor=trace`).
pub const ENV_LOG: &str = "RUST_LOG";

/// File name of the control socket inside the runtime folder.
pub const CONTROL_SOCKET: &str = "control.sock";

/// The resolved folders of one Neuraphage home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The data folder.
    pub home: PathBuf,
    /// The runtime folder.
    pub runtime_dir: PathBuf,
}

impl Paths {
    /// Resolve from the process environment.
    pub fn from_env() -> Result<Paths, String> {
        Paths::resolve(|key| std::env::var_os(key))
    }

    /// Resolve from any variable lookup (unit-testable).
    pub fn resolve(var: impl Fn(&str) -> Option<OsString>) -> Result<Paths, String> {
        let set = |key: &str| var(key).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = match set(ENV_HOME) {
            Some(home) => home,
            None => set(ENV_USER_HOME)
                .ok_or_else(|| format!("neither {ENV_HOME} nor {ENV_USER_HOME} is set: set {ENV_HOME} to a folder"))?
                .join(".config")
                .join("neuraphage"),
        };
        let home = std::path::absolute(&home).map_err(|e| format!("{ENV_HOME}={}: {e}", home.display()))?;
        let runtime_dir = match (set(ENV_RUNTIME_DIR), set(ENV_XDG_RUNTIME_DIR)) {
            (Some(dir), _) => dir,
            (None, Some(xdg)) => xdg.join("neuraphage"),
            (None, None) => home.join("run"),
        };
        let runtime_dir = std::path::absolute(&runtime_dir)
            .map_err(|e| format!("{ENV_RUNTIME_DIR}={}: {e}", runtime_dir.display()))?;
        Ok(Paths { home, runtime_dir })
    }

    /// The control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir.join(CONTROL_SOCKET)
    }

    /// The status socket (one JSON line per change, for shell bars).
    pub fn status_socket(&self) -> PathBuf {
        self.runtime_dir.join(crate::status::STATUS_SOCKET)
    }

    /// The folder of supervisor logs.
    pub fn logs(&self) -> PathBuf {
        self.home.join("logs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |key| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn explicit_variables_win() {
        let p = Paths::resolve(env(&[(ENV_HOME, "/h"), (ENV_RUNTIME_DIR, "/r"), (ENV_XDG_RUNTIME_DIR, "/x")])).unwrap();
        assert_eq!(p, Paths { home: "/h".into(), runtime_dir: "/r".into() });
        assert_eq!(p.control_socket(), PathBuf::from("/r/control.sock"));
    }

    #[test]
    fn xdg_runtime_dir_then_home_run() {
        let p = Paths::resolve(env(&[(ENV_HOME, "/h"), (ENV_XDG_RUNTIME_DIR, "/x")])).unwrap();
        assert_eq!(p.runtime_dir, PathBuf::from("/x/neuraphage"));
        let p = Paths::resolve(env(&[(ENV_HOME, "/h"), (ENV_XDG_RUNTIME_DIR, "")])).unwrap();
        assert_eq!(p.runtime_dir, PathBuf::from("/h/run"));
    }

    #[test]
    fn default_home_is_under_the_users_config() {
        let p = Paths::resolve(env(&[(ENV_USER_HOME, "/home/u")])).unwrap();
        assert_eq!(p.home, PathBuf::from("/home/u/.config/neuraphage"));
        assert!(Paths::resolve(env(&[])).unwrap_err().contains(ENV_HOME));
    }
}
