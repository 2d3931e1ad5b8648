//! The worktree a person may open holds no git metadata the task wrote.
//!
//! The supervisor puts a regular file `.git` holding [`GITFILE_NOTE`] at the worktree's root; git refuses it
//! ("invalid gitfile format"), so a person's `git status` there (or a shell prompt that runs git) uses nothing of the
//! task's. The task's sandbox has a read rule on that file. When no process of the task is left (before a worker
//! starts, after the task ended), [`seal`] moves whatever the task put at `.git` instead, and any `.git` a snapshot
//! found in a subfolder, to `tasks/<id>/quarantine`, and writes the note again. Everything is done by file
//! descriptor (`openat2` without symlinks, `renameat`), never by following a path the task could have changed.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

pub use crate::private_repo::GITFILE_NOTE;

/// Name of the folder under `tasks/<id>` that receives git metadata taken out of the worktree.
pub const QUARANTINE: &str = "quarantine";

fn os(bytes: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(bytes)
}

fn open_dir(path: &Path) -> Result<OwnedFd, String> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    nix::fcntl::openat2(nix::fcntl::AT_FDCWD, path, how).map_err(|e| format!("{}: {e}", path.display()))
}

/// Open the folder `rel` (`/`-separated, no `..`) beneath `root`, following no symlink.
fn open_beneath(root: &OwnedFd, rel: &[u8]) -> Result<OwnedFd, String> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let rel = os(rel);
    nix::fcntl::openat2(root.as_fd(), rel, how).map_err(|e| format!("{}: {e}", rel.to_string_lossy()))
}

/// Write the note at `worktree/.git` (a folder the supervisor just made, or one no task process can touch).
pub fn write_note(worktree: &Path) -> Result<(), String> {
    let dir = open_dir(worktree)?;
    create_note(&dir)
}

fn create_note(dir: &OwnedFd) -> Result<(), String> {
    let fd = nix::fcntl::openat(
        dir.as_fd(),
        ".git",
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o444),
    )
    .map_err(|e| format!("worktree/.git: {e}"))?;
    nix::unistd::write(&fd, GITFILE_NOTE.as_bytes()).map_err(|e| format!("worktree/.git: {e}"))?;
    Ok(())
}

/// Whether `dir/.git` is the note, as the supervisor wrote it.
fn is_note(dir: &OwnedFd) -> bool {
    let Ok(st) = nix::sys::stat::fstatat(dir.as_fd(), ".git", AtFlags::AT_SYMLINK_NOFOLLOW) else { return false };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size as usize != GITFILE_NOTE.len() {
        return false;
    }
    let Ok(fd) = nix::fcntl::openat(
        dir.as_fd(),
        ".git",
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let mut buf = vec![0u8; GITFILE_NOTE.len() + 1];
    let n = nix::unistd::read(&fd, &mut buf).unwrap_or(0);
    &buf[..n] == GITFILE_NOTE.as_bytes()
}

/// Make the worktree safe for a person to open: the note at its root, and every `.git` in `nested` (paths relative to
/// the worktree that a snapshot reported, each ending in a `.git` entry) moved to `task_root/quarantine`. Only call
/// it when no process of the task runs. Returns what was moved.
pub fn seal(task_root: &Path, worktree: &Path, nested: &[Vec<u8>]) -> Result<Vec<String>, String> {
    let root = open_dir(task_root)?;
    let dir = open_dir(worktree)?;
    let mut moved = Vec::new();
    let mut quarantine: Option<OwnedFd> = None;
    let mut take = |parent: &OwnedFd, name: &[u8], shown: String| -> Result<(), String> {
        let q = match &quarantine {
            Some(q) => q,
            None => {
                match nix::sys::stat::mkdirat(root.as_fd(), QUARANTINE, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(format!("{QUARANTINE}: {e}")),
                }
                quarantine.insert(open_beneath(&root, QUARANTINE.as_bytes())?)
            }
        };
        let target = format!("{}-{}", moved.len(), rand::random::<u64>());
        let name = os(name);
        nix::fcntl::renameat(parent.as_fd(), name, q.as_fd(), target.as_str()).map_err(|e| format!("{shown}: {e}"))?;
        moved.push(shown);
        Ok(())
    };
    if !is_note(&dir) {
        if nix::sys::stat::fstatat(dir.as_fd(), ".git", AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
            take(&dir, b".git", ".git".into())?;
        }
        create_note(&dir)?;
    }
    for path in nested {
        let (parent, name) = match path.iter().rposition(|b| *b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], &path[..]),
        };
        // Only `.git` entries below the root, by paths with nothing but plain components.
        if !name.eq_ignore_ascii_case(b".git")
            || parent.is_empty()
            || parent.split(|b| *b == b'/').any(|c| c.is_empty() || c == b"." || c == b"..")
        {
            continue;
        }
        let Ok(pdir) = open_beneath(&dir, parent) else { continue };
        if nix::sys::stat::fstatat(pdir.as_fd(), os(name), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
            take(&pdir, name, String::from_utf8_lossy(path).into_owned())?;
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_git_metadata_is_moved_out_and_the_note_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let wt = root.join("worktree");
        std::fs::create_dir_all(wt.join(".git/hooks")).unwrap();
        std::fs::create_dir_all(wt.join("sub/.git")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere/.git")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), wt.join("link")).unwrap();
        let nested = vec![b"sub/.git".to_vec(), b"link/.git".to_vec(), b"../elsewhere/.git".to_vec()];
        let moved = seal(root, &wt, &nested).unwrap();
        assert_eq!(moved, vec![".git".to_owned(), "sub/.git".to_owned()]);
        assert_eq!(std::fs::read_to_string(wt.join(".git")).unwrap(), GITFILE_NOTE);
        assert!(!wt.join("sub/.git").exists());
        assert!(root.join("elsewhere/.git").is_dir(), "nothing is followed through a symlink");
        // Sealed already: nothing more to do.
        assert!(seal(root, &wt, &[]).unwrap().is_empty());
    }
}
