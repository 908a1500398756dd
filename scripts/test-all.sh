#!/usr/bin/env bash
# Runs every test of vouchnet: formatting, lints, unit, property, integration, crash,
# multi-process, simulation, browser and network-namespace suites, the QUIC build's suite,
# then each fuzz target for a bounded time. This is the README's test command and what CI (.ci/run) runs.
#
# As root (as in CI) it installs the system packages the suites need (iproute2, nftables,
# chromium, chromium-driver) and makes the browser, network-namespace and full-disk (tmpfs)
# suites mandatory. Without root those suites print "SKIPPED ...: <why>" and the summary
# below says so.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
skipped=()

# A clean clone gains nothing from incremental compilation, and its caches would double the
# disk the build takes (this script is what CI runs on a fresh clone).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Free space where the build goes, so that a build that runs out of disk says why up front.
disk_free() { df -Pk "${CARGO_TARGET_DIR:-target}" 2>/dev/null | awk 'NR==2 {printf "%.1f GiB free", $4/1048576}'; }
mkdir -p "${CARGO_TARGET_DIR:-target}"
echo "disk: $(disk_free) for the build (a clean build of everything below peaks at about 3.5 GiB)"

if [ "$(id -u)" = "0" ]; then
  step "system packages (root)"
  scripts/ensure-packages.sh
  export VOUCHNET_NETNS=required
  export VOUCHNET_BROWSER=required
  export VOUCHNET_FULL_DISK=required
else
  skipped+=("network-namespace mesh (needs root)" "full-disk tests on a tmpfs (need root)" "browser test unless chromium and chromedriver are installed")
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# `run_tests LOG ARGS...`: `cargo test ARGS... -- --nocapture`, its output kept in LOG;
# on failure, the failing tests and panics, then exit with cargo's status.
run_tests() {
  local log=$1
  shift
  set +e +o pipefail
  cargo test "$@" -- --nocapture 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  set -e -o pipefail
  if [ "$status" != "0" ]; then
    echo "cargo test failed (full output: $log):"
    grep -E '^(failures:|    [a-z_:]+$)|panicked' "$log" | head -40
    exit "$status"
  fi
}

step "cargo test (unit, property, integration, crash, full and failing disk, multi-process, simulation, browser, netns)"
mkdir -p target
run_tests target/test-all.log --workspace --locked
echo "test binaries and results:"
grep -cE '^test result: ok' target/test-all.log | sed 's/^/  test binaries passed: /'
grep -h '^SKIPPED' target/test-all.log | sort -u | sed 's/^/  /' || true

step "QUIC transport (a build with the quic feature: lints, the node's unit tests, tests/quic.rs)"
cargo clippy -p vouchnet-node --features quic --all-targets --locked -- -D warnings
run_tests target/test-quic.log -p vouchnet-node --features quic --locked --lib --test quic
grep -cE '^test result: ok' target/test-quic.log | sed 's/^/  test binaries passed (quic build): /'

step "supply chain (cargo-deny)"
scripts/deny.sh

step "fuzz targets (bounded)"
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"

step "all tests passed"
echo "disk: $(disk_free) after the build"
if [ ${#skipped[@]} -gt 0 ]; then
  printf 'skipped (not root): %s\n' "${skipped[@]}"
fi
