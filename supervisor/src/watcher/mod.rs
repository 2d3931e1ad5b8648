//! The Watcher: a loop in the supervisor that looks at every running task (not those made with `--no-watch`) every
//! `watcher.interval-secs`, from outside. Each look builds the task's [`snapshot`] from its stored events and runs the
//! cheap [`rules`]; only a flagged task is judged by the `watcher` persona on the router tier ([`judge`]), and the
//! verdict is carried out ([`act`]). A task that cannot be judged (no router tier reachable, an answer that does not
//! read) is paused with the rules' finding: a stuck task never loops silently. A task is not flagged again for the
//! same finding while its last intervention is fresh (`watcher.cooldown-secs`), nor judged more than
//! `watcher.max-judgements-per-hour` times an hour ([`budget`]: past it, paused with the rules' finding); whether a nudge helped (the pattern
//! gone at the first look that sees new steps) is recorded as `WatcherOutcome`.

pub mod act;
pub mod budget;
pub mod judge;
pub mod rules;
pub mod snapshot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use neuraphage_ipc::personas::WatcherEntry;
use neuraphage_ipc::{EventKind, Task, TaskId, TaskState};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::requests::Daemon;
use crate::store::Store;
use judge::Recommendation;
use rules::Finding;
use snapshot::Snapshot;

/// The `watcher:` block of `neuraphage.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WatcherConfig {
    /// Run the Watcher at all.
    pub enabled: bool,
    /// Seconds between looks (1 to 86400; default 30).
    pub interval_secs: u64,
    /// Minutes without progress that flag a task (0: never; default 10).
    pub no_progress_mins: u64,
    /// Seconds during which a task is not flagged again for the same finding (default 300).
    pub cooldown_secs: u64,
    /// Router judgements one task may cost in an hour (0 to 3600; default 4); past it a flagged task is paused with
    /// the rules' finding ([`budget`]). 0: never judged.
    pub max_judgements_per_hour: u32,
}

impl Default for WatcherConfig {
    fn default() -> WatcherConfig {
        WatcherConfig {
            enabled: true,
            interval_secs: 30,
            no_progress_mins: 10,
            cooldown_secs: 300,
            max_judgements_per_hour: 4,
        }
    }
}

impl WatcherConfig {
    /// Check the values; the error names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=86_400).contains(&self.interval_secs) {
            return Err(format!("watcher.interval-secs: {} is not between 1 and 86400", self.interval_secs));
        }
        if self.no_progress_mins > 7 * 24 * 60 {
            return Err(format!("watcher.no-progress-mins: {} is more than a week (10080)", self.no_progress_mins));
        }
        if self.cooldown_secs > 7 * 86_400 {
            return Err(format!("watcher.cooldown-secs: {} is more than a week (604800)", self.cooldown_secs));
        }
        if self.max_judgements_per_hour > 3600 {
            return Err(format!(
                "watcher.max-judgements-per-hour: {} is not between 0 and 3600",
                self.max_judgements_per_hour
            ));
        }
        Ok(())
    }
}

/// What the Watcher remembers of a flagged task.
#[derive(Debug, Clone)]
struct Flag {
    rule: &'static str,
    at: Instant,
    last_step_seq: u64,
    judging: bool,
    nudged: bool,
}

/// The Watcher's memory: flagged tasks, the statuses its pauses and aborts end sessions with, and counts.
#[derive(Debug, Default)]
pub struct WatcherState {
    flags: Mutex<HashMap<TaskId, Flag>>,
    judgements: Mutex<HashMap<TaskId, budget::Budget>>,
    /// Judgments asked of the router tier since the start.
    pub router_calls: AtomicU64,
}

impl WatcherState {
    fn flags(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Flag>> {
        self.flags.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take one judgement from task `id`'s budget (`max` an hour) at `now`; `Err(used)` when it is spent. Budgets
    /// with nothing in the last hour are forgotten.
    fn take_judgement(&self, id: &TaskId, now: Instant, max: u32) -> std::result::Result<(), usize> {
        let mut all = self.judgements.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|_, b| !b.is_idle(now));
        all.entry(id.clone()).or_default().take(now, max)
    }
}

/// One look at a task: its snapshot and the rules' finding.
#[derive(Debug, Clone)]
pub struct Look {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// What the rules found.
    pub finding: Option<Finding>,
}

/// Snapshots and rules over `tasks`, read from `store` (the bench calls this directly).
pub fn scan(store: &Store, tasks: &[Task], now: DateTime<Utc>, no_progress: Duration) -> Result<Vec<Look>> {
    let mut looks = Vec::with_capacity(tasks.len());
    for task in tasks {
        let events = store.recent_events(&task.id, &snapshot::KINDS, snapshot::MAX_EVENTS)?;
        let snapshot = snapshot::build(task, &events, now);
        let finding = rules::check(&snapshot.facts, no_progress);
        looks.push(Look { snapshot, finding });
    }
    Ok(looks)
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Running tasks looked at.
    pub looked: usize,
    /// Tasks flagged and sent to the judge.
    pub flagged: usize,
}

/// The loop: a pass every `watcher.interval-secs` until shutdown.
pub async fn run(daemon: Arc<Daemon>, shutdown: CancellationToken) {
    let cfg = daemon.config().watcher;
    if !cfg.enabled {
        tracing::info!("the Watcher is off (watcher.enabled: false)");
        return;
    }
    let every = Duration::from_secs(cfg.interval_secs.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        let d = daemon.clone();
        match tokio::task::spawn_blocking(move || select_flagged(&d)).await {
            Ok(Ok(flagged)) => {
                for (snapshot, finding) in flagged {
                    tokio::spawn(judge_and_act(daemon.clone(), snapshot, finding));
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "the Watcher could not read the running tasks"),
            Err(e) => tracing::error!(error = %e, "the Watcher's pass failed"),
        }
    }
}

/// One pass's reading half: look at every running, watched task; record nudges' outcomes; return the tasks to judge
/// (flagged, and not for the same finding while fresh), marked as being judged.
pub fn select_flagged(daemon: &Daemon) -> Result<Vec<(Snapshot, Finding)>> {
    let cfg = daemon.config().watcher;
    let no_progress = Duration::from_secs(cfg.no_progress_mins.saturating_mul(60));
    let cooldown = Duration::from_secs(cfg.cooldown_secs);
    let running: Vec<Task> =
        daemon.with_store(|s| s.list(Some(TaskState::Running)))?.into_iter().filter(|t| !t.no_watch).collect();
    // The store is locked per task (a pass over many tasks must not hold up their checkpoints).
    let mut looks = Vec::with_capacity(running.len());
    for task in running {
        let (events, session) = daemon.with_store(|s| {
            Ok((s.recent_events(&task.id, &snapshot::KINDS, snapshot::MAX_EVENTS)?, s.session_seq(&task.id)?))
        })?;
        let snapshot = Snapshot { session, ..snapshot::build(&task, &events, Utc::now()) };
        let finding = rules::check(&snapshot.facts, no_progress);
        looks.push(Look { snapshot, finding });
    }
    let mut outcomes = Vec::new();
    let mut chosen = Vec::new();
    {
        let mut flags = daemon.watcher.flags();
        flags.retain(|id, _| looks.iter().any(|l| &l.snapshot.task == id));
        for look in looks {
            let id = look.snapshot.task.clone();
            if let Some(flag) = flags.get_mut(&id)
                && flag.nudged
                && look.snapshot.last_step_seq > flag.last_step_seq
            {
                let helped = look.finding.as_ref().is_none_or(|f| f.rule != flag.rule);
                outcomes.push((id.clone(), flag.rule, helped));
                flag.nudged = false;
            }
            let Some(finding) = look.finding else { continue };
            if let Some(flag) = flags.get(&id)
                && (flag.judging || (flag.rule == finding.rule && flag.at.elapsed() < cooldown))
            {
                continue;
            }
            flags.insert(
                id,
                Flag {
                    rule: finding.rule,
                    at: Instant::now(),
                    last_step_seq: look.snapshot.last_step_seq,
                    judging: true,
                    nudged: false,
                },
            );
            chosen.push((look.snapshot, finding));
        }
    }
    for (id, rule, helped) in outcomes {
        daemon.record(&id, EventKind::WatcherOutcome { rule: rule.to_owned(), helped });
    }
    Ok(chosen)
}

/// The judging half, for one flagged task: ask the judge, then act; unjudged, pause with the finding.
pub async fn judge_and_act(daemon: Arc<Daemon>, snapshot: Snapshot, finding: Finding) -> Recommendation {
    let system = daemon.personas.with(|s| {
        s.get(crate::personas::WATCHER)
            .map(|p| p.prompt.clone())
            .unwrap_or_else(|| crate::personas::WATCHER_PROMPT.into())
    });
    let max = daemon.config().watcher.max_judgements_per_hour;
    let verdict = match daemon.watcher.take_judgement(&snapshot.task, Instant::now(), max) {
        Ok(()) => {
            let request = judge::request(system, snapshot::render(&snapshot, &finding));
            daemon.watcher.router_calls.fetch_add(1, Ordering::Relaxed);
            match daemon.side_call(&snapshot.task, request, judge::JUDGE_WITHIN).await {
                Ok(response) => judge::parse(&neuraphage_ipc::llm::text_of(&response.content))
                    .map_err(|why| format!("unjudged: {why}")),
                Err(failure) => Err(format!("unjudged: the router tier could not be reached: {}", failure.message)),
            }
        }
        Err(used) => Err(budget::spent(used, max)),
    };
    let action = match verdict {
        Ok(v) => act::Action {
            rule: finding.rule.to_owned(),
            recommendation: v.recommendation,
            diagnosis: v.diagnosis,
            confidence: (v.confidence * 100.0).round() as u8,
            nudge: v.nudge_message,
        },
        Err(why) => {
            tracing::warn!(task = %snapshot.task, %why, "the Watcher could not judge a flagged task: pausing it");
            let why: String = why.chars().take(500).collect();
            act::Action {
                rule: finding.rule.to_owned(),
                recommendation: Recommendation::Pause,
                diagnosis: format!("{} ({why})", finding.detail),
                confidence: 0,
                nudge: None,
            }
        }
    };
    let (d, id, tier, session) = (daemon.clone(), snapshot.task.clone(), snapshot.tier.clone(), snapshot.session);
    let done = tokio::task::spawn_blocking(move || act::act(&d, &id, tier.as_deref(), session, action))
        .await
        .unwrap_or(Recommendation::Continue);
    // Whether a nudge helped is judged on the steps after it was stored.
    let newest = daemon
        .with_store(|s| s.recent_events(&snapshot.task, &["tool_call", "tool_result", "checkpoint"], 1))
        .ok()
        .and_then(|e| e.last().map(|e| e.seq))
        .unwrap_or(snapshot.last_step_seq);
    if let Some(flag) = daemon.watcher.flags().get_mut(&snapshot.task) {
        flag.judging = false;
        flag.at = Instant::now();
        flag.nudged = done == Recommendation::Nudge;
        flag.last_step_seq = flag.last_step_seq.max(newest);
    }
    done
}

/// `neuraphage watcher log`: the newest interventions (at most `limit`, 0: 100), with whether each nudge helped.
pub fn log(daemon: &Daemon, limit: u32) -> Result<Vec<WatcherEntry>> {
    let limit = match limit {
        0 => 100,
        n => n.min(10_000) as usize,
    };
    let (intervened, outcomes) = daemon.with_store(|s| {
        Ok((
            s.newest_of_kind("watcher_intervened", limit)?,
            s.newest_of_kind("watcher_outcome", limit.saturating_mul(2))?,
        ))
    })?;
    let mut out = Vec::with_capacity(intervened.len());
    for e in &intervened {
        let EventKind::WatcherIntervened { rule, recommendation, diagnosis, confidence } = &e.kind else { continue };
        // The first outcome of this task after this intervention and before its next one.
        let next = intervened.iter().filter(|o| o.task == e.task && o.seq > e.seq).map(|o| o.seq).min();
        let helped = outcomes
            .iter()
            .filter(|o| o.task == e.task && o.seq > e.seq && next.is_none_or(|n| o.seq < n))
            .min_by_key(|o| o.seq)
            .and_then(|o| match o.kind {
                EventKind::WatcherOutcome { helped, .. } => Some(helped),
                _ => None,
            });
        out.push(WatcherEntry {
            seq: e.seq,
            task: e.task.clone(),
            at: e.at,
            rule: rule.clone(),
            recommendation: recommendation.clone(),
            diagnosis: diagnosis.clone(),
            confidence: *confidence,
            helped,
        });
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests_support {
    use neuraphage_ipc::{Priority, Task, TaskId, TaskStatus};

    /// A task for unit tests.
    pub fn task() -> Task {
        Task {
            id: TaskId::from_bits(1),
            status: TaskStatus::Queued,
            priority: Priority::try_from(2).unwrap(),
            description: "d".into(),
            repo: None,
            profile: None,
            parent: None,
            base_commit: None,
            branch: None,
            tier: None,
            persona: None,
            no_watch: false,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        assert!(WatcherConfig::default().validate().is_ok());
        let bad = WatcherConfig { interval_secs: 0, ..WatcherConfig::default() };
        assert!(bad.validate().unwrap_err().contains("watcher.interval-secs"));
        let bad = WatcherConfig { no_progress_mins: 20_000, ..WatcherConfig::default() };
        assert!(bad.validate().unwrap_err().contains("watcher.no-progress-mins"));
        let bad = WatcherConfig { max_judgements_per_hour: 3601, ..WatcherConfig::default() };
        assert!(bad.validate().unwrap_err().contains("watcher.max-judgements-per-hour: 3601"));
        assert!(WatcherConfig { max_judgements_per_hour: 0, ..WatcherConfig::default() }.validate().is_ok());
    }
}
