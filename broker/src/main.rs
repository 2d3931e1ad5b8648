//! `neuraphage-broker`: the only process that sees API keys. Started by the supervisor with two inherited sockets:
//! its framed link, and the socket on which the supervisor hands it each worker's link.

mod handoff;
mod lock_serve;
mod serve;

use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use clap::Parser;
use neuraphage_broker::keys;
use neuraphage_broker::learnt::LearntStore;
use neuraphage_broker::locks::LockTable;
use neuraphage_broker::provider;
use neuraphage_broker::router::Routes;
use neuraphage_ipc::broker::{BrokerSettings, BrokerToSupervisor, MAX_BROKER_FRAME, SupervisorToBroker};
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

/// Read `api-keys.yaml` and the environment, and build the routes for `settings`.
fn configure(
    home: &std::path::Path,
    settings: &BrokerSettings,
    previous: Option<&Routes>,
    store: &Arc<LearntStore>,
) -> Result<(Routes, Vec<String>), String> {
    let env = |key: &str| std::env::var(key).ok();
    let mut pools = keys::load(home, env).map_err(|e| e.to_string())?;
    keys::env_pools(&mut pools, provider::from_env(env));
    Routes::build_with(&pools, settings, previous, Some(store.clone()))
}

/// How often the pools' headroom is looked at; it is sent to the supervisor only when it changed.
const HEADROOM_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Each pool's headroom, by name, rounded to hundredths (so a bucket refilling by a hair is no change).
fn headroom(routes: &Routes) -> Vec<neuraphage_ipc::status::PoolHeadroom> {
    use neuraphage_broker::limiter::DIMENSIONS;
    let round = |f: Option<f64>| f.map(|f| (f * 100.0).round() / 100.0);
    let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut pools: Vec<_> = routes
        .pools
        .iter()
        .map(|(name, pool)| {
            let h: [Option<f64>; DIMENSIONS] = pool.headroom();
            // The fourth dimension is input and output together (OpenAI's tokens per minute): it binds both.
            neuraphage_ipc::status::PoolHeadroom {
                pool: name.clone(),
                requests: round(h[0]),
                input_tokens: round(min(h[1], h[3])),
                output_tokens: round(min(h[2], h[3])),
            }
        })
        .collect();
    pools.sort_by(|a, b| a.pool.cmp(&b.pool));
    pools.truncate(neuraphage_ipc::broker::MAX_HEADROOM_POOLS);
    pools
}

fn run(args: Args) -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).context("PR_SET_PDEATHSIG")?;
    // Holds the keys: no other process of this user may read its memory or environment.
    nix::sys::prctl::set_dumpable(false).context("PR_SET_DUMPABLE")?;
    let (control, handoff) = handoff::adopt(args.control_fd, args.handoff_fd)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let mut link: Link<UnixStream, SupervisorToBroker, BrokerToSupervisor> =
            Link::new(UnixStream::from_std(control)?, MAX_BROKER_FRAME);
        link.connect_handshake(Role::Broker).await.context("broker link")?;
        // What the keys' limits were learnt to be, by an earlier broker.
        let store = Arc::new(LearntStore::open(&args.home));
        // Until the supervisor sends the tiers: every task on the first pool's default model.
        let mut warnings = Vec::new();
        let (routes, providers) = configure(&args.home, &BrokerSettings::default(), None, &store).unwrap_or_else(|e| {
            warnings.push(e);
            // The environment's keys still serve while api-keys.yaml is fixed.
            let mut pools = Vec::new();
            keys::env_pools(&mut pools, provider::from_env(|key: &str| std::env::var(key).ok()));
            Routes::build_with(&pools, &BrokerSettings::default(), None, Some(store.clone())).unwrap_or_else(|e| {
                warnings.push(e);
                (Routes::default(), Vec::new())
            })
        });
        for w in &warnings {
            tracing::warn!("{w}");
        }
        link.send(&BrokerToSupervisor::Ready { providers, warnings }).await?;
        let current: serve::Current = Arc::new(RwLock::new(Arc::new(routes)));
        let locks = LockTable::new(std::time::Duration::from_millis(args.lock_grace_ms));
        let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut workers = handoff::receive(handoff);
        let mut headroom_tick = tokio::time::interval(HEADROOM_EVERY);
        headroom_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut headroom_sent = None;
        loop {
            tokio::select! {
                _ = headroom_tick.tick() => {
                    let routes = current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                    let pools = headroom(&routes);
                    if headroom_sent.as_ref() != Some(&pools) {
                        link.send(&BrokerToSupervisor::Headroom { pools: pools.clone() }).await?;
                        headroom_sent = Some(pools);
                    }
                }
                msg = link.recv() => match msg {
                    Ok(Some(SupervisorToBroker::Shutdown)) | Ok(None) => break,
                    Ok(Some(SupervisorToBroker::ListLocks { id })) => {
                        link.send(&BrokerToSupervisor::Locks { id, table: locks.view() }).await?;
                    }
                    Ok(Some(SupervisorToBroker::Configure(settings))) => {
                        let previous = current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                        let answer = match configure(&args.home, &settings, Some(&previous), &store) {
                            Ok((routes, providers)) => {
                                *current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(routes);
                                tracing::info!(?providers, tiers = settings.tiers.len(), "configured");
                                BrokerToSupervisor::Configured { providers, error: None }
                            }
                            Err(error) => {
                                tracing::error!(%error, "configuration refused; keeping the last good one");
                                BrokerToSupervisor::Configured { providers: Vec::new(), error: Some(error) }
                            }
                        };
                        link.send(&answer).await?;
                    }
                    Ok(Some(SupervisorToBroker::Complete { id, grant, request })) => {
                        tokio::spawn(serve::supervisor_call(id, grant, *request, current.clone(), events_tx.clone()));
                    }
                    Err(e) => { tracing::error!(error = %e, "broker link"); break; }
                },
                Some(event) = events_rx.recv() => link.send(&event).await?,
                Some((grant, stream)) = workers.recv() => match UnixStream::from_std(stream) {
                    Ok(stream) => {
                        tokio::spawn(serve::worker(grant, stream, current.clone(), events_tx.clone(), locks.clone()));
                    }
                    Err(e) => tracing::error!(task = %grant.task, error = %e, "cannot use a worker link"),
                },
            }
        }
        anyhow::Ok(())
    })
}
