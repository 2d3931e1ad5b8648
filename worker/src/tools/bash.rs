//! `Bash {command, timeout?}`: runs a shell command in the working directory.
//!
//! The command runs as `bash -c command` (`sh -c` when bash is absent), with stdin at `/dev/null`, the worker's
//! environment (plus `TMPDIR` = the task's tmp folder when it exists), in a process group of its own. Stdout and
//! stderr are read together and kept in the order their pieces arrived. When the shell exits, or the timeout
//! passes, the whole process group is killed (so background jobs do not outlive the call) and the pipes are
//! drained for up to 2 s. Output over the context's limit is cut, keeping its head and tail, and the full output
//! (up to 64 MiB) is saved to a new file in the outputs folder, which the result names. The call is an error when
//! the command timed out, exited non-zero, or died by a signal.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use neuraphage_ipc::llm::ToolDefinition;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep_until};

use super::{ToolContext, ToolOutcome, saved::Saved};

/// Timeout when none is given, in milliseconds.
const DEFAULT_TIMEOUT_MS: u64 = 120_000;
/// Longest timeout allowed, in milliseconds (longer ones are lowered to it).
const MAX_TIMEOUT_MS: u64 = 600_000;
/// How long the pipes are still read after the shell ended or was killed.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Bytes kept in memory before the output starts going to a file (at least; see [`Capture::new`]).
const SPILL_MIN_BYTES: usize = 1 << 20;

/// The tool's input.
#[derive(Debug, Deserialize)]
pub(super) struct Input {
    command: String,
    #[serde(default, deserialize_with = "super::lenient_u64")]
    timeout: Option<u64>,
}

/// The tool, for the model.
pub(super) fn definition() -> ToolDefinition {
    ToolDefinition {
        name: "Bash".into(),
        description: "Runs a command with bash in the working directory and returns its output (stdout and stderr \
            together, in arrival order) and its exit code when non-zero. Stdin is empty: nothing can be typed into \
            it. Each call is a fresh shell: `cd` and variables do not carry over, and background jobs are killed \
            when the command ends. Default timeout 120000 ms, at most 600000. Long output is cut in the middle and \
            saved in full to a file whose path is given. Prefer Read, Edit, Write, Glob and Grep over cat, sed, \
            echo >, find and grep."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command to run"},
                "timeout": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS, "description": "Timeout in milliseconds (default 120000, at most 600000)"}
            },
            "required": ["command"]
        }),
    }
}

/// Runs the tool.
pub(super) async fn run(ctx: &ToolContext, input: Input) -> ToolOutcome {
    if input.command.trim().is_empty() {
        return ToolOutcome::error("`command` is empty");
    }
    if !ctx.workdir.is_dir() {
        return ToolOutcome::error(format!("The working directory {} is not available", ctx.workdir.display()));
    }
    let timeout_ms = input.timeout.unwrap_or(DEFAULT_TIMEOUT_MS).clamp(1, MAX_TIMEOUT_MS);
    let mut child = match spawn(ctx, &input.command) {
        Ok(child) => child,
        Err(e) => return ToolOutcome::error(format!("Could not start the command: {e}")),
    };
    let mut group = Group(child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw));
    let (mut stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    let mut capture = Capture::new(ctx);
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let (mut status, mut timed_out, mut drain_until, mut abandoned) = (None, false, None, false);
    let (mut out_buf, mut err_buf) = ([0u8; 8192], [0u8; 8192]);
    loop {
        let finished = status.is_some() || timed_out;
        if finished && stdout.is_none() && stderr.is_none() {
            break;
        }
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf) => match read {
                Ok(0) | Err(_) => stdout = None,
                Ok(n) => capture.push(&out_buf[..n]).await,
            },
            read = read_some(&mut stderr, &mut err_buf) => match read {
                Ok(0) | Err(_) => stderr = None,
                Ok(n) => capture.push(&err_buf[..n]).await,
            },
            exit = child.wait(), if !finished => {
                status = Some(exit);
                group.kill();
                drain_until = Some(Instant::now() + DRAIN_GRACE);
            }
            () = sleep_until(drain_until.unwrap_or(deadline)) => {
                if drain_until.is_some() {
                    abandoned = true;
                    break;
                }
                timed_out = true;
                group.kill();
                drain_until = Some(Instant::now() + DRAIN_GRACE);
            }
        }
    }
    if status.is_none() {
        // The shell was killed: reap it.
        status = tokio::time::timeout(DRAIN_GRACE, child.wait()).await.ok();
    }

    let mut content = capture.finish().await;
    if content.is_empty() {
        content.push_str("(no output)");
    }
    let mut notes = Vec::new();
    let mut is_error = false;
    if timed_out {
        is_error = true;
        notes.push(format!("Command timed out after {timeout_ms} ms; its process group was killed."));
    } else {
        match status {
            Some(Ok(exit)) => {
                if let Some(code) = exit.code().filter(|code| *code != 0) {
                    is_error = true;
                    notes.push(format!("Exit code: {code}"));
                } else if let Some(signal) = exit.signal() {
                    is_error = true;
                    notes.push(format!("Killed by signal {signal}"));
                }
            }
            Some(Err(e)) => {
                is_error = true;
                notes.push(format!("Could not wait for the command: {e}"));
            }
            None => {}
        }
    }
    if abandoned {
        notes.push("(Stopped reading output: a process outside the command's process group kept it open.)".into());
    }
    for note in notes {
        if !content.ends_with('\n') {
            content.push('\n');
        }
        content.push_str(&note);
    }
    ToolOutcome { content, is_error }
}

/// Starts `bash -c command`, or `sh -c command` when there is no bash.
fn spawn(ctx: &ToolContext, command: &str) -> std::io::Result<Child> {
    let shell = |name: &str| {
        let mut cmd = Command::new(name);
        cmd.arg("-c")
            .arg(command)
            .current_dir(&ctx.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if ctx.tmp_dir.is_dir() {
            cmd.env("TMPDIR", &ctx.tmp_dir);
        }
        cmd
    };
    match shell("bash").spawn() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => shell("sh").spawn(),
        other => other,
    }
}

/// Reads from a pipe, or waits forever once it is closed (so `select!` can keep polling the other branches).
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> std::io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read(buf).await,
        None => std::future::pending().await,
    }
}

/// The command's process group; killed (SIGKILL) once, when asked or when dropped (the call was cancelled).
struct Group(Option<Pid>);

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The output as it arrives: all of it in memory while small; past that its head, its tail, and a file with it all.
struct Capture {
    outputs_dir: PathBuf,
    limit: usize,
    spill_at: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
    saved: Option<Saved>,
}

impl Capture {
    fn new(ctx: &ToolContext) -> Self {
        let limit = ctx.limit();
        // A character is at most 4 bytes, so head and tail always hold the characters the result shows.
        let spill_at = SPILL_MIN_BYTES.max(limit.saturating_mul(4));
        let outputs_dir = ctx.outputs_dir.clone();
        Capture { outputs_dir, limit, spill_at, head: Vec::new(), tail: VecDeque::new(), total: 0, saved: None }
    }

    async fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        match &mut self.saved {
            None if self.head.len() + bytes.len() <= self.spill_at => self.head.extend_from_slice(bytes),
            None => {
                let mut saved = Saved::create(&self.outputs_dir, "bash").await;
                saved.write(&self.head).await;
                saved.write(bytes).await;
                self.saved = Some(saved);
                self.tail.extend(self.head.iter().chain(bytes));
            }
            Some(saved) => {
                saved.write(bytes).await;
                self.tail.extend(bytes);
            }
        }
        let excess = self.tail.len().saturating_sub(self.spill_at);
        self.tail.drain(..excess);
    }

    /// The text for the model: everything, or head and tail around a note naming the saved file.
    async fn finish(mut self) -> String {
        let (head, tail, saved) = match self.saved.take() {
            Some(saved) => {
                let tail = String::from_utf8_lossy(self.tail.make_contiguous()).into_owned();
                (String::from_utf8_lossy(&self.head).into_owned(), tail, saved)
            }
            None => {
                let text = String::from_utf8_lossy(&self.head).into_owned();
                if text.chars().count() <= self.limit {
                    return text;
                }
                let mut saved = Saved::create(&self.outputs_dir, "bash").await;
                saved.write(&self.head).await;
                (text.clone(), text, saved)
            }
        };
        let where_saved = saved.close().await;
        let half = self.limit / 2;
        format!(
            "{}\n\n[... output cut: {} bytes in all, showing the first and last {half} characters; {where_saved} \
             ...]\n\n{}",
            super::prefix_chars(&head, half).0,
            self.total,
            super::suffix_chars(&tail, half)
        )
    }
}

#[cfg(test)]
#[path = "bash_tests.rs"]
mod tests;
