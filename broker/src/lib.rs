//! `neuraphage-broker`: the only process that sees API keys. It holds the LLM HTTP clients and serves workers'
//! model calls over the socketpairs the supervisor hands it, streaming deltas back and retrying what may be retried.
//!
//! Library: [`provider`] (Anthropic Messages and OpenAI chat completions clients, streaming SSE), [`keys`]
//! (`api-keys.yaml`) and [`locks`] (the lock table). The binary (`src/main.rs`) adds the links: `handoff.rs` receives worker links (SCM_RIGHTS),
//! `serve.rs` serves one worker. **Not built yet:** key pools, model tiers, the shared rate limiter and priority
//! queue, and cost metering beyond reporting usage (the broker issue).
#![deny(missing_docs)]

pub mod keys;
pub mod locks;
pub mod provider;
