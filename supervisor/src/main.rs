//! `neuraphage-supervisor`: the daemon, in the foreground. `neuraphage daemon start` runs it detached.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use neuraphage_ipc::paths::{ENV_LOG, Paths};
use neuraphage_supervisor::broker_link::{Broker, keep_alive};
use neuraphage_supervisor::config::{CONFIG_FILE, Config};
use neuraphage_supervisor::home::Home;
use neuraphage_supervisor::requests::Daemon;
use neuraphage_supervisor::server::{self, Limits};
use neuraphage_supervisor::store::{DB_FILE, Store};
use neuraphage_supervisor::workers;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::prelude::*;

/// Runs the Neuraphage supervisor in the foreground: the task store and the control socket.
///
/// Folders come from NEURAPHAGE_HOME (default ~/.config/neuraphage) and NEURAPHAGE_RUNTIME_DIR (default
/// $XDG_RUNTIME_DIR/neuraphage, else $NEURAPHAGE_HOME/run). Logs go to stderr and $NEURAPHAGE_HOME/logs/; RUST_LOG
/// sets the filter. SIGTERM or SIGINT stops it gracefully.
#[derive(Debug, Parser)]
#[command(name = "neuraphage-supervisor", version)]
struct Args {
    /// Write only warnings and errors to stderr (the log files still get everything); `neuraphage daemon start` uses
    /// this because it sends stderr to a file.
    #[arg(long)]
    quiet_stderr: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let paths = match Paths::from_env() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("neuraphage-supervisor: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _log_guard = init_tracing(&paths, args.quiet_stderr);
    match run(paths) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(paths: Paths) -> anyhow::Result<()> {
    // Tasks run as this user: they must not read this process's environment (which may hold API keys on their way
    // to the broker) or memory through /proc.
    nix::sys::prctl::set_dumpable(false).map_err(|e| anyhow::anyhow!("PR_SET_DUMPABLE: {e}"))?;
    let home = Home::claim(paths)?;
    neuraphage_supervisor::conversation::enable_fsync();
    let config = Config::load(&home.paths.home.join(CONFIG_FILE)).map_err(anyhow::Error::msg)?;
    let db = home.paths.home.join(DB_FILE);
    let store = Store::open(&db).with_context(|| format!("cannot open the task store {}", db.display()))?;
    let socket = home.paths.control_socket();
    // Processes of tasks a killed supervisor of this home left running die before any task starts again.
    let stale = neuraphage_supervisor::cgroup::clear_stale(&home.paths.home);
    if stale > 0 {
        tracing::warn!(stale, "killed the tasks of a previous supervisor and removed their cgroups");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let listener = server::bind(&socket)?;
        let status_socket = home.paths.status_socket();
        let status_listener = neuraphage_supervisor::status_socket::bind(&status_socket)?;
        let shutdown = CancellationToken::new();
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let on_signal = shutdown.clone();
        let settings = config.broker();
        let daemon = Arc::new(Daemon::new(store, home.paths.clone(), config));
        // Issue 17: the knowledge index is rebuilt from its files (the truth) before any task starts.
        match neuraphage_supervisor::knowledge::index::rebuild(&daemon.knowledge, &*daemon) {
            Ok((indexed, skipped)) => tracing::info!(indexed, skipped = skipped.len(), "knowledge index rebuilt"),
            Err(e) => tracing::error!(error = %e, "cannot rebuild the knowledge index (knowledge is unavailable)"),
        }
        let on_hup = daemon.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                _ = int.recv() => tracing::info!("SIGINT: stopping"),
                never = hangup(&mut hup, &on_hup) => match never {},
                _ = on_signal.cancelled() => return,
            }
            on_signal.cancel();
        });
        let broker_log = home.paths.logs().join("broker.log");
        let (broker, broker_link, broker_child) =
            Broker::spawn(&home.paths.home, &broker_log, settings).await.map_err(anyhow::Error::msg)?;
        let broker = Arc::new(broker);
        daemon.set_broker(broker.clone());
        let broker_watch =
            tokio::spawn(keep_alive(broker.clone(), daemon.clone(), broker_link, broker_child, shutdown.clone()));
        let scheduler = tokio::spawn(workers::schedule(daemon.clone(), broker.clone(), shutdown.clone()));
        tokio::spawn(neuraphage_supervisor::permissions::timeout::run(daemon.clone(), shutdown.clone()));
        tokio::spawn(neuraphage_supervisor::watcher::run(daemon.clone(), shutdown.clone()));
        let stream_write = std::time::Duration::from_secs(daemon.config().event_stream_write_secs.clamp(1, 3600));
        let limits = Limits { stream_write, ..Limits::default() };
        let status = tokio::spawn({
            let (daemon, shutdown) = (daemon.clone(), shutdown.clone());
            async move {
                neuraphage_supervisor::status_socket::serve(status_listener, &status_socket, daemon, shutdown).await
            }
        });
        tokio::spawn(neuraphage_supervisor::notifications::run(daemon.clone(), shutdown.clone()));
        server::serve(listener, &socket, daemon, limits, shutdown).await;
        // Running tasks are stopped and re-queued; they resume at the next start.
        if let Err(e) = scheduler.await {
            tracing::error!(error = %e, "the scheduler failed");
        }
        let _ = broker_watch.await;
        let _ = status.await;
        anyhow::Ok(())
    })?;
    // Every request still running finishes here, before the home's lock is released: no other supervisor may
    // start on this home while this one can still write.
    drop(runtime);
    neuraphage_supervisor::cgroup::remove_home(&home.paths.home);
    tracing::info!("stopped");
    drop(home);
    Ok(())
}

/// SIGHUP reloads the configuration, as `neuraphage config reload` does (a daemon does not stop with the terminal
/// that started it).
async fn hangup(hup: &mut tokio::signal::unix::Signal, daemon: &Daemon) -> std::convert::Infallible {
    loop {
        hup.recv().await;
        match daemon.reload_async().await {
            Ok(providers) => tracing::info!(?providers, "SIGHUP: configuration reloaded"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: configuration not reloaded; the last good one stays"),
        }
    }
}

/// Log to stderr and to daily files in the home's `logs/` (kept 14 days); `RUST_LOG` filters, default `info`.
fn init_tracing(paths: &Paths, quiet_stderr: bool) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing::level_filters::LevelFilter;
    let filter = || {
        tracing_subscriber::EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .with_env_var(ENV_LOG)
            .from_env_lossy()
    };
    let stderr_max = if quiet_stderr { LevelFilter::WARN } else { LevelFilter::TRACE };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter())
        .with_filter(stderr_max);
    let logs = paths.logs();
    let file = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&logs)
        .ok()
        .and_then(|()| {
            tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix("supervisor")
                .filename_suffix("log")
                .max_log_files(14)
                .build(&logs)
                .ok()
        })
        .map(tracing_appender::non_blocking);
    match file {
        Some((writer, guard)) => {
            let file = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(writer).with_filter(filter());
            tracing_subscriber::registry().with(stderr).with(file).init();
            Some(guard)
        }
        None => {
            tracing_subscriber::registry().with(stderr).init();
            tracing::warn!(logs = %logs.display(), "cannot write log files; logging to stderr only");
            None
        }
    }
}

use std::os::unix::fs::DirBuilderExt;
