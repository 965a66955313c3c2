#!/usr/bin/env bash
# The test command: installs what the tests need, builds once, and runs every test (unit,
# grammar, CLI, property and the end-to-end tests against real registries and clients) with
# cargo-nextest, each test in its own process, in parallel.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/deps.sh
cargo build --workspace --all-targets --locked
export PROPTEST_CASES=${PROPTEST_CASES:-2000}
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
bash scripts/fuzz.sh --ci
