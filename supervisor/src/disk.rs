//! Disk bounds of running tasks: a per-task bound (`[limits] disk-mb` of its profile) and a reserve on the home's
//! filesystem (`disk-reserve` in `neuraphage.yaml`, default 5 % of the filesystem, at most 1 GiB).
//!
//! While a task runs, [`watch`] measures every few seconds the task's folder `tasks/<id>` (worktree, tmp, outputs,
//! conversation, log) and the home filesystem's free space and inodes; a task over its bound, or any task while the
//! filesystem is under its reserve, is paused with the reason (the runner stops its worker; what was acknowledged is
//! on disk; `task retry` resumes it).
//!
//! The walk goes by file descriptor: each folder is opened with `openat(O_NOFOLLOW | O_DIRECTORY)` relative to its
//! parent's descriptor and each entry measured with `fstatat(AT_SYMLINK_NOFOLLOW)` (allocated blocks), so a task's
//! symlink or a folder swapped mid-walk never leads the walk outside the task's folder. It is bounded in entries,
//! depth and time, and a walk that cannot finish (a bound, or a folder it cannot open or list) counts as over the
//! task's bound: the task is paused with the reason, so nothing is hidden past the bounds (a big file 300 folders
//! down, or in a folder the task made unreadable).
//!
//! Part of the reserve is kept as a ballast file, `disk-reserve.ballast` in the home (the reserve's size, at most
//! [`BALLAST_MAX`]): a task that fills the filesystem faster than the watch sees it still leaves that much, which the
//! supervisor frees when it pauses tasks for the reserve, so that the store (and `task new`) keep working; it is made
//! again once the space is back.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::Mode;
use serde::Deserialize;

/// How often a running task's disk use is measured (at least; a slow walk spaces the next one out).
pub const CHECK_EVERY: Duration = Duration::from_secs(3);
/// Most entries one walk visits.
pub const MAX_ENTRIES: u64 = 2_000_000;
/// Deepest folder one walk enters.
pub const MAX_DEPTH: usize = 256;
/// Longest one walk takes.
pub const MAX_WALK: Duration = Duration::from_secs(5);
/// File name of the reserve's ballast in the home.
pub const BALLAST: &str = "disk-reserve.ballast";
/// Largest ballast: room enough for the store and the supervisor's logs to go on for a while.
pub const BALLAST_MAX: u64 = 64 << 20;
/// The default reserve: this share of the filesystem ...
const DEFAULT_RESERVE_PERCENT: f64 = 5.0;
/// ... but at most this much.
const DEFAULT_RESERVE_MAX: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// The reserve on the home's filesystem: `disk-reserve: 5%` (of the filesystem) or `disk-reserve: 512` (MiB).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "ReserveText")]
pub enum Reserve {
    /// A share of the filesystem's size, in percent.
    Percent(f64),
    /// MiB.
    Mib(u64),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ReserveText {
    Mib(u64),
    Text(String),
}

impl TryFrom<ReserveText> for Reserve {
    type Error = String;
    fn try_from(text: ReserveText) -> Result<Reserve, String> {
        match text {
            ReserveText::Mib(m) => Ok(Reserve::Mib(m)),
            ReserveText::Text(t) => Reserve::parse(&t),
        }
    }
}

impl Reserve {
    /// Parse `N%` or `N` (MiB).
    pub fn parse(text: &str) -> Result<Reserve, String> {
        let bad = || format!("disk-reserve: {text:?} is neither a percentage (`5%`) nor a number of MiB (`512`)");
        let text = text.trim();
        match text.strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=50.0).contains(&p) => Ok(Reserve::Percent(p)),
                _ => Err(format!("disk-reserve: {text:?} must be between 0% and 50%")),
            },
            None => text.parse().map(Reserve::Mib).map_err(|_| bad()),
        }
    }

    /// Bytes reserved on a filesystem of `total` bytes; the default (`None`) is 5 %, at most 1 GiB.
    pub fn bytes(reserve: Option<Reserve>, total: u64) -> u64 {
        match reserve {
            None => ((total as f64 * DEFAULT_RESERVE_PERCENT / 100.0) as u64).min(DEFAULT_RESERVE_MAX),
            Some(Reserve::Percent(p)) => (total as f64 * p / 100.0) as u64,
            Some(Reserve::Mib(m)) => m.saturating_mul(MIB).min(total / 2),
        }
    }
}

/// Why a walk of a task's folder could not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A folder deeper than [`MAX_DEPTH`].
    Depth,
    /// More than [`MAX_ENTRIES`] entries.
    Entries,
    /// Longer than [`MAX_WALK`].
    Time,
    /// A folder it could not open or list.
    Unreadable,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::Depth => write!(f, "folders deeper than {MAX_DEPTH} levels"),
            Cut::Entries => write!(f, "more than {MAX_ENTRIES} entries"),
            Cut::Time => write!(f, "it took more than {} s", MAX_WALK.as_secs()),
            Cut::Unreadable => write!(f, "a folder it could not open or list"),
        }
    }
}

/// What a walk of a task's folder found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes allocated to what it saw.
    pub bytes: u64,
    /// Entries it saw.
    pub entries: u64,
    /// Why the walk could not finish, if it could not (then `bytes` is a lower bound, and the task counts as over
    /// its bound).
    pub cut: Option<Cut>,
}

/// Measure the disk taken under `root` (a task's folder), by file descriptor, never following a symlink.
pub fn usage(root: &Path) -> std::io::Result<Usage> {
    let fd = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut usage = Usage::default();
    let started = Instant::now();
    walk(fd, 0, started, &mut usage);
    Ok(usage)
}

fn walk(fd: OwnedFd, depth: usize, started: Instant, usage: &mut Usage) {
    if depth > MAX_DEPTH {
        usage.cut = Some(Cut::Depth);
        return;
    }
    // One descriptor to list the folder, its duplicate to stat and open what is in it.
    let Some(mut dir) = fd.try_clone().ok().and_then(|dup| Dir::from_fd(dup).ok()) else {
        usage.cut = Some(Cut::Unreadable);
        return;
    };
    let mut subdirs = Vec::new();
    for entry in dir.iter() {
        let Ok(entry) = entry else {
            usage.cut = Some(Cut::Unreadable);
            return;
        };
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        usage.entries += 1;
        if usage.entries > MAX_ENTRIES {
            usage.cut = Some(Cut::Entries);
            return;
        }
        if usage.entries.is_multiple_of(1024) && started.elapsed() > MAX_WALK {
            usage.cut = Some(Cut::Time);
            return;
        }
        let Ok(stat) = nix::sys::stat::fstatat(fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) else { continue };
        usage.bytes = usage.bytes.saturating_add((stat.st_blocks as u64).saturating_mul(512));
        let is_dir = match entry.file_type() {
            Some(t) => t == Type::Directory,
            None => stat.st_mode & libc::S_IFMT == libc::S_IFDIR,
        };
        if is_dir {
            subdirs.push(name.to_owned());
        }
    }
    for name in subdirs {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match openat(fd.as_fd(), name.as_c_str(), flags, Mode::empty()) {
            Ok(fd) => {
                walk(fd, depth + 1, started, usage);
                if usage.cut.is_some() {
                    return;
                }
            }
            // Gone, or swapped for a symlink or a file since it was listed (O_NOFOLLOW): nothing to count there.
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) => {}
            Err(_) => {
                usage.cut = Some(Cut::Unreadable);
                return;
            }
        }
    }
}

/// Free space and inodes of the filesystem holding `path`, as an unprivileged process may use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Size of the filesystem, in bytes.
    pub total: u64,
    /// Bytes available.
    pub available: u64,
    /// Inodes in all (0 where the filesystem does not count them).
    pub files: u64,
    /// Inodes available.
    pub files_available: u64,
}

/// statvfs of the filesystem holding `path`.
pub fn space(path: &Path) -> std::io::Result<Space> {
    let s = nix::sys::statvfs::statvfs(path)?;
    let frag = s.fragment_size() as u64;
    Ok(Space {
        total: (s.blocks() as u64).saturating_mul(frag),
        available: (s.blocks_available() as u64).saturating_mul(frag),
        files: s.files() as u64,
        files_available: s.files_available() as u64,
    })
}

/// Why a task must be paused for its disk use, if it must: over its own bound (or its folder's walk could not finish:
/// what it hides past the walk's bounds could be over), or the home's filesystem under its reserve (space or inodes).
pub fn over(usage: Option<Usage>, limit_mb: Option<u64>, space: Option<Space>, reserve: u64) -> Option<String> {
    if let (Some(Usage { cut: Some(cut), bytes, .. }), Some(limit)) = (usage, limit_mb) {
        return Some(format!(
            "the walk measuring the task's folders could not finish ({cut}; {} MiB seen), so its profile's disk-mb = \
             {limit} cannot be checked; remove what makes the walk fail, then `neuraphage task retry` resumes it",
            bytes / MIB
        ));
    }
    if let (Some(usage), Some(limit)) = (usage, limit_mb)
        && usage.bytes > limit.saturating_mul(MIB)
    {
        return Some(format!(
            "the task's folders take {} MiB, over its profile's disk-mb = {limit}; free space in the task, or raise \
             the bound, then `neuraphage task retry` resumes it",
            usage.bytes / MIB
        ));
    }
    let space = space?;
    if space.available < reserve {
        return Some(format!(
            "the filesystem of the Neuraphage home has {} MiB free, under its reserve of {} MiB (disk-reserve); free \
             space, then `neuraphage task retry` resumes the task",
            space.available / MIB,
            reserve / MIB
        ));
    }
    if space.files > 0 && space.files_available < space.files / 20 {
        return Some(format!(
            "the filesystem of the Neuraphage home has {} inodes free of {}, under its reserve of 5 %; free some, \
             then `neuraphage task retry` resumes the task",
            space.files_available, space.files
        ));
    }
    None
}

/// Keep the ballast of the reserve (see the module's doc) at `bytes` (at most [`BALLAST_MAX`]) while the filesystem has
/// room for it and more.
pub fn keep_ballast(home: &Path, bytes: u64, space: &Space) {
    let bytes = bytes.min(BALLAST_MAX);
    let path = home.join(BALLAST);
    let have = std::fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
    if have >= bytes || space.available < bytes.saturating_mul(2) {
        return;
    }
    let made = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&path).and_then(|f| {
        nix::fcntl::posix_fallocate(f.as_fd(), 0, bytes as libc::off_t).map_err(std::io::Error::from)?;
        f.sync_all()
    });
    if let Err(e) = made {
        tracing::warn!(error = %e, path = %path.display(), "cannot make the disk reserve's ballast");
        let _ = std::fs::remove_file(&path);
    }
}

/// Free the ballast: the filesystem is under its reserve and the supervisor needs the room.
pub fn release_ballast(home: &Path) -> bool {
    std::fs::remove_file(home.join(BALLAST)).is_ok()
}

/// At a session's start: make the reserve's ballast if there is room for it (blocking).
pub fn prepare_reserve(home: &Path, reserve: Option<Reserve>) {
    if let Ok(space) = space(home) {
        keep_ballast(home, Reserve::bytes(reserve, space.total), &space);
    }
}

/// Watch a running task's disk use until it is over its bound or the reserve; returns the reason. Never returns
/// otherwise (the runner drops it when the session ends).
pub async fn watch(
    home: std::path::PathBuf,
    task_dir: std::path::PathBuf,
    limit_mb: Option<u64>,
    reserve: Option<Reserve>,
) -> String {
    loop {
        let (home_c, dir) = (home.clone(), task_dir.clone());
        let measured = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let usage = limit_mb.and_then(|_| usage(&dir).ok());
            let space = space(&home_c).ok();
            let reserve = space.map(|s| Reserve::bytes(reserve, s.total)).unwrap_or(0);
            let why = over(usage, limit_mb, space, reserve);
            match (&why, space) {
                (Some(_), Some(s)) if s.available < reserve => {
                    release_ballast(&home_c);
                }
                (None, Some(s)) => keep_ballast(&home_c, reserve, &s),
                _ => {}
            }
            (why, started.elapsed())
        })
        .await;
        let (why, took) = measured.unwrap_or((None, Duration::ZERO));
        if let Some(why) = why {
            return why;
        }
        tokio::time::sleep(CHECK_EVERY.max(took * 5)).await;
    }
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;
