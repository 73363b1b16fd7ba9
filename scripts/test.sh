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

step "cargo test (unit, trybuild, end-to-end)"
cargo test --workspace

# Node client tests and the browser test drive the game example as a real process.
step "build the game example"
cargo build -p example-game
export OMNI_GAME_BIN="$root/target/debug/example-game"
cargo build -p omni-tests --bin channels-server
export OMNI_CHANNELS_BIN="$root/target/debug/channels-server"

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
    if [ -x /usr/bin/chromium ]; then
      step "browser test (headless Chromium)"
      (cd tests/node && node --test browser.test.mjs)
    else
      echo "skipping the browser test: Chromium is not installed and cannot be installed here" >&2
    fi
  fi
fi

step "all tests passed"
