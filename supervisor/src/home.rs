//! The supervisor's folders and its exclusive hold on them.
//!
//! [`Home::claim`] creates the data folder (0700) and the runtime folder (0700, owned by us), then takes an
//! exclusive `flock` on a lock file in each, so a second supervisor on the same home, or on the same runtime
//! folder, is refused with the pid of the one that holds it. The locks live as long as the [`Home`].

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use neuraphage_ipc::paths::Paths;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Result, SupervisorError, home_error};

/// Lock file name, in both the home and the runtime folder.
const LOCK_FILE: &str = "supervisor.lock";

/// Longest path a Unix socket address holds (sun_path, with its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The folders of a running supervisor, held exclusively.
#[derive(Debug)]
pub struct Home {
    /// The resolved folders.
    pub paths: Paths,
    _home_lock: Flock<File>,
    _runtime_lock: Flock<File>,
}

impl Home {
    /// Prepare the folders and take the locks.
    pub fn claim(paths: Paths) -> Result<Home> {
        private_dir(&paths.home)?;
        for sub in [paths.logs(), paths.home.join("tasks")] {
            private_dir(&sub)?;
        }
        private_dir(&paths.runtime_dir)?;
        let socket = paths.control_socket();
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(home_error(
                &socket,
                format!(
                    "socket path is longer than {MAX_SOCKET_PATH} bytes; set NEURAPHAGE_RUNTIME_DIR to a shorter folder"
                ),
            ));
        }
        let home_lock = lock(&paths.home, "home")?;
        let runtime_lock = lock(&paths.runtime_dir, "runtime folder")?;
        Ok(Home { paths, _home_lock: home_lock, _runtime_lock: runtime_lock })
    }
}

/// Create `dir` (and parents) if missing, and make sure it is ours and private (0700). A folder that already
/// existed and is open to others is refused, never changed: it may be shared (`/tmp`, `~`).
fn private_dir(dir: &Path) -> Result<()> {
    let existed = dir.exists();
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| home_error(dir, e))?;
    let meta = fs::symlink_metadata(dir).map_err(|e| home_error(dir, e))?;
    if !meta.is_dir() {
        return Err(home_error(dir, "is not a folder"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(home_error(dir, format!("is owned by uid {}, not by this user (uid {me})", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        if existed {
            return Err(home_error(
                dir,
                format!(
                    "is open to other users (mode {:o}); use a private folder (chmod 700) of its own",
                    meta.mode() & 0o7777
                ),
            ));
        }
        // Created just now under a umask we do not control.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| home_error(dir, e))?;
    }
    Ok(())
}

/// Take the exclusive lock in `dir`, writing our pid into it; refuse with the holder's pid if taken.
fn lock(dir: &Path, what: &'static str) -> Result<Flock<File>> {
    let path: PathBuf = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| home_error(&path, e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut held) => {
            held.set_len(0)?;
            held.rewind()?;
            writeln!(held, "{}", std::process::id())?;
            held.sync_all()?;
            Ok(held)
        }
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "pid unknown".to_owned(),
            };
            Err(SupervisorError::AlreadyRunning { what, path: dir.to_path_buf(), holder })
        }
        Err((_, errno)) => Err(home_error(&path, format!("cannot lock: {errno}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths { home: dir.join("home"), runtime_dir: dir.join("run") }
    }

    #[test]
    fn a_second_claim_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = Home::claim(paths(dir.path())).unwrap();
        let err = Home::claim(paths(dir.path())).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        drop(held);
        Home::claim(paths(dir.path())).unwrap();
    }

    #[test]
    fn folders_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::claim(paths(dir.path())).unwrap();
        for d in [&home.paths.home, &home.paths.runtime_dir] {
            assert_eq!(fs::metadata(d).unwrap().mode() & 0o777, 0o700, "{}", d.display());
        }
    }

    #[test]
    fn a_shared_folder_is_refused_not_changed() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("run")).unwrap();
        fs::set_permissions(dir.path().join("run"), fs::Permissions::from_mode(0o1777)).unwrap();
        let err = Home::claim(paths(dir.path())).unwrap_err().to_string();
        assert!(err.contains("open to other users") && err.contains("1777"), "{err}");
        assert_eq!(fs::metadata(dir.path().join("run")).unwrap().mode() & 0o7777, 0o1777);
    }

    #[test]
    fn a_runtime_path_too_long_for_a_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths { home: dir.path().join("h"), runtime_dir: dir.path().join("r".repeat(120)) };
        assert!(Home::claim(p).unwrap_err().to_string().contains("NEURAPHAGE_RUNTIME_DIR"));
    }
}
