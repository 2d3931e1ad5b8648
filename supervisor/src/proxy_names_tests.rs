//! The name checks' parsers, on hand-built ClientHellos and request heads.

use pretty_assertions::assert_eq;

use super::*;

/// A minimal TLS 1.2/1.3 ClientHello record, with a server name extension if `name` is given.
pub(crate) fn client_hello(name: Option<&str>) -> Vec<u8> {
    client_hello_with(name.map(|n| vec![n]).unwrap_or_default(), 1)
}

fn client_hello_with(names: Vec<&str>, sni_extensions: usize) -> Vec<u8> {
    let mut exts = Vec::new();
    // An unrelated extension first (supported_versions: TLS 1.3).
    exts.extend([0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    if !names.is_empty() {
        for _ in 0..sni_extensions {
            let mut list = Vec::new();
            for n in &names {
                list.push(0u8);
                list.extend((n.len() as u16).to_be_bytes());
                list.extend(n.as_bytes());
            }
            exts.extend([0x00, 0x00]);
            exts.extend(((list.len() + 2) as u16).to_be_bytes());
            exts.extend((list.len() as u16).to_be_bytes());
            exts.extend(list);
        }
    }
    let mut body = vec![0x03, 0x03];
    body.extend([7u8; 32]);
    body.push(0); // session id
    body.extend([0x00, 0x02, 0x13, 0x01]); // one cipher suite
    body.extend([0x01, 0x00]); // null compression
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut handshake = vec![0x01];
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

#[test]
fn the_server_name_is_read_from_a_whole_client_hello() {
    let hello = client_hello(Some("crates.io"));
    assert_eq!(tls_server_name(&hello), Ok(TlsStart::ClientHello(Some("crates.io".into()))));
    assert_eq!(tls_server_name(&client_hello(None)), Ok(TlsStart::ClientHello(None)));
    // Every proper prefix asks for more, never a wrong answer.
    for n in 0..hello.len() {
        assert_eq!(tls_server_name(&hello[..n]), Ok(TlsStart::More), "prefix of {n} bytes");
    }
    assert_eq!(tls_server_name(b"GET / HTTP/1.1\r\n"), Ok(TlsStart::NotTls));
    assert_eq!(tls_server_name(b"SSH-2.0-x"), Ok(TlsStart::NotTls));
}

#[test]
fn hellos_that_hide_or_double_their_server_name_are_refused() {
    assert!(tls_server_name(&client_hello_with(vec!["a.com"], 2)).unwrap_err().contains("two server name"));
    assert!(tls_server_name(&client_hello_with(vec!["a.com", "b.com"], 1)).unwrap_err().contains("server name"));
    assert!(tls_server_name(&client_hello_with(vec!["a\u{7f}b"], 1)).is_err());
    // The handshake split over two records: its length runs past the first record.
    let mut split = client_hello(Some("a.com"));
    let record_len = u16::from_be_bytes([split[3], split[4]]) - 10;
    split[3..5].copy_from_slice(&record_len.to_be_bytes());
    split.truncate(5 + usize::from(record_len));
    assert!(tls_server_name(&split).unwrap_err().contains("split across records"));
    // Not a ClientHello (a ServerHello), and a record type byte with a wrong version.
    let mut server_hello = client_hello(Some("a.com"));
    server_hello[5] = 2;
    assert!(tls_server_name(&server_hello).is_err());
    assert!(tls_server_name(&[0x16, 0x09, 0x01, 0x00, 0x10]).is_err());
    // A record longer than TLS allows.
    assert!(tls_server_name(&[0x16, 0x03, 0x01, 0xff, 0xff]).is_err());
}

#[test]
fn garbage_after_a_handshake_byte_never_panics() {
    // A small deterministic generator: bytes that start like a TLS record and then say anything.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..5000 {
        let mut buf = vec![0x16, 0x03, 0x01];
        let len = (x % 300) as usize;
        buf.extend((len as u16).to_be_bytes());
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.push((x & 0xff) as u8);
        }
        let _ = tls_server_name(&buf);
    }
}

fn rule(entry: &str) -> HostRule {
    HostRule::parse(entry).unwrap()
}

#[test]
fn names_match_the_listed_host_only() {
    let r = rule("crates.io");
    assert!(server_name_matches(&r, "crates.io", Some("Crates.IO.")));
    assert!(!server_name_matches(&r, "crates.io", Some("static.crates.io")));
    assert!(!server_name_matches(&r, "crates.io", None), "a name was connected to: the hello must carry it");
    assert!(server_name_matches(&rule("127.0.0.1"), "127.0.0.1", None), "no server name for an address");
    for ok in ["crates.io", "crates.io:443", "CRATES.IO.", " crates.io "] {
        assert!(host_header_matches(&r, ok), "{ok:?}");
    }
    for bad in ["evil.com", "crates.io.evil.com", "crates.io:443:443", "crates.io@evil.com", ""] {
        assert!(!host_header_matches(&r, bad), "{bad:?}");
    }
    assert_eq!(host_header_refusal(&r, Some("crates.io")), None);
    assert!(host_header_refusal(&r, None).unwrap().contains("without a Host header"));
}

#[test]
fn request_heads_are_rebuilt_with_connection_close_and_a_known_body_length() {
    let request: &[u8] =
        b"PUT /x HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nContent-Length: 3\r\n\r\nabcGET";
    let (rebuilt, end) = origin_request(request).unwrap().unwrap();
    assert_eq!(&request[end..], b"abcGET");
    assert_eq!(
        rebuilt,
        Rebuilt {
            head: b"PUT /x HTTP/1.1\r\nHost: a.com\r\nContent-Length: 3\r\nConnection: close\r\n\r\n".to_vec(),
            host_header: Some("a.com".into()),
            body: Body::Length(3),
        }
    );
    assert_eq!(origin_request(b"GET / HTTP/1.1\r\nHost: a").unwrap(), None, "more bytes needed");
    for (head, why) in [
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "two Host"),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "chunks"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "Content-Length"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", "Content-Length"),
        ("\x00garbage\r\n\r\n", "neither TLS nor an HTTP request"),
    ] {
        let e = origin_request(head.as_bytes()).unwrap_err();
        assert!(e.contains(why), "{head:?}: {e}");
    }
}

#[test]
fn one_request_takes_its_body_and_drops_what_follows() {
    let rebuilt = |body| Rebuilt { head: b"H".to_vec(), host_header: None, body };
    let o = Opening::one_request(rebuilt(Body::Length(4)), b"bodyGET / HTTP/1.1\r\n");
    assert_eq!(o, Opening { send: b"Hbody".to_vec(), body_left: Some(0) });
    let o = Opening::one_request(rebuilt(Body::Length(10)), b"part");
    assert_eq!(o, Opening { send: b"Hpart".to_vec(), body_left: Some(6) });
    let o = Opening::one_request(rebuilt(Body::None), b"GET /second HTTP/1.1\r\n\r\n");
    assert_eq!(o, Opening { send: b"H".to_vec(), body_left: Some(0) });
}
