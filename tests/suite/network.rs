//! Network by host, through the task's proxy: a task whose profile lists hosts reaches exactly those, through the
//! HTTP CONNECT proxy the supervisor runs for it, and nothing else: an unlisted host is refused (and the refusal is a
//! task event), a direct TCP connection fails (Landlock allows only the proxy's port) and UDP fails (seccomp). Each
//! probe runs from inside a real sandboxed worker (Bash, curl), with a control outside that succeeds.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use neuraphage_llm_double::{Reply, Step, StopReason, policy};
use neuraphage_tests::{Model, TestHome};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(90);

/// What the test's "allowed host" answers.
const GREETING: &str = "hello-from-the-allowed-host";

/// An HTTP server on loopback standing in for an allowed host (there is no internet here); counts its requests.
fn allowed_host() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
                head.push(byte[0]);
            }
            let reply =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{GREETING}", GREETING.len());
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    (port, hits)
}

/// The networked profile's filesystem, with `localhost:port` as its only host.
fn listed_localhost(port: u16) -> String {
    let networked =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../sandbox-profiles/profiles/networked.toml"))
            .unwrap();
    let filesystem = networked.split("[network]").next().unwrap();
    format!("{filesystem}[network]\nhosts = [\"localhost:{port}\"]\n")
}

/// Run one task with `profile` (written as a user profile first, if its text is given) whose only tool call is
/// `command`; the task's id and the Bash output.
fn run_bash(home: &mut TestHome, profile: (&str, Option<String>), command: String) -> (String, String) {
    let model = Model::start(policy(move |r| match r.tool_result_count() {
        0 => Step::Reply(Reply::tool("Bash", json!({ "command": command }))),
        _ => Step::Reply(Reply::text("done").stop(StopReason::EndTurn)),
    }));
    home.start_with_model(&model);
    let (profile, text) = profile;
    if let Some(text) = text {
        let profiles = home.paths.home.join("profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        std::fs::write(profiles.join(format!("{profile}.toml")), text).unwrap();
    }
    let id = home.json(&["task", "new", "probe", "--json", "--profile", profile])["id"].as_str().unwrap().to_owned();
    let ended = home.wait_ended(&[&id], WITHIN).remove(0);
    assert_eq!(ended["status"], "Completed", "{ended:#}");
    let output = home.first_tool_output(&id);
    (id, output)
}

/// The task's proxy decisions, as (host, port, allowed).
fn decisions(home: &TestHome, id: &str) -> Vec<(String, u64, bool)> {
    let shown = home.show(id);
    let events = shown["events"].as_array().unwrap();
    let data: Vec<&Value> = events.iter().filter(|e| e["kind"] == "proxy_decision").map(|e| &e["data"]).collect();
    data.iter()
        .map(|d| (d["host"].as_str().unwrap().to_owned(), d["port"].as_u64().unwrap(), d["allowed"] == true))
        .collect()
}

/// The proxy port a probe printed as `proxy=http://127.0.0.1:PORT`.
fn proxy_port(output: &str) -> u16 {
    let url = output.lines().find_map(|l| l.strip_prefix("proxy=")).unwrap_or_else(|| panic!("no proxy: {output}"));
    url.strip_prefix("http://127.0.0.1:").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("proxy {url:?}"))
}

#[test]
fn through_its_proxy_a_task_reaches_its_listed_host_and_nothing_else() {
    let (port, hits) = allowed_host();
    let mut home = TestHome::new();
    let profile = listed_localhost(port);
    let direct = |prefix: &str| {
        format!(
            "curl -sS --noproxy '*' -m 5 http://127.0.0.1:{port}/direct >/dev/null 2>&1 && echo {prefix}curl=allowed || echo {prefix}curl=refused; \
             (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo {prefix}tcp=allowed || echo {prefix}tcp=refused"
        )
    };
    let command = format!(
        "echo proxy=$HTTPS_PROXY; echo http=$http_proxy no_proxy=[$NO_PROXY]; \
         echo tunnel=$(curl -sS -m 10 -p http://localhost:{port}/tunnel); \
         echo plain=$(curl -sS -m 10 http://localhost:{port}/plain); \
         curl -sS -m 10 -p http://127.0.0.1:{port}/ 2>&1; echo unlisted=$?; \
         curl -sS -m 10 -p http://localhost:{}/ 2>&1; echo other-port=$?; \
         {}",
        port.wrapping_add(1).max(1),
        direct("direct-")
    );
    let (id, out) = run_bash(&mut home, ("net", Some(profile)), command);
    let proxy = proxy_port(&out);
    assert!(out.contains(&format!("http=http://127.0.0.1:{proxy} no_proxy=[]")), "{out}");
    // (1) The listed host answers through the proxy, by CONNECT and by a plain absolute-form GET.
    assert!(out.contains(&format!("tunnel={GREETING}")), "CONNECT to the listed host: {out}");
    assert!(out.contains(&format!("plain={GREETING}")), "plain HTTP to the listed host: {out}");
    // (2) An unlisted host (an address is not its name) and a listed host on another port are refused with 403.
    assert!(out.contains("403"), "{out}");
    assert!(!out.contains("unlisted=0") && !out.contains("other-port=0"), "{out}");
    // (3) A direct connection to the same server fails from inside the task.
    assert!(out.contains("direct-curl=refused") && out.contains("direct-tcp=refused"), "{out}");
    assert_eq!(hits.load(Ordering::SeqCst), 2, "only the two proxied requests reached the server: {out}");
    // The sandbox's only TCP way out is the proxy's port.
    let plan: Value =
        serde_json::from_slice(&std::fs::read(home.paths.home.join("tasks").join(&id).join("sandbox.json")).unwrap())
            .unwrap();
    assert_eq!(plan["tcp-connect"], json!([proxy]), "{plan:#}");
    // Every decision is a task event.
    assert_eq!(
        decisions(&home, &id),
        vec![
            ("localhost".to_owned(), u64::from(port), true),
            ("localhost".to_owned(), u64::from(port), true),
            ("127.0.0.1".to_owned(), u64::from(port), false),
            ("localhost".to_owned(), u64::from(port.wrapping_add(1).max(1)), false),
        ]
    );
    let text = home.ok(&["task", "show", &id]);
    assert!(text.contains(&format!("proxy refused 127.0.0.1:{port} (host not in the task's profile)")), "{text}");
    // The control: outside the sandbox, the direct connection reaches the server.
    let outside = std::process::Command::new("bash").arg("-c").arg(direct("")).output().unwrap();
    let outside = String::from_utf8_lossy(&outside.stdout);
    assert!(outside.contains("curl=allowed") && outside.contains("tcp=allowed"), "the control: {outside}");
}

#[test]
fn the_networked_profile_sends_its_hosts_through_the_proxy_and_refuses_others_and_udp() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let udp_probe =
        format!("(echo ping > /dev/udp/127.0.0.1/{udp_port}) 2>/dev/null && echo udp=allowed || echo udp=refused");
    let mut home = TestHome::new();
    // There is no internet here: crates.io is allowed by the proxy, but the connection itself cannot succeed.
    let command = format!(
        "echo proxy=$HTTPS_PROXY; curl -sS -m 20 https://crates.io/ -o /dev/null 2>&1; echo listed=$?; \
         curl -sS -m 20 https://evil.example/ 2>&1; echo unlisted=$?; {udp_probe}"
    );
    let (id, out) = run_bash(&mut home, ("networked", None), command);
    proxy_port(&out);
    assert!(!out.contains("listed=0"), "{out}");
    assert!(out.contains("403") && !out.contains("unlisted=0"), "{out}");
    assert!(out.contains("udp=refused"), "UDP from inside a networked task: {out}");
    assert_eq!(
        decisions(&home, &id),
        vec![("crates.io".to_owned(), 443, true), ("evil.example".to_owned(), 443, false)]
    );
    // The control: outside the sandbox, the same UDP datagram arrives.
    let outside = std::process::Command::new("bash").arg("-c").arg(&udp_probe).output().unwrap();
    assert!(String::from_utf8_lossy(&outside.stdout).contains("udp=allowed"));
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    let n = udp.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping\n");
}

#[test]
fn the_proxy_checks_the_tls_server_name_and_the_host_header_against_the_listed_host() {
    // The proxy connects to a listed host before it reads the tunnel's first bytes: count connections that
    // carried a byte (each on its own thread: a TLS hello never ends its head).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
                    if head.is_empty() {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    head.push(byte[0]);
                }
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{GREETING}", GREETING.len());
                let _ = conn.write_all(reply.as_bytes());
            });
        }
    });
    let mut home = TestHome::new();
    let profile = listed_localhost(port);
    // Each line: the attack (another name than the listed host's), then its control (the listed name), through the
    // task's proxy. The allowed host speaks plain HTTP, so a TLS hello that gets through fails there: a hit.
    let command = format!(
        "echo proxy=$HTTPS_PROXY; \
         curl -sS -m 10 -k https://evil.example:{port}/ --connect-to evil.example:{port}:localhost:{port} >/dev/null 2>&1; \
         echo sni-attack-hits=done; \
         curl -sS -m 3 -k https://localhost:{port}/ >/dev/null 2>&1; echo sni-control=done; \
         echo host-attack=$(curl -sS -m 10 -H 'Host: evil.example' http://localhost:{port}/host); \
         echo host-control=$(curl -sS -m 10 http://localhost:{port}/host); \
         echo tunnel-host-attack=$(curl -sS -m 10 -p -H 'Host: evil.example' http://localhost:{port}/tunnel 2>&1)"
    );
    let (id, out) = run_bash(&mut home, ("net", Some(profile)), command);
    proxy_port(&out);
    assert!(out.contains("sni-control=done"), "{out}");
    // The attacks: nothing reached the host but the two controls (the TLS hello with the right name, the request
    // with the right Host).
    assert_eq!(hits.load(Ordering::SeqCst), 2, "{out}");
    assert!(out.contains(&format!("host-control={GREETING}")), "{out}");
    assert!(out.contains("host-attack=neuraphage proxy:") && out.contains("Host header"), "{out}");
    assert!(!out.contains(&format!("tunnel-host-attack={GREETING}")), "{out}");
    let refused: Vec<String> = home.show(&id)["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "proxy_decision" && e["data"]["allowed"] == false)
        .map(|e| e["data"]["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        refused,
        vec![
            "TLS server name \"evil.example\" is not the host the CONNECT was allowed for".to_owned(),
            "Host header \"evil.example\" is not the host the request was allowed for".to_owned(),
            "Host header \"evil.example\" is not the host the request was allowed for".to_owned(),
        ],
        "{out}"
    );
}
