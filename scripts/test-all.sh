#!/usr/bin/env bash
# Runs every test of vouchnet: formatting, lints, unit, property, integration and
# crash tests, then each fuzz target for a bounded time. This is the README's test command
# and what CI (.ci/run) runs. It says plainly what it skips and why.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, property, integration, crash)"
cargo test --workspace --locked

step "fuzz targets (bounded)"
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"

step "all tests passed"
