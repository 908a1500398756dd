#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time (default 20 s each).
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 enables them on the stable toolchain.
# If cargo-fuzz is missing it is installed (from the crate registry) when that works, and
# otherwise this script says that it skipped fuzzing and why.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz not found; installing it (cargo install cargo-fuzz --locked)"
  if ! cargo install cargo-fuzz --locked >/tmp/cargo-fuzz-install.log 2>&1; then
    echo "SKIPPED fuzzing: could not install cargo-fuzz (see /tmp/cargo-fuzz-install.log)"
    exit 0
  fi
fi
for target in $(cargo fuzz list --fuzz-dir fuzz); do
  echo "fuzzing $target for ${secs}s"
  mkdir -p "fuzz/corpus/$target"
  cargo fuzz run --fuzz-dir fuzz --sanitizer none "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$secs" -max_len=70000 -rss_limit_mb=2048 2>&1 | tail -n 3
done
