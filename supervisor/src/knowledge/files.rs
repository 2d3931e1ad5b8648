//! The knowledge files, the store's truth: `knowledge/{learnings,decisions}/<id>.md`, YAML front matter then a
//! Markdown body, so a person can read, edit and keep them in git. Written atomically (a temporary file in the same
//! folder, fsync, rename, fsync of the folder); read bounded ([`MAX_FILE_BYTES`]); a malformed file is reported with
//! its path and skipped, never fatal.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use neuraphage_ipc::knowledge::{
    Learning, MAX_BODY_BYTES, MAX_FILE_BYTES as MAX_PATH_BYTES, MAX_FILES, MAX_TAG_BYTES, MAX_TAGS, MAX_TITLE_BYTES,
    NewLearning, Skipped,
};
use serde::{Deserialize, Serialize};

/// Largest knowledge file read (a bigger one is skipped with a message).
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Most files read from one folder (the rest are skipped with a message).
pub const MAX_FILES_PER_FOLDER: usize = 100_000;

/// The two kinds, and their folders.
pub const KINDS: [(&str, &str); 2] = [("learning", "learnings"), ("decision", "decisions")];

/// The knowledge folder of a home.
pub fn root(home: &Path) -> PathBuf {
    home.join("knowledge")
}

/// The folder of a kind (`learning`, `decision`).
pub fn folder(root: &Path, kind: &str) -> PathBuf {
    let sub = KINDS.iter().find(|(k, _)| *k == kind).map(|(_, f)| *f).unwrap_or("learnings");
    root.join(sub)
}

/// Make both folders.
pub fn ensure(root: &Path) -> std::io::Result<()> {
    for (_, sub) in KINDS {
        std::fs::create_dir_all(root.join(sub))?;
    }
    Ok(())
}

/// The front matter, as written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Front {
    id: String,
    kind: String,
    title: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    source_task: Option<String>,
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    files: Vec<String>,
    created: DateTime<Utc>,
    #[serde(default = "default_confidence")]
    confidence: f64,
}

fn default_confidence() -> f64 {
    0.5
}

/// Is `id` a well-formed learning id (1 to 64 of `a-z 0-9 -`)? Ids name files: nothing else gets near a path.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A new id: `k-` + the time + 32 random bits.
pub fn new_id() -> String {
    format!("k-{}-{:08x}", Utc::now().format("%Y%m%d%H%M%S"), rand::random::<u32>())
}

/// A file's text for `learning`.
pub fn render(learning: &Learning) -> Result<String, String> {
    let front = Front {
        id: learning.id.clone(),
        kind: learning.kind.clone(),
        title: learning.title.clone(),
        tags: learning.tags.clone(),
        source_task: learning.source_task.clone(),
        repository: learning.repository.clone(),
        files: learning.files.clone(),
        created: learning.created,
        confidence: learning.confidence,
    };
    let yaml = serde_yaml_ng::to_string(&front).map_err(|e| format!("cannot write the front matter: {e}"))?;
    Ok(format!("---\n{yaml}---\n{}\n", learning.body.trim_end()))
}

/// Parse a file's text; `path` is where it was read (for the learning and the messages).
pub fn parse(path: &Path, text: &str) -> Result<Learning, String> {
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
        .ok_or("it does not start with a `---` line (YAML front matter)")?;
    let end = rest.find("\n---\n").or_else(|| rest.find("\n---\r\n")).or_else(|| {
        // `---` as the very last line.
        rest.strip_suffix("\n---").map(|r| r.len())
    });
    let end = end.ok_or("its front matter has no closing `---` line")?;
    let yaml = &rest[..end + 1];
    let body = rest[end + 1..].trim_start_matches("---").trim_start_matches(['\r', '\n']);
    let front: Front = serde_yaml_ng::from_str(yaml).map_err(|e| format!("front matter: {e}"))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if front.id != stem {
        return Err(format!("its id {:?} is not its file name {stem:?}", cut(&front.id, 80)));
    }
    if !valid_id(&front.id) {
        return Err("its id is not 1 to 64 of a-z, 0-9 and -".into());
    }
    if !KINDS.iter().any(|(k, _)| *k == front.kind) {
        return Err(format!("kind {:?}: it is learning or decision", cut(&front.kind, 40)));
    }
    let learning = Learning {
        id: front.id,
        kind: front.kind,
        title: front.title,
        tags: front.tags,
        source_task: front.source_task,
        repository: front.repository,
        files: front.files,
        created: front.created,
        confidence: front.confidence.clamp(0.0, 1.0),
        body: body.trim_end().to_owned(),
        path: path.display().to_string(),
    };
    check(&learning)?;
    Ok(learning)
}

/// The bounds every learning keeps.
pub fn check(l: &Learning) -> Result<(), String> {
    let n = NewLearning {
        kind: Some(l.kind.clone()),
        title: l.title.clone(),
        body: l.body.clone(),
        tags: l.tags.clone(),
        files: l.files.clone(),
        repository: l.repository.clone(),
    };
    check_new(&n)
}

/// The bounds of a new learning (the `Learn` tool's, `knowledge add`'s).
pub fn check_new(n: &NewLearning) -> Result<(), String> {
    if let Some(kind) = &n.kind
        && !KINDS.iter().any(|(k, _)| k == kind)
    {
        return Err(format!("kind {:?}: it is learning or decision", cut(kind, 40)));
    }
    if n.title.trim().is_empty() {
        return Err("the title is empty".into());
    }
    if n.title.len() > MAX_TITLE_BYTES || n.title.contains('\n') {
        return Err(format!("the title is one line of at most {MAX_TITLE_BYTES} bytes"));
    }
    if n.body.trim().is_empty() {
        return Err("the body is empty".into());
    }
    if n.body.len() > MAX_BODY_BYTES {
        return Err(format!("the body is {} bytes; at most {MAX_BODY_BYTES}", n.body.len()));
    }
    if n.tags.len() > MAX_TAGS || n.tags.iter().any(|t| t.is_empty() || t.len() > MAX_TAG_BYTES || t.contains('\n')) {
        return Err(format!("at most {MAX_TAGS} tags, each one line of 1 to {MAX_TAG_BYTES} bytes"));
    }
    if n.files.len() > MAX_FILES
        || n.files.iter().any(|f| f.is_empty() || f.len() > MAX_PATH_BYTES || f.contains(['\n', '\0']))
    {
        return Err(format!("at most {MAX_FILES} files, each one line of 1 to {MAX_PATH_BYTES} bytes"));
    }
    if let Some(r) = &n.repository
        && (r.len() > 4096 || r.contains(['\n', '\0']))
    {
        return Err("the repository is one line of at most 4096 bytes".into());
    }
    let nul = |s: &str| s.contains('\0');
    if nul(&n.title) || nul(&n.body) || n.tags.iter().any(|t| nul(t)) {
        return Err("a NUL character".into());
    }
    Ok(())
}

/// Write `learning` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the folder.
pub fn write(path: &Path, learning: &Learning) -> Result<(), String> {
    let text = render(learning)?;
    let dir = path.parent().ok_or("a knowledge file needs a folder")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".tmp-{}-{:08x}", learning.id, rand::random::<u32>()));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

/// Delete a learning's file (and sync its folder). `Ok(false)`: there was none.
pub fn remove(path: &Path) -> Result<bool, String> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// A file's identity for the rescan: modification time (ns) and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Size in bytes.
    pub size: i64,
}

/// One `.md` file found by [`list`].
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its id (the file name without `.md`).
    pub id: String,
    /// Its path.
    pub path: PathBuf,
    /// Its stamp.
    pub stamp: Stamp,
}

/// Every `<id>.md` in both folders with its stamp (no file is opened); temporary files left by a killed writer are
/// removed; names that are not ids, symlinks and other oddities are reported as skipped.
pub fn list(root: &Path) -> (Vec<Listed>, Vec<Skipped>) {
    use std::os::unix::fs::MetadataExt;
    let (mut found, mut skipped) = (Vec::new(), Vec::new());
    for (_, sub) in KINDS {
        let dir = root.join(sub);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                skipped.push(Skipped { path: dir.display().to_string(), why: e.to_string() });
                continue;
            }
        };
        for (n, entry) in entries.enumerate() {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                skipped.push(Skipped { path: path.display().to_string(), why: "its name is not UTF-8".into() });
                continue;
            };
            if name.starts_with(".tmp-") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(id) = name.strip_suffix(".md") else { continue };
            if n >= MAX_FILES_PER_FOLDER {
                skipped.push(Skipped { path: path.display().to_string(), why: "over the folder's file limit".into() });
                continue;
            }
            if !valid_id(id) {
                let why = "its name is not an id (1 to 64 of a-z, 0-9 and -)".to_owned();
                skipped.push(Skipped { path: path.display().to_string(), why });
                continue;
            }
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_file() => m,
                Ok(_) => {
                    skipped.push(Skipped { path: path.display().to_string(), why: "not a regular file".into() });
                    continue;
                }
                Err(e) => {
                    skipped.push(Skipped { path: path.display().to_string(), why: e.to_string() });
                    continue;
                }
            };
            let stamp = Stamp { mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(), size: meta.size() as i64 };
            found.push(Listed { id: id.to_owned(), path, stamp });
        }
    }
    (found, skipped)
}

/// Read and parse one file, bounded. Opened without following a symlink and without blocking on a FIFO, and read
/// only if it is a regular file: [`list`] skips such names, and a file swapped for one between the listing and this
/// read is refused here rather than followed.
pub fn read(path: &Path) -> Result<Learning, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(
            |e| match e.raw_os_error() {
                Some(libc::ELOOP) => "it is a symlink".to_owned(),
                _ => e.to_string(),
            },
        )?;
    if !file.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("it is not a regular file".to_owned());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("it is over {MAX_FILE_BYTES} bytes"));
    }
    let text = String::from_utf8(bytes).map_err(|_| "it is not UTF-8".to_owned())?;
    parse(path, &text)
}

/// At most `max` characters of `s`.
pub fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str) -> Learning {
        Learning {
            id: id.into(),
            kind: "learning".into(),
            title: "Use a: colon".into(),
            tags: vec!["rust".into()],
            source_task: Some("t-0000000001".into()),
            repository: Some("/r".into()),
            files: vec!["src/lib.rs".into()],
            created: Utc::now(),
            confidence: 0.9,
            body: "---\nThe fix was X.\n".into(),
            path: String::new(),
        }
    }

    #[test]
    fn round_trip_and_malformed_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("learnings/k-a.md");
        write(&path, &sample("k-a")).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.title, "Use a: colon");
        assert_eq!(back.body, "---\nThe fix was X.");
        assert_eq!(back.files, vec!["src/lib.rs"]);
        std::fs::write(dir.path().join("learnings/k-b.md"), "no front matter").unwrap();
        assert!(read(&dir.path().join("learnings/k-b.md")).unwrap_err().contains("front matter"));
        std::fs::write(dir.path().join("learnings/k-c.md"), render(&sample("k-x")).unwrap()).unwrap();
        assert!(read(&dir.path().join("learnings/k-c.md")).unwrap_err().contains("file name"));
        std::fs::write(dir.path().join("learnings/.tmp-k-d-1"), "x").unwrap();
        std::fs::write(dir.path().join("learnings/Bad Name.md"), "x").unwrap();
        let (found, skipped) = list(dir.path());
        assert_eq!(found.len(), 3);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(!dir.path().join("learnings/.tmp-k-d-1").exists());
    }

    /// Red team: a hand-made file with a YAML alias bomb (billion laughs) in its front matter, and one nested very
    /// deep, are skipped with a message, within bounded time and memory; the control (the same aliases, few) parses.
    #[test]
    fn alias_bombs_and_deep_nesting_in_front_matter_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k-bomb.md");
        let head = "---\nid: k-bomb\nkind: learning\ntitle: t\ncreated: 2026-01-01T00:00:00Z\n";
        let mut bomb = String::from(head);
        bomb.push_str("x0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!("x{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"));
        }
        bomb.push_str("tags: *a9\n---\nbody\n");
        std::fs::write(&path, &bomb).unwrap();
        assert!(read(&path).is_err());
        // The aliases in a field that is read.
        let mut bomb = String::from(head);
        bomb.push_str("files: &a0 [\"lol\",\"lol\",\"lol\"]\n");
        bomb.push_str("tags: [*a0, *a0]\n---\nbody\n");
        std::fs::write(&path, &bomb).unwrap();
        assert!(read(&path).is_err());
        let deep = format!("{head}tags: {}{}\n---\nbody\n", "[".repeat(30_000), "]".repeat(30_000));
        std::fs::write(&path, &deep).unwrap();
        assert!(read(&path).unwrap_err().contains("front matter"));
        // Control: an alias that fits the types is read.
        std::fs::write(&path, format!("{head}source_task: &s np-0000000001\nrepository: *s\n---\nbody\n")).unwrap();
        assert_eq!(read(&path).unwrap().repository.as_deref(), Some("np-0000000001"));
    }

    #[test]
    fn a_symlink_or_fifo_swapped_in_after_the_listing_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("k-swapped.txt");
        std::fs::write(&secret, render(&sample("k-swapped")).unwrap()).unwrap();
        let link = dir.path().join("k-swapped.md");
        // Control: the same file by its own name (a regular file) is read.
        std::fs::copy(&secret, &link).unwrap();
        assert_eq!(read(&link).unwrap().id, "k-swapped");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert_eq!(read(&link).unwrap_err(), "it is a symlink");
        let fifo = dir.path().join("k-fifo.md");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Would block forever without O_NONBLOCK and the regular-file check.
        assert_eq!(read(&fifo).unwrap_err(), "it is not a regular file");
    }

    #[test]
    fn a_directory_or_a_huge_sparse_file_by_a_learning_name_is_refused_bounded() {
        let dir = tempfile::tempdir().unwrap();
        // Control: a regular file of the same shape is read.
        let good = dir.path().join("k-good.md");
        std::fs::write(&good, render(&sample("k-good")).unwrap()).unwrap();
        assert_eq!(read(&good).unwrap().id, "k-good");
        let folder = dir.path().join("k-dir.md");
        std::fs::create_dir(&folder).unwrap();
        assert_eq!(read(&folder).unwrap_err(), "it is not a regular file");
        // A terabyte the disk does not hold: only MAX_FILE_BYTES + 1 of it is read.
        let sparse = dir.path().join("k-sparse.md");
        std::fs::File::create(&sparse).unwrap().set_len(1 << 40).unwrap();
        assert_eq!(read(&sparse).unwrap_err(), format!("it is over {MAX_FILE_BYTES} bytes"));
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_id(&new_id()));
        assert!(!valid_id("../x") && !valid_id("") && !valid_id("A"));
    }
}
