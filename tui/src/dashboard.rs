//! The event loop of `neuraphage tui`: the sources — keys and mouse (crossterm's event stream), the control
//! socket's event stream, the status socket, replies to requests, a one-second tick for the ages shown — feed the
//! [`App`]; its effects become requests on their own connections; then the screen is drawn (at most every
//! [`FRAME`], so a burst of streamed text costs one frame), the title set when it changed and alerts written.
//! Nothing is polled: without input or events the loop sleeps between ticks. A lost stream is re-subscribed every
//! [`RECONNECT`] until the supervisor answers again.

use std::io::IsTerminal;
use std::time::Duration;

use chrono::{Offset, Utc};
use crossterm::event::{Event, EventStream as KeyStream};
use futures::StreamExt;
use neuraphage_ipc::events::{StreamItem, Subscribe};
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::status::StatusLine;
use neuraphage_ipc::{ControlReply, Task, TaskEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::app::{App, Effect, ReplyTo};
use crate::client;
use crate::error::TuiError;
use crate::terminal::{AlertEscape, Term};
use crate::theme::Theme;

/// Shortest time between two frames.
pub const FRAME: Duration = Duration::from_millis(33);

/// Time between attempts to subscribe again after the stream was lost.
pub const RECONNECT: Duration = Duration::from_secs(2);

/// Stream items held between the reader and the loop (beyond it the reader waits, and the supervisor's bounded
/// queue tells us what was missed).
const STREAM_QUEUE: usize = 4096;

/// Items handled before a frame is drawn (a burst of deltas).
const BATCH: usize = 512;

/// What the background tasks report.
enum Report {
    Item(StreamItem),
    StreamEnded(String),
    Reply(ReplyTo, Result<ControlReply, String>),
    Listed(Result<Vec<Task>, String>),
    History(Result<Vec<TaskEvent>, String>),
    Status(StatusLine),
}

fn live_subscription() -> Subscribe {
    Subscribe { task: None, since: None, follow: true, deltas: true, until_end: false }
}

/// Run the dashboard until the user quits.
pub async fn run(paths: &Paths) -> Result<(), TuiError> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(TuiError::NotATerminal);
    }
    // Subscribe before the screen is taken, so "not running" is said in plain text.
    let stream = client::subscribe(paths, live_subscription()).await?;
    let theme = Theme::from_env();
    let alerts = AlertEscape::detect(|k| std::env::var(k).ok());
    let mut term = Term::enter()?;
    let result = event_loop(paths, stream, &mut term, theme, alerts).await;
    drop(term);
    result
}

fn spawn_reader(mut stream: client::EventStream, tx: mpsc::Sender<Report>) {
    tokio::spawn(async move {
        loop {
            let report = match stream.next().await {
                Ok(Some(item)) => Report::Item(item),
                Ok(None) => Report::StreamEnded("the supervisor ended the stream".into()),
                Err(e) => Report::StreamEnded(e),
            };
            let ended = matches!(report, Report::StreamEnded(_));
            if tx.send(report).await.is_err() || ended {
                return;
            }
        }
    });
}

fn spawn_status(paths: &Paths, tx: mpsc::Sender<Report>) {
    let (status_tx, mut status_rx) = mpsc::channel::<StatusLine>(4);
    tokio::spawn(client::status_lines(paths.clone(), status_tx));
    tokio::spawn(async move {
        while let Some(line) = status_rx.recv().await {
            if tx.send(Report::Status(line)).await.is_err() {
                return;
            }
        }
    });
}

fn spawn_effect(paths: &Paths, effect: Effect, tx: &mpsc::Sender<Report>) {
    let (paths, tx) = (paths.clone(), tx.clone());
    tokio::spawn(async move {
        let report = match effect {
            Effect::Call(request, why) => Report::Reply(why, client::call(&paths, request).await),
            Effect::ListTasks => Report::Listed(client::list(&paths).await),
            Effect::History { since } => Report::History(client::history(&paths, since).await),
            Effect::Quit => return,
        };
        let _ = tx.send(report).await;
    });
}

async fn event_loop(
    paths: &Paths,
    stream: client::EventStream,
    term: &mut Term,
    theme: Theme,
    alerts: AlertEscape,
) -> Result<(), TuiError> {
    let mut app = App::new(Utc::now());
    app.utc_offset = chrono::Local::now().offset().fix();
    let (tx, mut rx) = mpsc::channel::<Report>(STREAM_QUEUE);
    spawn_reader(stream, tx.clone());
    spawn_status(paths, tx.clone());
    let mut keys = KeyStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut reconnect_at: Option<Instant> = None;
    let mut last_draw = Instant::now() - FRAME;
    let mut draw_due: Option<Instant> = Some(Instant::now());
    let mut title = String::new();
    let far = Duration::from_secs(3600);
    loop {
        tokio::select! {
            event = keys.next() => match event {
                Some(Ok(Event::Key(key))) => {
                    if let Some(command) = crate::keys::command(&app.mode, key) {
                        app.command(command);
                    }
                }
                Some(Ok(Event::Mouse(mouse))) => {
                    if let Some(command) = crate::keys::mouse(mouse) {
                        app.command(command);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(TuiError::Terminal(e)),
                None => return Ok(()),
            },
            report = rx.recv() => {
                let Some(report) = report else { return Ok(()) };
                handle(&mut app, report, &mut reconnect_at);
                // A burst: take what is already there before drawing.
                for _ in 0..BATCH {
                    match rx.try_recv() {
                        Ok(report) => handle(&mut app, report, &mut reconnect_at),
                        Err(_) => break,
                    }
                }
            }
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(reconnect_at.unwrap_or_else(|| Instant::now() + far)), if reconnect_at.is_some() => {
                reconnect_at = None;
                match client::subscribe(paths, live_subscription()).await {
                    Ok(stream) => {
                        app.link = crate::app::Link::Connecting;
                        spawn_reader(stream, tx.clone());
                        spawn_status(paths, tx.clone());
                    }
                    Err(e) => {
                        app.lost(e.to_string());
                        reconnect_at = Some(Instant::now() + RECONNECT);
                    }
                }
            }
            _ = tokio::time::sleep_until(draw_due.unwrap_or_else(|| Instant::now() + far)), if draw_due.is_some() => {}
            _ = terminate.recv() => return Ok(()),
            _ = hangup.recv() => return Ok(()),
        }
        app.now = Utc::now();
        for effect in app.take_effects() {
            if effect == Effect::Quit {
                return Ok(());
            }
            spawn_effect(paths, effect, &tx);
        }
        for notice in app.notices.take_alerts() {
            let desc = app.tasks.get(&notice.task).map(|t| t.description.clone()).unwrap_or_default();
            if let Some(bytes) = alerts.bytes(&notice, &desc) {
                term.write_escape(&bytes)?;
            }
        }
        let now_title = app.title();
        if now_title != title {
            term.set_title(&now_title)?;
            title = now_title;
        }
        // Draw now, or at the next frame's time.
        let now = Instant::now();
        if now >= last_draw + FRAME {
            term.terminal.draw(|frame| crate::ui::draw(frame, &app, &theme))?;
            last_draw = now;
            draw_due = None;
        } else {
            draw_due = Some(last_draw + FRAME);
        }
    }
}

fn handle(app: &mut App, report: Report, reconnect_at: &mut Option<Instant>) {
    match report {
        Report::Item(item) => app.stream(item),
        Report::StreamEnded(why) => {
            app.lost(why);
            *reconnect_at = Some(Instant::now() + RECONNECT);
        }
        Report::Reply(why, reply) => app.reply(why, reply),
        Report::Listed(Ok(tasks)) => app.tasks_listed(tasks),
        Report::Listed(Err(e)) => app.flash = Some((format!("cannot list the tasks: {e}"), true)),
        Report::History(Ok(events)) => {
            for event in &events {
                app.history(event);
            }
        }
        Report::History(Err(_)) => {}
        Report::Status(line) => app.status(line),
    }
}
