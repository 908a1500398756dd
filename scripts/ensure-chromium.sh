#!/usr/bin/env bash
# Makes sure headless Chromium and chromedriver (Debian packages `chromium` and
# `chromium-driver`) are installed, for the web UI's browser test (node/tests/browser.rs).
#
# Installs them with apt-get when they are missing and this runs as root; otherwise says
# plainly why it cannot and exits 1. Exits 0 when both are present. Idempotent.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

present() { [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; }

if present; then
  exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "ensure-chromium: $CHROMIUM or $CHROMEDRIVER is missing and this is not root; install the Debian packages chromium and chromium-driver" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure-chromium: $CHROMIUM or $CHROMEDRIVER is missing and there is no apt-get here; install chromium and chromedriver" >&2
  exit 1
fi
echo "ensure-chromium: installing chromium and chromium-driver with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
# Try without refreshing the package lists first (fast when they are recent), then with.
if ! apt-get install -y -q chromium chromium-driver >&2; then
  apt-get update -q >&2
  apt-get install -y -q chromium chromium-driver >&2
fi
if present; then
  exit 0
fi
echo "ensure-chromium: apt-get finished but $CHROMIUM or $CHROMEDRIVER is still missing" >&2
exit 1
