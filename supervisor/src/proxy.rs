//! A task's network proxy: for a task whose profile lists hosts, an HTTP proxy on 127.0.0.1 (a port of its own, so
//! the listener tells which task a connection belongs to) that lives as long as the task's worker. The sandbox lets
//! the task connect to that port only; the proxy, outside the sandbox, lets through the hosts of the profile
//! ([`neuraphage_sandbox_profiles::hosts`]) and refuses the rest, and records every decision as a task event.
//!
//! It accepts `CONNECT host:port HTTP/1.1` (answered `200 Connection established`, then bytes are spliced both ways)
//! and plain-HTTP requests in absolute form (`GET http://host[:port]/path HTTP/1.1`, forwarded in origin form, then
//! spliced). Everything else gets 400; a host or port outside the list gets 403; a listed host that cannot be
//! reached gets 502. Each answer has a one-line reason. Bounded: the request head is at most [`MAX_HEAD`] bytes and
//! must arrive within [`HEAD_TIMEOUT`]; at most [`MAX_CONNECTIONS`] connections at once per task.
//!
//! What follows a decision must stay about the listed host ([`crate::proxy_names`]): a tunnel's TLS server name, or
//! the `Host` header of a plain request (in absolute form or inside a tunnel), names it, else the connection is
//! closed and the refusal recorded; a plain request is forwarded with `Connection: close`, one per connection.
//!
//! Limits: Landlock rules name ports, not addresses, so the task may also open TCP connections to the proxy's port
//! number on other addresses. A listed name is resolved here, outside the sandbox, and connected to whatever it
//! resolves to (the hosts of a profile are trusted to be what they say).

use std::sync::Arc;
use std::time::Duration;

use neuraphage_ipc::EventKind;
use neuraphage_sandbox_profiles::hosts::HostRule;

use crate::proxy_names::{self, Opening, Rebuilt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest request head (request line and headers) the proxy reads.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers in a request head.
const MAX_HEADERS: usize = 64;
/// How long a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the proxy tries to reach a listed host.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Connections one task's proxy serves at once (more wait in the listener's backlog).
pub const MAX_CONNECTIONS: usize = 32;
/// Decisions one proxy records as task events; past that it records one more saying so, and only logs the rest
/// (a task looping on refused hosts must not fill the store).
pub const MAX_RECORDED_DECISIONS: u64 = 10_000;
/// The longest host name a decision records (a request head can be much longer).
const MAX_RECORDED_HOST: usize = 255;

/// Where a proxy's decisions go (the supervisor records them as the task's events).
pub type Recorder = Arc<dyn Fn(EventKind) + Send + Sync>;

/// Asked about a host the profile does not list (`permission-mode: ask`): the rule to let it through with, once
/// the user allowed it, or `None` (denied, or no answer in time). The connection is held meanwhile.
pub type Asker =
    Arc<dyn Fn(String, u16) -> std::pin::Pin<Box<dyn Future<Output = Option<HostRule>> + Send>> + Send + Sync>;

/// A running proxy for one task. Dropping it stops it (and closes the connections it carries).
pub struct TaskProxy {
    port: u16,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl TaskProxy {
    /// Listen on 127.0.0.1 (a port the kernel picks) and serve `rules` until stopped.
    pub async fn start(rules: Vec<HostRule>, record: Recorder) -> std::io::Result<TaskProxy> {
        TaskProxy::start_asking(rules, record, None).await
    }

    /// [`TaskProxy::start`], asking `asker` about hosts the rules do not list instead of refusing them at once.
    pub async fn start_asking(
        rules: Vec<HostRule>,
        record: Recorder,
        asker: Option<Asker>,
    ) -> std::io::Result<TaskProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let serving = Serving { rules: Arc::new(rules), record, decisions: Arc::default(), asker };
        tracker.spawn(accept_loop(listener, serving, stop.clone(), tracker.clone()));
        Ok(TaskProxy { port, stop, tracker })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy's URL, for `HTTP_PROXY` and `HTTPS_PROXY`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stop listening, close every connection, and wait until they are closed.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for TaskProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[derive(Clone)]
struct Serving {
    rules: Arc<Vec<HostRule>>,
    record: Recorder,
    decisions: Arc<std::sync::atomic::AtomicU64>,
    asker: Option<Asker>,
}

impl Serving {
    fn decide(&self, host: &str, port: u16, allowed: bool, reason: &str) {
        tracing::info!(host, port, allowed, reason, "proxy decision");
        let n = self.decisions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reason = match n.cmp(&MAX_RECORDED_DECISIONS) {
            std::cmp::Ordering::Less => reason.to_owned(),
            std::cmp::Ordering::Equal => format!("{reason}; later decisions of this worker's proxy are only logged"),
            std::cmp::Ordering::Greater => return,
        };
        let host: String = host.chars().take(MAX_RECORDED_HOST).collect();
        (self.record)(EventKind::ProxyDecision { host, port, allowed, reason });
    }
}

async fn accept_loop(listener: TcpListener, serving: Serving, stop: CancellationToken, tracker: TaskTracker) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
        };
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let client = match client {
            Ok((client, _)) => client,
            Err(e) => {
                tracing::warn!(error = %e, "proxy accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (serving, stop) = (serving.clone(), stop.clone());
        tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = serve(client, &serving) => {}
            }
            drop(permit);
        });
    }
}

/// What a client asked for.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    host: String,
    port: u16,
    /// `None` for CONNECT; for plain HTTP, the head to send upstream (origin form, without proxy headers).
    forward: Option<Rebuilt>,
    /// Bytes after the head the client already sent.
    rest_at: usize,
}

/// A refusal to send back: status and one-line reason.
#[derive(Debug, PartialEq, Eq)]
struct Refusal(u16, String);

async fn serve<C: AsyncRead + AsyncWrite + Unpin>(mut client: C, serving: &Serving) {
    let mut buf = Vec::with_capacity(1024);
    let request = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client, &mut buf)).await {
        Ok(Ok(request)) => request,
        Ok(Err(Refusal(status, reason))) => return answer(&mut client, status, &reason).await,
        Err(_) => return answer(&mut client, 408, "the request head did not arrive in time").await,
    };
    let Request { host, port, forward, rest_at } = request;
    let listed = serving.rules.iter().find(|r| r.allows(&host, port)).cloned();
    let (listed, asked) = match (listed, &serving.asker) {
        (Some(rule), _) => (Some(rule), false),
        (None, Some(asker)) => (asker(host.clone(), port).await, true),
        (None, None) => (None, false),
    };
    let Some(rule) = listed else {
        if asked {
            let reason = "not in the task's profile, and the user did not allow it";
            serving.decide(&host, port, false, reason);
            return answer(&mut client, 403, &format!("{host}:{port}: {reason}")).await;
        }
        let reason = if serving.rules.iter().any(|r| r.names(&host)) {
            "port not allowed for this host by the task's profile"
        } else {
            "host not in the task's profile"
        };
        serving.decide(&host, port, false, reason);
        return answer(&mut client, 403, &format!("{host}:{port}: {reason}")).await;
    };
    if let Some(refusal) =
        forward.as_ref().and_then(|f| proxy_names::host_header_refusal(&rule, f.host_header.as_deref()))
    {
        serving.decide(&host, port, false, &refusal);
        return answer(&mut client, 403, &format!("{host}:{port}: {refusal}")).await;
    }
    serving.decide(&host, port, true, if asked { "allowed by the user" } else { "listed in the task's profile" });
    // The name as the profile lists it (lowercase, no trailing dot), resolved here, outside the sandbox.
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((rule.host.as_str(), port))).await;
    let mut upstream = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return answer(&mut client, 502, &format!("cannot connect to {host}:{port}: {e}")).await,
        Err(_) => return answer(&mut client, 504, &format!("cannot connect to {host}:{port}: timed out")).await,
    };
    let opening = match forward {
        Some(rebuilt) => Opening::one_request(rebuilt, &buf[rest_at..]),
        None => {
            if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_err() {
                return;
            }
            let first = buf[rest_at..].to_vec();
            let opened = tokio::time::timeout(HEAD_TIMEOUT, proxy_names::open_tunnel(&mut client, first, &rule, &host));
            match opened.await.unwrap_or_else(|_| Err("the tunnel's first bytes did not arrive in time".into())) {
                Ok(opening) => opening,
                Err(refusal) => {
                    serving.decide(&host, port, false, &refusal);
                    let _ = client.shutdown().await;
                    return;
                }
            }
        }
    };
    let sent = async {
        upstream.write_all(&opening.send).await?;
        match opening.body_left {
            None => tokio::io::copy_bidirectional(&mut client, &mut upstream).await.map(|_| ()),
            Some(n) => proxy_names::relay_one_request(&mut client, &mut upstream, n).await,
        }
    };
    if let Err(e) = sent.await {
        tracing::debug!(host, port, error = %e, "proxy connection ended");
    }
}

/// Read until the request head is complete (or too long), and parse it.
async fn read_head<S: AsyncRead + Unpin>(client: &mut S, buf: &mut Vec<u8>) -> Result<Request, Refusal> {
    loop {
        if let Some(request) = parse_head(buf)? {
            return Ok(request);
        }
        if buf.len() >= MAX_HEAD {
            return Err(Refusal(431, format!("the request head is longer than {MAX_HEAD} bytes")));
        }
        let mut chunk = [0u8; 2048];
        let want = chunk.len().min(MAX_HEAD - buf.len());
        match client.read(&mut chunk[..want]).await {
            Ok(0) => return Err(Refusal(400, "the connection closed before the request head ended".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(Refusal(400, format!("cannot read the request: {e}"))),
        }
    }
}

/// Parse a request head; `Ok(None)` if more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<Request>, Refusal> {
    let bad = |reason: String| Refusal(400, reason);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let rest_at = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(bad(format!("more than {MAX_HEADERS} headers"))),
        Err(e) => return Err(bad(format!("malformed request: {e}"))),
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(bad("malformed request line".into()));
    };
    if method == "CONNECT" {
        let (host, port) = authority(target, None).ok_or_else(|| bad(format!("CONNECT {target:?}: not host:port")))?;
        return Ok(Some(Request { host, port, forward: None, rest_at }));
    }
    let Some(after_scheme) = strip_prefix_ignore_case(target, "http://") else {
        return Err(bad(format!(
            "{method} {target:?}: this proxy takes CONNECT host:port, or plain HTTP requests to http://host/..."
        )));
    };
    let (auth, path) = match after_scheme.find(['/', '?']) {
        Some(i) => (&after_scheme[..i], &after_scheme[i..]),
        None => (after_scheme, "/"),
    };
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
    if auth.contains('@') {
        return Err(bad(format!("{target:?}: user info in a proxy request is not supported")));
    }
    let (host, port) = authority(auth, Some(80)).ok_or_else(|| bad(format!("{target:?}: no host")))?;
    let line = format!("{method} {path} HTTP/1.{}", req.version.unwrap_or(1));
    let head = proxy_names::rebuild(&line, req.headers).map_err(bad)?;
    Ok(Some(Request { host, port, forward: Some(head), rest_at }))
}

/// `host:port` (or `host` when `default_port` is given); an IPv6 literal keeps its brackets (and so matches no
/// host entry).
fn authority(auth: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    let (host, port) = match auth.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || (host.starts_with('[') && host.ends_with(']')) => {
            (host, port.parse::<u16>().ok().filter(|p| *p != 0)?)
        }
        _ if !auth.contains(':') || auth.ends_with(']') => (auth, default_port?),
        _ => return None,
    };
    (!host.is_empty() && host.chars().all(|c| c.is_ascii_graphic())).then(|| (host.to_owned(), port))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Send a short answer with a one-line reason and close.
async fn answer<S: AsyncWrite + Unpin>(client: &mut S, status: u16, reason: &str) {
    let phrase = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let body = format!("neuraphage proxy: {}\n", reason.replace(['\r', '\n'], " "));
    let reply = format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(reply.as_bytes()).await;
    let _ = client.shutdown().await;
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
