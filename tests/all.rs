//! Cross-process tests: the real `neuraphage-supervisor` and `neuraphage` binaries in temporary homes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod suite;
