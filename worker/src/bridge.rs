//! The task's ways out of its network namespace: for each bridge of the plan, a TCP listener on `127.0.0.1:PORT`
//! inside the namespace (bound before Landlock and seccomp, so the task needs no bind right for it), whose every
//! connection the worker splices to the bridge's unix socket; the supervisor forwards that socket to the same port
//! on the host's 127.0.0.1 (the task's proxy, or a `tcp-connect` port of its profile). `HTTP_PROXY` keeps its URL.
//! Bounded: [`MAX_CONNECTIONS`] at once per bridge.

use std::path::PathBuf;
use std::sync::Arc;

use neuraphage_sandbox_profiles::plan::SandboxPlan;
use tokio::sync::Semaphore;

/// Connections one bridge carries at once (more wait in the listener's backlog).
pub const MAX_CONNECTIONS: usize = 64;

/// The bridges' listeners, bound and not yet served.
pub struct Listeners(Vec<(std::net::TcpListener, PathBuf)>);

/// Bind every bridge's port on the namespace's loopback. Call it inside the namespaces, before the sandbox.
pub fn listen(plan: &SandboxPlan) -> Result<Listeners, String> {
    let mut listeners = Vec::new();
    for bridge in &plan.namespaces.bridges {
        let listener = std::net::TcpListener::bind(("127.0.0.1", bridge.port))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| format!("bridge to port {}: cannot listen on 127.0.0.1:{}: {e}", bridge.port, bridge.port))?;
        listeners.push((listener, bridge.socket.clone()));
    }
    Ok(Listeners(listeners))
}

/// Serve the listeners on `runtime` for as long as it runs.
pub fn serve(runtime: &tokio::runtime::Runtime, listeners: Listeners) {
    let _entered = runtime.enter();
    for (listener, socket) in listeners.0 {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => {
                runtime.spawn(accept_loop(listener, socket));
            }
            Err(e) => tracing::error!(%e, "cannot serve a bridge"),
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, socket: PathBuf) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        let mut tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(%e, "bridge accept");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let socket = socket.clone();
        tokio::spawn(async move {
            match tokio::net::UnixStream::connect(&socket).await {
                Ok(mut unix) => {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
                Err(e) => tracing::warn!(%e, socket = %socket.display(), "bridge: cannot reach the supervisor's end"),
            }
            drop(permit);
        });
    }
}
