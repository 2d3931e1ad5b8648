//! `neuraphage-worker`: one OS process per running task, in the task's worktree and sandbox.
//!
//! **Built so far: the agent's tools** ([`tools`]: Read, Write, Edit, Bash, Glob, Grep), which run inside this
//! process, in the task's worktree, under its sandbox. **Next: the agent loop** that inherits the supervisor and
//! broker links as socketpairs, applies the sandbox profile to itself, asks the model for turns and runs the tools
//! it calls. See `docs/ARCHITECTURE.md`.
#![deny(missing_docs)]

pub mod compact;
pub mod context;
pub mod drift;
pub mod instructions;
pub mod skills;
pub mod tokens;
pub mod tools;
