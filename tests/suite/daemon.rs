//! The daemon's lifecycle: start, status, stop, one supervisor per home, private socket and folders, logs.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use neuraphage_ipc::PROTOCOL_VERSION;
use neuraphage_tests::{TestHome, alive};
use pretty_assertions::assert_eq;

#[test]
fn start_status_stop() {
    let home = TestHome::queue_only();
    let started = home.json(&["daemon", "start", "--json"]);
    let pid = started["pid"].as_u64().unwrap() as u32;
    assert!(alive(pid));
    // start returned only once the socket answers: a command works at once.
    let status = home.json(&["daemon", "status", "--json"]);
    assert_eq!(status["pid"], pid);
    assert_eq!(status["protocol"], PROTOCOL_VERSION);
    assert_eq!(status["home"], home.paths.home.to_str().unwrap());
    assert!(status["uptime_secs"].is_u64());
    assert_eq!(status["tasks"]["Queued"], 0);

    // Starting again succeeds and says so.
    let again = home.ok(&["daemon", "start"]);
    assert!(again.contains(&format!("already running (pid {pid})")), "{again}");

    // The socket is private, in a private folder.
    let socket = home.paths.control_socket();
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&home.paths.runtime_dir).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&home.paths.home).unwrap().permissions().mode() & 0o777, 0o700);

    let stopped = home.ok(&["daemon", "stop"]);
    assert!(stopped.contains(&format!("stopped (pid {pid})")), "{stopped}");
    assert!(!alive(pid), "stop returns only once the process has exited");
    assert!(!socket.exists(), "a graceful stop removes the socket");
    let (code, stderr) = home.fails(&["daemon", "status"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(home.ok(&["daemon", "stop"]).contains("not running"));
}

#[test]
fn a_second_supervisor_on_the_same_home_is_refused_with_the_holders_pid() {
    let mut home = TestHome::queue_only();
    let pid = home.start_supervisor();
    let out = home.supervisor_command().output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");
    assert!(stderr.contains(home.paths.home.to_str().unwrap()), "{stderr}");
    // The first one is untouched and still serving.
    assert!(alive(pid));
    home.ok(&["task", "list"]);
}

#[test]
fn sigterm_stops_gracefully_and_the_store_survives() {
    let mut home = TestHome::queue_only();
    let pid = home.start_supervisor();
    let id = home.ok(&["task", "new", "keep me"]).trim().to_owned();
    TestHome::terminate(pid);
    let statuses = home.wait_supervisors();
    assert!(statuses[0].success(), "exit status after SIGTERM: {:?}", statuses[0]);
    assert!(!home.paths.control_socket().exists());
    home.start_supervisor();
    assert_eq!(home.task_ids(), vec![id]);
}

#[test]
fn a_stale_socket_from_a_killed_supervisor_does_not_block_a_restart() {
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    home.kill9_supervisors();
    assert!(home.paths.control_socket().exists(), "kill -9 leaves the socket file behind");
    home.start_supervisor();
    home.ok(&["task", "list"]);
}

#[test]
fn logs_go_to_the_home() {
    let mut home = TestHome::queue_only();
    home.start_supervisor();
    home.ok(&["task", "new", "log me"]);
    let logs = home.paths.home.join("logs");
    // The log writer is non-blocking; give it a moment to flush.
    let mut found = String::new();
    for _ in 0..100 {
        found = std::fs::read_dir(&logs)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("supervisor"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        if found.contains("task created") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(found.contains("serving") && found.contains("task created"), "logs: {found}");
}

#[test]
fn a_startup_failure_is_reported_by_daemon_start() {
    let home = TestHome::queue_only();
    // A store that is not a database: the supervisor cannot start, and `daemon start` says why.
    home.write_config("");
    std::fs::write(home.paths.home.join("neuraphage.db"), vec![0x5a; 8192]).unwrap();
    let (code, stderr) = home.fails(&["daemon", "start"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("exited") && stderr.contains("neuraphage.db") && stderr.contains("not a database"),
        "{stderr}"
    );
    // The file is left as it was for the user to inspect.
    assert_eq!(std::fs::read(home.paths.home.join("neuraphage.db")).unwrap(), vec![0x5a; 8192]);
}
