#!/usr/bin/env bash
# Build the release binaries, then run every benchmark against them. Pass --quick for a short smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
cargo bench -p neuraphage-bench --bench task_new -- "$@"
cargo bench -p neuraphage-bench --bench tasks -- "$@"
cargo bench -p neuraphage-bench --bench recovery -- "$@"
cargo bench -p neuraphage-bench --bench sandbox -- "$@"
cargo bench -p neuraphage-bench --bench locks -- "$@"
cargo bench -p neuraphage-bench --bench rate_limit -- "$@"
cargo bench -p neuraphage-bench --bench conversation -- "$@"
cargo bench -p neuraphage-bench --bench private_repo -- "$@"
cargo bench -p neuraphage-bench --bench waiting -- "$@"
cargo bench -p neuraphage-bench --bench attach -- "$@"
cargo bench -p neuraphage-bench --bench caching -- "$@"
cargo bench -p neuraphage-bench --bench compaction -- "$@"
cargo bench -p neuraphage-bench --bench tui -- "$@"
cargo bench -p neuraphage-bench --bench knowledge -- "$@"
cargo bench -p neuraphage-bench --bench watcher -- "$@"
cargo bench -p neuraphage-bench --bench status -- "$@"
