#!/usr/bin/env bash
# Runs the Autobahn TestSuite (through kosoku) in both directions and checks
# every case against the results recorded under conformance/:
#   server mode: kosoku's fuzzing client drives examples/echo_server;
#   client mode: examples/autobahn_client drives kosoku's fuzzing server.
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
kosoku="$venv/bin/kosoku"

cargo build --quiet --release --example echo_server --example autobahn_client
out=target/autobahn
rm -rf "$out"
mkdir -p "$out/server" "$out/client"

wait_for_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

status=0

server_port="${AUTOBAHN_SERVER_PORT:-9001}"
./target/release/examples/echo_server "127.0.0.1:$server_port" >"$out/echo_server.log" 2>&1 &
pids+=($!)
wait_for_port "$server_port"
timeout 1200 "$kosoku" -m fuzzingclient -o "$out/server" "127.0.0.1:$server_port" \
  >"$out/kosoku-fuzzingclient.log" 2>&1 || tail -20 "$out/kosoku-fuzzingclient.log"
python3 conformance/check.py "$out/server" conformance/autobahn-server.json "$@" || status=1

client_port="${AUTOBAHN_CLIENT_PORT:-9002}"
timeout 1200 "$kosoku" -m fuzzingserver -o "$out/client" "127.0.0.1:$client_port" \
  >"$out/kosoku-fuzzingserver.log" 2>&1 &
fuzzingserver=$!
pids+=($fuzzingserver)
wait_for_port "$client_port"
timeout 1200 ./target/release/examples/autobahn_client "ws://127.0.0.1:$client_port" >"$out/autobahn_client.log" 2>&1 \
  || { echo "autobahn_client failed:"; tail -20 "$out/autobahn_client.log"; }
wait "$fuzzingserver" || true
python3 conformance/check.py "$out/client" conformance/autobahn-client.json "$@" || status=1

exit $status
