//! Notifications: telling the person the moment a task needs them, finished or failed, even in another window.
//! (Not systemd's readiness notifications: those are [`crate::notify`].)
//!
//! The notifier follows the event bus (no polling): a status change into one of the states `notifications.on` names
//! (`waiting`, `failed`, `completed`) is one event; events within `coalesce-ms` of the first become one
//! notification ("3 tasks need you"), each naming the task, the reason and the pending command or question. It goes
//! out as a desktop notification over D-Bus (the freedesktop Notifications interface, notify-rust's zbus backend) when
//! a session bus exists (`DBUS_SESSION_BUS_ADDRESS`), and, if `tts-command` is set, spoken by that command, spawned
//! with the text as its last argument and on its standard input (never through a shell) and killed after
//! `tts-timeout-secs`. Every text a task or model wrote is escaped and bounded ([`crate::text_shown`]), and in a
//! desktop body whose server reads markup, `&`, `<` and `>` are entities. Nothing here blocks the supervisor: sending runs on
//! its own task, bounded in time, one notification at a time; what arrives meanwhile is coalesced into the next.
//! Muted (`neuraphage notify mute`, [`Mute`], persisted in the home), nothing is sent.
//!
//! ```yaml
//! notifications:
//!   on: [waiting, failed, completed]
//!   desktop: true
//!   tts-command: ["espeak-ng"]
//!   coalesce-ms: 2000
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use neuraphage_ipc::events::StreamItem;
use neuraphage_ipc::{EventKind, TaskId, TaskStatus};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::requests::Daemon;
use crate::text_shown::one_line;

/// The file whose presence in the home means muted.
pub const MUTED_FILE: &str = "notifications-muted";
/// Longest coalescing window.
pub const MAX_COALESCE_MS: u64 = 60_000;
/// Events listed in one notification's body (the summary counts them all).
pub const MAX_LISTED: usize = 5;
/// Characters of a task's description in a notification.
const DESCRIPTION_CHARS: usize = 80;
/// Characters of a reason, question or command in a notification.
const DETAIL_CHARS: usize = 300;
/// Characters given to the speech command.
const SPOKEN_CHARS: usize = 500;
/// Time allowed for the desktop notification (connecting to the bus and the call).
const DESKTOP_DEADLINE: Duration = Duration::from_secs(5);
/// Events held while one notification is being sent (more are counted, not kept).
const MAX_PENDING: usize = 256;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A task started waiting on the user (a question, a permission, a limit).
    Waiting,
    /// A task failed.
    Failed,
    /// A task completed.
    Completed,
}

/// `notifications:` in `neuraphage.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Which changes notify (default: all three).
    pub on: Vec<Trigger>,
    /// Desktop notifications over the session bus, when there is one (default true).
    pub desktop: bool,
    /// A speech command and its arguments (`["espeak-ng"]`, `["say"]`, `["piper", …]`); the text is added as its
    /// last argument. Empty: no speech.
    pub tts_command: Vec<String>,
    /// Events within this many milliseconds of the first make one notification (default 2000; at most 60000).
    pub coalesce_ms: u64,
    /// Seconds the speech command may run before it is killed (default 30; 1 to 300).
    pub tts_timeout_secs: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            on: vec![Trigger::Waiting, Trigger::Failed, Trigger::Completed],
            desktop: true,
            tts_command: Vec::new(),
            coalesce_ms: 2000,
            tts_timeout_secs: 30,
        }
    }
}

impl Settings {
    /// Check the values serde cannot; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.coalesce_ms > MAX_COALESCE_MS {
            return Err(format!("notifications.coalesce-ms: at most {MAX_COALESCE_MS} (got {})", self.coalesce_ms));
        }
        if !(1..=300).contains(&self.tts_timeout_secs) {
            return Err(format!("notifications.tts-timeout-secs: 1 to 300 (got {})", self.tts_timeout_secs));
        }
        if let Some(program) = self.tts_command.first()
            && program.trim().is_empty()
        {
            return Err("notifications.tts-command: the first item is the program and must not be empty".into());
        }
        if self.tts_command.len() > 32 {
            return Err("notifications.tts-command: at most 32 items".into());
        }
        if let Some(bad) = self.tts_command.iter().find(|a| a.len() > 4096 || a.contains('\0')) {
            return Err(format!(
                "notifications.tts-command: an item is over 4096 bytes or holds a NUL byte: {:?}",
                one_line(bad, 40)
            ));
        }
        Ok(())
    }

    /// Whether anything would ever be sent.
    pub fn enabled(&self) -> bool {
        !self.on.is_empty() && (self.desktop || !self.tts_command.is_empty())
    }
}

/// Whether notifications are muted, kept in the home ([`MUTED_FILE`]) so it survives a restart.
#[derive(Debug)]
pub struct Mute {
    path: PathBuf,
    muted: AtomicBool,
    writing: Mutex<()>,
}

impl Mute {
    /// The state stored in `home`.
    pub fn load(home: &Path) -> Mute {
        let path = home.join(MUTED_FILE);
        let muted = path.exists();
        Mute { path, muted: AtomicBool::new(muted), writing: Mutex::new(()) }
    }

    /// Muted now.
    pub fn muted(&self) -> bool {
        self.muted.load(Ordering::SeqCst)
    }

    /// Mute or unmute: stored (and synced) first, then in force.
    pub fn set(&self, muted: bool) -> std::io::Result<()> {
        let _one = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        if muted {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&self.path)?;
            file.write_all(b"notifications are muted while this file exists (neuraphage notify unmute)\n")?;
            file.sync_all()?;
        } else {
            match std::fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        self.muted.store(muted, Ordering::SeqCst);
        Ok(())
    }
}

/// One thing to tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The task.
    pub task: TaskId,
    /// What happened.
    pub trigger: Trigger,
    /// The question, pending command, reason, error or summary (already escaped and cut).
    pub detail: String,
    /// What the task was asked to do (escaped and cut; empty if unknown).
    pub description: String,
}

/// The event a status change makes, if `on` names it.
pub fn event_of(task: &TaskId, to: &TaskStatus, on: &[Trigger]) -> Option<Event> {
    let (trigger, detail) = match to {
        TaskStatus::WaitingForUser { prompt } => (Trigger::Waiting, prompt.clone()),
        TaskStatus::Failed { error, .. } => (Trigger::Failed, error.clone()),
        TaskStatus::Completed { summary } => (Trigger::Completed, summary.clone().unwrap_or_default()),
        _ => return None,
    };
    on.contains(&trigger).then(|| Event {
        task: task.clone(),
        trigger,
        detail: one_line(&detail, DETAIL_CHARS),
        description: String::new(),
    })
}

/// A notification: its summary (title) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// One line: "task 01J… needs you" or "3 tasks need you".
    pub summary: String,
    /// One line per event (at most [`MAX_LISTED`], then how many more).
    pub body: String,
}

fn what(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Waiting => "needs you",
        Trigger::Failed => "failed",
        Trigger::Completed => "completed",
    }
}

fn line_of(e: &Event) -> String {
    let mut line = format!("{} {}", e.task, what(e.trigger));
    if !e.description.is_empty() {
        line.push_str(&format!(" ({})", e.description));
    }
    if !e.detail.is_empty() {
        let label = match e.trigger {
            Trigger::Waiting => "asks",
            Trigger::Failed => "error",
            Trigger::Completed => "summary",
        };
        line.push_str(&format!(": {label}: {}", e.detail));
    }
    line
}

/// The notification for a batch (never empty), and `extra` events counted but not kept.
pub fn compose(events: &[Event], extra: usize) -> Message {
    let total = events.len() + extra;
    let summary = match events {
        [one] if extra == 0 => format!("neuraphage: task {} {}", one.task, what(one.trigger)),
        _ => {
            let count = |t: Trigger| events.iter().filter(|e| e.trigger == t).count();
            let waiting = count(Trigger::Waiting);
            let mut parts = Vec::new();
            if waiting > 0 {
                parts.push(format!("{waiting} {} you", if waiting == 1 { "task needs" } else { "tasks need" }));
            }
            for t in [Trigger::Failed, Trigger::Completed] {
                let n = count(t);
                if n > 0 {
                    parts.push(format!("{n} {}", what(t)));
                }
            }
            if extra > 0 {
                parts.push(format!("{extra} more"));
            }
            format!("neuraphage: {} ({total} events)", parts.join(", "))
        }
    };
    let mut lines: Vec<String> = events.iter().take(MAX_LISTED).map(line_of).collect();
    let more = total.saturating_sub(lines.len());
    if more > 0 {
        lines.push(format!("… and {more} more: neuraphage waiting"));
    }
    Message { summary, body: lines.join("\n") }
}

/// What the speech command is given: the summary, then the first event's line (bounded).
pub fn spoken(message: &Message) -> String {
    let first = message.body.lines().next().unwrap_or_default();
    one_line(&format!("{}. {first}", message.summary), SPOKEN_CHARS)
}

/// Follow the bus and notify until `shutdown`. Does nothing when the settings send nothing.
pub async fn run(daemon: Arc<Daemon>, shutdown: CancellationToken) {
    let settings = daemon.config().notifications.clone();
    if !settings.enabled() {
        return;
    }
    let desktop = settings.desktop && std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|a| !a.is_empty());
    if settings.desktop && !desktop {
        tracing::info!("no session bus (DBUS_SESSION_BUS_ADDRESS unset): desktop notifications off");
    }
    if !desktop && settings.tts_command.is_empty() {
        return;
    }
    let bus = daemon.events().clone();
    let subscription = match daemon.with_store(|s| bus.subscribe(None, false, || s.last_event_seq())) {
        Ok((subscription, _)) => subscription,
        Err(e) => return tracing::error!(error = %e, "notifications cannot follow the event bus"),
    };
    let window = Duration::from_millis(settings.coalesce_ms);
    let mut pending: Vec<Event> = Vec::new();
    let mut extra = 0usize;
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut sending: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let flush_at = deadline;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            item = subscription.next() => {
                let StreamItem::Event(event) = item else {
                    if let StreamItem::Missed { count, .. } = item {
                        tracing::warn!(count, "notifications fell behind the event bus; some events were not seen");
                    }
                    continue;
                };
                let EventKind::StatusChanged { to, .. } = &event.kind else { continue };
                let Some(mut e) = event_of(&event.task, to, &settings.on) else { continue };
                if pending.len() >= MAX_PENDING {
                    extra += 1;
                } else {
                    let d = daemon.clone();
                    let id = e.task.clone();
                    let described = tokio::task::spawn_blocking(move || {
                        d.with_store(|s| s.task(&id)).map(|t| t.description).unwrap_or_default()
                    });
                    e.description = one_line(&described.await.unwrap_or_default(), DESCRIPTION_CHARS);
                    pending.push(e);
                }
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + window);
            }
            _ = async { match flush_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                // One notification at a time: while the last is still going out, keep gathering.
                if sending.as_ref().is_some_and(|h| !h.is_finished()) {
                    deadline = Some(tokio::time::Instant::now() + Duration::from_millis(200));
                    continue;
                }
                deadline = None;
                let (events, more) = (std::mem::take(&mut pending), std::mem::take(&mut extra));
                if events.is_empty() && more == 0 {
                    continue;
                }
                if daemon.mute.muted() {
                    tracing::info!(events = events.len() + more, "notifications muted: not sent");
                    continue;
                }
                let message = compose(&events, more);
                sending = Some(tokio::spawn(send(message, desktop, settings.clone())));
            }
        }
    }
    if let Some(h) = sending {
        h.abort();
    }
}

/// Send one notification each configured way, bounded in time.
async fn send(message: Message, desktop: bool, settings: Settings) {
    tracing::info!(summary = %message.summary, "notifying");
    let speech = async {
        if let Some((program, args)) = settings.tts_command.split_first() {
            speak(program, args, &spoken(&message), Duration::from_secs(settings.tts_timeout_secs)).await;
        }
    };
    let show = async {
        if desktop {
            // A body may be read as markup (`<a href>`, `<img src>`): what a task wrote is shown as text.
            let body = if body_markup().await { escape_markup(&message.body) } else { message.body.clone() };
            let mut n = notify_rust::Notification::new();
            n.appname("neuraphage").summary(&message.summary).body(&body);
            match tokio::time::timeout(DESKTOP_DEADLINE, n.show_async()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "desktop notification failed"),
                Err(_) => tracing::warn!("desktop notification timed out"),
            }
        }
    };
    tokio::join!(speech, show);
}

/// Whether the notification server reads bodies as markup (its `body-markup` capability); when it cannot be asked,
/// yes (escaping is then the safe side).
async fn body_markup() -> bool {
    match tokio::time::timeout(DESKTOP_DEADLINE, tokio::task::spawn_blocking(notify_rust::get_capabilities)).await {
        Ok(Ok(Ok(capabilities))) => capabilities.iter().any(|c| c == "body-markup"),
        _ => true,
    }
}

/// `text` with the characters the freedesktop body markup gives meaning to (`&`, `<`, `>`) as entities.
pub fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Run the speech command with `text` as its last argument and as its standard input (for a command that reads it,
/// e.g. piper behind `sh -c`); killed after `limit`.
async fn speak(program: &str, args: &[String], text: &str, limit: Duration) {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .arg(text)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return tracing::warn!(%program, error = %e, "cannot start the speech command"),
    };
    // The text is at most a few KiB, within a pipe's buffer: the write does not wait on the reader.
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(limit, stdin.write_all(format!("{text}\n").as_bytes())).await;
    }
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => tracing::warn!(%program, %status, "the speech command failed"),
        Ok(Err(e)) => tracing::warn!(%program, error = %e, "cannot wait for the speech command"),
        Err(_) => {
            tracing::warn!(%program, secs = limit.as_secs(), "the speech command took too long; killed");
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> TaskId {
        format!("np-{n:010}").parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn settings_are_checked_with_the_key_named() {
        let ok = Settings::default();
        assert!(ok.validate().is_ok() && ok.enabled());
        let bad = Settings { coalesce_ms: 70_000, ..Settings::default() };
        assert!(bad.validate().unwrap_err().contains("coalesce-ms"));
        let bad = Settings { tts_command: vec![" ".into()], ..Settings::default() };
        assert!(bad.validate().unwrap_err().contains("tts-command"));
        let none = Settings { on: Vec::new(), ..Settings::default() };
        assert!(!none.enabled());
    }

    #[test]
    fn one_event_names_task_reason_and_question_and_a_burst_is_one_message() {
        let on = Settings::default().on;
        let ask = TaskStatus::WaitingForUser { prompt: "Which\u{1b}[31m branch?".into() };
        let mut e = event_of(&id(1), &ask, &on).unwrap_or_else(|| panic!("no event"));
        e.description = "fix the build".into();
        let m = compose(std::slice::from_ref(&e), 0);
        assert!(m.summary.contains(&id(1).to_string()) && m.summary.contains("needs you"), "{m:?}");
        assert!(m.body.contains("fix the build") && m.body.contains("Which\\u{1b}[31m branch?"), "{m:?}");
        assert!(event_of(&id(1), &TaskStatus::Paused, &on).is_none());
        assert!(event_of(&id(1), &ask, &[Trigger::Failed]).is_none());
        let fail = TaskStatus::Failed { error: "boom".into(), recoverable: true };
        let events = vec![e.clone(), e.clone(), event_of(&id(2), &fail, &on).unwrap_or_else(|| panic!("no event"))];
        let m = compose(&events, 4);
        assert!(m.summary.contains("2 tasks need you") && m.summary.contains("1 failed"), "{m:?}");
        assert!(m.summary.contains("7 events"), "{m:?}");
        assert!(m.body.ends_with("… and 4 more: neuraphage waiting"), "{m:?}");
        assert!(spoken(&m).chars().count() <= SPOKEN_CHARS + 1);
    }

    /// Red team: a question starting with `-` (an option to the speech command) never starts its argument, which
    /// always begins with the fixed summary.
    #[test]
    fn a_question_like_an_option_is_never_the_speech_arguments_start() {
        let ask = TaskStatus::WaitingForUser { prompt: "--output=/tmp/x -w /etc/passwd".into() };
        let e = event_of(&id(1), &ask, &Settings::default().on).unwrap_or_else(|| panic!("no event"));
        let said = spoken(&compose(std::slice::from_ref(&e), 0));
        assert!(said.starts_with("neuraphage: task "), "{said}");
        assert!(said.contains("--output=/tmp/x"), "{said}");
    }

    #[test]
    fn markup_is_shown_as_text() {
        assert_eq!(escape_markup("<a href=\"x\">&</a>"), "&lt;a href=\"x\"&gt;&amp;&lt;/a&gt;");
    }

    #[test]
    fn mute_is_stored() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mute = Mute::load(dir.path());
        assert!(!mute.muted());
        mute.set(true).unwrap_or_else(|e| panic!("{e}"));
        assert!(Mute::load(dir.path()).muted());
        mute.set(false).unwrap_or_else(|e| panic!("{e}"));
        assert!(!Mute::load(dir.path()).muted() && !mute.muted());
    }
}
