//! `neuraphage-worker`: one OS process per running task, in the task's worktree and sandbox.
//!
//! **Not built yet.** This crate holds its place in the architecture so the workspace shows the design; it has no
//! code and no binary, and nothing starts it. It arrives with the issue "Tasks run for real": the worker inherits
//! its supervisor and broker links as socketpairs, applies its sandbox profile to itself before any task code runs,
//! and runs the agent loop and its tools. See `docs/ARCHITECTURE.md`.
#![deny(missing_docs)]
