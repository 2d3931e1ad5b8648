//! The request path: a task's model call goes to its tier's pool, waits its turn in the pool's queue, is sent on
//! a key with headroom, and is settled with the usage reported. Failures are retried with exponential backoff and
//! jitter (or the provider's `retry-after`) on another key where one has headroom; a key answering 401/403 leaves
//! the pool; a spend limit is not retried; after `escalate-after-retries` failed attempts the task moves to the next
//! tier when `auto-escalate` is on. A response received in full is never asked for again. A request naming its own
//! tier (`ChatRequest.tier`, e.g. `router` for a compaction summary) runs on that tier when it is configured, with no
//! escalation, else on the caller's. The tier also says how the call is made ([`CallOptions`]: prompt caching,
//! thinking budget).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use neuraphage_ipc::TaskId;
use neuraphage_ipc::broker::{BrokerSettings, DEFAULT_TIER, LinkGrant, TIER_NAMES};
use neuraphage_ipc::llm::{ChatRequest, ChatResponse, LlmErrorKind, LlmFailure, StreamDelta};

use crate::keys::PoolConfig;
use crate::learnt::{LearntStore, key_hash};
use crate::limiter::{Cost, KeyLimiter, RateHeaders};
use crate::pool::{Key, Pool};
use crate::provider::{CallOptions, Provider};

/// The smallest thinking budget the Anthropic API accepts.
pub const MIN_THINKING_BUDGET: u32 = 1024;

/// Attempts of one model call on one tier before its failure goes back to the worker.
pub const ATTEMPTS: u32 = 6;
/// First backoff; doubled each attempt, with jitter, or what the provider's `retry-after` says.
pub const BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// A tier resolved to its pool.
#[derive(Debug, Clone)]
pub struct Tier {
    /// `router`, `worker` or `expert`.
    pub name: String,
    /// The pool it sends to.
    pub pool: Arc<Pool>,
    /// The model; `None`: the pool's default.
    pub model: Option<String>,
    /// How its calls are made (prompt caching, thinking).
    pub options: CallOptions,
}

/// Everything a call needs: the pools, the tiers (cheapest first) and the escalation policy.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// The pools by name.
    pub pools: HashMap<String, Arc<Pool>>,
    /// Their configurations (to keep a pool whose configuration a reload did not change).
    pub configs: HashMap<String, PoolConfig>,
    /// The tiers, cheapest first (`router`, `worker`, `expert`; only those configured).
    pub tiers: Vec<Tier>,
    /// Move a failing task to the next tier.
    pub auto_escalate: bool,
    /// Failed attempts on a tier before escalating.
    pub escalate_after_retries: u32,
    /// Where the keys' learnt limits are kept across restarts (`None`: nowhere).
    pub store: Option<Arc<LearntStore>>,
}

/// Who is calling: the task as the supervisor described it, and the tier it is on now (escalation moves it).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The task.
    pub task: TaskId,
    /// What fair queuing counts it as: its tree's top-level task (see [`LinkGrant::tree`]).
    pub tree: TaskId,
    /// 0 (first) … 4.
    pub priority: u8,
    /// The tier it runs on; `None`: the default.
    pub tier: Option<String>,
    /// Input tokens its last answer read from or wrote to the prompt cache: the prefix the next call will read
    /// from it, which does not count toward the input-tokens limit.
    pub cached: u64,
}

impl Caller {
    /// A task's caller, on `tier`, counted as its own tree.
    pub fn new(task: TaskId, priority: u8, tier: Option<String>) -> Caller {
        Caller { tree: task.clone(), task, priority, tier, cached: 0 }
    }

    /// The caller the supervisor granted a link or a call to: counted as its tree.
    pub fn of(grant: &LinkGrant) -> Caller {
        let tree = grant.tree.clone().unwrap_or_else(|| grant.task.clone());
        Caller { tree, ..Caller::new(grant.task.clone(), grant.priority, grant.tier.clone()) }
    }
}

/// What the request path tells the supervisor on the way.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// Queued (with the detail), or sent after being queued (`None`).
    Queued(Option<String>),
    /// The task moved to another tier.
    Escalated {
        /// The tier it left.
        from: String,
        /// The tier it is on now.
        to: String,
        /// The last failure.
        reason: String,
    },
    /// A key was taken out of its pool.
    KeyRevoked {
        /// The pool.
        pool: String,
        /// The key's label.
        key: String,
        /// Why.
        reason: String,
    },
}

impl Routes {
    /// Build the pools (their clients and limiters) and resolve the tiers. Errors name the tier or key at fault.
    /// Must run inside a tokio runtime (each pool's queue has a timer task).
    /// A pool of `previous` whose configuration did not change is kept, with what its limiters learnt; the state
    /// file of `previous` is kept too.
    pub fn build(
        pools: &[PoolConfig],
        settings: &BrokerSettings,
        previous: Option<&Routes>,
    ) -> Result<(Routes, Vec<String>), String> {
        Routes::build_with(pools, settings, previous, previous.and_then(|p| p.store.clone()))
    }

    /// [`Routes::build`], the keys starting from (and keeping what they learn in) `store`.
    pub fn build_with(
        pools: &[PoolConfig],
        settings: &BrokerSettings,
        previous: Option<&Routes>,
        store: Option<Arc<LearntStore>>,
    ) -> Result<(Routes, Vec<String>), String> {
        let mut built = HashMap::new();
        let mut described = Vec::new();
        for config in pools {
            let kept = previous
                .filter(|p| p.configs.get(&config.name) == Some(config))
                .and_then(|p| p.pools.get(&config.name));
            if let Some(pool) = kept {
                described.push(describe(config, pool.provider().map(|p| p.describe()).unwrap_or_default()));
                built.insert(config.name.clone(), pool.clone());
                continue;
            }
            let mut keys = Vec::new();
            for key in &config.keys {
                let provider = Provider::new(key.provider.clone())
                    .map_err(|e| format!("api-keys.yaml: pool {}, key {}: {e}", config.name, key.label))?;
                let mut k = Key::new(key.label.clone(), provider, KeyLimiter::new(config.window, key.limits));
                if let Some(store) = &store {
                    k = k.remembered(store.clone(), key_hash(&key.provider.base_url, &key.provider.api_key));
                }
                keys.push(k);
            }
            described.push(describe(config, keys.first().map(|k| k.provider.describe()).unwrap_or_default()));
            built.insert(config.name.clone(), Pool::new(config.name.clone(), keys));
        }
        let mut tiers = Vec::new();
        for name in TIER_NAMES {
            let Some(tier) = settings.tiers.iter().find(|t| t.name == name) else { continue };
            let at = format!("neuraphage.yaml: model-tiers.{name}");
            let pool = built.get(&tier.pool).ok_or_else(|| {
                format!("{at}.pool: no pool {:?} in api-keys.yaml (nor in the environment)", tier.pool)
            })?;
            let config = pools.iter().find(|p| p.name == tier.pool).map(|p| p.kind.name()).unwrap_or_default();
            if config != tier.provider {
                return Err(format!("{at}.provider: {} but pool {} is {config}", tier.provider, tier.pool));
            }
            if let Some(budget) = tier.thinking_budget.filter(|b| *b < MIN_THINKING_BUDGET) {
                return Err(format!(
                    "{at}.thinking.budget-tokens: {budget} is below the provider's minimum of {MIN_THINKING_BUDGET}"
                ));
            }
            let options = CallOptions { prompt_caching: tier.prompt_caching, thinking_budget: tier.thinking_budget };
            tiers.push(Tier { name: name.to_owned(), pool: pool.clone(), model: Some(tier.model.clone()), options });
        }
        if let Some(unknown) = settings.tiers.iter().find(|t| !TIER_NAMES.contains(&t.name.as_str())) {
            return Err(format!("neuraphage.yaml: model-tiers.{}: not a tier (router, worker, expert)", unknown.name));
        }
        let routes = Routes {
            configs: pools.iter().map(|p| (p.name.clone(), p.clone())).collect(),
            pools: built,
            tiers,
            auto_escalate: settings.auto_escalate,
            escalate_after_retries: settings.escalate_after_retries,
            store,
        };
        Ok((routes, described))
    }

    /// The index of the tier a caller is on: its own when configured, else `worker`, else the first.
    fn tier_index(&self, tier: Option<&str>) -> Option<usize> {
        let find = |name: &str| self.tiers.iter().position(|t| t.name == name);
        tier.and_then(find).or_else(|| find(DEFAULT_TIER)).or(if self.tiers.is_empty() { None } else { Some(0) })
    }

    /// The index of the tier a request names for itself, when that tier is configured.
    pub fn request_tier(&self, request: &ChatRequest) -> Option<usize> {
        let name = request.tier.as_deref()?;
        self.tiers.iter().position(|t| t.name == name)
    }

    /// The pool, model, tier name and call options for a tier index (`None`: no tier configured: the first pool,
    /// in name order, with the default options).
    fn target(&self, tier: Option<usize>) -> Option<(Arc<Pool>, Option<String>, String, CallOptions)> {
        match tier.and_then(|i| self.tiers.get(i)) {
            Some(t) => Some((t.pool.clone(), t.model.clone(), t.name.clone(), t.options)),
            None => {
                let mut names: Vec<&String> = self.pools.keys().collect();
                names.sort();
                let name = names.first()?;
                Some((self.pools.get(*name)?.clone(), None, DEFAULT_TIER.to_owned(), CallOptions::default()))
            }
        }
    }

    /// One model call for `caller`, streamed through `on_delta`, with queueing, retries, failover and escalation.
    pub async fn complete(
        &self,
        caller: &mut Caller,
        request: &ChatRequest,
        on_delta: &mut (dyn FnMut(StreamDelta) + Send),
        on_notice: &mut (dyn FnMut(Notice) + Send),
    ) -> Result<ChatResponse, LlmFailure> {
        // A request on a tier of its own (a compaction summary on `router`) is not the task's: it does not escalate
        // the task, nor change what the task's cache holds.
        // (An unconfigured tier falls back to the caller's, but the call stays a side call all the same.)
        let side_call = request.tier.is_some();
        let mut tier = self.request_tier(request).or_else(|| self.tier_index(caller.tier.as_deref()));
        let mut failed_on_tier = 0u32;
        let mut attempt = 0u32;
        let mut avoid = None;
        // What the prompt cache serves does not count toward the input-tokens limit: the prefix the last answer
        // read or wrote is left out (the settlement corrects a miss).
        let cached = if side_call { 0 } else { caller.cached };
        let input_estimate = estimate_input_tokens(request).saturating_sub(cached).max(1);
        loop {
            attempt += 1;
            let Some((pool, model, tier_name, options)) = self.target(tier) else {
                return Err(LlmFailure {
                    kind: LlmErrorKind::NoProvider,
                    message: "no model provider: set ANTHROPIC_API_KEY or OPENAI_API_KEY for the supervisor, or name \
                              key pools in api-keys.yaml"
                        .into(),
                    status: None,
                    retryable: false,
                    retry_after_ms: None,
                });
            };
            let mut request = request.clone();
            if model.is_some() {
                request.model = model;
            }
            let cost = Cost::request(input_estimate, u64::from(request.max_tokens));
            let mut queued = false;
            let grant = {
                let mut on_wait = |waited: Duration, ahead: usize| {
                    queued = true;
                    let detail = format!(
                        "queued for {}s behind {ahead} request{} (rate limit of pool {})",
                        waited.as_secs(),
                        if ahead == 1 { "" } else { "s" },
                        pool.name
                    );
                    on_notice(Notice::Queued(Some(detail)));
                };
                pool.acquire(&caller.tree, caller.priority, cost, avoid, &mut on_wait).await?
            };
            if queued {
                on_notice(Notice::Queued(None));
            }
            // The head's rate-limit headers are learnt as soon as it arrives, before the body: the queue goes on.
            let mut on_headers = |h: &reqwest::header::HeaderMap| {
                grant.observe(RateHeaders::parse(h, chrono::Utc::now()).as_ref());
            };
            let result = grant.provider.complete_observed(&request, options, on_delta, &mut on_headers).await;
            let failure = match result {
                Ok(response) => {
                    let u = response.usage;
                    let input = u.input_tokens.saturating_add(u.cache_creation_input_tokens);
                    grant.settle(Some(Cost::request(input, u.output_tokens)), None);
                    if !side_call {
                        caller.cached = u.cache_read_input_tokens.saturating_add(u.cache_creation_input_tokens);
                    }
                    return Ok(response);
                }
                Err(failure) => failure,
            };
            let retry_after = failure.retry_after_ms.map(Duration::from_millis);
            let key = grant.key;
            match failure.kind {
                LlmErrorKind::SpendLimit => {
                    grant.settle(None, None);
                    return Err(failure);
                }
                LlmErrorKind::Auth if failure.status.is_some() => {
                    let label = grant.label.clone();
                    grant.settle(None, None);
                    pool.revoke(key, failure.message.clone());
                    tracing::error!(pool = %pool.name, key = %label, error = %failure, "key refused; taken out of the pool");
                    on_notice(Notice::KeyRevoked { pool: pool.name.clone(), key: label, reason: failure.to_string() });
                    // Another key of the pool may serve it; with none left, acquire says so.
                    continue;
                }
                LlmErrorKind::RateLimited => {
                    // Refused before it was counted: refund, learn, and pause the key for the provider's wait.
                    let pause = retry_after.unwrap_or(BACKOFF);
                    grant.settle(None, Some(pause));
                    avoid = Some(key);
                    tracing::warn!(pool = %pool.name, attempt, ?pause, error = %failure, "rate limited; requeued");
                    if attempt >= ATTEMPTS * 2 {
                        return Err(failure);
                    }
                    continue;
                }
                _ => grant.settle(Some(Cost::request(input_estimate, 0)), None),
            }
            failed_on_tier += 1;
            let next = tier.map(|t| t + 1).filter(|&t| t < self.tiers.len());
            if self.auto_escalate
                && !side_call
                && let Some(next) = next
                && failed_on_tier >= self.escalate_after_retries.max(1)
                && failure.kind != LlmErrorKind::NoProvider
            {
                let to = self.tiers[next].name.clone();
                tracing::warn!(task = %caller.task, from = %tier_name, %to, error = %failure, "escalating");
                on_notice(Notice::Escalated { from: tier_name, to: to.clone(), reason: failure.to_string() });
                caller.tier = Some(to);
                tier = Some(next);
                failed_on_tier = 0;
                attempt = 0;
                avoid = None;
                continue;
            }
            if !failure.retryable || failed_on_tier >= ATTEMPTS {
                return Err(failure);
            }
            let wait = retry_after.unwrap_or_else(|| backoff(failed_on_tier)).min(MAX_WAIT);
            avoid = Some(key);
            tracing::warn!(attempt, error = %failure, ?wait, "model call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

fn describe(config: &PoolConfig, first: String) -> String {
    let n = config.keys.len();
    format!("{}: {first} ({n} key{})", config.name, if n == 1 { "" } else { "s" })
}

/// Exponential backoff with full jitter on top: attempt 1 waits 0.5–0.75 s, 2 waits 1–1.25 s, …
pub fn backoff(attempt: u32) -> Duration {
    BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1)).min(1 << 10)
        + Duration::from_millis(rand::random_range(0..250))
}

/// Input tokens of a request, estimated at four bytes of JSON per token (what is reserved before sending; the
/// reported usage replaces it).
pub fn estimate_input_tokens(request: &ChatRequest) -> u64 {
    let bytes = request.system.len()
        + serde_json::to_vec(&request.messages).map_or(0, |v| v.len())
        + serde_json::to_vec(&request.tools).map_or(0, |v| v.len());
    (bytes as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use neuraphage_ipc::broker::ModelTier;
    use neuraphage_ipc::llm::Message;
    use neuraphage_llm_double::{HttpError, LlmDouble, Reply, Step, policy};

    use super::*;
    use crate::keys::KeyConfig;
    use crate::provider::{ProviderConfig, ProviderKind};

    fn tier(name: &str, model: &str) -> ModelTier {
        ModelTier {
            name: name.into(),
            provider: "anthropic".into(),
            model: model.into(),
            pool: "main".into(),
            context_tokens: None,
            thinking_budget: None,
            prompt_caching: true,
        }
    }

    fn routes(double: &LlmDouble, tiers: Vec<ModelTier>) -> Result<Routes, String> {
        let provider = ProviderConfig {
            base_url: double.anthropic_base_url(),
            ..ProviderConfig::new(ProviderKind::Anthropic, "sk-router-test")
        };
        let pool = PoolConfig {
            name: "main".into(),
            kind: ProviderKind::Anthropic,
            window: Duration::from_secs(60),
            keys: vec![KeyConfig { label: "main#1".into(), provider, limits: Default::default() }],
        };
        let settings = BrokerSettings { tiers, auto_escalate: true, escalate_after_retries: 1 };
        Routes::build(&[pool], &settings, None).map(|(routes, _)| routes)
    }

    fn request(tier: Option<&str>) -> ChatRequest {
        ChatRequest {
            model: None,
            system: "sys".into(),
            messages: vec![Message::user_text("hi")],
            tools: vec![],
            max_tokens: 100,
            tier: tier.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn a_request_runs_on_its_own_tier_with_that_tiers_options_and_never_escalates() {
        let double = LlmDouble::start().await.expect("double");
        double.set_policy(policy(|r| match r.model() {
            Some("m-router") => Step::HttpError(HttpError::new(400).message("router refuses")),
            _ => Step::Reply(Reply::text("ok")),
        }));
        let router = ModelTier { prompt_caching: false, ..tier("router", "m-router") };
        let worker = ModelTier { thinking_budget: Some(2048), ..tier("worker", "m-worker") };
        let routes = routes(&double, vec![router, worker, tier("expert", "m-expert")]).expect("routes");
        let mut caller = Caller::new(TaskId::from_bits(7), 2, Some("worker".into()));
        let mut notices = Vec::new();

        // The task's own tier: its model, thinking and caching.
        routes.complete(&mut caller, &request(None), &mut |_| {}, &mut |n| notices.push(n)).await.expect("worker");
        let sent = double.last_request().expect("sent");
        assert_eq!(sent.model(), Some("m-worker"));
        assert_eq!(sent.body["thinking"]["budget_tokens"], 2048);
        assert_eq!(sent.body["max_tokens"], 2148);
        assert!(sent.raw_body.contains("cache_control"));

        // A request on `router`: that tier's model and options; its failure is the request's, with no escalation
        // (auto-escalate is on, after one failure) and the task stays on its tier.
        let failure = routes
            .complete(&mut caller, &request(Some("router")), &mut |_| {}, &mut |n| notices.push(n))
            .await
            .expect_err("router refuses");
        assert_eq!(failure.kind, LlmErrorKind::InvalidRequest);
        let sent = double.last_request().expect("sent");
        assert_eq!(sent.model(), Some("m-router"));
        assert!(!sent.raw_body.contains("cache_control"), "caching is off on router");
        assert_eq!(sent.body.get("thinking"), None);
        assert_eq!(double.requests().len(), 2, "no retry or escalation of a 400 on its own tier");
        assert_eq!(caller.tier.as_deref(), Some("worker"));
        assert!(notices.iter().all(|n| !matches!(n, Notice::Escalated { .. })), "{notices:?}");

        // A tier that is not configured falls back to the caller's.
        let mut routes_two = routes.clone();
        routes_two.tiers.retain(|t| t.name != "router");
        routes_two.complete(&mut caller, &request(Some("router")), &mut |_| {}, &mut |_| {}).await.expect("worker");
        assert_eq!(double.last_request().expect("sent").model(), Some("m-worker"));
    }

    #[tokio::test]
    async fn a_thinking_budget_below_the_minimum_is_refused_by_name() {
        let double = LlmDouble::start().await.expect("double");
        let err = routes(&double, vec![ModelTier { thinking_budget: Some(100), ..tier("worker", "m") }])
            .expect_err("refused");
        assert!(err.contains("model-tiers.worker.thinking.budget-tokens") && err.contains("1024"), "{err}");
    }
}
