//! `neuraphage-worker`: runs one task. Started by the supervisor only, with its two links as inherited fds.
//!
//! Order matters: first tie its life to the supervisor's (PDEATHSIG), join the task's cgroups and enter the
//! namespaces ([`outer`]: stage 1 execs bubblewrap running stage 2), keep only the two link fds, then apply the
//! sandbox while still single-threaded, and only then start the async runtime and the agent loop.

mod agent;
mod bridge;
mod check;
mod links;
mod outer;
mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use neuraphage_ipc::worker::SandboxReport;
use neuraphage_sandbox_profiles::TaskFolders;
use neuraphage_sandbox_profiles::plan::SandboxPlan;

/// One task's worker process. Not for running by hand: the supervisor starts it with its links.
#[derive(Debug, Parser)]
#[command(name = "neuraphage-worker", version)]
struct Args {
    /// The inherited fd of the supervisor link.
    #[arg(long, required_unless_present_any = ["check", "snapshot"])]
    supervisor_fd: Option<i32>,
    /// The inherited fd of the broker link.
    #[arg(long, required_unless_present_any = ["check", "snapshot"])]
    broker_fd: Option<i32>,
    /// The inherited fd on which a new broker link arrives if the broker is restarted.
    #[arg(long, required_unless_present_any = ["check", "snapshot"])]
    handoff_fd: Option<i32>,
    /// The task's worktree (or scratch folder), read-write.
    #[arg(long)]
    workdir: PathBuf,
    /// The task's scratch folder, read-write.
    #[arg(long)]
    tmp: PathBuf,
    /// Where large tool outputs go, read-write.
    #[arg(long)]
    outputs: PathBuf,
    /// The task's private repository (made and written by the supervisor), read-only.
    #[arg(long)]
    git_dir: Option<PathBuf>,
    /// The note the supervisor put at the worktree's `.git` (so git refuses to serve a person there), read-only.
    #[arg(long)]
    worktree_gitfile: Option<PathBuf>,
    /// The sandbox plan (JSON) the supervisor resolved from the task's profile.
    #[arg(long)]
    sandbox: PathBuf,
    /// Apply the sandbox, try what it should stop, print what this machine enforces (JSON) and exit; `--tmp` must
    /// be a folder outside the plan's rules with a file `probe` in it. For `neuraphage sandbox check`.
    #[arg(long)]
    check: bool,
    /// Apply the sandbox, walk `--workdir` and write its files to stdout as snapshot frames, for the supervisor's
    /// commit (see `snapshot.rs`).
    #[arg(long, conflicts_with = "check")]
    snapshot: bool,
    /// Stage 2, inside the namespaces (set by stage 1 with the namespaces it left; see `outer.rs`).
    #[arg(long, hide = true)]
    inside: Option<String>,
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
    // Stage 1 becomes bubblewrap here (and stage 2 comes back with `--inside`), unless the namespaces cannot be made.
    let outer = outer::enter(args.inside.as_deref(), &args.sandbox)?;
    if args.check {
        neuraphage_ipc::inherit::close_others(&[0, 1, 2]).map_err(anyhow::Error::msg)?;
        let mut plan = SandboxPlan::load(&args.sandbox)?;
        outer.adjust(&mut plan);
        let report = check::run(&plan, &args.workdir, &args.tmp, &outer);
        println!("{report}");
        return Ok(());
    }
    if args.snapshot {
        // The task's files are read here, inside its sandbox, never by the supervisor.
        neuraphage_ipc::inherit::close_others(&[0, 1, 2]).map_err(anyhow::Error::msg)?;
        if let Some(why) = &outer.refused {
            anyhow::bail!("the sandbox cannot be enforced: {why}");
        }
        let mut plan = SandboxPlan::load(&args.sandbox)?;
        outer.adjust(&mut plan);
        plan.apply()?;
        return snapshot::run(&args.workdir, std::io::stdout().lock());
    }
    let fd = |f: Option<i32>| f.ok_or_else(|| anyhow::anyhow!("missing link fd"));
    let (supervisor, broker, handoff) =
        links::take(fd(args.supervisor_fd)?, fd(args.broker_fd)?, fd(args.handoff_fd)?)?;
    let folders = TaskFolders {
        workdir: args.workdir,
        tmp: args.tmp,
        outputs: args.outputs,
        git_dir: args.git_dir,
        worktree_gitfile: args.worktree_gitfile,
    };
    // The whole sandbox, before any thread or task code. If any layer fails, the worker still reports why (over
    // its link, from this point on nothing of the task runs) and stops.
    let mut plan = SandboxPlan::load(&args.sandbox);
    if let Ok(p) = &mut plan {
        outer.adjust(p);
    }
    let bridges = plan.as_ref().map_err(|e| e.to_string()).and_then(bridge::listen);
    let applied = match (&outer.refused, &bridges) {
        (Some(why), _) | (None, Err(why)) => Err(why.clone()),
        (None, Ok(_)) => plan.as_ref().map_err(|e| e.to_string()).and_then(|p| p.apply().map_err(|e| e.to_string())),
    };
    let layers = |r: &neuraphage_sandbox_profiles::plan::Enforcement| {
        let enforced = outer.enforced.iter().chain(&r.enforced).cloned().collect::<Vec<_>>();
        (enforced, outer.missing.iter().chain(&r.missing).cloned().collect::<Vec<_>>())
    };
    let (enforced, missing) = applied.as_ref().map(layers).unwrap_or_default();
    let report = SandboxReport {
        profile: plan.as_ref().map(|p| p.profile.clone()).unwrap_or_default(),
        kernel_abi: applied.as_ref().map(|r| r.kernel_abi).unwrap_or_default(),
        enforced,
        missing,
        refused: applied.as_ref().err().cloned(),
    };
    match &report.refused {
        None => {
            tracing::info!(workdir = %folders.workdir.display(), profile = %report.profile, enforced = ?report.enforced, missing = ?report.missing, "sandbox applied")
        }
        Some(why) => tracing::error!(%why, "the sandbox cannot be enforced; refusing to run the task"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if report.refused.is_none()
        && let Ok(bridges) = bridges
    {
        bridge::serve(&runtime, bridges);
    }
    let relinks = links::receive_relinks(handoff);
    runtime.block_on(agent::run(supervisor, broker, relinks, folders, report))
}
