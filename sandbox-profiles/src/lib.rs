//! Sandbox profiles: TOML files (filesystem, network, resource limits, denied syscalls) shipped in this folder and
//! overridable per user and per task, and the code that loads and checks them.
//!
//! **Not built yet.** No profile ships and nothing is enforced: `task new --profile NAME` only records the name
//! (checked to be a well-formed name). Profiles and the worker's Landlock, seccomp and limits come with the
//! sandbox issue. See `docs/ARCHITECTURE.md`.
#![deny(missing_docs)]
