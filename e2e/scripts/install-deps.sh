#!/usr/bin/env bash
# Installs the Debian packages that ferrolb's end-to-end tests, demo and benchmarks drive.
# Idempotent: installs only what is missing. Needs root.
set -euo pipefail
pkgs=(iproute2 iputils-arping iputils-ping ndisc6 bird2 gobgpd frr exabgp tcpdump tshark socat curl procps psmisc umoci)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer no without a prompt.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections || true
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
