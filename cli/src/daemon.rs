//! `neuraphage daemon start|stop|status|install`: launching, stopping and asking the supervisor, and installing it as
//! a systemd user service.
//!
//! `start` uses the systemd user service when it is installed for this home and `systemctl --user` works, and
//! otherwise runs the supervisor as a detached process of its own.

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
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

/// What `start` did.
#[derive(Debug)]
pub struct Started {
    /// The supervisor's status once it answered.
    pub status: DaemonStatus,
    /// It was already running.
    pub already: bool,
    /// systemd started it (the user service), rather than a detached process of ours.
    pub by_systemd: bool,
}

/// Start the supervisor and wait until it answers: through the systemd user service when it is installed for this
/// home and `systemctl --user` works, else as a detached process.
pub async fn start(paths: &Paths) -> Result<Started, CliError> {
    if let Ok(status) = status(paths).await {
        return Ok(Started { status, already: true, by_systemd: false });
    }
    if service_serves(paths).await {
        let deadline = Instant::now() + WAIT;
        let out = systemctl(&["start", UNIT_NAME]).await.map_err(CliError::Failed)?;
        if !out.status.success() {
            return Err(CliError::Failed(format!(
                "`systemctl --user start {UNIT_NAME}` failed ({}): {}; see `journalctl --user -u {UNIT_NAME}`",
                out.status,
                said(&out)
            )));
        }
        return match wait_for_other(paths, deadline).await {
            Ok((status, _)) => Ok(Started { status, already: false, by_systemd: true }),
            Err(e) => Err(CliError::Failed(format!(
                "systemd started {UNIT_NAME}, but nothing answers at {} ({e}); is its unit for another home? \
                 (`systemctl --user cat {UNIT_NAME}`)",
                paths.control_socket().display()
            ))),
        };
    }
    let (status, already) = start_with_env(paths, &[]).await?;
    Ok(Started { status, already, by_systemd: false })
}

/// Start the supervisor as a detached process (never through systemd) and wait until it answers; its status and
/// whether it was already running. `env` is extra environment for it (the demo points the broker at its scripted
/// model).
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
    sibling_binary(SUPERVISOR_BIN)
}

/// A Neuraphage binary: beside this executable, else from `PATH`.
pub fn sibling_binary(name: &str) -> Result<PathBuf, CliError> {
    if let Some(beside) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join(name)))
        && beside.is_file()
    {
        return Ok(beside);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()).ok_or_else(|| {
        CliError::Failed(format!(
            "cannot find {name} beside this program or on PATH; build it with `cargo build --release`"
        ))
    })
}

/// The systemd unit's file name.
pub const UNIT_NAME: &str = "neuraphage-supervisor.service";

/// The unit, with `ExecStart=` still to fill in.
const UNIT_TEMPLATE: &str = include_str!("../../supervisor/systemd/neuraphage-supervisor.service");

/// The template's line that [`render_unit`] replaces.
const EXEC_PLACEHOLDER: &str = "ExecStart=@NEURAPHAGE_SUPERVISOR@";

/// How long one `systemctl` call may take (`enable --now` waits for the supervisor's READY=1).
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(90);

/// What `daemon install` did (or, with `--dry-run`, would do).
#[derive(Debug, serde::Serialize)]
pub struct Installed {
    /// Where the unit goes.
    pub unit_path: PathBuf,
    /// The supervisor binary it runs.
    pub exec_start: PathBuf,
    /// The unit's text.
    pub unit: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// The unit file was written.
    pub written: bool,
    /// `enabled` (and started), `enabled-not-started` (a supervisor runs outside systemd), `unavailable` (no
    /// working `systemctl --user`: run `commands`), or `dry-run`.
    pub systemd: &'static str,
    /// The supervisor's pid, if it answers.
    pub pid: Option<u32>,
    /// Commands left for the user to run, if any.
    pub commands: Vec<String>,
    /// A sentence for people about the outcome.
    pub note: String,
}

/// `daemon install`: render the unit, write it, then `daemon-reload` and `enable --now` through `systemctl --user`
/// (or say what to run where that does not work).
pub async fn install(paths: &Paths, dry_run: bool) -> Result<Installed, CliError> {
    let binary = supervisor_binary()?;
    let exec_start = binary
        .canonicalize()
        .map_err(|e| CliError::Failed(format!("cannot resolve the supervisor binary {}: {e}", binary.display())))?;
    let mut env = Vec::new();
    for (key, value) in
        [(neuraphage_ipc::paths::ENV_HOME, &paths.home), (neuraphage_ipc::paths::ENV_RUNTIME_DIR, &paths.runtime_dir)]
    {
        if std::env::var_os(key).is_some_and(|v| !v.is_empty()) {
            env.push((key, value.as_path()));
        }
    }
    let unit = render_unit(&exec_start, &env)?;
    let unit_path = user_unit_dir()?.join(UNIT_NAME);
    let mut done = Installed {
        unit_path,
        exec_start,
        unit,
        dry_run,
        written: false,
        systemd: "dry-run",
        pid: None,
        commands: Vec::new(),
        note: String::new(),
    };
    if dry_run {
        done.note = format!("dry run: nothing written; the unit would go to {}", done.unit_path.display());
        return Ok(done);
    }
    write_unit(&done.unit_path, &done.unit)?;
    done.written = true;
    let enable_now = format!("systemctl --user enable --now {UNIT_NAME}");
    if let Err(why) = systemctl_works().await {
        done.systemd = "unavailable";
        done.commands = vec!["systemctl --user daemon-reload".to_owned(), enable_now];
        done.note = format!("`systemctl --user` does not work here ({why}); to enable the service, run:");
        return Ok(done);
    }
    run_systemctl(&["daemon-reload"]).await?;
    let unit = show_unit(&["LoadState", "FragmentPath", "MainPID"]).await.map_err(CliError::Failed)?;
    let loaded = unit.get("LoadState").map(String::as_str).unwrap_or("unknown");
    let fragment = unit.get("FragmentPath").map(String::as_str).unwrap_or("");
    if loaded != "loaded" || !same_file(Path::new(fragment), &done.unit_path) {
        return Err(CliError::Failed(format!(
            "wrote {}, but the systemd user manager does not load it (LoadState={loaded}, FragmentPath={fragment}): \
             it reads units from its own $XDG_CONFIG_HOME/systemd/user",
            done.unit_path.display()
        )));
    }
    let main_pid: Option<u32> = unit.get("MainPID").and_then(|p| p.parse().ok()).filter(|&p| p > 0);
    match status(paths).await {
        Ok(st) if Some(st.pid) == main_pid => {
            run_systemctl(&["enable", UNIT_NAME]).await?;
            done.systemd = "enabled";
            done.pid = Some(st.pid);
            done.commands = vec![format!("systemctl --user restart {UNIT_NAME}")];
            done.note = format!(
                "enabled {UNIT_NAME}; it was already running under systemd (pid {}): restart it to use the new unit:",
                st.pid
            );
        }
        Ok(st) => {
            // Starting the service now would only fail on the home's lock: leave the running supervisor alone.
            run_systemctl(&["enable", UNIT_NAME]).await?;
            done.systemd = "enabled-not-started";
            done.pid = Some(st.pid);
            done.commands = vec!["neuraphage daemon stop".to_owned(), "neuraphage daemon start".to_owned()];
            done.note = format!(
                "enabled {UNIT_NAME} for the next login; a supervisor started outside systemd is running (pid {}) \
                 and was left alone; to move it under systemd now, run:",
                st.pid
            );
        }
        Err(_) => {
            run_systemctl(&["enable", "--now", UNIT_NAME]).await?;
            done.systemd = "enabled";
            done.pid = status(paths).await.ok().map(|st| st.pid);
            done.note = format!("enabled and started {UNIT_NAME}: it starts at login, and again if it fails");
        }
    }
    Ok(done)
}

/// The unit for `exec_start`, with an `Environment=` line per `(name, value)` right after `ExecStart=`.
pub fn render_unit(exec_start: &Path, env: &[(&str, &Path)]) -> Result<String, CliError> {
    if !exec_start.is_absolute() {
        return Err(CliError::Failed(format!("the supervisor's path {} is not absolute", exec_start.display())));
    }
    let mut lines = vec![format!("ExecStart={}", unit_word(exec_start.as_os_str(), "the supervisor's path")?)];
    for (name, value) in env {
        let mut pair = std::ffi::OsString::from(format!("{name}="));
        pair.push(value.as_os_str());
        lines.push(format!("Environment={}", unit_word(&pair, name)?));
    }
    let mut rendered = String::with_capacity(UNIT_TEMPLATE.len() + 256);
    let mut placed = 0;
    for line in UNIT_TEMPLATE.lines() {
        if line == EXEC_PLACEHOLDER {
            placed += 1;
            for l in &lines {
                rendered.push_str(l);
                rendered.push('\n');
            }
        } else {
            rendered.push_str(line);
            rendered.push('\n');
        }
    }
    if placed != 1 {
        return Err(CliError::Failed(format!("the built-in unit template has {placed} `{EXEC_PLACEHOLDER}` lines")));
    }
    Ok(rendered)
}

/// One word of a unit file line: as it is when that is safe, else double-quoted with C escapes; `%` (systemd's
/// specifier sign) is doubled either way. Control characters and non-UTF-8 bytes are refused.
fn unit_word(word: &std::ffi::OsStr, what: &str) -> Result<String, CliError> {
    let text = word.to_str().ok_or_else(|| {
        CliError::Failed(format!("{what} ({}) is not UTF-8; a systemd unit cannot hold it", word.display()))
    })?;
    if text.chars().any(char::is_control) {
        return Err(CliError::Failed(format!("{what} ({text:?}) holds a control character; a systemd unit cannot")));
    }
    let plain = text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c));
    let escaped = text.replace('%', "%%");
    if plain {
        return Ok(escaped);
    }
    Ok(format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\"")))
}

/// Where user units go: `$XDG_CONFIG_HOME/systemd/user`, else `~/.config/systemd/user`.
fn user_unit_dir() -> Result<PathBuf, CliError> {
    let config = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).filter(|p| p.is_absolute());
    let config = match config {
        Some(config) => config,
        None => std::env::var_os(neuraphage_ipc::paths::ENV_USER_HOME)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .ok_or_else(|| {
                CliError::Failed("neither XDG_CONFIG_HOME nor HOME is set: cannot tell where user units go".to_owned())
            })?
            .join(".config"),
    };
    Ok(config.join("systemd").join("user"))
}

/// Write the unit file (mode 0644) through a temporary file in the same folder, so it is never seen half-written.
fn write_unit(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().ok_or_else(|| CliError::Failed(format!("{} has no folder", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let fail = |e: std::io::Error| CliError::Failed(format!("cannot write the unit {}: {e}", path.display()));
    let mut tmp = tempfile::Builder::new().prefix(".neuraphage-supervisor.").tempfile_in(dir).map_err(fail)?;
    tmp.write_all(text.as_bytes()).map_err(fail)?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// Whether two paths name the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Run `systemctl --user ARGS` (stdin closed, output captured, bounded in time).
async fn systemctl(args: &[&str]) -> Result<std::process::Output, String> {
    let mut cmd = tokio::process::Command::new("systemctl");
    cmd.arg("--user").args(args).stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(SYSTEMCTL_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("cannot run systemctl: {e}")),
        Err(_) => Err(format!("`systemctl --user {}` did not finish within {SYSTEMCTL_TIMEOUT:?}", args.join(" "))),
    }
}

/// Run `systemctl --user ARGS`, failing with what it said unless it succeeds.
async fn run_systemctl(args: &[&str]) -> Result<(), CliError> {
    let out = systemctl(args).await.map_err(CliError::Failed)?;
    if out.status.success() {
        return Ok(());
    }
    Err(CliError::Failed(format!(
        "`systemctl --user {}` failed ({}): {}; see `journalctl --user -u {UNIT_NAME}`",
        args.join(" "),
        out.status,
        said(&out)
    )))
}

/// What a command printed on stderr (else stdout), on one line.
fn said(out: &std::process::Output) -> String {
    let text = if out.stderr.is_empty() { &out.stdout } else { &out.stderr };
    let text = String::from_utf8_lossy(text);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() { "it printed nothing".to_owned() } else { text }
}

/// `Ok` if `systemctl --user` reaches a user manager; else why not.
async fn systemctl_works() -> Result<(), String> {
    let out = systemctl(&["show", "--property=Version"]).await?;
    if out.status.success() { Ok(()) } else { Err(said(&out)) }
}

/// `systemctl --user show` of the unit: the asked properties, by name.
async fn show_unit(properties: &[&str]) -> Result<std::collections::HashMap<String, String>, String> {
    let property = format!("--property={}", properties.join(","));
    let out = systemctl(&["show", &property, UNIT_NAME]).await?;
    if !out.status.success() {
        return Err(format!("`systemctl --user show {UNIT_NAME}` failed ({}): {}", out.status, said(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Whether `daemon start` should start the systemd user service: `systemctl --user` works, the unit is installed,
/// and it was installed for this home (the same NEURAPHAGE_HOME and NEURAPHAGE_RUNTIME_DIR, or neither).
async fn service_serves(paths: &Paths) -> bool {
    let Ok(unit) = show_unit(&["LoadState", "Environment"]).await else {
        return false;
    };
    if unit.get("LoadState").map(String::as_str) != Some("loaded") {
        return false;
    }
    let words: Vec<&str> = unit.get("Environment").map(|e| e.split_whitespace().collect()).unwrap_or_default();
    [(neuraphage_ipc::paths::ENV_HOME, &paths.home), (neuraphage_ipc::paths::ENV_RUNTIME_DIR, &paths.runtime_dir)]
        .into_iter()
        .all(|(key, value)| unit_env_matches(&words, key, std::env::var_os(key).is_some_and(|v| !v.is_empty()), value))
}

/// The unit's environment (`show`'s words) sets `key` to `value` if `set`, and leaves it unset if not.
fn unit_env_matches(words: &[&str], key: &str, set: bool, value: &Path) -> bool {
    let prefix = format!("{key}=");
    let found: Vec<&str> = words.iter().filter_map(|w| w.strip_prefix(prefix.as_str())).collect();
    match (set, found.as_slice()) {
        (false, []) => true,
        (true, [one]) => Path::new(one) == value,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_the_given_binary_with_the_given_environment() {
        let home = Path::new("/home/u/np");
        let unit = render_unit(Path::new("/opt/np/bin/neuraphage-supervisor"), &[("NEURAPHAGE_HOME", home)]).unwrap();
        assert!(!unit.contains("@NEURAPHAGE_SUPERVISOR@"), "{unit}");
        let at = unit.find("ExecStart=/opt/np/bin/neuraphage-supervisor\nEnvironment=NEURAPHAGE_HOME=/home/u/np\n");
        assert!(at.is_some(), "{unit}");
        for needed in ["Type=notify", "WatchdogSec=", "Restart=on-failure", "KillMode=mixed", "TimeoutStopSec="] {
            assert!(unit.lines().any(|l| l.starts_with(needed)), "{needed} missing:\n{unit}");
        }
        for never in ["ProtectHome=", "ReadOnlyPaths=", "PrivateUsers=", "API_KEY="] {
            assert!(!unit.lines().any(|l| l.starts_with(never)), "{never} present:\n{unit}");
        }
    }

    #[test]
    fn odd_paths_are_quoted_and_percent_signs_doubled() {
        let unit = render_unit(Path::new("/a b/100%/s\"x"), &[("NEURAPHAGE_HOME", Path::new("/h %h"))]).unwrap();
        assert!(unit.contains("ExecStart=\"/a b/100%%/s\\\"x\"\n"), "{unit}");
        assert!(unit.contains("Environment=\"NEURAPHAGE_HOME=/h %%h\"\n"), "{unit}");
        assert!(render_unit(Path::new("relative/sup"), &[]).is_err());
        assert!(render_unit(Path::new("/a\nb"), &[]).is_err());
    }

    #[test]
    fn the_service_is_used_only_for_the_home_it_was_installed_for() {
        let words = ["NEURAPHAGE_HOME=/h", "OTHER=1"];
        assert!(unit_env_matches(&words, "NEURAPHAGE_HOME", true, Path::new("/h")));
        assert!(!unit_env_matches(&words, "NEURAPHAGE_HOME", true, Path::new("/elsewhere")));
        assert!(!unit_env_matches(&words, "NEURAPHAGE_HOME", false, Path::new("/h")));
        assert!(unit_env_matches(&words, "NEURAPHAGE_RUNTIME_DIR", false, Path::new("/r")));
        assert!(!unit_env_matches(&words, "NEURAPHAGE_RUNTIME_DIR", true, Path::new("/r")));
    }
}
