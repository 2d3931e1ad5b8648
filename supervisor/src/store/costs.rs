//! The costs table: one row per model response the broker reported, priced when it was recorded (append-only), and
//! the sums `task show` and `neuraphage cost` give.

use std::collections::BTreeSet;

use chrono::Utc;
use neuraphage_ipc::TaskId;
use neuraphage_ipc::cost::{CostGrouping, CostLine, CostTotals};
use neuraphage_ipc::llm::Usage;
use rusqlite::params;

use super::{Store, to_millis};
use crate::cost::Priced;
use crate::error::Result;

pub(super) const SUMS: &str = "count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), \
     coalesce(sum(cache_write_tokens), 0), coalesce(sum(cache_read_tokens), 0), coalesce(sum(cost_nano_usd), 0), \
     coalesce(sum(1 - priced), 0), group_concat(CASE WHEN priced = 0 THEN model END, char(10))";

impl Store {
    /// Record one response's usage and price. A task id the store does not know is refused (foreign key).
    pub fn record_cost(&mut self, task: &TaskId, model: &str, usage: &Usage, priced: Priced) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO costs (task, at, model, input_tokens, output_tokens, cache_write_tokens, cache_read_tokens,
                                cost_nano_usd, priced)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                task.as_str(),
                to_millis(Utc::now()),
                model,
                usage.input_tokens as i64,
                usage.output_tokens as i64,
                usage.cache_creation_input_tokens as i64,
                usage.cache_read_input_tokens as i64,
                priced.nano_usd as i64,
                priced.priced as i64,
            ],
        )?;
        super::tasks::append_event(&tx, task, &crate::tool_events::cost(model, usage, priced))?;
        tx.commit()?;
        Ok(())
    }

    /// One task's totals.
    pub fn task_cost(&self, task: &TaskId) -> Result<CostTotals> {
        let sql = format!("SELECT {SUMS} FROM costs WHERE task = ?1");
        Ok(self.conn.query_row(&sql, [task.as_str()], |r| totals(r, 0))?)
    }

    /// Tokens (all four kinds) and cost in 10^-9 USD of the rows after sequence number `after` recorded at or after
    /// `since_ms` (unix milliseconds), and the last sequence number: running totals that read only the new rows (the
    /// primary key bounds the scan), for the status socket's "today".
    pub fn costs_after(&self, after: u64, since_ms: i64) -> Result<(u64, u64, u64)> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT coalesce(sum(CASE WHEN at >= ?2
                                 THEN input_tokens + output_tokens + cache_write_tokens + cache_read_tokens END), 0),
                    coalesce(sum(CASE WHEN at >= ?2 THEN cost_nano_usd END), 0),
                    coalesce(max(seq), ?1)
             FROM costs WHERE seq > ?1",
        )?;
        let row = stmt.query_row(params![after as i64, since_ms], |r| {
            Ok((
                r.get::<_, i64>(0)?.max(0) as u64,
                r.get::<_, i64>(1)?.max(0) as u64,
                r.get::<_, i64>(2)?.max(0) as u64,
            ))
        })?;
        Ok(row)
    }

    /// Totals grouped by task, model or UTC day, largest cost first; and the grand total.
    pub fn cost_report(&self, by: CostGrouping) -> Result<(Vec<CostLine>, CostTotals)> {
        let key = match by {
            CostGrouping::Task => "task",
            CostGrouping::Model => "model",
            CostGrouping::Day => "strftime('%Y-%m-%d', at / 1000, 'unixepoch')",
        };
        let sql = format!("SELECT {key}, {SUMS} FROM costs GROUP BY 1 ORDER BY 7 DESC, 1");
        let mut stmt = self.conn.prepare(&sql)?;
        let lines = stmt
            .query_map([], |r| Ok(CostLine { key: r.get(0)?, totals: totals(r, 1)? }))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let total = self.conn.query_row(&format!("SELECT {SUMS} FROM costs"), [], |r| totals(r, 0))?;
        Ok((lines, total))
    }
}

pub(super) fn totals(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<CostTotals> {
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(at + i)?.max(0) as u64) };
    let unpriced: Option<String> = r.get(at + 7)?;
    let unpriced_models: BTreeSet<String> =
        unpriced.iter().flat_map(|s| s.split('\n')).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    Ok(CostTotals {
        responses: n(0)?,
        input_tokens: n(1)?,
        output_tokens: n(2)?,
        cache_write_tokens: n(3)?,
        cache_read_tokens: n(4)?,
        cost_nano_usd: n(5)?,
        unpriced_responses: n(6)?,
        unpriced_models: unpriced_models.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use pretty_assertions::assert_eq;

    use super::*;
    use crate::cost::PriceTable;
    use crate::store::tasks::TaskDraft;

    fn usage(input: u64, output: u64) -> Usage {
        Usage { input_tokens: input, output_tokens: output, ..Usage::default() }
    }

    #[test]
    fn usage_is_summed_per_task_model_and_day() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let draft = |d: &str| TaskDraft::new(d);
        let a = store.create_task(&draft("a")).unwrap().id;
        let b = store.create_task(&draft("b")).unwrap().id;
        let prices = PriceTable::default();
        for (task, model, u) in [
            (&a, "claude-sonnet-4-5", usage(10, 5)),
            (&a, "claude-sonnet-4-5-20250929", usage(100, 50)),
            (&b, "claude-haiku-4-5", usage(1000, 0)),
            (&b, "local-model", usage(7, 7)),
        ] {
            store.record_cost(task, model, &u, prices.price(model, &u)).unwrap();
        }
        let sonnet = |i: u64, o: u64| i * 3_000 + o * 15_000;
        let ta = store.task_cost(&a).unwrap();
        assert_eq!(
            ta,
            CostTotals {
                responses: 2,
                input_tokens: 110,
                output_tokens: 55,
                cost_nano_usd: sonnet(110, 55),
                ..CostTotals::default()
            }
        );
        let tb = store.task_cost(&b).unwrap();
        assert_eq!((tb.cost_nano_usd, tb.unpriced_responses), (1000 * 1_000, 1));
        assert_eq!(tb.unpriced_models, vec!["local-model".to_owned()]);
        let (lines, total) = store.cost_report(CostGrouping::Model).unwrap();
        let keys: Vec<&str> = lines.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["claude-sonnet-4-5-20250929", "claude-haiku-4-5", "claude-sonnet-4-5", "local-model"]);
        assert_eq!(total.cost_nano_usd, sonnet(110, 55) + 1_000_000);
        assert_eq!(total.responses, 4);
        let (lines, _) = store.cost_report(CostGrouping::Task).unwrap();
        assert_eq!(lines.iter().map(|l| l.key.clone()).collect::<Vec<_>>(), [a.to_string(), b.to_string()]);
        let (lines, _) = store.cost_report(CostGrouping::Day).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].key, Utc::now().format("%Y-%m-%d").to_string());
        assert_eq!(lines[0].totals, total);
        // An empty store reports zeros, not an error.
        let empty = Store::open(&dir.path().join("db2")).unwrap();
        assert_eq!(empty.cost_report(CostGrouping::Day).unwrap(), (Vec::new(), CostTotals::default()));
    }
}
