#!/usr/bin/env bash
# Installs, as root, the Debian packages the test suites need when they are missing:
# iproute2 (ip, tc, bridge) and nftables for the network-namespace mesh, chromium and
# chromium-driver for the browser test. Says what it installs; fails loudly if it cannot.
set -euo pipefail
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -eq 0 ]; then
  echo "system packages present: iproute2, nftables, chromium, chromium-driver"
  exit 0
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${need[@]}" >/tmp/vouchnet-apt.log 2>&1; then
  apt-get update >>/tmp/vouchnet-apt.log 2>&1
  apt-get install -y --no-install-recommends "${need[@]}" >>/tmp/vouchnet-apt.log 2>&1 || {
    echo "could not install ${need[*]} (see /tmp/vouchnet-apt.log)"; tail -5 /tmp/vouchnet-apt.log; exit 1; }
fi
echo "installed: ${need[*]}"
