#!/usr/bin/env bash
# Runs omni-bench against two builds of the server side by side, alternating runs (A, B, A, B,
# ...), and prints each row's median with min-max for both and the ratio B/A.
#
#   scripts/bench-compare.sh OLD_TARGET_DIR NEW_TARGET_DIR RUNS OUT_DIR -- <omni-bench args>
#
# OLD/NEW_TARGET_DIR: cargo target dirs holding release/omni-bench-server (e.g. a `git worktree`
# of the baseline commit built with CARGO_TARGET_DIR=...). Both servers are driven by the same
# load generator, NEW_TARGET_DIR/release/omni-bench (`--server PATH`), so only the server
# differs. Each run is one invocation with `--runs 1 --json OUT_DIR/<label>-<i>.json`; pass the
# scenario (--clients, --models, --rate, --secs, ...) after `--`. Needs python3 for the summary.
set -euo pipefail
old=$1 new=$2 runs=$3 out=$4
shift 4
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
for i in $(seq 1 "$runs"); do
  for label in old new; do
    dir=$old; [ "$label" = new ] && dir=$new
    echo "== run $i: $label" >&2
    "$new/release/omni-bench" --quiet --runs 1 --server "$dir/release/omni-bench-server" \
      --json "$out/$label-$i.json" "$@" >/dev/null
  done
done
python3 "$(dirname "$0")/bench-summary.py" "$out"
