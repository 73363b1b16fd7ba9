#!/usr/bin/env bash
# Omni.js 0.2.6 (from npm, installed here in bench/omnijs/node_modules on the first run) against
# Omni for Rust, under one Node load generator (load.mjs). Not part of the test command; slow.
#
#   bench/omnijs/run.sh --clients 1000 --models 100 --rates 20,200 --secs 5 --runs 5 [--json FILE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ ! -d "$here/node_modules/omni" ] || [ ! -d "$here/node_modules/ws" ]; then
  (cd "$here" && npm install --no-audit --no-fund --silent)
fi
server="$root/target/release/omni-bench-server"
[ -x "$server" ] || (cd "$root" && cargo build --release -p omni-bench --bin omni-bench-server)
exec node "$here/load.mjs" --omni-server "$server" "$@"
