//! The worktree a person may open holds no git metadata the task wrote.
//!
//! The supervisor puts a regular file `.git` holding [`GITFILE_NOTE`] at the worktree's root; git refuses it
//! ("invalid gitfile format"), so a person's `git status` there (or a shell prompt that runs git) uses nothing of the
//! task's. The task's sandbox has a read rule on that file. When no process of the task is left (before a worker
//! starts, after the task ended), [`seal`] moves whatever the task put at `.git` instead to `tasks/<id>/quarantine`
//! and writes the note again; then it walks the WHOLE worktree (ignored folders included, whatever a snapshot saw or
//! not) and moves to the quarantine every entry git could take for a `.git` in a subfolder (see [`is_git_name`]):
//! folder, regular file (a gitfile pointing elsewhere) or symlink alike.
//!
//! Everything is done by file descriptor: each folder is opened relative to its parent's descriptor with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, `O_NOFOLLOW | O_DIRECTORY`), listed with `getdents` on that descriptor,
//! and entries are moved with `renameat`; a symlink is never followed (a symlink named `.git` is itself moved, its
//! target untouched). The walk is bounded ([`MAX_ENTRIES`], [`MAX_DEPTH`], [`MAX_WALK`]). A check that cannot finish
//! (a bound, a folder it cannot open or list, an entry it cannot move, the note it cannot write) never leaves a partly
//! checked worktree for a person: the whole worktree folder is moved aside into the quarantine (`worktree-…`) and
//! [`seal`] returns an error saying so (and logs it). Its files are there; the task's committed work is on its
//! branch, and the next session checks the branch out again. (Refusing instead would leave the unchecked worktree
//! where a person opens it.)
//!
//! The quarantine holds the task's untrusted git metadata (and, after a walk that could not finish, a whole
//! worktree): nobody should run git in it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

pub use crate::private_repo::GITFILE_NOTE;

/// Name of the folder under `tasks/<id>` that receives git metadata taken out of the worktree.
pub const QUARANTINE: &str = "quarantine";
/// Most entries one walk of the worktree visits.
pub const MAX_ENTRIES: u64 = 2_000_000;
/// Deepest folder one walk enters (the worktree's root is depth 0).
pub const MAX_DEPTH: usize = 256;
/// Longest one walk takes.
pub const MAX_WALK: Duration = Duration::from_secs(60);

fn os(bytes: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(bytes)
}

fn open_dir(path: &Path) -> Result<OwnedFd, String> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    nix::fcntl::openat2(nix::fcntl::AT_FDCWD, path, how).map_err(|e| format!("{}: {e}", path.display()))
}

fn beneath(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Open the folder `rel` (`/`-separated, no `..`) beneath `root`, following no symlink.
fn open_beneath(root: &OwnedFd, rel: &[u8]) -> Result<OwnedFd, String> {
    let rel = os(rel);
    nix::fcntl::openat2(root.as_fd(), rel, beneath(OFlag::O_PATH))
        .map_err(|e| format!("{}: {e}", rel.to_string_lossy()))
}

/// Whether git, on some file system, could take an entry named `name` for `.git`: `.git` in any case, with trailing
/// dots or spaces (`.git.`, `.git `, as on NTFS), and the short name `git~1`. The same names as
/// `snapshot::check_path` refuses.
pub fn is_git_name(name: &[u8]) -> bool {
    let trimmed = name.iter().rposition(|b| *b != b'.' && *b != b' ').map_or(&name[..0], |i| &name[..=i]);
    trimmed.eq_ignore_ascii_case(b".git") || name.eq_ignore_ascii_case(b"git~1")
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

/// `tasks/<id>/quarantine`, made when first needed, and what was moved into it.
struct Quarantine<'a> {
    task_root: &'a OwnedFd,
    fd: Option<OwnedFd>,
    moved: Vec<String>,
}

impl Quarantine<'_> {
    fn fd(&mut self) -> Result<&OwnedFd, String> {
        if self.fd.is_none() {
            match nix::sys::stat::mkdirat(self.task_root.as_fd(), QUARANTINE, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(format!("{QUARANTINE}: {e}")),
            }
            self.fd = Some(open_beneath(self.task_root, QUARANTINE.as_bytes())?);
        }
        self.fd.as_ref().ok_or_else(|| format!("{QUARANTINE}: not open"))
    }

    /// Move `parent/name` into the quarantine under a fresh name starting with `prefix`; returns that name.
    fn take(&mut self, parent: &OwnedFd, name: &[u8], prefix: &str, shown: String) -> Result<String, String> {
        let target = format!("{prefix}{}-{:016x}", self.moved.len(), rand::random::<u64>());
        let q = self.fd()?;
        nix::fcntl::renameat(parent.as_fd(), os(name), q.as_fd(), target.as_str())
            .map_err(|e| format!("{shown}: {e}"))?;
        self.moved.push(shown);
        Ok(target)
    }
}

/// Where a walk of the worktree is.
struct Walk {
    entries: u64,
    started: Instant,
}

/// Move every entry git could take for `.git` below `dir` (the folder at `path`, `depth` below the worktree's root)
/// into the quarantine. Err: why the walk could not finish.
fn walk(dir: &OwnedFd, path: &mut Vec<u8>, depth: usize, state: &mut Walk, q: &mut Quarantine) -> Result<(), String> {
    let shown = |path: &[u8], name: &[u8]| {
        let mut p = path.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        String::from_utf8_lossy(&p).into_owned()
    };
    // One descriptor lists the folder; `dir` stats, opens and moves what is in it.
    let dup = dir.try_clone().map_err(|e| format!("{}: {e}", shown(path, b"")))?;
    let mut listing = Dir::from_fd(dup).map_err(|e| format!("{}: {e}", shown(path, b"")))?;
    let (mut git, mut subdirs) = (Vec::new(), Vec::new());
    for entry in listing.iter() {
        let entry = entry.map_err(|e| format!("listing {}: {e}", shown(path, b".")))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        state.entries += 1;
        if state.entries > MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        if state.entries.is_multiple_of(1024) && state.started.elapsed() > MAX_WALK {
            return Err(format!("the walk took more than {} s", MAX_WALK.as_secs()));
        }
        if is_git_name(name) {
            // The root's own `.git` is the note, just checked.
            if !(depth == 0 && name == b".git") {
                git.push(name.to_vec());
            }
            continue;
        }
        let is_dir = match entry.file_type() {
            Some(t) => t == Type::Directory,
            None => match nix::sys::stat::fstatat(dir.as_fd(), entry.file_name(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st.st_mode & libc::S_IFMT == libc::S_IFDIR,
                Err(e) => return Err(format!("{}: {e}", shown(path, name))),
            },
        };
        if is_dir {
            subdirs.push(name.to_vec());
        }
    }
    drop(listing);
    for name in git {
        q.take(dir, &name, "", shown(path, &name))?;
    }
    if !subdirs.is_empty() && depth >= MAX_DEPTH {
        return Err(format!("folders deeper than {MAX_DEPTH} levels ({})", shown(path, &subdirs[0])));
    }
    for name in subdirs {
        // Never a symlink (RESOLVE_NO_SYMLINKS, O_NOFOLLOW), never outside `dir` (RESOLVE_BENEATH).
        let sub = nix::fcntl::openat2(dir.as_fd(), os(&name), beneath(OFlag::O_RDONLY))
            .map_err(|e| format!("{}: {e}", shown(path, &name)))?;
        let len = path.len();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&name);
        let walked = walk(&sub, path, depth + 1, state, q);
        path.truncate(len);
        walked?;
    }
    Ok(())
}

/// Make the worktree safe for a person to open: the note at its root, and every entry git could take for `.git`
/// anywhere below it (see the module's doc) moved to `task_root/quarantine`. `nested` (paths relative to the
/// worktree that a snapshot reported, each ending in a `.git` entry) are moved first; the walk finds them anyway.
/// Only call it when no process of the task runs. Returns what was moved.
///
/// When that cannot be done in full (the walk's bounds, a folder it cannot open or list, an entry it cannot move, the
/// note it cannot write), the whole worktree is moved into the quarantine and the error says so.
pub fn seal(task_root: &Path, worktree: &Path, nested: &[Vec<u8>]) -> Result<Vec<String>, String> {
    let root = open_dir(task_root)?;
    let dir = open_dir(worktree)?;
    let mut q = Quarantine { task_root: &root, fd: None, moved: Vec::new() };
    if let Err(why) = check(&dir, nested, &mut q) {
        return Err(set_aside(&mut q, worktree, &why));
    }
    Ok(q.moved)
}

/// The note at the root of the worktree `dir`, then every `.git` below it moved out. Err: why that could not be done.
fn check(dir: &OwnedFd, nested: &[Vec<u8>], q: &mut Quarantine) -> Result<(), String> {
    if !is_note(dir) {
        if nix::sys::stat::fstatat(dir.as_fd(), ".git", AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
            q.take(dir, b".git", "", ".git".into())?;
        }
        create_note(dir)?;
    }
    for path in nested {
        let (parent, name) = match path.iter().rposition(|b| *b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&path[..0], &path[..]),
        };
        // Only `.git` entries below the root, by paths with nothing but plain components.
        if !is_git_name(name)
            || parent.is_empty()
            || parent.split(|b| *b == b'/').any(|c| c.is_empty() || c == b"." || c == b"..")
        {
            continue;
        }
        let Ok(pdir) = open_beneath(dir, parent) else { continue };
        if nix::sys::stat::fstatat(pdir.as_fd(), os(name), AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
            // Not fatal here: the walk below finds it again, and fails if it still cannot move it.
            let _ = q.take(&pdir, name, "", String::from_utf8_lossy(path).into_owned());
        }
    }
    let listing =
        nix::fcntl::openat2(dir.as_fd(), ".", beneath(OFlag::O_RDONLY)).map_err(|e| format!("the worktree: {e}"))?;
    let mut state = Walk { entries: 0, started: Instant::now() };
    walk(&listing, &mut Vec::new(), 0, &mut state, q)
}

/// The worktree could not be fully checked (`why`): move the whole worktree into the quarantine. Returns the error
/// for the caller.
fn set_aside(q: &mut Quarantine, worktree: &Path, why: &str) -> String {
    let moved = match (worktree.parent(), worktree.file_name()) {
        (Some(parent), Some(name)) => open_dir(parent).and_then(|parent| {
            q.take(&parent, std::os::unix::ffi::OsStrExt::as_bytes(name), "worktree-", "the worktree".into())
        }),
        _ => Err(format!("{}: no parent folder", worktree.display())),
    };
    let error = match moved {
        Ok(target) => format!(
            "the task's worktree could not be fully checked for git metadata ({why}): it was moved to \
             {QUARANTINE}/{target} in the task's folder, where nobody should run git; the task's branch holds its \
             committed work"
        ),
        Err(e) => format!(
            "the task's worktree could not be fully checked for git metadata ({why}) nor moved aside ({e}): do not \
             run git in {}",
            worktree.display()
        ),
    };
    tracing::error!(worktree = %worktree.display(), "{error}");
    error
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
    #[test]
    fn every_git_name_at_any_depth_is_moved_ignored_folders_included_and_no_symlink_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let wt = root.join("worktree");
        std::fs::create_dir_all(&wt).unwrap();
        write_note(&wt).unwrap();
        // A `.git` folder with an fsmonitor, deep in a folder the worktree's .gitignore excludes.
        std::fs::write(wt.join(".gitignore"), "build/\n").unwrap();
        std::fs::create_dir_all(wt.join("build/a/b/c/.git")).unwrap();
        std::fs::write(wt.join("build/a/b/c/.git/config"), "[core]\n\tfsmonitor = touch /tmp/pwned\n").unwrap();
        // A gitfile spelt `.GIT`, a `git~1`, the trailing dot and space spellings, one at the root too.
        std::fs::create_dir_all(wt.join("x")).unwrap();
        std::fs::write(wt.join("x/.GIT"), "gitdir: /elsewhere\n").unwrap();
        std::fs::create_dir_all(wt.join("y/git~1")).unwrap();
        std::fs::create_dir_all(wt.join("w/.git.")).unwrap();
        std::fs::create_dir_all(wt.join("w/.Git ")).unwrap();
        std::fs::create_dir_all(wt.join(".GIT")).unwrap();
        // Outside the worktree: a target reached by a symlink named `.git`, and a folder (with its own `.git`)
        // reached by a symlinked folder.
        std::fs::create_dir_all(root.join("outside/.git")).unwrap();
        std::fs::write(root.join("outside/target"), "kept").unwrap();
        std::fs::create_dir_all(wt.join("z")).unwrap();
        std::os::unix::fs::symlink(root.join("outside/target"), wt.join("z/.git")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), wt.join("into-outside")).unwrap();
        // Things that are not `.git` stay.
        std::fs::write(wt.join("x/.gitignore"), "").unwrap();
        std::fs::create_dir_all(wt.join("x/.github")).unwrap();

        let mut moved = seal(root, &wt, &[]).unwrap();
        moved.sort();
        let mut want = vec![".GIT", "build/a/b/c/.git", "w/.Git ", "w/.git.", "x/.GIT", "y/git~1", "z/.git"];
        want.sort();
        assert_eq!(moved, want);
        for gone in ["build/a/b/c/.git", "x/.GIT", "y/git~1", "w/.git.", "w/.Git ", "z/.git", ".GIT"] {
            assert!(std::fs::symlink_metadata(wt.join(gone)).is_err(), "{gone} is still there");
        }
        assert!(wt.join("build/a/b/c").is_dir() && wt.join("x/.gitignore").is_file() && wt.join("x/.github").is_dir());
        assert_eq!(std::fs::read_to_string(wt.join(".git")).unwrap(), GITFILE_NOTE);
        assert_eq!(std::fs::read_to_string(root.join("outside/target")).unwrap(), "kept", "the target is untouched");
        assert!(root.join("outside/.git").is_dir(), "a symlinked folder is not entered");
        assert!(std::fs::symlink_metadata(wt.join("into-outside")).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_dir(root.join(QUARANTINE)).unwrap().count(), 7);
        assert!(seal(root, &wt, &[]).unwrap().is_empty());
    }

    #[test]
    fn a_worktree_the_walk_cannot_finish_is_moved_aside_whole() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let wt = root.join("worktree");
        let mut deep = wt.clone();
        for _ in 0..=MAX_DEPTH + 1 {
            deep.push("d");
        }
        std::fs::create_dir_all(deep.join(".git")).unwrap();
        let err = seal(root, &wt, &[]).unwrap_err();
        assert!(err.contains("deeper than 256") && err.contains("moved to quarantine/worktree-"), "{err}");
        assert!(std::fs::symlink_metadata(&wt).is_err(), "no partly checked worktree is left");
        let aside: Vec<_> = std::fs::read_dir(root.join(QUARANTINE)).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(aside.len(), 1);
        assert!(aside[0].to_string_lossy().starts_with("worktree-"), "{aside:?}");
    }

    #[test]
    fn git_names_are_those_git_could_read_as_dot_git() {
        for name in [".git", ".GIT", ".Git", ".git.", ".git ", ".git. .", "git~1", "GIT~1"] {
            assert!(is_git_name(name.as_bytes()), "{name}");
        }
        for name in [".gitignore", ".github", "git", ".git~1", "x.git", ".gitx", "git~2", ""] {
            assert!(!is_git_name(name.as_bytes()), "{name}");
        }
    }
}
