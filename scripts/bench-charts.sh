#!/usr/bin/env bash
# Regenerates the SVG charts of docs/BENCHMARKS.md and the README (docs/bench/charts/) from the
# runs kept in docs/bench/: Omni against the floor (docs/bench/sweep, omni-bench's --json runs)
# and Omni against Omni.js 0.2.6 (docs/bench/omnijs/runs.jsonl, bench/omnijs/run.sh --json).
#
#   scripts/bench-charts.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p omni-bench --bin omni-bench-charts
charts=target/release/omni-bench-charts
$charts --runs docs/bench/sweep --label old=floor --label "new=Omni for Rust" \
  --title "Omni and the floor, 100 players: " --prefix floor- --out docs/bench/charts
$charts --runs docs/bench/omnijs --label "omnijs=Omni.js 0.2.6" --label "omni=Omni for Rust" \
  --title "Omni and Omni.js, 1,000 clients, 100 players: " --prefix omnijs- --out docs/bench/charts
