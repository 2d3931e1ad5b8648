//! Denies permission requests left unanswered for `security.permission-timeout`: the decision (by `timeout`), its
//! event and the task's move back to the queue are stored together; the resumed worker gets the denial and the model
//! is told. Runs from the supervisor's start, so requests that waited through a restart are denied on time too.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::requests::Daemon;
use crate::store::permissions::Decision;

/// How often the timer looks (at most).
const TICK: Duration = Duration::from_secs(1);

/// Most requests denied per tick.
const BATCH: usize = 100;

/// Run until `shutdown`.
pub async fn run(daemon: Arc<Daemon>, shutdown: CancellationToken) {
    loop {
        let d = daemon.clone();
        match tokio::task::spawn_blocking(move || expire(&d)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::info!(denied = n, "unanswered permission requests denied");
                daemon.workers.wake.notify_one();
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot deny unanswered permission requests"),
            Err(e) => tracing::error!(error = %e, "the permission timer's thread failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Deny every request older than the timeout; how many were.
fn expire(daemon: &Daemon) -> crate::error::Result<usize> {
    let timeout = daemon.config().security.permission_timeout;
    let before = chrono::Utc::now().timestamp_millis() - timeout.as_millis() as i64;
    let expired = daemon.with_store(|s| s.expired_permissions(before, BATCH))?;
    let mut denied = 0;
    for request in expired {
        let reason = format!(
            "{} `{}` was denied: the user did not answer within {} (permission-timeout). Nothing ran.",
            request.tool,
            super::bounded(&request.subject),
            human(timeout)
        );
        let decision = Decision { allowed: false, by: "timeout", reason: Some(&reason), save: false };
        match daemon.with_store(|s| s.decide_permission(&request, &decision)) {
            Ok(_) => denied += 1,
            // Answered by the user meanwhile.
            Err(crate::error::SupervisorError::Refused(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(denied)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
