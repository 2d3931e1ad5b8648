//! `permission-mode: ask` for the network: a task whose profile lists hosts, connecting through its proxy to a host
//! the profile does not list, asks the user instead of being refused at once. The proxy holds the connection until
//! the answer or `permission-timeout` (the timer denies it then); meanwhile the task's worker keeps running — it is
//! only its connection that waits, so the task does not park. `task approve ID` lets this one connection through;
//! `--always` saves the host for this task (a saved rule tied to the task), `--never` refuses it for this task.

use std::sync::Arc;
use std::time::Duration;

use neuraphage_ipc::TaskId;
use neuraphage_sandbox_profiles::hosts::HostRule;

use super::settings::Mode;
use crate::proxy::Asker;
use crate::requests::Daemon;
use crate::store::permissions::NewRequest;

/// The tool name network requests are stored under.
pub const NETWORK: &str = "Network";

/// How often a held connection looks for its answer.
const POLL: Duration = Duration::from_millis(200);

/// The proxy's asker for `task`, in `ask` mode only.
pub fn asker(daemon: &Arc<Daemon>, task: &TaskId) -> Option<Asker> {
    if daemon.config().security.permission_mode != Mode::Ask {
        return None;
    }
    let (daemon, task) = (daemon.clone(), task.clone());
    Some(Arc::new(move |host: String, port: u16| {
        let (daemon, task) = (daemon.clone(), task.clone());
        Box::pin(async move { ask(daemon, task, host, port).await })
    }))
}

async fn ask(daemon: Arc<Daemon>, task: TaskId, host: String, port: u16) -> Option<HostRule> {
    let subject = format!("{host}:{port}");
    let rule = HostRule::parse(&subject)?;
    let call = format!("net-{subject}-{}", chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default());
    let started = {
        let (daemon, task, subject, call) = (daemon.clone(), task.clone(), subject.clone(), call.clone());
        tokio::task::spawn_blocking(move || start(&daemon, &task, &subject, &call)).await.ok()?.ok()?
    };
    if let Some(saved) = started {
        return saved.then_some(rule);
    }
    let deadline = tokio::time::Instant::now() + daemon.config().security.permission_timeout + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        let (d, t, c) = (daemon.clone(), task.clone(), call.clone());
        let decided = tokio::task::spawn_blocking(move || {
            let stored = d.with_store(|s| s.permission_request(&t, &c))?;
            let decision = stored.and_then(|r| r.decision);
            if decision.is_some() {
                d.with_store(|s| s.mark_permission_delivered(&t, &c))?;
            }
            Ok::<_, crate::error::SupervisorError>(decision)
        })
        .await;
        match decided {
            Ok(Ok(Some(allowed))) => return allowed.then_some(rule),
            Ok(Ok(None)) => {}
            _ => return None,
        }
    }
    None
}

/// A rule saved for this task and host decides at once (`Some(allowed)`); otherwise the request is stored.
fn start(daemon: &Daemon, task: &TaskId, subject: &str, call: &str) -> crate::error::Result<Option<bool>> {
    let rules = daemon.with_store(|s| s.permission_rules())?;
    let saved =
        rules.iter().filter(|r| r.tool == NETWORK && r.from_task.as_ref() == Some(task) && r.pattern == subject);
    let mut verdict = None;
    for r in saved {
        verdict = Some(verdict.unwrap_or(true) && r.allow);
    }
    if verdict.is_some() {
        return Ok(verdict);
    }
    let prompt = format!(
        "Allow a connection to {subject}? (not in the task's profile; permission-mode ask) The task keeps running; its \
         connection waits."
    );
    let by = "permission-mode ask: the host is not in the task's profile";
    let new = NewRequest { tool_use_id: call, tool: NETWORK, subject, command: false, prompt: &prompt, by };
    daemon.with_store(|s| s.ask_permission(task, &new))?;
    Ok(None)
}
