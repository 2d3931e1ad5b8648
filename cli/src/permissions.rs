//! `neuraphage task approve|deny` and `neuraphage permissions list|rm`: answers to permission requests, and the rules
//! saved from them. Everything shown came from a task or the user: it is escaped before printing.

use chrono::Utc;
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::{ControlReply, ControlRequest};

use crate::cli::{ApproveArgs, DenyArgs, PermissionsCommand};
use crate::client::{Client, unexpected};
use crate::error::CliError;
use crate::escape::visible;
use crate::output;

/// `task approve ID [--always]`.
pub async fn approve(paths: &Paths, args: ApproveArgs) -> Result<(), CliError> {
    let request = ControlRequest::DecidePermission {
        task: args.id,
        allow: true,
        save: args.always,
        reason: None,
        request: args.request,
    };
    decide(paths, request, args.out.json).await
}

/// `task deny ID [--never] [--reason TEXT]`.
pub async fn deny(paths: &Paths, args: DenyArgs) -> Result<(), CliError> {
    let request = ControlRequest::DecidePermission {
        task: args.id,
        allow: false,
        save: args.never,
        reason: args.reason,
        request: args.request,
    };
    decide(paths, request, args.out.json).await
}

async fn decide(paths: &Paths, request: ControlRequest, json: bool) -> Result<(), CliError> {
    let reply = Client::connect(paths).await?.call(request).await?;
    let ControlReply::PermissionDecided(d) = reply else { return Err(unexpected(reply)) };
    if json {
        return output::json(&d);
    }
    let verb = if d.allowed { "approved" } else { "denied" };
    let mut text = format!("{}: {verb} request #{}: {} `{}`", d.task, d.request, visible(&d.tool), visible(&d.subject));
    if let Some(rule) = d.saved_rule {
        text.push_str(&format!("; saved as rule #{rule} ({})", if d.allowed { "always" } else { "never" }));
    }
    text.push_str(match (d.requeued, d.tool.as_str()) {
        (_, "Network") => "; the held connection goes on (or is refused)\n",
        (true, _) => "; the task is queued again\n",
        (false, _) => "; the task resumes once it has parked\n",
    });
    output::out(&text)
}

/// `permissions list|rm`.
pub async fn run(paths: &Paths, command: PermissionsCommand) -> Result<(), CliError> {
    match command {
        PermissionsCommand::List(out) => {
            let reply = Client::connect(paths).await?.call(ControlRequest::ListPermissionRules).await?;
            let ControlReply::PermissionRules(rules) = reply else { return Err(unexpected(reply)) };
            if out.json {
                return output::json(&rules);
            }
            if rules.is_empty() {
                return output::out("no saved rules (`task approve --always` / `task deny --never` save one)\n");
            }
            let now = Utc::now();
            let mut text = String::new();
            for r in &rules {
                let from = r.from_task.as_ref().map(|t| format!(" from {t}")).unwrap_or_default();
                text.push_str(&format!(
                    "#{:<4} {:<6} {:<5} {:<7} {}  ({} ago{from})\n",
                    r.id,
                    if r.allow { "always" } else { "never" },
                    visible(&r.tool),
                    r.kind,
                    visible(&r.pattern),
                    output::age(r.created_at, now),
                ));
            }
            output::out(&text)
        }
        PermissionsCommand::Rm(args) => {
            let reply =
                Client::connect(paths).await?.call(ControlRequest::RemovePermissionRule { id: args.number }).await?;
            let ControlReply::PermissionRuleRemoved { id } = reply else { return Err(unexpected(reply)) };
            if args.out.json {
                output::json(&serde_json::json!({ "removed": id }))
            } else {
                output::out(&format!("removed saved rule #{id}\n"))
            }
        }
    }
}
