//! `neuraphage`: the command-line client of the supervisor.
//!
//! Layout: [`cli`] is the grammar, [`client`] the control link, [`task`], [`daemon`] and [`report`] (locks, cost) the
//! commands, [`events`] and [`attach`] the event stream, [`status`] the status socket and mute, [`demo`] the main job, [`output`] the printing, [`error`] the errors and their exit codes.

mod attach;
mod cli;
mod client;
mod daemon;
mod demo;
mod error;
mod escape;
mod events;
mod knowledge;
mod output;
mod permissions;
mod personas;
mod report;
mod sandbox;
mod status;
mod task;
mod waiting;
mod watcher;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use neuraphage_ipc::paths::Paths;

use crate::cli::{Cli, Command, ConfigCommand, DaemonCommand, SandboxCommand};
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::from)
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stderr is no reason to panic: the exit code still tells.
            let _ = writeln!(std::io::stderr(), "neuraphage: error: {}", escape::visible_lines(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Demo(args) = cli.command {
        return demo::run(args).await;
    }
    let paths = Paths::from_env().map_err(CliError::Usage)?;
    match cli.command {
        Command::Daemon(DaemonCommand::Start(out)) => {
            let started = daemon::start(&paths).await?;
            let st = &started.status;
            if out.json {
                output::json(st)
            } else if started.already {
                output::out(&format!("neuraphage-supervisor is already running (pid {})\n", st.pid))
            } else if started.by_systemd {
                output::out(&format!(
                    "neuraphage-supervisor started by systemd ({}, pid {}, home {})\n",
                    daemon::UNIT_NAME,
                    st.pid,
                    st.home
                ))
            } else {
                output::out(&format!("neuraphage-supervisor started (pid {}, home {})\n", st.pid, st.home))
            }
        }
        Command::Daemon(DaemonCommand::Install(args)) => {
            let done = daemon::install(&paths, args.dry_run).await?;
            if args.out.json {
                return output::json(&done);
            }
            if done.dry_run {
                // The unit on stdout stays a valid unit file: the path goes in a comment above it.
                return output::out(&format!(
                    "# neuraphage daemon install --dry-run: would write {}\n{}",
                    done.unit_path.display(),
                    done.unit
                ));
            }
            let mut text = format!(
                "wrote {} (ExecStart={})\n{}\n",
                done.unit_path.display(),
                done.exec_start.display(),
                done.note
            );
            for command in &done.commands {
                text.push_str(&format!("  {command}\n"));
            }
            output::out(&text)
        }
        Command::Daemon(DaemonCommand::Stop(out)) => {
            let stopped = daemon::stop(&paths).await?;
            if out.json {
                return output::json(&serde_json::json!({ "stopped": stopped.is_some(), "pid": stopped }));
            }
            match stopped {
                Some(pid) => output::out(&format!("neuraphage-supervisor stopped (pid {pid})\n")),
                None => output::out("neuraphage-supervisor is not running\n"),
            }
        }
        Command::Daemon(DaemonCommand::Status(out)) => {
            let st = daemon::status(&paths).await?;
            if out.json { output::json(&st) } else { output::out(&output::daemon_status(&st)) }
        }
        Command::Task(command) => task::run(&paths, command).await,
        Command::Sandbox(SandboxCommand::Check(args)) => {
            let report = sandbox::check(&paths, args.profile.as_deref()).await?;
            if args.out.json {
                output::json(&report)?;
            } else {
                print!("{}", sandbox::render(&report));
            }
            let all = report["layers"].as_array().is_some_and(|l| l.iter().all(|l| l["enforced"] == true));
            if report["refused"].is_string() || !all {
                return Err(CliError::Failed("this machine does not enforce the whole profile".into()));
            }
            Ok(())
        }
        Command::Locks(out) => report::locks(&paths, out.json).await,
        Command::Cost(args) => report::cost(&paths, args).await,
        Command::Config(ConfigCommand::Reload(out)) => {
            let reply =
                client::Client::connect(&paths).await?.call(neuraphage_ipc::ControlRequest::ReloadConfig).await?;
            let neuraphage_ipc::ControlReply::Reloaded { providers } = reply else {
                return Err(client::unexpected(reply));
            };
            if out.json {
                output::json(&serde_json::json!({ "providers": providers }))
            } else {
                output::out(&format!(
                    "reloaded; pools in force:\n{}",
                    providers.iter().map(|p| format!("  {}\n", escape::visible(p))).collect::<String>()
                ))
            }
        }
        Command::Demo(_) => Ok(()),
        Command::Waiting(out) => waiting::waiting(&paths, out.json).await,
        Command::Permissions(command) => permissions::run(&paths, command).await,
        Command::Events(args) => events::run(&paths, args).await,
        Command::Knowledge(command) => knowledge::run(&paths, command).await,
        Command::Personas(out) => personas::run(&paths, out.json).await,
        Command::Watcher(cli::WatcherCommand::Log(args)) => watcher::log(&paths, args.limit, args.out.json).await,
        Command::Tui => neuraphage_tui::run(&paths).await.map_err(|e| match e {
            neuraphage_tui::TuiError::NotRunning(why) => CliError::NotRunning(why),
            other => CliError::Failed(other.to_string()),
        }),
        Command::Status(args) => status::run(&paths, args).await,
        Command::Notify(command) => status::notify(&paths, command).await,
    }
}
