//! `neuraphage-broker`: the only process that sees API keys; it holds the rate limiter, the lock table and the LLM
//! HTTP clients, and serves workers over socketpairs the supervisor hands them.
//!
//! **Not built yet.** This crate holds its place in the architecture; it has no code and no binary, and nothing
//! starts it. See `docs/ARCHITECTURE.md`.
#![deny(missing_docs)]

pub mod provider;
