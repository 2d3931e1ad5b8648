//! `neuraphage-broker`: the only process that sees API keys. It holds the LLM HTTP clients and serves workers'
//! model calls over the socketpairs the supervisor hands it, streaming deltas back and retrying what may be retried.
//!
//! Library: [`provider`] (Anthropic Messages and OpenAI chat completions clients, streaming SSE) and [`keys`]
//! (`api-keys.yaml`). The binary (`src/main.rs`) adds the links: `handoff.rs` receives worker links (SCM_RIGHTS),
//! `serve.rs` serves one worker. **Not built yet:** key pools, model tiers, the shared rate limiter and priority
//! queue, the lock table and cost metering (the broker issue).
#![deny(missing_docs)]

pub mod keys;
pub mod provider;
