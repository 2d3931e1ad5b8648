use std::sync::Mutex;

use pretty_assertions::assert_eq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn parsed(head: &str) -> Request {
    parse_head(head.as_bytes()).unwrap().unwrap()
}

fn refused(head: &str) -> Refusal {
    parse_head(head.as_bytes()).unwrap_err()
}

#[test]
fn connect_requests_name_host_and_port() {
    let head = "CONNECT Crates.io:443 HTTP/1.1\r\nHost: crates.io:443\r\n\r\n\x16\x03\x01";
    let r = parsed(head);
    assert_eq!(r, Request { host: "Crates.io".into(), port: 443, forward: None, rest_at: head.len() - 3 });
    assert_eq!(parsed("CONNECT [::1]:443 HTTP/1.1\r\n\r\n").host, "[::1]");
    assert_eq!(parse_head(b"CONNECT crates.io:443 HTTP/1.1\r\nHost: cra").unwrap(), None, "more bytes needed");
}

#[test]
fn plain_http_requests_are_forwarded_in_origin_form_without_proxy_headers() {
    let r = parsed(
        "GET http://example.org:8080/a/b?c=d HTTP/1.1\r\nHost: example.org\r\nProxy-Connection: keep-alive\r\n\
         Proxy-Authorization: Basic eA==\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!((r.host.as_str(), r.port), ("example.org", 8080));
    let head = String::from_utf8(r.forward.unwrap()).unwrap();
    assert_eq!(head, "GET /a/b?c=d HTTP/1.1\r\nHost: example.org\r\nAccept: */*\r\n\r\n");
    let r = parsed("HEAD HTTP://example.org?x HTTP/1.0\r\n\r\n");
    assert_eq!((r.host.as_str(), r.port), ("example.org", 80));
    assert_eq!(r.forward.unwrap(), b"HEAD /?x HTTP/1.0\r\n\r\n");
}

#[test]
fn malformed_or_unsupported_requests_get_400_and_a_reason() {
    for (head, why) in [
        ("GET / HTTP/1.1\r\n\r\n", "CONNECT host:port"),
        ("GET https://crates.io/ HTTP/1.1\r\n\r\n", "CONNECT host:port"),
        ("CONNECT crates.io HTTP/1.1\r\n\r\n", "not host:port"),
        ("CONNECT crates.io:0 HTTP/1.1\r\n\r\n", "not host:port"),
        ("CONNECT crates.io:99999 HTTP/1.1\r\n\r\n", "not host:port"),
        ("CONNECT :443 HTTP/1.1\r\n\r\n", "not host:port"),
        ("CONNECT ::1:443 HTTP/1.1\r\n\r\n", "not host:port"),
        ("GET http://user@crates.io/ HTTP/1.1\r\n\r\n", "user info"),
        ("GET http:///x HTTP/1.1\r\n\r\n", "no host"),
        ("\x00\x01garbage\r\n\r\n", "malformed request"),
        ("CONNECT crates.io:443 HTTP/1.1\r\nBad Header\r\n\r\n", "malformed request"),
    ] {
        let Refusal(status, reason) = refused(head);
        assert_eq!(status, 400, "{head:?}");
        assert!(reason.contains(why), "{head:?}: {reason}");
    }
    let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X-{i}: y\r\n")).collect();
    assert!(refused(&format!("CONNECT a:443 HTTP/1.1\r\n{many}\r\n")).1.contains("headers"));
}

type Decisions = Arc<Mutex<Vec<EventKind>>>;

fn recorder() -> (Recorder, Decisions) {
    let seen = Decisions::default();
    let s = seen.clone();
    (Arc::new(move |k| s.lock().unwrap().push(k)), seen)
}

fn serving(rules: &[&str]) -> (Serving, Decisions) {
    let (record, seen) = recorder();
    let rules = rules.iter().map(|r| HostRule::parse(r).unwrap()).collect();
    (Serving { rules: Arc::new(rules), record, decisions: Arc::default() }, seen)
}

/// Send `head` to a proxy serving `rules` over an in-memory pipe; the answer.
async fn exchange(rules: &[&str], head: &[u8]) -> (String, Decisions) {
    let (serving, seen) = serving(rules);
    let (mut ours, theirs) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move { serve(theirs, &serving).await });
    ours.write_all(head).await.unwrap();
    let mut answer = String::new();
    ours.read_to_string(&mut answer).await.unwrap();
    server.await.unwrap();
    (answer, seen)
}

#[tokio::test]
async fn an_unlisted_host_or_port_is_refused_with_403_and_recorded() {
    let (answer, seen) = exchange(&["crates.io"], b"CONNECT evil.com:443 HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert!(answer.ends_with("neuraphage proxy: evil.com:443: host not in the task's profile\n"), "{answer}");
    let (answer, seen2) = exchange(&["crates.io"], b"CONNECT crates.io:22 HTTP/1.1\r\n\r\n").await;
    assert!(answer.contains("port not allowed"), "{answer}");
    let seen: Vec<EventKind> = [seen, seen2].iter().flat_map(|s| s.lock().unwrap().clone()).collect();
    assert_eq!(
        seen,
        vec![
            EventKind::ProxyDecision {
                host: "evil.com".into(),
                port: 443,
                allowed: false,
                reason: "host not in the task's profile".into()
            },
            EventKind::ProxyDecision {
                host: "crates.io".into(),
                port: 22,
                allowed: false,
                reason: "port not allowed for this host by the task's profile".into()
            },
        ]
    );
}

#[tokio::test]
async fn a_head_too_long_gets_431_and_garbage_gets_400_without_a_decision() {
    let long = format!("CONNECT a:443 HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(MAX_HEAD));
    let (answer, seen) = exchange(&["a"], long.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert!(seen.lock().unwrap().is_empty());
    let (answer, seen) = exchange(&["a"], b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_head_gets_408() {
    let (serving, _) = serving(&["a"]);
    let (mut ours, theirs) = tokio::io::duplex(1024);
    let server = tokio::spawn(async move { serve(theirs, &serving).await });
    ours.write_all(b"CONNECT a:443 HTTP/1.1\r\n").await.unwrap();
    let mut answer = String::new();
    ours.read_to_string(&mut answer).await.unwrap();
    server.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
}

#[tokio::test]
async fn a_listed_host_is_tunnelled_both_ways_and_the_proxy_stops_its_connections() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let echo = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        s.write_all(&got).await.unwrap();
        // Hold the connection open: the proxy's stop must close it.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
    });
    let (record, seen) = recorder();
    let proxy = TaskProxy::start(vec![HostRule::parse(&format!("LocalHost:{port}")).unwrap()], record).await.unwrap();
    let mut client = TcpStream::connect(("127.0.0.1", proxy.port())).await.unwrap();
    // The first bytes of the tunnel travel with the request head.
    client.write_all(format!("CONNECT localhost.:{port} HTTP/1.1\r\n\r\nhello").as_bytes()).await.unwrap();
    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    let mut got = vec![0u8; established.len() + 5];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&got), format!("{}hello", String::from_utf8_lossy(established)));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![EventKind::ProxyDecision {
            host: "localhost.".into(),
            port,
            allowed: true,
            reason: "listed in the task's profile".into()
        }]
    );
    proxy.stop().await;
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest).await;
    echo.await.unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err(), "the echo server is gone");
}
