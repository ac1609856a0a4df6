#!/usr/bin/env bash
# Runs the Autobahn TestSuite (through kosoku) against examples/echo_server and
# checks every case against conformance/autobahn-server.json.
#
#   scripts/conformance.sh            # check
#   scripts/conformance.sh --update   # record the current results as expected
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${KOSOKU_VENV:-.venv}"
if [ ! -x "$venv/bin/kosoku" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kosoku==0.1.0
fi

cargo build --quiet --release --example echo_server
port="${AUTOBAHN_PORT:-9001}"
reports="target/autobahn/server"
rm -rf "$reports"
mkdir -p "$reports"

./target/release/examples/echo_server "127.0.0.1:$port" >target/autobahn/echo_server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

# Sections 12 and 13 (permessage-deflate) are not negotiated yet.
timeout 1200 "$venv/bin/kosoku" -m fuzzingclient -x '12.*' -x '13.*' -o "$reports" "127.0.0.1:$port" \
  >target/autobahn/kosoku-server.log 2>&1 || { tail -20 target/autobahn/kosoku-server.log; }
python3 conformance/check.py "$reports" conformance/autobahn-server.json "$@"
