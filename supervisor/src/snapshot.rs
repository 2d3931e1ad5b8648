//! A snapshot of a task's worktree, built inside the task's sandbox and only checked here.
//!
//! [`take`] starts `neuraphage-worker --snapshot` under the task's sandbox plan (in its cgroup while the task runs),
//! kills it after [`SNAPSHOT_TIMEOUT`], and reads its stream of [`SnapshotFrame`]s with [`read`]: every entry's path
//! (relative, no empty, `.` or `..` component, no `.git` in any case or spelling git treats as one, no NUL, bounded),
//! mode (100644, 100755 or 120000 only) and size (per file, symlink target, total, count) is checked before its data
//! becomes a blob of the task's PRIVATE repository; the tree is written there too. The supervisor never opens a task
//! file itself.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use git2::{Oid, Repository};
use neuraphage_ipc::snapshot::{
    MAX_SNAPSHOT_ENTRIES, MAX_SNAPSHOT_FILE, MAX_SNAPSHOT_LINK, MAX_SNAPSHOT_NOTES, MAX_SNAPSHOT_PATH,
    MAX_SNAPSHOT_TOTAL, MODE_EXECUTABLE, MODE_FILE, MODE_SYMLINK, SnapshotFrame, SnapshotReader,
};
use neuraphage_sandbox_profiles::plan::SandboxPlan;

/// How long the snapshot helper may run before it is killed (and the commit fails).
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);

/// The longest note kept (characters).
const MAX_NOTE: usize = 300;

/// A checked snapshot, written to the private repository.
#[derive(Debug)]
pub struct Snapshot {
    /// The tree of the worktree's files.
    pub tree: Oid,
    /// What the helper left out or found (note, path), at most [`MAX_SNAPSHOT_NOTES`].
    pub notes: Vec<(String, Vec<u8>)>,
}

impl Snapshot {
    /// The `.git` entries found in subfolders (paths relative to the worktree).
    pub fn nested_git(&self) -> Vec<Vec<u8>> {
        self.notes
            .iter()
            .filter(|(_, p)| p.rsplit(|b| *b == b'/').next().is_some_and(|n| n.eq_ignore_ascii_case(b".git")))
            .map(|(_, p)| p.clone())
            .collect()
    }
}

/// Why a path from the stream is refused, if it is.
pub fn check_path(path: &[u8]) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_SNAPSHOT_PATH {
        return Err(format!("a path of {} bytes", path.len()));
    }
    if path.contains(&0) {
        return Err("a path with a NUL byte".into());
    }
    for c in path.split(|b| *b == b'/') {
        if c.is_empty() || c == b"." || c == b".." {
            return Err(format!("a path with an empty, . or .. component: {}", String::from_utf8_lossy(path)));
        }
        // `.git`, and what git on other file systems reads as it (`.GIT`, `.git.`, `.git `, `git~1`).
        let trimmed = c.iter().rposition(|b| *b != b'.' && *b != b' ').map_or(&c[..0], |i| &c[..=i]);
        if trimmed.eq_ignore_ascii_case(b".git") || c.eq_ignore_ascii_case(b"git~1") {
            return Err(format!("a path with a .git component: {}", String::from_utf8_lossy(path)));
        }
    }
    Ok(())
}

/// The entry whose data is being received.
struct Pending {
    path: Vec<u8>,
    mode: u32,
    /// Bytes still to come.
    left: u64,
    size: u64,
}

/// Read a snapshot stream into blobs and a tree of `repo`, checking everything.
pub fn read(repo: &Repository, input: impl Read) -> Result<Snapshot, String> {
    let mut reader = SnapshotReader::new(input);
    let mut index = git2::Index::new().map_err(|e| e.message().to_owned())?;
    let mut notes = Vec::new();
    let mut paths = HashSet::new();
    let (mut entries, mut total) = (0u64, 0u64);
    let git = |e: git2::Error| e.message().to_owned();
    // The entry being received.
    let mut current: Option<Pending> = None;
    let mut writer: Option<git2::BlobWriter<'_>> = None;
    loop {
        let frame = reader.next_frame().map_err(|e| format!("snapshot stream: {e}"))?;
        let Some(frame) = frame else { return Err("the snapshot stream ended before its end".into()) };
        match frame {
            SnapshotFrame::Entry { path, mode, size } => {
                if current.is_some() {
                    return Err("an entry began before the last one's data was complete".into());
                }
                check_path(&path)?;
                if !matches!(mode, MODE_FILE | MODE_EXECUTABLE | MODE_SYMLINK) {
                    return Err(format!("mode {mode:o} is not a file, executable or symlink"));
                }
                let bound = if mode == MODE_SYMLINK { MAX_SNAPSHOT_LINK } else { MAX_SNAPSHOT_FILE };
                if size > bound || (mode == MODE_SYMLINK && size == 0) {
                    return Err(format!("{}: {size} bytes, over the bound of {bound}", String::from_utf8_lossy(&path)));
                }
                entries += 1;
                total += size;
                if entries > MAX_SNAPSHOT_ENTRIES || total > MAX_SNAPSHOT_TOTAL {
                    return Err("the snapshot is over its bounds of files or bytes".into());
                }
                if !paths.insert(path.clone()) {
                    return Err(format!("{} twice", String::from_utf8_lossy(&path)));
                }
                writer = Some(repo.blob_writer(None).map_err(git)?);
                current = Some(Pending { path, mode, left: size, size });
            }
            SnapshotFrame::Data { bytes } => {
                let Some(entry) = current.as_mut() else {
                    return Err("data outside an entry".into());
                };
                if bytes.len() as u64 > entry.left {
                    return Err("more data than the entry announced".into());
                }
                entry.left -= bytes.len() as u64;
                if entry.mode == MODE_SYMLINK && bytes.contains(&0) {
                    return Err("a symlink target with a NUL byte".into());
                }
                if let Some(w) = writer.as_mut() {
                    w.write_all(&bytes).map_err(|e| format!("writing a blob: {e}"))?;
                }
            }
            SnapshotFrame::Note { note, path } => {
                if notes.len() < MAX_SNAPSHOT_NOTES && path.len() <= MAX_SNAPSHOT_PATH {
                    notes.push((note.chars().take(MAX_NOTE).collect(), path));
                }
            }
            SnapshotFrame::End { entries: e, bytes } => {
                if current.is_some() || e != entries || bytes != total {
                    return Err("the snapshot's end does not match what it sent".into());
                }
                let tree = index.write_tree_to(repo).map_err(git)?;
                return Ok(Snapshot { tree, notes });
            }
        }
        if let Some(Pending { path, mode, size, .. }) = current.take_if(|c| c.left == 0) {
            let id = writer.take().ok_or("an entry without its blob")?.commit().map_err(git)?;
            index
                .add(&git2::IndexEntry {
                    ctime: git2::IndexTime::new(0, 0),
                    mtime: git2::IndexTime::new(0, 0),
                    dev: 0,
                    ino: 0,
                    mode,
                    uid: 0,
                    gid: 0,
                    file_size: size.min(u32::MAX as u64) as u32,
                    id,
                    flags: path.len().min(0xfff) as u16,
                    flags_extended: 0,
                    path,
                })
                .map_err(git)?;
        }
    }
}

/// Take a snapshot of `workdir` with the helper under the plan at `plan_file` (its cgroups that are gone dropped),
/// into `repo`. The helper's stderr goes to `log`.
pub fn take(repo: &Repository, plan_file: &Path, workdir: &Path, log: &Path) -> Result<Snapshot, String> {
    let mut plan = SandboxPlan::load(plan_file).map_err(|e| e.to_string())?;
    plan.cgroups.retain(|d| d.is_dir());
    // A snapshot needs no network: no bridge to the task's proxy, whose socket is gone once the task's session is.
    plan.namespaces.bridges.clear();
    plan.seccomp.unix_stream_sockets = false;
    let snapshot_plan = plan_file.with_file_name("snapshot.json");
    plan.save(&snapshot_plan).map_err(|e| format!("{}: {e}", snapshot_plan.display()))?;
    let binary = crate::spawn::sibling_binary(crate::runner::WORKER_BIN)?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| e.to_string())?;
    let tmp = workdir.parent().map(|p| p.join("tmp")).unwrap_or_else(|| workdir.to_path_buf());
    let mut cmd = std::process::Command::new(&binary);
    cmd.arg("--snapshot").arg("--workdir").arg(workdir).arg("--tmp").arg(&tmp).arg("--outputs").arg(&tmp);
    cmd.arg("--sandbox").arg(&snapshot_plan).current_dir("/").env_clear();
    for key in ["LANG", "LC_ALL", "RUST_LOG"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    // Stage 1 finds bubblewrap on PATH (the helper itself runs no program).
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()));
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(log);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let stdout = child.stdout.take().ok_or("the snapshot helper has no stdout")?;
    // The watchdog kills the helper at the deadline; the child is reaped only after it stopped, so the pid it
    // signals is still the helper's.
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(SNAPSHOT_TIMEOUT).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            return true;
        }
        false
    });
    let read = read(repo, stdout);
    if read.is_err() {
        let _ = child.kill();
    }
    let _ = done.send(());
    let timed_out = watchdog.join().unwrap_or(true);
    let status = child.wait().map_err(|e| e.to_string())?;
    if timed_out {
        return Err(format!("the snapshot took longer than {} s and was stopped", SNAPSHOT_TIMEOUT.as_secs()));
    }
    let snapshot = read?;
    if !status.success() {
        return Err(format!("the snapshot helper ended with {status} (see worker.log)"));
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use neuraphage_ipc::snapshot::SnapshotWriter;

    use super::*;

    fn stream(frames: &[SnapshotFrame]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = SnapshotWriter::new(&mut out);
        for f in frames {
            w.send(f).unwrap();
        }
        out
    }

    fn entry(path: &[u8], mode: u32, data: &[u8]) -> [SnapshotFrame; 2] {
        [
            SnapshotFrame::Entry { path: path.to_vec(), mode, size: data.len() as u64 },
            SnapshotFrame::Data { bytes: data.to_vec() },
        ]
    }

    #[test]
    fn paths_that_git_or_the_supervisor_would_misread_are_refused() {
        for bad in [
            &b""[..],
            b"/abs",
            b"a//b",
            b"./a",
            b"a/../b",
            b".git/config",
            b"x/.GIT/hooks",
            b"x/.git.",
            b"GIT~1/x",
            b"a\0b",
        ] {
            assert!(check_path(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        for good in [&b"a"[..], b".gitignore", b"src/.github/x", b"dir/file.git", b"\xff\xfe"] {
            check_path(good).unwrap();
        }
    }

    #[test]
    fn a_stream_becomes_a_tree_and_bad_streams_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let mut frames = Vec::new();
        frames.extend(entry(b"a.txt", MODE_FILE, b"hello"));
        frames.extend(entry(b"bin/run", MODE_EXECUTABLE, b"#!/bin/sh\n"));
        frames.extend(entry(b"link", MODE_SYMLINK, b"a.txt"));
        frames.push(SnapshotFrame::Note { note: "git metadata".into(), path: b"sub/.git".to_vec() });
        frames.push(SnapshotFrame::End { entries: 3, bytes: 20 });
        let snap = read(&repo, &stream(&frames)[..]).unwrap();
        let tree = repo.find_tree(snap.tree).unwrap();
        assert_eq!(tree.get_path(Path::new("bin/run")).unwrap().filemode(), 0o100755);
        assert_eq!(tree.get_path(Path::new("link")).unwrap().filemode(), 0o120000);
        assert_eq!(snap.nested_git(), vec![b"sub/.git".to_vec()]);
        let bad: Vec<Vec<SnapshotFrame>> = vec![
            // No end: incomplete.
            entry(b"a", MODE_FILE, b"x").to_vec(),
            // A mode git would take as a submodule.
            vec![SnapshotFrame::Entry { path: b"a".to_vec(), mode: 0o160000, size: 0 }],
            // More data than announced.
            vec![
                SnapshotFrame::Entry { path: b"a".to_vec(), mode: MODE_FILE, size: 1 },
                SnapshotFrame::Data { bytes: b"xy".to_vec() },
            ],
            // A .git path.
            [entry(b".git/config", MODE_FILE, b"x").to_vec(), vec![SnapshotFrame::End { entries: 1, bytes: 1 }]]
                .concat(),
            // Twice the same path.
            [entry(b"a", MODE_FILE, b"x"), entry(b"a", MODE_FILE, b"x")].concat(),
            // A symlink target too long.
            vec![SnapshotFrame::Entry { path: b"l".to_vec(), mode: MODE_SYMLINK, size: MAX_SNAPSHOT_LINK + 1 }],
            // An end that does not add up.
            [entry(b"a", MODE_FILE, b"x").to_vec(), vec![SnapshotFrame::End { entries: 2, bytes: 1 }]].concat(),
        ];
        for frames in bad {
            assert!(read(&repo, &stream(&frames)[..]).is_err(), "{frames:?}");
        }
    }
}
