//! `neuraphage knowledge list|show|search|add|rm|relays`: the knowledge store (issue 17). Everything a learning
//! says was written by a task or a person: shown escaped.

use clap::{Args, Subcommand};
use neuraphage_ipc::knowledge::{KnowledgeReply, KnowledgeRequest, Learning, NewLearning};
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::{ControlReply, ControlRequest};

use crate::cli::JsonFlag;
use crate::client::{Client, unexpected};
use crate::error::CliError;
use crate::escape::{visible, visible_lines};
use crate::output;

/// `neuraphage knowledge …`
#[derive(Debug, Subcommand)]
pub enum KnowledgeCommand {
    /// List every learning and decision (and the files skipped, with why).
    List(JsonFlag),
    /// Show one learning.
    Show(IdArgs),
    /// Full-text search (bm25; the repository's learnings weigh more with --repo).
    Search(SearchArgs),
    /// Record a learning by hand.
    Add(AddArgs),
    /// Delete a learning (its file).
    Rm(IdArgs),
    /// The Syncer's relays between running tasks, newest first.
    Relays(JsonFlag),
}

/// A learning's id.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The learning's id.
    pub id: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// Arguments of `knowledge search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words to look for.
    pub query: String,
    /// Weigh this repository's learnings more.
    #[arg(long)]
    pub repo: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

/// Arguments of `knowledge add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// One line.
    pub title: String,
    /// The body (Markdown).
    pub body: String,
    /// A tag (repeat for more).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// A file it concerns (repeat for more).
    #[arg(long = "file")]
    pub files: Vec<String>,
    /// The repository it concerns (absolute path).
    #[arg(long)]
    pub repo: Option<String>,
    /// `learning` (default) or `decision`.
    #[arg(long)]
    pub kind: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: JsonFlag,
}

async fn call(paths: &Paths, request: KnowledgeRequest) -> Result<KnowledgeReply, CliError> {
    let reply = Client::connect(paths).await?.call(ControlRequest::Knowledge(request)).await?;
    match reply {
        ControlReply::Knowledge(k) => Ok(k),
        other => Err(unexpected(other)),
    }
}

fn line(l: &Learning) -> String {
    let source = l.source_task.as_deref().map(visible).unwrap_or_else(|| "-".into());
    format!("{}  {:<8}  {:<14}  {}\n", visible(&l.id), visible(&l.kind), source, visible(&l.title))
}

fn detail(l: &Learning) -> String {
    let mut s = format!("{}  {}\n{}\n", visible(&l.id), visible(&l.kind), visible(&l.title));
    s.push_str(&format!("source task: {}\n", l.source_task.as_deref().map(visible).unwrap_or_else(|| "-".into())));
    s.push_str(&format!("repository:  {}\n", l.repository.as_deref().map(visible).unwrap_or_else(|| "-".into())));
    s.push_str(&format!("files:       {}\n", visible(&l.files.join(", "))));
    s.push_str(&format!("tags:        {}\n", visible(&l.tags.join(", "))));
    s.push_str(&format!("created:     {}  confidence {:.2}\n", l.created.to_rfc3339(), l.confidence));
    s.push_str(&format!("file:        {}\n\n{}\n", visible(&l.path), visible_lines(&l.body)));
    s
}

/// Run one `knowledge` command.
pub async fn run(paths: &Paths, command: KnowledgeCommand) -> Result<(), CliError> {
    match command {
        KnowledgeCommand::List(out) => {
            let reply = call(paths, KnowledgeRequest::List).await?;
            let KnowledgeReply::Learnings { learnings, skipped } = &reply else { return Err(bad()) };
            if out.json {
                return output::json(&serde_json::json!({ "learnings": learnings, "skipped": skipped }));
            }
            let mut s: String = learnings.iter().map(line).collect();
            if learnings.is_empty() {
                s.push_str("no learnings yet\n");
            }
            for k in skipped {
                s.push_str(&format!("skipped {}: {}\n", visible(&k.path), visible(&k.why)));
            }
            output::out(&s)
        }
        KnowledgeCommand::Show(args) => {
            let KnowledgeReply::Learning(l) = call(paths, KnowledgeRequest::Show { id: args.id }).await? else {
                return Err(bad());
            };
            if args.out.json { output::json(&l) } else { output::out(&detail(&l)) }
        }
        KnowledgeCommand::Search(args) => {
            let request = KnowledgeRequest::Search { query: args.query, repository: args.repo };
            let KnowledgeReply::Hits { hits } = call(paths, request).await? else { return Err(bad()) };
            if args.out.json {
                return output::json(&hits);
            }
            let mut s: String = hits.iter().map(|h| format!("{:>8.3}  {}", h.score, line(&h.learning))).collect();
            if hits.is_empty() {
                s.push_str("nothing found\n");
            }
            output::out(&s)
        }
        KnowledgeCommand::Add(args) => {
            let new = NewLearning {
                kind: args.kind,
                title: args.title,
                body: args.body,
                tags: args.tags,
                files: args.files,
                repository: args.repo,
            };
            let KnowledgeReply::Added { id, updated } = call(paths, KnowledgeRequest::Add(new)).await? else {
                return Err(bad());
            };
            if args.out.json {
                return output::json(&serde_json::json!({ "id": id, "updated": updated }));
            }
            let verb = if updated { "updated (a near-identical learning existed)" } else { "added" };
            output::out(&format!("{}  {verb}\n", visible(&id)))
        }
        KnowledgeCommand::Rm(args) => {
            let KnowledgeReply::Removed { id } = call(paths, KnowledgeRequest::Remove { id: args.id }).await? else {
                return Err(bad());
            };
            if args.out.json {
                output::json(&serde_json::json!({ "removed": id }))
            } else {
                output::out(&format!("{}  removed\n", visible(&id)))
            }
        }
        KnowledgeCommand::Relays(out) => {
            let KnowledgeReply::Relays { relays } = call(paths, KnowledgeRequest::Relays).await? else {
                return Err(bad());
            };
            if out.json {
                return output::json(&relays);
            }
            let mut s: String = relays
                .iter()
                .map(|r| {
                    format!(
                        "{}  {} → {}  score {:.2}  {}\n",
                        r.at.to_rfc3339(),
                        r.from,
                        r.to,
                        r.score,
                        visible(&r.learning)
                    )
                })
                .collect();
            if relays.is_empty() {
                s.push_str("no relays yet\n");
            }
            output::out(&s)
        }
    }
}

fn bad() -> CliError {
    CliError::Failed("the supervisor answered a knowledge request with something else".into())
}
