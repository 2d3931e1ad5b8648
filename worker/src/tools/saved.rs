//! A new file in the outputs folder that keeps a tool's full output when the result had to cut it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;

/// Most bytes saved in one file; the rest of a longer output is dropped (and the result says so).
const SAVED_MAX_BYTES: u64 = 64 << 20;

/// An output file being written. Failures are remembered and reported by [`Saved::close`], never raised.
pub(super) struct Saved {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    written: u64,
    truncated: bool,
    problem: Option<String>,
}

impl Saved {
    /// Creates `<dir>/<prefix>-<unix ms>-<pid>-<n>.log`, a file that did not exist before.
    pub(super) async fn create(dir: &Path, prefix: &str) -> Saved {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let failed = |path: PathBuf, e: std::io::Error| Saved {
            problem: Some(format!("the full output could not be saved in {}: {e}", path.display())),
            path,
            file: None,
            written: 0,
            truncated: false,
        };
        if let Err(e) = tokio::fs::create_dir_all(dir).await {
            return failed(dir.to_path_buf(), e);
        }
        loop {
            let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{prefix}-{millis}-{}-{n}.log", std::process::id()));
            match tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await {
                Ok(file) => return Saved { path, file: Some(file), written: 0, truncated: false, problem: None },
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return failed(path, e),
            }
        }
    }

    /// Appends `bytes`, up to the size cap.
    pub(super) async fn write(&mut self, bytes: &[u8]) {
        let Some(file) = &mut self.file else { return };
        let room = SAVED_MAX_BYTES.saturating_sub(self.written);
        let take = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if take < bytes.len() {
            self.truncated = true;
        }
        if take == 0 {
            return;
        }
        if let Err(e) = file.write_all(&bytes[..take]).await {
            self.problem = Some(format!("the full output could not be saved in {}: {e}", self.path.display()));
            self.file = None;
            return;
        }
        self.written += take as u64;
    }

    /// Finishes the file and says, for the model, where the output is (or why it is not).
    pub(super) async fn close(mut self) -> String {
        if let Some(mut file) = self.file.take()
            && let Err(e) = file.flush().await
        {
            self.problem = Some(format!("the full output could not be saved in {}: {e}", self.path.display()));
        }
        match self.problem {
            Some(problem) => problem,
            None if self.truncated => {
                format!("its first {} MiB are saved in {}", SAVED_MAX_BYTES >> 20, self.path.display())
            }
            None => format!(
                "the full output is saved in {} (Read it with offset and limit, or Grep it)",
                self.path.display()
            ),
        }
    }
}
