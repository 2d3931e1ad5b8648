//! The proxy's name checks: a connection the proxy let through for a listed host must stay about that host.
//!
//! A CONNECT names a host, but the bytes that follow choose which site of the address the task reaches: the TLS
//! server name (SNI) of its ClientHello, or the `Host` header of a plain HTTP request (on a shared address, another
//! site than the listed one). So, after the proxy answered a CONNECT with 200:
//!
//! - a tunnel that starts with a TLS handshake record must carry a ClientHello, whole in its first record, whose
//!   server name is the listed host ([`tls_server_name`]; no server name at all is refused too, but where the
//!   CONNECT named an IP address, where clients send none);
//! - a tunnel that starts with anything else is read as one plain HTTP request ([`origin_request`]), checked like
//!   a plain proxy request, and nothing else: anything but TLS or HTTP is refused.
//!
//! A plain request (absolute form, or in a tunnel) must carry one `Host` header naming the listed host (the port in
//! it is not compared: the connection goes to the allowed port whatever it says); the proxy forwards it with
//! `Connection: close` and forwards its body by `Content-Length` only (a chunked request body is refused), then no
//! more bytes from the client: one request per connection, so a second request on a kept-alive connection never
//! reaches the host unchecked.
//!
//! Bounded: the ClientHello is read up to [`MAX_CLIENT_HELLO`] bytes within the proxy's head timeout; a request head
//! up to the proxy's [`MAX_HEAD`].

use neuraphage_sandbox_profiles::hosts::HostRule;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proxy::MAX_HEAD;

/// Largest first TLS record the proxy reads: a record header and the largest plaintext record.
pub const MAX_CLIENT_HELLO: usize = 5 + 16 * 1024;

/// Most headers in a request head.
const MAX_HEADERS: usize = 64;

/// What the first bytes of a tunnel are.
#[derive(Debug, PartialEq, Eq)]
pub enum TlsStart {
    /// More bytes are needed to tell.
    More,
    /// Not a TLS handshake record.
    NotTls,
    /// A ClientHello, with its server name if it has one.
    ClientHello(Option<String>),
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body: the head is the whole request.
    None,
    /// `Content-Length` bytes follow the head.
    Length(u64),
}

/// A plain request head, parsed and rebuilt for the upstream.
#[derive(Debug, PartialEq, Eq)]
pub struct Rebuilt {
    /// The head to send upstream (origin form, without proxy headers, with `Connection: close`).
    pub head: Vec<u8>,
    /// The `Host` header's value, if it had one.
    pub host_header: Option<String>,
    /// How its body is framed.
    pub body: Body,
}

/// Read a TLS ClientHello from the first bytes of a tunnel. `Err` says why it is refused.
pub fn tls_server_name(buf: &[u8]) -> Result<TlsStart, String> {
    let Some(&first) = buf.first() else { return Ok(TlsStart::More) };
    if first != 0x16 {
        return Ok(TlsStart::NotTls);
    }
    if buf.len() < 5 {
        return Ok(TlsStart::More);
    }
    let record_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if buf[1] != 3 || record_len > MAX_CLIENT_HELLO - 5 {
        return Err("a TLS record that is not one".into());
    }
    if buf.len() < 5 + record_len {
        return Ok(TlsStart::More);
    }
    let mut r = Reader(&buf[5..5 + record_len]);
    let bad = |what: &str| format!("a malformed TLS ClientHello ({what})");
    if r.u8().ok_or_else(|| bad("no handshake type"))? != 1 {
        return Err("a TLS handshake that does not start with a ClientHello".into());
    }
    let len = r.u24().ok_or_else(|| bad("no length"))?;
    let mut hello = Reader(r.take(len).ok_or_else(|| {
        "a TLS ClientHello split across records (the proxy reads its server name from the first record only)".to_owned()
    })?);
    hello.take(2 + 32).ok_or_else(|| bad("version and random"))?;
    let session = usize::from(hello.u8().ok_or_else(|| bad("session id"))?);
    hello.take(session).ok_or_else(|| bad("session id"))?;
    let suites = hello.u16().ok_or_else(|| bad("cipher suites"))?;
    hello.take(suites).ok_or_else(|| bad("cipher suites"))?;
    let compression = usize::from(hello.u8().ok_or_else(|| bad("compression"))?);
    hello.take(compression).ok_or_else(|| bad("compression"))?;
    if hello.0.is_empty() {
        return Ok(TlsStart::ClientHello(None));
    }
    let ext_len = hello.u16().ok_or_else(|| bad("extensions"))?;
    let mut exts = Reader(hello.take(ext_len).ok_or_else(|| bad("extensions"))?);
    let mut name = None;
    while !exts.0.is_empty() {
        let ty = exts.u16().ok_or_else(|| bad("extension type"))?;
        let len = exts.u16().ok_or_else(|| bad("extension length"))?;
        let data = exts.take(len).ok_or_else(|| bad("extension length"))?;
        if ty != 0 {
            continue;
        }
        if name.is_some() {
            return Err(bad("two server name extensions"));
        }
        name = Some(server_name(data).ok_or_else(|| bad("server name"))?);
    }
    Ok(TlsStart::ClientHello(name))
}

/// The one host name of a `server_name` extension.
fn server_name(data: &[u8]) -> Option<String> {
    let mut r = Reader(data);
    let list_len = r.u16()?;
    let mut list = Reader(r.take(list_len)?);
    if !r.0.is_empty() {
        return None;
    }
    let mut found = None;
    while !list.0.is_empty() {
        let ty = list.u8()?;
        let len = list.u16()?;
        let name = list.take(len)?;
        if ty == 0 {
            if found.is_some() || name.is_empty() || name.len() > 255 || !name.iter().all(u8::is_ascii_graphic) {
                return None;
            }
            found = Some(String::from_utf8_lossy(name).into_owned());
        }
    }
    found
}

/// A cursor over bytes, big-endian.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
}

/// Whether the server name of a ClientHello fits the listed host the CONNECT was allowed for.
pub fn server_name_matches(rule: &HostRule, connect_host: &str, name: Option<&str>) -> bool {
    match name {
        Some(name) => rule.names(name),
        None => connect_host.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

/// Whether a `Host` header names the listed host (`host` or `host:port`; the port is not compared).
pub fn host_header_matches(rule: &HostRule, value: &str) -> bool {
    let host = match value.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => value,
    };
    rule.names(host.trim())
}

/// Rebuild a request head for the upstream: `request_line` first, then the headers but the proxy's own and the
/// client's connection options, then `Connection: close`. Refused: two `Host` headers, a chunked body, a body
/// length that is not one number.
pub fn rebuild(request_line: &str, headers: &[httparse::Header<'_>]) -> Result<Rebuilt, String> {
    let mut head = format!("{request_line}\r\n").into_bytes();
    let (mut host_header, mut body) = (None, Body::None);
    for h in headers {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "proxy-connection" | "proxy-authorization" | "connection" | "keep-alive" => continue,
            "host" if host_header.is_some() => return Err("a request with two Host headers".into()),
            "host" => host_header = Some(String::from_utf8_lossy(h.value).into_owned()),
            "transfer-encoding" => {
                return Err(
                    "a request body in chunks (Transfer-Encoding) is not supported here; send Content-Length".into()
                );
            }
            "content-length" => {
                let n = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok());
                match (n, body) {
                    (Some(n), Body::None) => body = Body::Length(n),
                    _ => return Err("a request with a Content-Length that is not one number".into()),
                }
            }
            _ => {}
        }
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Rebuilt { head, host_header, body })
}

/// Parse the first request of a tunnel that is not TLS (origin form); `Ok(None)` if more bytes are needed. With
/// the head rebuilt, where its bytes end in `buf`.
pub fn origin_request(buf: &[u8]) -> Result<Option<(Rebuilt, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let end = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(format!("a request head longer than {MAX_HEAD} bytes")),
        Err(e) => return Err(format!("neither TLS nor an HTTP request ({e})")),
    };
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Err("neither TLS nor an HTTP request".into());
    };
    let line = format!("{method} {path} HTTP/1.{}", req.version.unwrap_or(1));
    Ok(Some((rebuild(&line, req.headers)?, end)))
}

/// What the proxy sends upstream first, and how it carries the rest.
#[derive(Debug, PartialEq, Eq)]
pub struct Opening {
    /// Bytes for the upstream, first.
    pub send: Vec<u8>,
    /// `None`: splice both ways (TLS); `Some(n)`: one request, `n` more body bytes, then only the answer.
    pub body_left: Option<u64>,
}

impl Opening {
    /// One plain request: its head, then what of `rest` (bytes the client sent after the head) is its body.
    pub fn one_request(rebuilt: Rebuilt, rest: &[u8]) -> Opening {
        let Rebuilt { mut head, body, .. } = rebuilt;
        let length = match body {
            Body::None => 0,
            Body::Length(n) => n,
        };
        let now = rest.len().min(usize::try_from(length).unwrap_or(usize::MAX));
        head.extend_from_slice(&rest[..now]);
        Opening { send: head, body_left: Some(length - now as u64) }
    }
}

/// Why a request's `Host` header does not let it through to the listed host, if it does not.
pub fn host_header_refusal(rule: &HostRule, host_header: Option<&str>) -> Option<String> {
    match host_header {
        None => Some("a plain HTTP request without a Host header".into()),
        Some(h) if !host_header_matches(rule, h) => {
            let shown: String = h.chars().take(255).collect();
            Some(format!("Host header {shown:?} is not the host the request was allowed for"))
        }
        Some(_) => None,
    }
}

/// After a CONNECT was answered 200: read the tunnel's first bytes (`first`: those already read with the head) and
/// check them against the listed host (`rule`, as `connect_host` named it). `Err`: why the tunnel is refused.
pub async fn open_tunnel<C: AsyncRead + Unpin>(
    client: &mut C,
    mut first: Vec<u8>,
    rule: &HostRule,
    connect_host: &str,
) -> Result<Opening, String> {
    let closed = || "the tunnel closed before its first bytes said what it carries".to_owned();
    let read_error = |e: std::io::Error| format!("cannot read the tunnel: {e}");
    loop {
        match tls_server_name(&first)? {
            TlsStart::More => {}
            TlsStart::ClientHello(name) if server_name_matches(rule, connect_host, name.as_deref()) => {
                return Ok(Opening { send: first, body_left: None });
            }
            TlsStart::ClientHello(Some(name)) => {
                return Err(format!("TLS server name {name:?} is not the host the CONNECT was allowed for"));
            }
            TlsStart::ClientHello(None) => return Err("a TLS ClientHello without a server name".into()),
            TlsStart::NotTls => {
                if let Some((rebuilt, end)) = origin_request(&first)? {
                    if let Some(refusal) = host_header_refusal(rule, rebuilt.host_header.as_deref()) {
                        return Err(refusal);
                    }
                    return Ok(Opening::one_request(rebuilt, &first[end..]));
                }
                if !read_more(client, &mut first, MAX_HEAD).await.map_err(read_error)? {
                    return Err(closed());
                }
                continue;
            }
        }
        if !read_more(client, &mut first, MAX_CLIENT_HELLO).await.map_err(read_error)? {
            return Err(closed());
        }
    }
}

/// Read more of the client's first bytes into `buf` (at most `limit` in all); false at end of stream.
pub async fn read_more<C: AsyncRead + Unpin>(client: &mut C, buf: &mut Vec<u8>, limit: usize) -> std::io::Result<bool> {
    let mut chunk = [0u8; 4096];
    let want = chunk.len().min(limit.saturating_sub(buf.len()));
    if want == 0 {
        return Ok(false);
    }
    let n = client.read(&mut chunk[..want]).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Carry one request's body (`body_left` bytes, of which `sent` already went with the head) to the upstream, then
/// the upstream's answer back until it closes; no more bytes from the client.
pub async fn relay_one_request<C, U>(client: &mut C, upstream: &mut U, body_left: u64) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let up = async {
        let mut limited = (&mut client_read).take(body_left);
        tokio::io::copy(&mut limited, &mut upstream_write).await?;
        upstream_write.flush().await?;
        // Not shut down: some servers read a half-close as the client giving up. The request is complete.
        std::future::pending::<std::io::Result<()>>().await
    };
    let down = async {
        tokio::io::copy(&mut upstream_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

#[cfg(test)]
#[path = "proxy_names_tests.rs"]
pub(crate) mod tests;
