//! `neuraphage locks` and `neuraphage cost`: read-only reports, one request each on the control link.

use neuraphage_ipc::cost::{CostGrouping, CostTotals};
use neuraphage_ipc::paths::Paths;
use neuraphage_ipc::{ControlReply, ControlRequest};
use serde_json::{Value, json};

use crate::cli::CostArgs;
use crate::client::{Client, unexpected};
use crate::error::CliError;
use crate::output;

/// `neuraphage locks [--json]`.
pub async fn locks(paths: &Paths, json: bool) -> Result<(), CliError> {
    let reply = Client::connect(paths).await?.call(ControlRequest::ListLocks).await?;
    let ControlReply::Locks(table) = reply else { return Err(unexpected(reply)) };
    if json { output::json(&table) } else { output::out(&output::lock_table(&table)) }
}

/// `neuraphage cost [--by task|model|day] [--json]`.
pub async fn cost(paths: &Paths, args: CostArgs) -> Result<(), CliError> {
    let by = match args.by.as_str() {
        "task" => CostGrouping::Task,
        "model" => CostGrouping::Model,
        "day" => CostGrouping::Day,
        other => return Err(CliError::Usage(format!("--by {other}: group by task, model or day"))),
    };
    let reply = Client::connect(paths).await?.call(ControlRequest::Cost { by }).await?;
    let ControlReply::Cost { by, lines, total } = reply else { return Err(unexpected(reply)) };
    if args.out.json {
        let lines: Vec<Value> = lines
            .iter()
            .map(|l| {
                let mut v = with_usd(&l.totals);
                v["key"] = json!(l.key);
                v
            })
            .collect();
        output::json(&json!({ "by": by, "lines": lines, "total": with_usd(&total) }))
    } else {
        output::out(&output::cost_report(by, &lines, &total))
    }
}

/// Totals as JSON with `cost_usd` beside the exact `cost_nano_usd`.
pub fn with_usd(totals: &CostTotals) -> Value {
    let mut v = serde_json::to_value(totals).unwrap_or(Value::Null);
    v["cost_usd"] = json!(totals.cost_usd());
    v
}
