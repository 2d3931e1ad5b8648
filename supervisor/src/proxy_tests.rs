use std::sync::Mutex;
use std::time::Duration;

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
    let forward = r.forward.unwrap();
    assert_eq!(forward.host_header.as_deref(), Some("example.org"));
    let head = String::from_utf8(forward.head).unwrap();
    assert_eq!(head, "GET /a/b?c=d HTTP/1.1\r\nHost: example.org\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    let r = parsed("HEAD HTTP://example.org?x HTTP/1.0\r\n\r\n");
    assert_eq!((r.host.as_str(), r.port), ("example.org", 80));
    assert_eq!(r.forward.unwrap().head, b"HEAD /?x HTTP/1.0\r\nConnection: close\r\n\r\n");
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
    (Serving { rules: Arc::new(rules), record, decisions: Arc::default(), asker: None }, seen)
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
    let hello = crate::proxy_names::tests::client_hello(Some("localhost"));
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let n = hello.len();
    let echo = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut got = vec![0u8; n];
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
    let mut head = format!("CONNECT localhost.:{port} HTTP/1.1\r\n\r\n").into_bytes();
    head.extend(&hello);
    client.write_all(&head).await.unwrap();
    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    let mut got = vec![0u8; established.len() + n];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got[..established.len()], established);
    assert_eq!(&got[established.len()..], &hello[..]);
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

/// An upstream that records everything it receives until the proxy closes, answering `reply` first.
async fn recording_upstream(reply: &'static [u8]) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let got = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).await.unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        s.write_all(reply).await.unwrap();
        s.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        head.extend(rest);
        head
    });
    (port, got)
}

fn refused_for(seen: &Decisions) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|k| match k {
            EventKind::ProxyDecision { allowed: false, reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_tunnel_whose_tls_server_name_is_another_host_is_closed_and_recorded() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let mut head = format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n").into_bytes();
    head.extend(crate::proxy_names::tests::client_hello(Some("evil.example")));
    let rule = format!("localhost:{port}");
    let (answer, seen) = exchange(&[&rule], &head).await;
    assert_eq!(answer, "HTTP/1.1 200 Connection established\r\n\r\n", "closed after the 200, nothing more");
    assert_eq!(
        refused_for(&seen),
        vec!["TLS server name \"evil.example\" is not the host the CONNECT was allowed for".to_owned()]
    );
    // The upstream was connected to (the decision came before the hello) but got no byte.
    let (mut s, _) = upstream.accept().await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert!(got.is_empty(), "{got:?}");
}

#[tokio::test]
async fn a_tunnel_whose_tls_server_name_is_the_host_reaches_it_whole() {
    let (port, got) = recording_upstream(b"").await;
    let hello = crate::proxy_names::tests::client_hello(Some("LocalHost."));
    let mut head = format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n").into_bytes();
    head.extend(&hello[..10]);
    let rule = format!("localhost:{port}");
    let (serving, seen) = serving(&[&rule]);
    let (mut ours, theirs) = tokio::io::duplex(64 * 1024);
    let server = tokio::spawn(async move { serve(theirs, &serving).await });
    // The hello arrives in two pieces: the proxy waits for the whole record.
    ours.write_all(&head).await.unwrap();
    ours.write_all(&hello[10..]).await.unwrap();
    // Done sending: the tunnel's client side ends, so the upstream sees the end of the hello and closes.
    ours.shutdown().await.unwrap();
    let mut answer = String::new();
    ours.read_to_string(&mut answer).await.unwrap();
    drop(ours);
    server.await.unwrap();
    assert_eq!(answer, "HTTP/1.1 200 Connection established\r\n\r\n");
    assert!(refused_for(&seen).is_empty());
    // The recording upstream reads up to an empty line; the hello has none, so it read it all at the end.
    assert_eq!(got.await.unwrap(), hello);
}

#[tokio::test]
async fn plain_http_in_a_tunnel_or_in_absolute_form_must_name_the_host() {
    // A tunnel is checked after the proxy connected upstream: an upstream that takes connections and says nothing.
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = upstream.accept().await {
            held.push(s);
        }
    });
    let rule = format!("localhost:{port}");
    for head in [
        format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: other.example:{port}\r\n\r\n"),
        format!("GET http://localhost:{port}/ HTTP/1.1\r\nHost: other.example\r\n\r\n"),
        format!("GET http://localhost:{port}/ HTTP/1.1\r\n\r\n"),
        format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\nSSH-2.0-OpenSSH_9.6\r\n\r\n"),
    ] {
        let (answer, seen) = exchange(&[&rule], head.as_bytes()).await;
        let refused = refused_for(&seen);
        assert_eq!(refused.len(), 1, "{head:?}: {answer}");
        assert!(
            refused[0].contains("Host header \"other.example")
                || refused[0].contains("without a Host header")
                || refused[0].contains("neither TLS nor an HTTP request"),
            "{head:?}: {refused:?}"
        );
        assert!(!answer.contains("200 OK"), "{answer}");
    }
    held.abort();
}

#[tokio::test]
async fn a_kept_alive_plain_connection_carries_one_request_only() {
    let (port, got) = recording_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let rule = format!("localhost:{port}");
    // A first request with a body, and a second one to another host pipelined behind it.
    let head = format!(
        "POST http://localhost:{port}/a HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: keep-alive\r\n\
         Content-Length: 4\r\n\r\nbodyGET / HTTP/1.1\r\nHost: evil.example\r\n\r\n"
    );
    let (answer, seen) = exchange(&[&rule], head.as_bytes()).await;
    assert_eq!(answer, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert!(refused_for(&seen).is_empty());
    let upstream_saw = String::from_utf8(got.await.unwrap()).unwrap();
    assert_eq!(
        upstream_saw,
        format!("POST /a HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody")
    );
}
