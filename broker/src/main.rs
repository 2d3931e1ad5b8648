//! `neuraphage-broker`: the only process that sees API keys. Started by the supervisor with two inherited sockets:
//! its framed link, and the socket on which the supervisor hands it each worker's link.

mod handoff;
mod lock_serve;
mod serve;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use neuraphage_broker::keys;
use neuraphage_broker::locks::LockTable;
use neuraphage_broker::provider::{self, Provider};
use neuraphage_ipc::broker::{BrokerToSupervisor, MAX_BROKER_FRAME, SupervisorToBroker};
use neuraphage_ipc::{Link, Role};
use tokio::net::UnixStream;

/// The broker process. Not for running by hand: the supervisor starts it with its links.
#[derive(Debug, Parser)]
#[command(name = "neuraphage-broker", version)]
struct Args {
    /// The inherited fd of the broker link.
    #[arg(long)]
    control_fd: i32,
    /// The inherited fd of the worker-link handoff socket.
    #[arg(long)]
    handoff_fd: i32,
    /// The Neuraphage home, where `api-keys.yaml` may be.
    #[arg(long)]
    home: std::path::PathBuf,
    /// Set on a restart: milliseconds in which holders re-claim their locks before others may take them.
    #[arg(long, default_value_t = 0)]
    lock_grace_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_ansi(false).init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).context("PR_SET_PDEATHSIG")?;
    // Holds the keys: no other process of this user may read its memory or environment.
    nix::sys::prctl::set_dumpable(false).context("PR_SET_DUMPABLE")?;
    let (control, handoff) = handoff::adopt(args.control_fd, args.handoff_fd)?;
    let env = |key: &str| std::env::var(key).ok();
    let mut warnings = Vec::new();
    let mut configs = keys::load(&args.home, env).unwrap_or_else(|e| {
        warnings.push(e.to_string());
        Vec::new()
    });
    configs.extend(provider::from_env(env));
    let providers: Vec<Provider> = configs
        .into_iter()
        .filter_map(|config| match Provider::new(config) {
            Ok(p) => Some(p),
            Err(e) => {
                warnings.push(format!("provider not usable: {e}"));
                None
            }
        })
        .collect();
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let mut link: Link<UnixStream, SupervisorToBroker, BrokerToSupervisor> =
            Link::new(UnixStream::from_std(control)?, MAX_BROKER_FRAME);
        link.connect_handshake(Role::Broker).await.context("broker link")?;
        let descriptions = providers.iter().map(Provider::describe).collect();
        link.send(&BrokerToSupervisor::Ready { providers: descriptions, warnings }).await?;
        let providers = Arc::new(providers);
        let locks = LockTable::new(std::time::Duration::from_millis(args.lock_grace_ms));
        let (usage_tx, mut usage_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut workers = handoff::receive(handoff);
        loop {
            tokio::select! {
                msg = link.recv() => match msg {
                    Ok(Some(SupervisorToBroker::Shutdown)) | Ok(None) => break,
                    Ok(Some(SupervisorToBroker::ListLocks { id })) => {
                        link.send(&BrokerToSupervisor::Locks { id, table: locks.view() }).await?;
                    }
                    Err(e) => { tracing::error!(error = %e, "broker link"); break; }
                },
                Some(usage) = usage_rx.recv() => link.send(&usage).await?,
                Some((task, stream)) = workers.recv() => match UnixStream::from_std(stream) {
                    Ok(stream) => {
                        tokio::spawn(serve::worker(task, stream, providers.clone(), usage_tx.clone(), locks.clone()));
                    }
                    Err(e) => tracing::error!(%task, error = %e, "cannot use a worker link"),
                },
            }
        }
        anyhow::Ok(())
    })
}
