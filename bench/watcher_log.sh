#!/usr/bin/env bash
# `neuraphage watcher log` over a store of ~200 000 events (100 of them interventions), with the V12 events_by_kind
# index and then without it (dropped on a copy of the same store): the mean wall time of one CLI call, 20 calls each.
# Usage: bench/watcher_log.sh [target/debug|target/release]   (needs sqlite3; a figure, not a test)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug}
tmp=$(mktemp -d)
trap 'kill "$sup" 2>/dev/null || true; rm -rf "$tmp"' EXIT
export NEURAPHAGE_HOME=$tmp/home NEURAPHAGE_RUNTIME_DIR=$tmp/run
sup=
start() {
    "$bin/neuraphage-supervisor" 2>/dev/null & sup=$!
    for _ in $(seq 200); do "$bin/neuraphage" task list >/dev/null 2>&1 && return; sleep 0.05; done
    echo "the supervisor did not start" >&2; exit 1
}
stop() { kill -TERM "$sup"; wait "$sup" || true; }
start
task=$("$bin/neuraphage" task new "bench task" --json | sed -n 's/.*"id": *"\(np-[0-9a-f]*\)".*/\1/p' | head -1)
stop
sqlite3 "$NEURAPHAGE_HOME/neuraphage.db" <<SQL
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
INSERT INTO events (task, at, kind, data)
SELECT '$task', 1700000000000 + i,
  CASE WHEN i % 2000 = 0 THEN 'watcher_intervened' ELSE 'tool_call' END,
  CASE WHEN i % 2000 = 0
    THEN '{"kind":"watcher_intervened","data":{"rule":"same_failing_action","recommendation":"nudge","diagnosis":"bench","confidence":90}}'
    ELSE '{"kind":"tool_call","data":{"tool":"Bash","tool_use_id":"t' || i || '","input":"make"}}' END
FROM n;
SQL
echo "events: $(sqlite3 "$NEURAPHAGE_HOME/neuraphage.db" 'SELECT count(*) FROM events')"
measure() {
    start
    "$bin/neuraphage" watcher log --json >/dev/null
    local t0 t1
    t0=$(date +%s%N)
    for _ in $(seq 20); do "$bin/neuraphage" watcher log --json >/dev/null; done
    t1=$(date +%s%N)
    echo "$1: $(( (t1 - t0) / 20 / 1000000 )) ms per watcher log ($("$bin/neuraphage" watcher log --json | grep -o '"seq"' | wc -l) entries)"
    stop
}
measure "with events_by_kind"
sqlite3 "$NEURAPHAGE_HOME/neuraphage.db" 'DROP INDEX events_by_kind'
measure "without the index (before V12)"
