//! systemd's service notifications (`sd_notify`): readiness, stopping, status text and watchdog pings.
//!
//! When systemd runs the supervisor as a `Type=notify` service it sets `NOTIFY_SOCKET` (and, with `WatchdogSec=`,
//! `WATCHDOG_USEC` and `WATCHDOG_PID`). Without `NOTIFY_SOCKET` every method here does nothing, so the same binary
//! runs in the foreground, detached by `neuraphage daemon start`, or under systemd. A notification that cannot be
//! sent is logged and otherwise ignored: systemd's bookkeeping is never a reason for the supervisor to fail.
//! (`NOTIFY_SOCKET` must be a path, as systemd gives it; an abstract `@name` socket cannot be reached.)

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// The environment variable naming systemd's notification socket.
pub const ENV_NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog timeout systemd expects pings within, in microseconds.
pub const ENV_WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The process the watchdog timeout is meant for (unset means: whoever reads it).
pub const ENV_WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Talks to systemd's notification socket, if there is one.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// Whether `NOTIFY_SOCKET` was set.
    enabled: bool,
    /// How often to ping the watchdog, if systemd wants pings from this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Read `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from this process's environment.
    pub fn from_env() -> Notifier {
        let var = |key: &str| std::env::var(key).ok();
        let enabled = std::env::var_os(ENV_NOTIFY_SOCKET).is_some_and(|v| !v.is_empty());
        let watchdog = if enabled {
            watchdog_interval_from(
                var(ENV_WATCHDOG_USEC).as_deref(),
                var(ENV_WATCHDOG_PID).as_deref(),
                std::process::id(),
            )
        } else {
            None
        };
        Notifier { enabled, watchdog }
    }

    /// A notifier that never sends anything.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// Whether systemd gave this process a notification socket.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// `READY=1`: the service is up (send it only once clients can be served).
    pub fn ready(&self) {
        self.send(&[NotifyState::Ready], "READY=1");
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping], "STOPPING=1");
    }

    /// `STATUS=…`: one line shown by `systemctl status` (line breaks become spaces).
    pub fn status(&self, text: &str) {
        let line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        self.send(&[NotifyState::Status(&line)], "STATUS");
    }

    /// `WATCHDOG=1`: this process is still alive. Whether it was sent (true when there is no socket to send to).
    pub fn watchdog_ping(&self) -> bool {
        self.try_send(&[NotifyState::Watchdog]).map_err(|e| tracing::debug!(error = %e, "WATCHDOG=1 not sent")).is_ok()
    }

    /// How often to ping the watchdog: half of `WATCHDOG_USEC`, when it is set and `WATCHDOG_PID` is unset or this
    /// process. `None` when systemd wants no pings from us.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Ping the watchdog every [`watchdog_interval`](Self::watchdog_interval) until `stop` is cancelled. `None`
    /// (and no task) when no pings are wanted. Must be called inside a tokio runtime.
    pub fn spawn_watchdog(&self, stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.watchdog?;
        let notifier = self.clone();
        tracing::info!(every_ms = every.as_millis() as u64, "pinging the systemd watchdog");
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // A datagram send can block while systemd's queue is full: keep it off the runtime's threads.
                let pinger = notifier.clone();
                let sent = tokio::task::spawn_blocking(move || pinger.watchdog_ping()).await.unwrap_or(false);
                // Say so once when pings start failing and once when they work again, not at every tick.
                if sent == failing {
                    failing = !sent;
                    if failing {
                        tracing::warn!("cannot ping the systemd watchdog (continuing; systemd may restart us)");
                    } else {
                        tracing::info!("pinging the systemd watchdog works again");
                    }
                }
            }
        }))
    }

    fn send(&self, states: &[NotifyState<'_>], what: &str) {
        if !self.enabled {
            return;
        }
        match self.try_send(states) {
            Ok(()) => tracing::debug!(what, "notified systemd"),
            Err(e) => tracing::warn!(what, error = %e, "cannot notify systemd (continuing)"),
        }
    }

    fn try_send(&self, states: &[NotifyState<'_>]) -> std::io::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        sd_notify::notify(states)
    }
}

/// Half of `WATCHDOG_USEC` (systemd's advice), when it is a positive number and `WATCHDOG_PID` is unset, empty or
/// `me`.
fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    let ours = match pid.map(str::trim).filter(|p| !p.is_empty()) {
        None => true,
        Some(pid) => pid.parse::<u32>().is_ok_and(|pid| pid == me),
    };
    ours.then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_this_process_only() {
        let half = Some(Duration::from_millis(300));
        assert_eq!(watchdog_interval_from(Some("600000"), None, 42), half);
        assert_eq!(watchdog_interval_from(Some("600000"), Some(""), 42), half);
        assert_eq!(watchdog_interval_from(Some("600000"), Some("42"), 42), half);
        assert_eq!(watchdog_interval_from(Some("600000"), Some("43"), 42), None);
        assert_eq!(watchdog_interval_from(Some("600000"), Some("junk"), 42), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 42), None);
        assert_eq!(watchdog_interval_from(None, Some("42"), 42), None);
    }

    #[test]
    fn a_disabled_notifier_sends_nothing_and_wants_no_pings() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.ready();
        n.status("line one\nline two");
        n.stopping();
    }
}
