//! The broker's own small state file, `$NEURAPHAGE_HOME/broker-limits.json`: each key's limits as learnt from the
//! provider's headers (limit, bucket size, whether it meters by window), so that a restarted broker paces a key at
//! once instead of starting cold. Keys are named by a SHA-256 of the provider's address and the key, never by the
//! key itself. The file is written whole to a temporary file, synced and renamed over the old one (a crash leaves
//! the old file or the new one, never half of one); a file that does not parse is ignored with a log line.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limiter::DIMENSIONS;

/// The file's name in the home.
pub const FILE: &str = "broker-limits.json";
/// The largest file read (a few hundred bytes a key).
const MAX_BYTES: u64 = 1 << 20;
/// The most keys kept.
const MAX_KEYS: usize = 1000;

/// What was learnt about one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Learnt {
    /// The window the limits are per, in milliseconds.
    pub window_ms: u64,
    /// Limits per window: requests, input tokens, output tokens, tokens.
    pub limits: [Option<u64>; DIMENSIONS],
    /// The provider's bucket sizes.
    pub capacity: [Option<f64>; DIMENSIONS],
    /// The provider meters by window.
    pub windowed: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileBody {
    version: u32,
    keys: BTreeMap<String, Learnt>,
}

/// The state file and what it holds.
#[derive(Debug)]
pub struct LearntStore {
    path: PathBuf,
    keys: Mutex<BTreeMap<String, Learnt>>,
}

/// The name a key is stored under: hex SHA-256 of the provider's address and the key.
pub fn key_hash(base_url: &str, api_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"neuraphage broker limits\0");
    h.update(base_url.as_bytes());
    h.update(b"\0");
    h.update(api_key.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl LearntStore {
    /// The store of `home`, read from its file (empty when there is none, or when it is malformed: logged).
    pub fn open(home: &Path) -> LearntStore {
        let path = home.join(FILE);
        let keys = match read(&path) {
            Ok(keys) => keys,
            Err(reason) => {
                tracing::warn!(file = %path.display(), %reason, "learnt limits ignored; they will be learnt again");
                BTreeMap::new()
            }
        };
        LearntStore { path, keys: Mutex::new(keys) }
    }

    /// What was learnt about `hash`.
    pub fn get(&self, hash: &str) -> Option<Learnt> {
        self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(hash).cloned()
    }

    /// Remember `learnt` for `hash` and write the file (a failure is logged: the limits are learnt again).
    pub fn put(&self, hash: &str, learnt: Learnt) {
        let mut keys = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if keys.get(hash) == Some(&learnt) {
            return;
        }
        if keys.len() >= MAX_KEYS && !keys.contains_key(hash) {
            return;
        }
        keys.insert(hash.to_owned(), learnt);
        if let Err(e) = write(&self.path, &keys) {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot write the learnt limits");
        }
    }
}

fn read(path: &Path) -> Result<BTreeMap<String, Learnt>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.to_string()),
    };
    if meta.len() > MAX_BYTES {
        return Err(format!("larger than {MAX_BYTES} bytes"));
    }
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let body: FileBody = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    if body.version != 1 {
        return Err(format!("version {} (this broker writes 1)", body.version));
    }
    Ok(body.keys.into_iter().take(MAX_KEYS).collect())
}

fn write(path: &Path, keys: &BTreeMap<String, Learnt>) -> std::io::Result<()> {
    let body = FileBody { version: 1, keys: keys.clone() };
    let text = serde_json::to_vec_pretty(&body).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(&text)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learnt() -> Learnt {
        Learnt {
            window_ms: 60_000,
            limits: [Some(600), None, None, None],
            capacity: [Some(60.0), None, None, None],
            windowed: false,
        }
    }

    #[test]
    fn written_atomically_read_back_and_never_holding_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = LearntStore::open(dir.path());
        let hash = key_hash("https://api.anthropic.com", "sk-ant-secret-key");
        assert_eq!(hash.len(), 64);
        store.put(&hash, learnt());
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!text.contains("sk-ant") && !text.contains("secret"), "{text}");
        assert!(!dir.path().join("broker-limits.json.tmp").exists());
        assert_eq!(LearntStore::open(dir.path()).get(&hash), Some(learnt()));
        assert_ne!(key_hash("https://api.anthropic.com", "other"), hash);
    }

    #[test]
    fn a_malformed_file_is_ignored_and_replaced_on_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{ not json").unwrap();
        let store = LearntStore::open(dir.path());
        assert_eq!(store.get("x"), None);
        store.put("x", learnt());
        assert_eq!(LearntStore::open(dir.path()).get("x"), Some(learnt()));
    }
}
