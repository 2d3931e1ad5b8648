//! The command-line grammar (clap derive); doc comments are the help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use neuraphage_ipc::TaskState;

/// Run many AI coding-agent tasks at once, each in its own sandboxed worker process.
#[derive(Debug, Parser)]
#[command(name = "neuraphage", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start, stop or inspect the supervisor daemon.
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Create and manage tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// List the broker's lock table: which task holds which resource, and who waits for it.
    Locks(JsonFlag),
    /// Tokens used and their cost, from every model response so far, priced by the price table.
    Cost(CostArgs),
    /// The configuration (`neuraphage.yaml`, `api-keys.yaml`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show Neuraphage working, in a throw-away home (needs no API key).
    Demo(DemoArgs),
    /// Inspect the sandbox tasks run in.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// List the tasks waiting on you (a question, a permission, a limit), oldest wait first, with what they ask.
    Waiting(JsonFlag),
    /// The permission rules saved from answers (`task approve --always`, `task deny --never`).
    #[command(subcommand)]
    Permissions(PermissionsCommand),
    /// Print the event stream: stored events after --since, then (with --follow) the live tail.
    Events(EventsArgs),
    /// The dashboard: every task, what waits on you, live output, stats and notifications (`?` lists the keys).
    Tui,
    /// What tasks learnt: list, show, search, add, rm learnings; the Syncer's relays.
    #[command(subcommand)]
    Knowledge(crate::knowledge::KnowledgeCommand),
    /// The personas a task can take (built in, and `personas.yaml` in the home), with their tier and tools.
    Personas(JsonFlag),
    /// The Watcher, which looks at running tasks from outside and steps in when one is stuck.
    #[command(subcommand)]
    Watcher(WatcherCommand),
    /// One status summary from the status socket (counts, waiting tasks, tokens and cost today, pool headroom), for
    /// shell bars and the terminal title.
    Status(StatusArgs),
    /// Desktop and spoken notifications.
    #[command(subcommand)]
    Notify(NotifyCommand),
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
    /// Keep printing: one more line on every change (until the supervisor stops).
    #[arg(long)]
    pub follow: bool,
    /// A template for shell bars, e.g. `np {waiting}⏳ {running}▶ {cost}`; placeholders: {waiting} {running}
    /// {queued} {blocked} {paused} {done} {failed} {cancelled} {total} {cost} {tokens} {muted} {headroom}
    /// {glyphs}; `{{` and `}}` for braces. `--format waybar` is `--json-waybar`.
    #[arg(long, value_name = "TEMPLATE")]
    pub format: Option<String>,
    /// waybar's custom module JSON (`return-type: json`): {"text", "tooltip", "class"} per line.
    #[arg(long)]
    pub json_waybar: bool,
    /// Print the terminal title's escape (OSC 2), e.g. `np ⏳2 ▶5 ✓12`; with --follow it keeps it current.
    #[arg(long)]
    pub title: bool,
}

/// `neuraphage notify …`
#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send no notification until `notify unmute` (kept across restarts).
    Mute(JsonFlag),
    /// Notify again.
    Unmute(JsonFlag),
}

/// `neuraphage watcher …`
#[derive(Debug, Subcommand)]
pub enum WatcherCommand {
    /// The Watcher's interventions across tasks, newest first, and whether each nudge helped.
    Log(WatcherLogArgs),
}

/// Arguments of `watcher log`.
#[derive(Debug, Args)]
pub struct WatcherLogArgs {
    /// At most this many interventions.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub limit: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// `neuraphage permissions …`
#[derive(Debug, Subcommand)]
pub enum PermissionsCommand {
    /// List the saved rules (neuraphage.yaml's `security:` rules are not listed: the file is never rewritten).
    List(JsonFlag),
    /// Remove a saved rule by its number.
    Rm(RmRuleArgs),
}

/// Arguments of `permissions rm`.
#[derive(Debug, Args)]
pub struct RmRuleArgs {
    /// The rule's number, as `permissions list` shows it.
    pub number: i64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// Arguments of `task approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The task's id, or any unique prefix of it.
    pub id: String,
    /// Also save a rule: this exact command (or this path) runs without asking from now on, in every task.
    #[arg(long)]
    pub always: bool,
    /// The number of the request to approve (`request #N` in its prompt); needed when the task asked more than one
    /// since your last answer.
    #[arg(long, value_name = "N")]
    pub request: Option<i64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// Arguments of `task deny`.
#[derive(Debug, Args)]
pub struct DenyArgs {
    /// The task's id, or any unique prefix of it.
    pub id: String,
    /// Also save a rule: this exact command (or this path) is refused from now on, in every task.
    #[arg(long)]
    pub never: bool,
    /// Why (the model is told).
    #[arg(long)]
    pub reason: Option<String>,
    /// The number of the request to deny (`request #N` in its prompt); without it, the one waiting.
    #[arg(long, value_name = "N")]
    pub request: Option<i64>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// Arguments of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this task (id or unique prefix).
    #[arg(long)]
    pub task: Option<String>,
    /// Start after this event sequence number (default: from the first event).
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// Go on printing events as they happen (Ctrl-C stops).
    #[arg(long)]
    pub follow: bool,
    /// With --follow, also print the models' streamed text.
    #[arg(long)]
    pub deltas: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `task attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The task's id, or any unique prefix of it.
    pub id: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// `neuraphage sandbox …`
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Apply a profile in a throw-away sandbox and print, layer by layer, what this machine enforces (no supervisor
    /// needed). Exit 1 if a task with this profile would be refused here or a layer is not enforced.
    Check(SandboxCheckArgs),
}

/// Arguments of `sandbox check`.
#[derive(Debug, Args)]
pub struct SandboxCheckArgs {
    /// The profile to check (default: `default`).
    #[arg(long)]
    pub profile: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// `neuraphage config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Read `neuraphage.yaml` and `api-keys.yaml` again and apply the model tiers and key pools (as SIGHUP to the
    /// supervisor does). A file that does not load changes nothing; the error names the file, line and key.
    Reload(JsonFlag),
}

/// `neuraphage daemon …`
#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start the supervisor in the background; returns once it answers (succeeds if it is already running).
    ///
    /// With the systemd user service installed (`daemon install`) and `systemctl --user` working, this starts the
    /// service; otherwise it runs neuraphage-supervisor as a detached process.
    Start(JsonFlag),
    /// Stop the supervisor gracefully and wait until it has exited.
    Stop(JsonFlag),
    /// Show the supervisor's pid, uptime, home, protocol and task counts (exit 3 if it is not running).
    Status(JsonFlag),
    /// Install the supervisor as a systemd user service (neuraphage-supervisor.service) and enable it.
    ///
    /// Writes the unit to $XDG_CONFIG_HOME/systemd/user/ (default ~/.config/systemd/user/), pointing at the
    /// neuraphage-supervisor beside this program and carrying NEURAPHAGE_HOME and NEURAPHAGE_RUNTIME_DIR if they are
    /// set, then runs `systemctl --user daemon-reload` and `systemctl --user enable --now` (or prints those commands
    /// where `systemctl --user` does not work). Once installed, `daemon start` starts the service.
    Install(InstallArgs),
}

/// Arguments of `daemon install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Print the unit and where it would go; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// `neuraphage task …`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Create a task; prints its id and returns at once.
    New(NewArgs),
    /// List tasks, most urgent first.
    List(ListArgs),
    /// Show a task with its dependencies and recent events.
    Show(IdArgs),
    /// Print a task's changes against its base commit, as a patch.
    Diff(IdArgs),
    /// Print a task's conversation with the model.
    Log(IdArgs),
    /// Queue a Failed task again; it resumes from its conversation.
    Retry(IdArgs),
    /// Make a task wait until another one completes.
    Depend(DependArgs),
    /// Cancel a task.
    Kill(KillArgs),
    /// Show a task's conversation, then follow it live: streamed text, tool calls and outcomes, status changes and
    /// questions. In a terminal a typed line is sent to the task and Ctrl-] detaches (the task goes on); with
    /// --json (or without a terminal) JSON lines, ending when the task ends.
    Attach(AttachArgs),
    /// Allow the tool call the task waits on (its prompt names it); `--always` saves a rule for it.
    Approve(ApproveArgs),
    /// Refuse the tool call the task waits on; the model is told. `--never` saves a rule for it.
    Deny(DenyArgs),
    /// Give a task a message: a running task reads it at its next turn, a task waiting on a question takes it as
    /// the answer, a finished one goes on from its conversation and branch. `/pause`, `/cancel`, `/retry` act.
    Send(SendArgs),
    /// Answer a task's pending question (refused when it has none).
    Answer(SendArgs),
    /// Pause a task: a running one at its next checkpoint, a queued or waiting one at once.
    Pause(IdArgs),
    /// Queue a Paused task again.
    Resume(IdArgs),
}

/// Arguments of `task send` and `task answer`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// The task's id, or any unique prefix of it.
    pub id: String,
    /// The message (at most 64 KiB); `-` reads it from stdin.
    pub message: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// A `--json` switch.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `task new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// What the task should do (1 byte to 64 KiB).
    pub description: String,
    /// The git repository the task works on (its top folder).
    #[arg(long, value_name = "PATH")]
    pub repo: Option<PathBuf>,
    /// 0 = critical … 4 = low.
    #[arg(long, short, default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=4))]
    pub priority: u8,
    /// Start only after this task has completed (repeatable; any unique id prefix).
    #[arg(long, value_name = "ID")]
    pub after: Vec<String>,
    /// Sandbox profile to run under.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Start the task's branch from this commit, branch or tag instead of the repository's HEAD.
    #[arg(long, value_name = "REF", requires = "repo")]
    pub base: Option<String>,
    /// The model tier: router, worker (the default) or expert (see `model-tiers` in neuraphage.yaml).
    #[arg(long, value_name = "TIER")]
    pub tier: Option<String>,
    /// The persona the task takes (`neuraphage personas` lists them); without it, the selection rules choose. Its
    /// tier is the task's unless --tier says otherwise.
    #[arg(long, value_name = "NAME")]
    pub persona: Option<String>,
    /// Keep the Watcher off this task.
    #[arg(long)]
    pub no_watch: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// Arguments of `task list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks in this state: queued, running, waiting, blocked, paused, completed, failed, cancelled.
    #[arg(long, short, value_name = "STATUS", value_parser = parse_state)]
    pub status: Option<TaskState>,
    /// Show sub-tasks indented under their parents.
    #[arg(long)]
    pub tree: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// A task id and `--json`.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The task's id, or any unique prefix of it.
    pub id: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// Arguments of `task depend`.
#[derive(Debug, Args)]
pub struct DependArgs {
    /// The task that waits.
    pub id: String,
    /// The task it waits for.
    #[arg(long, value_name = "ID")]
    pub on: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// Arguments of `task kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// The task's id, or any unique prefix of it.
    pub id: String,
    /// Why (recorded with the task).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// Arguments of `cost`.
#[derive(Debug, Args)]
pub struct CostArgs {
    /// One line per task, model or day (UTC).
    #[arg(long, default_value = "task", value_parser = ["task", "model", "day"])]
    pub by: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's home folder instead of deleting it at the end.
    #[arg(long)]
    pub keep: bool,
}

fn parse_state(s: &str) -> Result<TaskState, String> {
    s.parse()
}
