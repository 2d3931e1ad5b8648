//! `neuraphage-worker --snapshot`: the worktree's files as a stream for the supervisor's commit, read inside the
//! task's sandbox.
//!
//! The supervisor never reads a task's files with its own rights (a task could swap a folder for a symlink to
//! `~/.ssh` while it walks). So this helper, started under the task's own sandbox plan, walks the worktree: `.git`
//! entries are skipped (and noted, except the supervisor's own note file at the root), `.gitignore` files are
//! honoured up to [`MAX_GITIGNORE_BYTES`] each (a bigger one is not used and a note says so), symlinks are sent as
//! links, regular files in [`SNAPSHOT_CHUNK`] pieces, everything else is skipped. What it writes is a stream of
//! [`SnapshotFrame`]s on stdout; the supervisor checks every one of them.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use neuraphage_ipc::snapshot::{
    MAX_GITIGNORE_BYTES, MAX_SNAPSHOT_ENTRIES, MAX_SNAPSHOT_FILE, MAX_SNAPSHOT_LINK, MAX_SNAPSHOT_NOTES,
    MAX_SNAPSHOT_PATH, MAX_SNAPSHOT_TOTAL, MODE_EXECUTABLE, MODE_FILE, MODE_SYMLINK, SNAPSHOT_CHUNK, SnapshotFrame,
    SnapshotWriter,
};

/// How deep folders are followed.
const MAX_DEPTH: usize = 256;

/// The sum of `.gitignore` bytes a walk reads.
const MAX_GITIGNORE_TOTAL: u64 = 16 * MAX_GITIGNORE_BYTES;

struct Walk<W: Write> {
    out: SnapshotWriter<W>,
    entries: u64,
    bytes: u64,
    notes: usize,
    gitignore_bytes: u64,
    full: bool,
}

/// Walk `worktree` and write its snapshot to `out`.
pub fn run(worktree: &Path, out: impl Write) -> anyhow::Result<()> {
    let mut walk =
        Walk { out: SnapshotWriter::new(out), entries: 0, bytes: 0, notes: 0, gitignore_bytes: 0, full: false };
    let mut ignores = Vec::new();
    walk.dir(worktree, b"", &mut ignores, 0)?;
    let (entries, bytes) = (walk.entries, walk.bytes);
    walk.out.send(&SnapshotFrame::End { entries, bytes })?;
    walk.out.flush()?;
    Ok(())
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() { name.to_vec() } else { [rel, b"/", name].concat() }
}

impl<W: Write> Walk<W> {
    fn note(&mut self, note: &str, path: &[u8]) -> anyhow::Result<()> {
        self.notes += 1;
        if self.notes <= MAX_SNAPSHOT_NOTES {
            self.out.send(&SnapshotFrame::Note { note: note.to_owned(), path: path.to_vec() })?;
        }
        Ok(())
    }

    fn ignored(&self, ignores: &[Gitignore], path: &Path, is_dir: bool) -> bool {
        for gi in ignores.iter().rev() {
            let m = gi.matched(path, is_dir);
            if m.is_ignore() {
                return true;
            }
            if m.is_whitelist() {
                return false;
            }
        }
        false
    }

    /// The folder's `.gitignore`, if it has a usable one.
    fn gitignore(&mut self, dir: &Path, rel: &[u8]) -> anyhow::Result<Option<Gitignore>> {
        let path = dir.join(".gitignore");
        let Ok(meta) = std::fs::symlink_metadata(&path) else { return Ok(None) };
        let rel = join(rel, b".gitignore");
        if !meta.is_file() {
            return Ok(None);
        }
        if meta.len() > MAX_GITIGNORE_BYTES || self.gitignore_bytes + meta.len() > MAX_GITIGNORE_TOTAL {
            self.note(
                &format!("a .gitignore of {} bytes is not used (the bound is {MAX_GITIGNORE_BYTES})", meta.len()),
                &rel,
            )?;
            return Ok(None);
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path)
        else {
            return Ok(None);
        };
        let mut text = Vec::new();
        file.take(MAX_GITIGNORE_BYTES + 1).read_to_end(&mut text)?;
        if text.len() as u64 > MAX_GITIGNORE_BYTES {
            self.note("a .gitignore grew past the bound while read; not used", &rel)?;
            return Ok(None);
        }
        self.gitignore_bytes += text.len() as u64;
        let mut builder = GitignoreBuilder::new(dir);
        for line in String::from_utf8_lossy(&text).lines() {
            let _ = builder.add_line(None, line);
        }
        Ok(builder.build().ok())
    }

    fn dir(&mut self, dir: &Path, rel: &[u8], ignores: &mut Vec<Gitignore>, depth: usize) -> anyhow::Result<()> {
        if depth > MAX_DEPTH {
            return self.note("folders nested too deep; left out", rel);
        }
        let Ok(read) = std::fs::read_dir(dir) else {
            return self.note("a folder that cannot be read; left out", rel);
        };
        let mut names: Vec<_> = read.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        names.sort();
        let pushed = match self.gitignore(dir, rel)? {
            Some(gi) => {
                ignores.push(gi);
                true
            }
            None => false,
        };
        for name in names {
            if self.full {
                break;
            }
            let path = dir.join(&name);
            let child = join(rel, name.as_bytes());
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if name.as_bytes().eq_ignore_ascii_case(b".git") {
                // The supervisor's own note file at the root is expected; anything else named .git is the task's.
                if !(rel.is_empty() && meta.is_file() && name.as_bytes() == b".git") {
                    self.note("git metadata made by the task; not committed", &child)?;
                }
                continue;
            }
            if child.len() > MAX_SNAPSHOT_PATH {
                self.note("path too long; left out", &child[..64])?;
                continue;
            }
            let kind = meta.file_type();
            if self.ignored(ignores, &path, kind.is_dir()) {
                continue;
            }
            if kind.is_dir() {
                self.dir(&path, &child, ignores, depth + 1)?;
            } else if kind.is_symlink() {
                let Ok(target) = std::fs::read_link(&path) else { continue };
                let target = target.as_os_str().as_bytes();
                if target.len() as u64 > MAX_SNAPSHOT_LINK || target.is_empty() {
                    self.note("a symlink target of a size git does not take; left out", &child)?;
                    continue;
                }
                if self.count(&child, target.len() as u64)? {
                    self.out.send(&SnapshotFrame::Entry {
                        path: child,
                        mode: MODE_SYMLINK,
                        size: target.len() as u64,
                    })?;
                    self.out.send(&SnapshotFrame::Data { bytes: target.to_vec() })?;
                }
            } else if kind.is_file() {
                self.file(&path, child)?;
            }
        }
        if pushed {
            ignores.pop();
        }
        Ok(())
    }

    /// Count an entry of `size` bytes against the bounds; false (and a note) if it does not fit.
    fn count(&mut self, rel: &[u8], size: u64) -> anyhow::Result<bool> {
        if self.entries >= MAX_SNAPSHOT_ENTRIES {
            self.full = true;
            self.note(&format!("more than {MAX_SNAPSHOT_ENTRIES} files; the rest is left out"), rel)?;
            return Ok(false);
        }
        if self.bytes + size > MAX_SNAPSHOT_TOTAL {
            self.note(&format!("the snapshot would pass {MAX_SNAPSHOT_TOTAL} bytes; left out"), rel)?;
            return Ok(false);
        }
        self.entries += 1;
        self.bytes += size;
        Ok(true)
    }

    fn file(&mut self, path: &Path, rel: Vec<u8>) -> anyhow::Result<()> {
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path)
        else {
            return self.note("a file that cannot be opened; left out", &rel);
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Ok(());
        }
        let size = meta.len();
        if size > MAX_SNAPSHOT_FILE {
            return self
                .note(&format!("a file of {size} bytes, over the bound of {MAX_SNAPSHOT_FILE}; left out"), &rel);
        }
        if !self.count(&rel, size)? {
            return Ok(());
        }
        let mode = if meta.mode() & 0o111 != 0 { MODE_EXECUTABLE } else { MODE_FILE };
        self.out.send(&SnapshotFrame::Entry { path: rel.clone(), mode, size })?;
        // Exactly `size` bytes follow, whatever the file does meanwhile: a file cut short is padded with zeros.
        let mut left = size;
        let mut input = file.take(size);
        let mut short = false;
        while left > 0 {
            let mut chunk = vec![0u8; SNAPSHOT_CHUNK.min(left as usize)];
            let mut got = 0;
            while got < chunk.len() && !short {
                match input.read(&mut chunk[got..]) {
                    Ok(0) | Err(_) => short = true,
                    Ok(n) => got += n,
                }
            }
            left -= chunk.len() as u64;
            self.out.send(&SnapshotFrame::Data { bytes: chunk })?;
        }
        if short {
            self.note("a file shrank while it was read; padded with zeros", &rel)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use neuraphage_ipc::snapshot::SnapshotReader;

    use super::*;

    fn frames(dir: &Path) -> Vec<SnapshotFrame> {
        let mut out = Vec::new();
        run(dir, &mut out).unwrap();
        let mut reader = SnapshotReader::new(&out[..]);
        std::iter::from_fn(|| reader.next_frame().unwrap()).collect()
    }

    #[test]
    fn walks_files_links_and_gitignore_and_skips_git_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join(".git"), "note\n").unwrap();
        std::fs::write(d.join(".gitignore"), "target/\n*.log\n").unwrap();
        std::fs::create_dir_all(d.join("src/.git/hooks")).unwrap();
        std::fs::create_dir_all(d.join("target")).unwrap();
        std::fs::write(d.join("target/x"), "built").unwrap();
        std::fs::write(d.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(d.join("a.log"), "log").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
        let got = frames(d);
        let entries: Vec<_> = got
            .iter()
            .filter_map(|f| match f {
                SnapshotFrame::Entry { path, mode, .. } => Some((String::from_utf8_lossy(path).into_owned(), *mode)),
                _ => None,
            })
            .collect();
        assert_eq!(
            entries,
            vec![(".gitignore".into(), MODE_FILE), ("link".into(), MODE_SYMLINK), ("src/main.rs".into(), MODE_FILE)]
        );
        assert!(got.contains(&SnapshotFrame::Data { bytes: b"/etc/passwd".to_vec() }));
        assert!(got.iter().any(|f| matches!(f, SnapshotFrame::Note { path, .. } if path == b"src/.git")));
        assert!(matches!(got.last(), Some(SnapshotFrame::End { entries: 3, .. })));
    }

    #[test]
    fn a_huge_gitignore_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut big = b"kept.txt\n".to_vec();
        big.resize(MAX_GITIGNORE_BYTES as usize + 10, b'#');
        std::fs::write(d.join(".gitignore"), big).unwrap();
        std::fs::write(d.join("kept.txt"), "k").unwrap();
        let got = frames(d);
        assert!(got.iter().any(|f| matches!(f, SnapshotFrame::Entry { path, .. } if path == b"kept.txt")));
        assert!(got.iter().any(|f| matches!(f, SnapshotFrame::Note { note, .. } if note.contains("not used"))));
    }
}
