//! systemd: the supervisor's sd_notify messages (readiness only once the socket serves, watchdog pings, stopping), the
//! user unit `daemon install` writes (checked with `systemd-analyze verify`), and `daemon install` / `daemon start`
//! through `systemctl --user`, played by a stand-in script (a test has no user manager of its own to drive).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use neuraphage_tests::{RawClient, TestHome, alive, bin};

const UNIT: &str = "neuraphage-supervisor.service";

/// A NOTIFY_SOCKET of our own: every line the supervisor sends, with when it arrived.
struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
    seen: Vec<(Instant, String)>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket { path, socket, seen: Vec::new() }
    }

    /// Read until `want` arrives; when it did, or `None` at the deadline.
    fn until(&mut self, want: &str, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
            self.socket.set_read_timeout(Some(left)).unwrap();
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) => panic!("reading the notify socket: {e}"),
            };
            let now = Instant::now();
            let text = String::from_utf8(buf[..n].to_vec()).expect("sd_notify messages are text");
            let mut hit = false;
            for line in text.lines() {
                self.seen.push((now, line.to_owned()));
                hit |= line == want;
            }
            if hit {
                return Some(now);
            }
        }
    }

    fn count(&self, line: &str, after: Instant) -> usize {
        self.seen.iter().filter(|(at, l)| l == line && *at >= after).count()
    }
}

#[test]
fn ready_once_serving_then_watchdog_pings_and_stopping_on_sigterm() {
    let home = TestHome::queue_only();
    let mut notify = NotifySocket::bind(home.root());
    let mut child = home
        .supervisor_command()
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "600000")
        .env_remove("WATCHDOG_PID")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();

    let ready = notify.until("READY=1", Duration::from_secs(20));
    assert!(ready.is_some(), "no READY=1 within 20 s; got {:?}", notify.seen);
    // Ready means serving: the first connection and handshake succeed, with no retry.
    let mut client = RawClient::connect(&home.paths).expect("connect right after READY=1");
    client.handshake().expect("handshake right after READY=1");
    drop(client);

    // WATCHDOG_USEC=600000: a ping every 300 ms.
    let since = Instant::now();
    while notify.count("WATCHDOG=1", since) < 2 && since.elapsed() < Duration::from_secs(3) {
        notify.until("WATCHDOG=1", Duration::from_secs(3).saturating_sub(since.elapsed()));
    }
    assert!(
        notify.count("WATCHDOG=1", since) >= 2,
        "fewer than 2 WATCHDOG=1 in 3 s: {:?}",
        notify.seen.iter().map(|(_, l)| l).collect::<Vec<_>>()
    );
    assert!(notify.seen.iter().any(|(_, l)| l.starts_with("STATUS=serving")), "{:?}", notify.seen);
    assert_eq!(notify.count("STOPPING=1", since), 0, "STOPPING=1 before any signal");

    TestHome::terminate(pid);
    let stopping = notify.until("STOPPING=1", Duration::from_secs(20));
    assert!(stopping.is_some(), "no STOPPING=1 after SIGTERM; got {:?}", notify.seen);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

#[test]
fn a_notify_socket_that_is_gone_does_not_stop_the_supervisor() {
    let mut home = TestHome::queue_only();
    let gone = home.root().join("no-such-notify.sock");
    let pid = home.start_supervisor_with(&[("NOTIFY_SOCKET", gone.to_str().unwrap()), ("WATCHDOG_USEC", "200000")]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pid));
    home.ok(&["task", "list"]);
}

/// `systemd-analyze --user verify UNIT`: its complaints about the unit (empty if none); `None` if it is not installed.
fn systemd_analyze_verify(unit: &Path, scratch: &Path) -> Option<Vec<String>> {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("NOTE: systemd-analyze is not installed; the unit was not verified (CI installs it)");
        return None;
    }
    // The user-mode verifier wants a runtime folder; give it a private one.
    let runtime = scratch.join("xdg-runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(unit)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut complaints: Vec<String> = stderr.lines().filter(|l| l.contains(UNIT)).map(str::to_owned).collect();
    if !out.status.success() {
        complaints.push(format!("systemd-analyze verify exited {}: {stderr}", out.status));
    }
    Some(complaints)
}

/// Write `unit` as `DIR/neuraphage-supervisor.service` and verify it.
fn verify_unit_text(unit: &str, dir: &Path) -> Option<Vec<String>> {
    let unit_dir = dir.join("unit");
    std::fs::create_dir_all(&unit_dir).unwrap();
    let file = unit_dir.join(UNIT);
    std::fs::write(&file, unit).unwrap();
    systemd_analyze_verify(&file, dir)
}

fn exec_start(unit: &str) -> &str {
    unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("an ExecStart= line")
}

#[test]
fn install_dry_run_prints_a_unit_systemd_accepts_and_changes_nothing() {
    let home = TestHome::queue_only();
    let config = home.root().join("config");
    let out = home.cli().args(["daemon", "install", "--dry-run"]).env("XDG_CONFIG_HOME", &config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unit = String::from_utf8(out.stdout).unwrap();
    let target = config.join("systemd/user").join(UNIT);
    assert!(unit.lines().next().unwrap().contains(target.to_str().unwrap()), "the path is named first:\n{unit}");
    assert!(!target.exists() && !config.exists(), "--dry-run wrote something");

    // It runs the supervisor beside `neuraphage`, for the home the CLI was given.
    let supervisor = bin("neuraphage-supervisor").canonicalize().unwrap();
    assert_eq!(exec_start(&unit), supervisor.to_str().unwrap());
    let home_line = format!("Environment=NEURAPHAGE_HOME={}", home.paths.home.display());
    assert!(unit.lines().any(|l| l == home_line), "{unit}");
    for needed in ["Type=notify", "WatchdogSec=", "Restart=on-failure", "KillMode=mixed", "TimeoutStopSec="] {
        assert!(unit.lines().any(|l| l.starts_with(needed)), "{needed} missing:\n{unit}");
    }
    assert!(!unit.to_uppercase().contains("API_KEY="), "no keys in a unit:\n{unit}");

    if let Some(complaints) = verify_unit_text(&unit, home.root()) {
        assert!(complaints.is_empty(), "systemd-analyze verify:\n{}\n\n{unit}", complaints.join("\n"));
    }

    // --json says the same, and still writes nothing.
    let json = home.cli().args(["daemon", "install", "--dry-run", "--json"]).env("XDG_CONFIG_HOME", &config).output();
    let json: serde_json::Value = serde_json::from_slice(&json.unwrap().stdout).unwrap();
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["written"], false);
    assert_eq!(json["unit_path"], target.to_str().unwrap());
    assert_eq!(json["exec_start"], supervisor.to_str().unwrap());
    assert!(json["unit"].as_str().unwrap().contains("Type=notify"));
    assert!(!config.exists());
}

#[test]
fn paths_with_spaces_and_percent_signs_survive_into_the_unit() {
    let home = TestHome::queue_only();
    // The binaries, under a folder whose name systemd would misread unquoted.
    let odd = home.root().join("my bin 100%");
    std::fs::create_dir_all(&odd).unwrap();
    for name in ["neuraphage", "neuraphage-supervisor"] {
        if std::fs::hard_link(bin(name), odd.join(name)).is_err() {
            std::fs::copy(bin(name), odd.join(name)).unwrap();
        }
    }
    let odd_home = home.root().join("a home %h");
    let mut cmd = Command::new(odd.join("neuraphage"));
    cmd.args(["daemon", "install", "--dry-run", "--json"])
        .env("XDG_CONFIG_HOME", home.root().join("config"))
        .env("NEURAPHAGE_HOME", &odd_home)
        .env("NEURAPHAGE_RUNTIME_DIR", home.root().join("run"));
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let unit = json["unit"].as_str().unwrap();
    assert_eq!(exec_start(unit), format!("\"{}\"", odd.join("neuraphage-supervisor").display()).replace('%', "%%"));
    assert!(unit.contains(&format!("Environment=\"NEURAPHAGE_HOME={}\"", odd_home.display()).replace('%', "%%")));
    if let Some(complaints) = verify_unit_text(unit, home.root()) {
        assert!(complaints.is_empty(), "systemd-analyze verify:\n{}\n\n{unit}", complaints.join("\n"));
    }
}

/// A folder holding a stand-in `systemctl`, and the PATH that puts it first.
struct FakeSystemctl {
    dir: PathBuf,
    log: PathBuf,
}

impl FakeSystemctl {
    /// A `systemctl` that fails as it does where no user manager runs.
    fn without_user_manager(root: &Path) -> FakeSystemctl {
        FakeSystemctl::with_script(
            root,
            "#!/bin/sh\necho \"$*\" >> \"$FAKE_LOG\"\necho 'Failed to connect to bus: No medium found' >&2\nexit 1\n",
        )
    }

    /// A `systemctl --user` that plays the user manager: it knows the unit once it is in $XDG_CONFIG_HOME, and
    /// `enable --now` / `start` run the supervisor detached, returning once its socket exists.
    fn with_user_manager(root: &Path) -> FakeSystemctl {
        FakeSystemctl::with_script(
            root,
            r#"#!/bin/sh
echo "$*" >> "$FAKE_LOG"
[ "$1" = --user ] || exit 2
shift
unit="$XDG_CONFIG_HOME/systemd/user/neuraphage-supervisor.service"
launch() {
    "$FAKE_SUPERVISOR" --quiet-stderr </dev/null >/dev/null 2>&1 &
    i=0
    while [ ! -S "$NEURAPHAGE_RUNTIME_DIR/control.sock" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
}
case "$1" in
    show)
        echo Version=252
        if [ -f "$unit" ]; then
            echo LoadState=loaded
            echo "FragmentPath=$unit"
            echo "Environment=$(sed -n 's/^Environment=//p' "$unit" | tr '\n' ' ' | sed 's/ $//')"
        else
            echo LoadState=not-found
            echo FragmentPath=
            echo Environment=
        fi
        echo MainPID=0 ;;
    daemon-reload) ;;
    enable) [ "$2" = --now ] && launch ;;
    start) launch ;;
    *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"#,
        )
    }

    fn with_script(root: &Path, script: &str) -> FakeSystemctl {
        let dir = root.join("fake-bin");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("systemctl");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeSystemctl { log: root.join("systemctl.log"), dir }
    }

    /// `neuraphage ARGS` for `home`, with this systemctl first on PATH and user units under `config`.
    fn run(&self, home: &TestHome, config: &Path, args: &[&str]) -> Output {
        let path = std::env::join_paths(
            std::iter::once(self.dir.clone()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
        )
        .unwrap();
        home.cli()
            .args(args)
            .env("PATH", path)
            .env("XDG_CONFIG_HOME", config)
            .env("FAKE_LOG", &self.log)
            .env("FAKE_SUPERVISOR", bin("neuraphage-supervisor"))
            .output()
            .unwrap()
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

fn stdout_of(out: &Output) -> String {
    assert!(out.status.success(), "failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn install_writes_the_unit_and_says_what_to_run_when_systemctl_does_not_work() {
    let home = TestHome::queue_only();
    let config = home.root().join("config");
    let systemctl = FakeSystemctl::without_user_manager(home.root());
    let text = stdout_of(&systemctl.run(&home, &config, &["daemon", "install"]));
    let path = config.join("systemd/user").join(UNIT);
    let unit = std::fs::read_to_string(&path).unwrap();
    for needed in ["Type=notify", "WatchdogSec=", "Restart=on-failure"] {
        assert!(unit.lines().any(|l| l.starts_with(needed)), "{needed} missing:\n{unit}");
    }
    assert!(unit.contains(&format!("Environment=NEURAPHAGE_RUNTIME_DIR={}\n", home.paths.runtime_dir.display())));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
    assert!(text.contains(path.to_str().unwrap()), "{text}");
    assert!(text.contains("No medium found"), "says why: {text}");
    assert!(text.contains("  systemctl --user daemon-reload\n"), "{text}");
    assert!(text.contains(&format!("  systemctl --user enable --now {UNIT}\n")), "{text}");
    assert!(!systemctl.calls().iter().any(|c| c.contains("enable")), "{:?}", systemctl.calls());

    // `daemon start` falls back to a detached process, and says nothing of systemd.
    let started = stdout_of(&systemctl.run(&home, &config, &["daemon", "start"]));
    assert!(started.starts_with("neuraphage-supervisor started (pid"), "{started}");
    home.ok(&["daemon", "stop"]);
}

#[test]
fn install_enables_and_starts_the_service_and_daemon_start_then_uses_it() {
    let home = TestHome::queue_only();
    let config = home.root().join("config");
    let systemctl = FakeSystemctl::with_user_manager(home.root());
    let out = systemctl.run(&home, &config, &["daemon", "install", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(json["systemd"], "enabled", "{json:#}");
    assert_eq!(json["written"], true);
    let calls = systemctl.calls();
    let reload = calls.iter().position(|c| c == "--user daemon-reload");
    let enable = calls.iter().position(|c| *c == format!("--user enable --now {UNIT}"));
    assert!(reload.is_some() && enable.is_some() && reload < enable, "{calls:?}");
    let pid = json["pid"].as_u64().expect("the started supervisor's pid") as u32;
    assert_eq!(home.json(&["daemon", "status", "--json"])["pid"], pid);
    home.ok(&["daemon", "stop"]);

    // Installed for this home: `daemon start` goes through systemctl.
    let started = stdout_of(&systemctl.run(&home, &config, &["daemon", "start"]));
    assert!(started.contains("started by systemd"), "{started}");
    assert!(systemctl.calls().iter().any(|c| *c == format!("--user start {UNIT}")), "{:?}", systemctl.calls());
    home.ok(&["daemon", "stop"]);

    // For another home, the installed unit is not the right one: a detached process instead.
    let other = TestHome::queue_only();
    let before = systemctl.calls().iter().filter(|c| c.contains(" start ")).count();
    let started = stdout_of(&systemctl.run(&other, &config, &["daemon", "start"]));
    assert!(started.starts_with("neuraphage-supervisor started (pid"), "{started}");
    assert_eq!(systemctl.calls().iter().filter(|c| c.contains(" start ")).count(), before);
    other.ok(&["daemon", "stop"]);
}
