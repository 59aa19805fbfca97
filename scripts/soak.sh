#!/usr/bin/env bash
# The soak (issue 15): writers commit across tenants of every mode while
# random faults strike (PostgreSQL restarts, stalls, resets, refused
# connections, clients killed mid-transaction); then every acknowledged commit
# must be present exactly once, no server connection leaked, no panic.
#
#   scripts/soak.sh [DURATION]      DURATION: 30m (default), 120s, 2m, ...
#   PGTENANT_SOAK_SEED=N scripts/soak.sh 5m    replays a run's faults
#
# Starts its own throw-away PostgreSQL; the test suite (scripts/test.sh) runs
# 2 minutes of it. Prints each fault as it strikes and a summary at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-30m}"
case "$duration" in
  *m) secs=$(( ${duration%m} * 60 )) ;;
  *s) secs=${duration%s} ;;
  *) secs=$duration ;;
esac
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
PGTENANT_SOAK_SECS="$secs" cargo test --locked --test soak -- --ignored --nocapture
