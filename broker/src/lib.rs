//! `neuraphage-broker`: the only process that sees API keys. It holds the LLM HTTP clients and serves workers'
//! model calls over the socketpairs the supervisor hands it, streaming deltas back and retrying what may be retried.
//!
//! Library: [`provider`] (Anthropic Messages and OpenAI chat completions clients, streaming SSE), [`keys`]
//! (`api-keys.yaml` and its key pools), [`locks`] (the lock table), [`limiter`] (one key's limits as token [`bucket`]s:
//! reserve, settle, learn from [`rate_headers`]; a [`window_log`] for providers that meter by window; [`learnt`]
//! keeps what was learnt across restarts), [`pool`] (a pool's keys and its fair priority queue) and [`router`] (the request path: tiers,
//! retries, failover, escalation). The binary (`src/main.rs`) adds the links: `handoff.rs` receives worker links
//! (SCM_RIGHTS), `serve.rs` serves one worker.
#![deny(missing_docs)]

pub mod bucket;
pub mod keys;
pub mod learnt;
pub mod limiter;
pub mod locks;
pub mod pool;
pub mod provider;
pub mod rate_headers;
pub mod router;
pub mod window_log;
