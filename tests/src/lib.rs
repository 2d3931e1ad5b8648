//! Support for the cross-process tests: a temporary Neuraphage home, the real binaries run in it, and a raw
//! socket client for sending what a well-behaved client never would.
//!
//! The binaries are the ones cargo built beside the test executable (`cargo test --workspace` builds them, because
//! the `cli`, `supervisor`, `worker` and `broker` packages have integration tests of their own).
#![deny(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use neuraphage_ipc::frame::{decode, encode};
use neuraphage_ipc::paths::{ENV_HOME, ENV_RUNTIME_DIR, ENV_XDG_RUNTIME_DIR, Paths};
use neuraphage_ipc::{ControlReply, ControlRequest, HandshakeReply, Hello, ReplyFrame, RequestFrame, Role};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The folder holding the workspace's binaries for this build profile.
pub fn bin_dir() -> PathBuf {
    // target/<profile>/deps/all-<hash> → target/<profile>
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir").to_path_buf();
    for bin in ["neuraphage", "neuraphage-supervisor", "neuraphage-worker", "neuraphage-broker"] {
        assert!(
            dir.join(bin).is_file(),
            "{bin} is not built in {}; run the tests with `cargo test --workspace`",
            dir.display()
        );
    }
    dir
}

/// Path of one of the workspace's binaries.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A temporary home with its own runtime folder; everything started in it is stopped when it is dropped.
pub struct TestHome {
    dir: tempfile::TempDir,
    /// The folders, as the binaries resolve them.
    pub paths: Paths,
    supervisors: Vec<Child>,
}

impl Default for TestHome {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHome {
    /// A fresh, empty home.
    pub fn new() -> TestHome {
        let dir = tempfile::Builder::new().prefix("np-test-").tempdir().expect("tempdir");
        let paths = Paths { home: dir.path().join("home"), runtime_dir: dir.path().join("run") };
        TestHome { dir, paths, supervisors: Vec::new() }
    }

    /// The temporary folder everything lives in.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    fn env(&self, cmd: &mut Command) {
        // No session bus either: a test that wants desktop notifications gives its own.
        for key in [
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "NEURAPHAGE_MODEL",
            "DBUS_SESSION_BUS_ADDRESS",
        ] {
            cmd.env_remove(key);
        }
        cmd.env_remove(ENV_XDG_RUNTIME_DIR)
            .env(ENV_HOME, &self.paths.home)
            .env(ENV_RUNTIME_DIR, &self.paths.runtime_dir)
            .env("RUST_LOG", "info");
    }

    /// A `neuraphage` command for this home.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(bin("neuraphage"));
        self.env(&mut cmd);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Run `neuraphage ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli().args(args).output().expect("run neuraphage")
    }

    /// Run `neuraphage ARGS`, assert it succeeded, return its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "neuraphage {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Run `neuraphage ARGS --json` (the caller includes `--json`), assert success, parse stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON on stdout")
    }

    /// Run `neuraphage ARGS`, assert it failed, return (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "neuraphage {args:?} should have failed but printed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        (out.status.code().unwrap_or(-1), String::from_utf8(out.stderr).expect("utf-8 stderr"))
    }

    /// A `neuraphage-supervisor` command for this home (not started).
    pub fn supervisor_command(&self) -> Command {
        let mut cmd = Command::new(bin("neuraphage-supervisor"));
        self.env(&mut cmd);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        cmd
    }

    /// Start the supervisor in the foreground (as a child of the test) and wait until it answers.
    pub fn start_supervisor(&mut self) -> u32 {
        self.start_supervisor_with(&[])
    }

    /// Start the supervisor with extra environment (e.g. a model provider's base URL and key).
    pub fn start_supervisor_with(&mut self, env: &[(&str, &str)]) -> u32 {
        let mut cmd = self.supervisor_command();
        cmd.envs(env.iter().copied());
        let child = cmd.stderr(Stdio::null()).spawn().expect("spawn supervisor");
        let pid = child.id();
        self.supervisors.push(child);
        self.wait_until_serving();
        pid
    }

    /// Wait until a handshake on the control socket succeeds.
    pub fn wait_until_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = RawClient::connect(&self.paths)
                && c.handshake().is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "the supervisor did not start serving");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9` every supervisor this home started and reap them.
    pub fn kill9_supervisors(&mut self) {
        for mut child in self.supervisors.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Wait for the supervisors this test started to exit by themselves; their exit statuses.
    pub fn wait_supervisors(&mut self) -> Vec<std::process::ExitStatus> {
        self.supervisors.drain(..).map(|mut c| c.wait().expect("wait")).collect()
    }

    /// Like [`TestHome::wait_supervisors`], but a supervisor still running after `within` is killed and the test
    /// fails.
    pub fn wait_supervisors_within(&mut self, within: Duration) -> Vec<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        for mut child in self.supervisors.drain(..) {
            loop {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    out.push(status);
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the supervisor did not exit within {within:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        out
    }

    /// Send SIGTERM to a pid.
    pub fn terminate(pid: u32) {
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM");
    }

    /// Make a git repository with one commit under this home's temp folder.
    pub fn git_repo(&self, name: &str) -> PathBuf {
        let path = self.root().join(name);
        let repo = git2::Repository::init(&path).expect("git init");
        std::fs::write(path.join("README.md"), "hello\n").expect("write");
        let mut index = repo.index().expect("index");
        index.add_path(Path::new("README.md")).expect("add");
        let tree = repo.find_tree(index.write_tree().expect("tree")).expect("tree");
        let sig = git2::Signature::now("t", "t@example.invalid").expect("sig");
        repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[]).expect("commit");
        path.canonicalize().expect("canonical")
    }

    /// Write `neuraphage.yaml` in the home.
    pub fn write_config(&self, yaml: &str) {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.paths.home)
            .expect("home");
        std::fs::write(self.paths.home.join("neuraphage.yaml"), yaml).expect("config");
    }

    /// Write `api-keys.yaml` in the home (mode 0600).
    pub fn write_keys(&self, yaml: &str) {
        use std::os::unix::fs::OpenOptionsExt;
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.paths.home)
            .expect("home");
        let path = self.paths.home.join("api-keys.yaml");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .expect("api-keys.yaml");
        file.write_all(yaml.as_bytes()).expect("write api-keys.yaml");
    }

    /// A home whose supervisor starts no task (`max-concurrent: 0`): for tests of the task store itself.
    pub fn queue_only() -> TestHome {
        let home = TestHome::new();
        home.write_config("max-concurrent: 0\n");
        home
    }

    /// A task's state read straight from the store (for when no supervisor runs).
    pub fn show_offline(&self, id: &str) -> String {
        self.open_store().query_row("SELECT state FROM tasks WHERE id = ?1", [id], |r| r.get(0)).expect("task row")
    }

    /// `task show ID --json`.
    pub fn show(&self, id: &str) -> serde_json::Value {
        self.json(&["task", "show", id, "--json"])
    }

    /// The content of task `id`'s first tool result (`""` if it has none), from `task log --json`.
    pub fn first_tool_output(&self, id: &str) -> String {
        self.tool_outputs(id).into_iter().next().unwrap_or_default()
    }

    /// The contents of every tool result of task `id`, in order, from `task log --json`.
    pub fn tool_outputs(&self, id: &str) -> Vec<String> {
        let log = self.json(&["task", "log", id, "--json"]);
        let messages = log["messages"].as_array().cloned().unwrap_or_default();
        messages
            .iter()
            .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
            .filter(|b| b["type"] == "tool_result")
            .filter_map(|b| b["content"].as_str().map(str::to_owned))
            .collect()
    }

    /// Wait until task `id`'s status is `status`; its `task show`.
    pub fn wait_status(&self, id: &str, status: &str, within: Duration) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let shown = self.show(id);
            if shown["status"] == status {
                return shown;
            }
            assert!(Instant::now() < deadline, "{id} never became {status}: {shown:#}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait until every task in `ids` has ended (Completed, Failed, Cancelled or Blocked); their `task show`s.
    pub fn wait_ended(&self, ids: &[&str], within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let shown: Vec<serde_json::Value> = ids.iter().map(|id| self.show(id)).collect();
            if shown
                .iter()
                .all(|t| matches!(t["status"].as_str(), Some("Completed" | "Failed" | "Cancelled" | "Blocked")))
            {
                return shown;
            }
            assert!(Instant::now() < deadline, "tasks did not end in {within:?}: {shown:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until task `id` is running a tool; the pid of the worker running it (its latest `worker_started`).
    pub fn worker_in_tool(&self, id: &str, within: Duration) -> u32 {
        let deadline = Instant::now() + within;
        loop {
            let shown = self.show(id);
            if shown["status_detail"]["phase"]["ToolExecution"].is_object() {
                let events = shown["events"].as_array().expect("events");
                let started = events.iter().rev().find(|e| e["kind"] == "worker_started").expect("a worker started");
                return started["data"]["pid"].as_u64().expect("pid") as u32;
            }
            assert!(Instant::now() < deadline, "{id} never reached a tool: {shown:#}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ids of every stored task, as `task list --json` reports them.
    pub fn task_ids(&self) -> Vec<String> {
        let list = self.json(&["task", "list", "--json"]);
        list.as_array().expect("array").iter().map(|t| t["id"].as_str().expect("id").to_owned()).collect()
    }

    /// Open the store read-only, for checks a client cannot make.
    pub fn open_store(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.paths.home.join("neuraphage.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .expect("open store")
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        self.kill9_supervisors();
        // A supervisor started with `neuraphage daemon start` is not our child: stop it through its lock file.
        if let Ok(text) = std::fs::read_to_string(self.paths.home.join("supervisor.lock"))
            && let Ok(pid) = text.trim().parse::<i32>()
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A blocking client that frames bytes by hand, to send what the real CLI never would.
pub struct RawClient {
    /// The connected socket.
    pub stream: UnixStream,
}

impl RawClient {
    /// Connect to the control socket (no handshake).
    pub fn connect(paths: &Paths) -> std::io::Result<RawClient> {
        let stream = UnixStream::connect(paths.control_socket())?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(RawClient { stream })
    }

    /// Write raw bytes.
    pub fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Write one frame around `body`.
    pub fn write_frame(&mut self, body: &[u8]) -> std::io::Result<()> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        self.stream.write_all(&frame)
    }

    /// Send a message as one frame.
    pub fn send<T: serde::Serialize>(&mut self, msg: &T) -> std::io::Result<()> {
        self.write_frame(&encode(msg).expect("encode"))
    }

    /// Read one frame and decode it.
    pub fn recv<T: serde::de::DeserializeOwned>(&mut self) -> std::io::Result<T> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body)?;
        decode(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
    }

    /// Say hello as a tool; the supervisor's answer.
    pub fn hello(&mut self) -> std::io::Result<HandshakeReply> {
        self.send(&Hello::ours(Role::Tool))?;
        self.recv()
    }

    /// Complete the handshake, failing unless accepted.
    pub fn handshake(&mut self) -> std::io::Result<()> {
        match self.hello()? {
            HandshakeReply::Accepted { .. } => Ok(()),
            HandshakeReply::Refused { reason, .. } => Err(std::io::Error::other(reason)),
        }
    }

    /// One request, one reply.
    pub fn call(&mut self, id: u64, request: ControlRequest) -> std::io::Result<ControlReply> {
        self.send(&RequestFrame { id, request })?;
        let reply: ReplyFrame = self.recv()?;
        assert_eq!(reply.id, id, "reply id");
        Ok(reply.reply)
    }

    /// True once the peer has closed the connection (a read returns end-of-file or a reset).
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

/// Children of `parent` whose command name (15 characters at most, as the kernel keeps it) starts with `prefix`.
pub fn children_named(parent: u32, prefix: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let ppid: u32 = stat[close + 2..].split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent && stat[open + 1..close].starts_with(prefix) {
            found.push(pid);
        }
    }
    found
}

/// A file's content on a branch of a repository (`None` if the branch or the file is not there).
pub fn file_on_branch(repo: &Path, branch: &str, file: &str) -> Option<String> {
    let repo = git2::Repository::open(repo).ok()?;
    let tree = repo.find_branch(branch, git2::BranchType::Local).ok()?.get().peel_to_tree().ok()?;
    let entry = tree.get_path(Path::new(file)).ok()?;
    let blob = repo.find_blob(entry.id()).ok()?;
    Some(String::from_utf8_lossy(blob.content()).into_owned())
}

/// Whether the process `pid` is alive and not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// The pid namespace (`pid:[…]`) of the task whose worker (the bubblewrap process the supervisor started, as its
/// `worker_started` event says) is `worker`: that of its first child, bubblewrap's pid 1.
pub fn task_pid_namespace(worker: u32) -> Option<String> {
    let child = children_named(worker, "bwrap").into_iter().next()?;
    Some(std::fs::read_link(format!("/proc/{child}/ns/pid")).ok()?.to_string_lossy().into_owned())
}

/// The host pids of every process in the pid namespace `ns`, with their pid inside (the last of `NSpid:`).
pub fn pids_in_namespace(ns: &str) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let same = std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l.to_string_lossy() == ns);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let inner = status.lines().find_map(|l| l.strip_prefix("NSpid:")).and_then(|v| v.split_whitespace().last());
        if let (true, Some(inner)) = (same, inner.and_then(|p| p.parse().ok())) {
            found.push((pid, inner));
        }
    }
    found
}

/// The API key the tests give the broker: a test asserts it never reaches a task.
pub const TEST_API_KEY: &str = "sk-ant-test-NEVER-IN-A-TASK-7f3a9c";

/// The LLM test double on a runtime of its own, for a test's supervisor to talk to.
pub struct Model {
    /// The double (its script, policy and recorded requests).
    pub double: neuraphage_llm_double::LlmDouble,
    _runtime: tokio::runtime::Runtime,
}

impl Model {
    /// Start the double with a policy (it answers every request it has no scripted step for).
    pub fn start(policy: neuraphage_llm_double::Policy) -> Model {
        Model::start_with(neuraphage_llm_double::DoubleConfig { policy: Some(policy), ..Default::default() })
    }

    /// Start the double with a configuration (keys and their limits, window, policy, script).
    pub fn start_with(config: neuraphage_llm_double::DoubleConfig) -> Model {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let double = runtime.block_on(neuraphage_llm_double::LlmDouble::start_with(config)).expect("start the double");
        Model { double, _runtime: runtime }
    }

    /// The environment that points a broker at this double (Anthropic wire format).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("ANTHROPIC_BASE_URL".to_owned(), self.double.anthropic_base_url()),
            ("ANTHROPIC_API_KEY".to_owned(), TEST_API_KEY.to_owned()),
        ]
    }
}

impl TestHome {
    /// Start the supervisor talking to `model`.
    pub fn start_with_model(&mut self, model: &Model) -> u32 {
        let env = model.env();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.start_supervisor_with(&pairs)
    }
}
