#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (policy and justified exceptions in deny.toml).
# Licences, bans and sources are checked offline. Advisories need the RustSec database,
# fetched from its git host; when that cannot be reached this script says so plainly.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deny --version >/dev/null 2>&1; then
  echo "cargo-deny not found; installing it (cargo install cargo-deny --locked)"
  if ! cargo install cargo-deny --locked >/tmp/cargo-deny-install.log 2>&1; then
    echo "SKIPPED cargo-deny: could not install it (see /tmp/cargo-deny-install.log)"
    exit 0
  fi
fi
cargo deny --offline check licenses bans sources
if cargo deny check advisories >/tmp/cargo-deny-advisories.log 2>&1; then
  echo "advisories ok"
elif grep -q "failed to fetch advisory database" /tmp/cargo-deny-advisories.log; then
  echo "SKIPPED cargo-deny advisories: the RustSec database could not be fetched (no network access to its git host)"
else
  cat /tmp/cargo-deny-advisories.log
  exit 1
fi
