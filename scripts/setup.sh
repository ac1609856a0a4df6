#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian or Ubuntu machine and
# does nothing when it is all there: the real peers the tests start (an HTTP
# CONNECT proxy, a SOCKS5 proxy, redis-server, headless Chromium), Python's
# venv for the Autobahn driver and the Python peer, Node for the Node peers,
# procps for `kill`, and OpenSSL's headers for the native-tls feature. The
# tests fail, rather than skip, without them.
# Needs root or sudo when something is missing.
set -euo pipefail

need=()
command -v tinyproxy >/dev/null || need+=(tinyproxy)
command -v microsocks >/dev/null || need+=(microsocks)
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || [ -n "${CHROMIUM:-}" ] || need+=(chromium)
command -v kill >/dev/null && [ -x /bin/kill ] || need+=(procps)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
command -v npm >/dev/null || need+=(nodejs npm)
command -v taskset >/dev/null || need+=(util-linux)
# The native-tls feature builds against the system's OpenSSL.
command -v pkg-config >/dev/null || need+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "== installing: ${need[*]}"
sudo=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "setup.sh: need root or sudo to install ${need[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
command -v apt-get >/dev/null || { echo "setup.sh: install ${need[*]} (no apt-get here)" >&2; exit 1; }
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
