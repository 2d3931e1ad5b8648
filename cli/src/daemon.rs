//! `neuraphage daemon start|stop|status`: launching, stopping and asking the supervisor.

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::{ControlReply, ControlRequest, DaemonStatus};
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::client::{Client, unexpected};
use crate::error::CliError;

/// Name of the supervisor binary, looked for beside this one, then on `PATH`.
pub const SUPERVISOR_BIN: &str = "neuraphage-supervisor";

/// How long `start` waits for the control socket to answer, and `stop` for the process to exit.
const WAIT: Duration = Duration::from_secs(20);

/// Ask the running supervisor for its status.
pub async fn status(paths: &Paths) -> Result<DaemonStatus, CliError> {
    match Client::connect(paths).await?.call(ControlRequest::DaemonStatus).await? {
        ControlReply::Status(status) => Ok(status),
        other => Err(unexpected(other)),
    }
}

/// Start the supervisor detached and wait until it answers. Returns its status and whether it was already running.
pub async fn start(paths: &Paths) -> Result<(DaemonStatus, bool), CliError> {
    start_with_env(paths, &[]).await
}

/// [`start`], with extra environment for the supervisor (the demo points the broker at its scripted model).
pub async fn start_with_env(paths: &Paths, env: &[(String, String)]) -> Result<(DaemonStatus, bool), CliError> {
    match status(paths).await {
        Ok(st) => return Ok((st, true)),
        Err(CliError::NotRunning(_)) => {}
        Err(e) => return Err(e),
    }
    let binary = supervisor_binary()?;
    let logs = paths.logs();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&logs)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", logs.display())))?;
    let stderr_path = logs.join("supervisor.stderr");
    let stderr = File::create(&stderr_path).map_err(|e| CliError::Failed(format!("{}: {e}", stderr_path.display())))?;
    let mut child = Command::new(&binary)
        .arg("--quiet-stderr")
        .env(neuraphage_ipc::paths::ENV_HOME, &paths.home)
        .env(neuraphage_ipc::paths::ENV_RUNTIME_DIR, &paths.runtime_dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        // Its own process group: a Ctrl-C in this terminal must not reach the daemon.
        .process_group(0)
        .spawn()
        .map_err(|e| CliError::Failed(format!("cannot run {}: {e}", binary.display())))?;
    let deadline = Instant::now() + WAIT;
    loop {
        match status(paths).await {
            Ok(st) => return Ok((st, false)),
            Err(CliError::NotRunning(_)) if Instant::now() < deadline => {}
            Err(CliError::NotRunning(msg)) => {
                return Err(CliError::Failed(format!("the supervisor did not answer within {WAIT:?}: {msg}")));
            }
            Err(e) => return Err(e),
        }
        if let Ok(Some(exit)) = child.try_wait() {
            let said = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            // Another `daemon start` won the race for the home: its supervisor will answer; keep waiting for it.
            if said.contains("held by another neuraphage-supervisor") {
                return wait_for_other(paths, deadline).await;
            }
            let tail: Vec<&str> = said.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(CliError::Failed(format!(
                "the supervisor exited ({exit}) before it answered:\n{}",
                if tail.is_empty() { "(it printed nothing)".to_owned() } else { tail.join("\n") }
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Another supervisor holds the home and is starting: wait until it answers.
async fn wait_for_other(paths: &Paths, deadline: Instant) -> Result<(DaemonStatus, bool), CliError> {
    loop {
        match status(paths).await {
            Ok(st) => return Ok((st, true)),
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return Err(e),
        }
    }
}

/// The pid written in the home's lock file by the supervisor that holds it (it may be gone).
fn lock_holder(paths: &Paths) -> Option<u32> {
    std::fs::read_to_string(paths.home.join("supervisor.lock")).ok()?.trim().parse().ok()
}

/// Ask the supervisor to stop and wait until its process has gone. `Ok(None)` if it was not running.
/// Several `stop`s at once all succeed: one asks, the others find it stopping (or gone) and wait.
pub async fn stop(paths: &Paths) -> Result<Option<u32>, CliError> {
    let asked = match Client::connect(paths).await {
        Ok(mut client) => client.call(ControlRequest::Shutdown).await,
        Err(e) => Err(e),
    };
    let pid = match asked {
        Ok(ControlReply::ShuttingDown { pid }) => pid,
        Ok(other) => return Err(unexpected(other)),
        Err(CliError::Refused(e)) => return Err(CliError::Refused(e)),
        // Not reachable, or it hung up mid-request: it is stopping or gone; the lock file says who held the home.
        Err(e) => match lock_holder(paths).filter(|pid| alive(*pid as i32)) {
            Some(pid) => pid,
            None if matches!(e, CliError::NotRunning(_)) => return Ok(None),
            None => return Ok(None),
        },
    };
    let deadline = Instant::now() + WAIT;
    let pid_raw = i32::try_from(pid).map_err(|_| CliError::Failed(format!("the supervisor reported pid {pid}")))?;
    while alive(pid_raw) {
        if Instant::now() > deadline {
            return Err(CliError::Failed(format!("the supervisor (pid {pid}) is still running after {WAIT:?}")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Some(pid))
}

/// Whether `pid` is a live process (a zombie waiting for its parent to reap it counts as gone).
fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may contain ')' so take the state after the last one.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// The supervisor binary: beside this executable, else from `PATH`.
fn supervisor_binary() -> Result<PathBuf, CliError> {
    if let Some(beside) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join(SUPERVISOR_BIN)))
        && beside.is_file()
    {
        return Ok(beside);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(SUPERVISOR_BIN)).find(|p| p.is_file()).ok_or_else(|| {
        CliError::Failed(format!(
            "cannot find {SUPERVISOR_BIN} beside this program or on PATH; build it with `cargo build --release`"
        ))
    })
}
