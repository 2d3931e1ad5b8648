//! The supervisor's end of a task's ways out of its network namespace: for its proxy's port and each `tcp-connect`
//! port of its profile, a unix socket `tasks/<id>/bridge-<port>.sock` (bound into the sandbox at its own path) whose
//! every connection is forwarded to the same port on the host's 127.0.0.1. The worker bridges the socket to the
//! port on its own loopback ([`neuraphage_sandbox_profiles::namespaces::Bridge`]), so a task reaches these ports
//! and nothing else on any address.
//!
//! Bounded: [`MAX_CONNECTIONS`] at once per bridge; the socket lives in the task's 0700 folder, and the bytes go to
//! a port the task could connect to anyway; the proxy still decides.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use neuraphage_sandbox_profiles::namespaces::Bridge;
use neuraphage_sandbox_profiles::plan::SandboxPlan;
use tokio::net::{TcpStream, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections one bridge carries at once.
pub const MAX_CONNECTIONS: usize = 64;

/// The longest unix socket path (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A task's bridges. Dropping them stops them; [`TaskBridges::stop`] also waits.
#[derive(Default)]
pub struct TaskBridges {
    stop: CancellationToken,
    tracker: TaskTracker,
    sockets: Vec<PathBuf>,
}

impl Drop for TaskBridges {
    fn drop(&mut self) {
        self.stop.cancel();
        for socket in &self.sockets {
            let _ = std::fs::remove_file(socket);
        }
    }
}

impl TaskBridges {
    /// For a plan whose worker runs in namespaces: a bridge for each of `ports` (deduplicated, the profile's
    /// `tcp-bind` ports left out: those serve inside the task), with its socket under `dir`; the plan learns them,
    /// and its seccomp filter lets the worker open unix stream sockets (in a mount namespace where only these are
    /// visible). Nothing for a plan without namespaces.
    pub fn start(dir: &Path, plan: &mut SandboxPlan, ports: &[u16]) -> std::io::Result<TaskBridges> {
        let mut bridges = TaskBridges::default();
        if !plan.namespaces.enabled {
            return Ok(bridges);
        }
        let mut ports = ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        ports.retain(|p| !plan.tcp_bind.contains(p));
        for port in ports {
            let socket = dir.join(format!("bridge-{port}.sock"));
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(std::io::Error::other(format!(
                    "{}: longer than a unix socket path may be ({MAX_SOCKET_PATH} bytes); use a shorter NEURAPHAGE_HOME",
                    socket.display()
                )));
            }
            let _ = std::fs::remove_file(&socket);
            let listener = UnixListener::bind(&socket)?;
            bridges.sockets.push(socket.clone());
            bridges.tracker.spawn(accept_loop(listener, port, bridges.stop.clone(), bridges.tracker.clone()));
            plan.namespaces.bridges.push(Bridge { port, socket });
        }
        if !bridges.sockets.is_empty() {
            plan.seccomp.unix_stream_sockets = true;
        }
        Ok(bridges)
    }

    /// Stop listening, close every connection, wait until they are closed, and remove the sockets.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn accept_loop(listener: UnixListener, port: u16, stop: CancellationToken, tracker: TaskTracker) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            permit = limit.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let mut unix = match accepted {
            Ok((unix, _)) => unix,
            Err(e) => {
                tracing::warn!(%e, port, "bridge accept");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let stop = stop.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let mut tcp = match TcpStream::connect(("127.0.0.1", port)).await {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::debug!(%e, port, "bridge: the host's port does not answer");
                    return;
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut unix, &mut tcp) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_connection_to_the_socket_reaches_the_port_and_a_plan_without_namespaces_gets_none() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let mut plan = SandboxPlan::default();
        let none = TaskBridges::start(dir.path(), &mut plan, &[port]).unwrap();
        assert!(none.sockets.is_empty() && plan.namespaces.bridges.is_empty() && !plan.seccomp.unix_stream_sockets);
        plan.namespaces.enabled = true;
        plan.tcp_bind = vec![1];
        let bridges = TaskBridges::start(dir.path(), &mut plan, &[port, 1, port]).unwrap();
        assert_eq!(
            plan.namespaces.bridges,
            vec![Bridge { port, socket: dir.path().join(format!("bridge-{port}.sock")) }]
        );
        assert!(plan.seccomp.unix_stream_sockets);
        let server = tokio::spawn(async move {
            let (mut s, _) = tcp.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let mut client = tokio::net::UnixStream::connect(&plan.namespaces.bridges[0].socket).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        server.await.unwrap();
        let socket = plan.namespaces.bridges[0].socket.clone();
        bridges.stop().await;
        assert!(!socket.exists(), "the socket is removed");
    }
}
