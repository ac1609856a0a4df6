#!/usr/bin/env bash
# Runs the Autobahn TestSuite (through kosoku) in both directions, for the
# async API and for the blocking one, and checks every case against the
# results recorded under conformance/:
#   server mode: kosoku's fuzzing client drives examples/echo_server
#                (and examples/blocking_echo_server, and examples/axum_echo
#                over HTTP/1.1: the axum extractor in a hyper server);
#   client mode: examples/autobahn_client (and blocking_autobahn_client)
#                drives kosoku's fuzzing server.
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

SERVERS=(echo_server blocking_echo_server axum_echo)
CLIENTS=(autobahn_client blocking_autobahn_client)
examples=()
for name in "${SERVERS[@]}" "${CLIENTS[@]}"; do examples+=(--example "$name"); done
cargo build --quiet --release --features blocking,axum "${examples[@]}"
out=target/autobahn
rm -rf "$out"
mkdir -p "$out"

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
port="${AUTOBAHN_PORT:-9001}"

# server_mode NAME EXPECTED [PARALLELISM]: kosoku's fuzzing client against
# examples/NAME, running PARALLELISM cases at a time (default 1).
server_mode() {
  local name=$1 expected=$2 parallelism=${3:-1} dir="$out/$1"
  mkdir -p "$dir"
  ./target/release/examples/"$name" "127.0.0.1:$port" >"$dir/server.log" 2>&1 &
  local server=$!
  pids+=($server)
  wait_for_port "$port"
  timeout 1200 "$kosoku" -m fuzzingclient -p "$parallelism" -o "$dir" "127.0.0.1:$port" >"$dir/kosoku.log" 2>&1 \
    || tail -20 "$dir/kosoku.log"
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  python3 conformance/check.py "$dir" "$expected" "${check_args[@]}" || status=1
  port=$((port + 1))
}

# client_mode NAME EXPECTED: examples/NAME against kosoku's fuzzing server.
client_mode() {
  local name=$1 expected=$2 dir="$out/$1"
  mkdir -p "$dir"
  timeout 1200 "$kosoku" -m fuzzingserver -o "$dir" "127.0.0.1:$port" >"$dir/kosoku.log" 2>&1 &
  local fuzzingserver=$!
  pids+=($fuzzingserver)
  wait_for_port "$port"
  timeout 1200 ./target/release/examples/"$name" "ws://127.0.0.1:$port" >"$dir/client.log" 2>&1 \
    || { echo "$name failed:"; tail -20 "$dir/client.log"; }
  wait "$fuzzingserver" || true
  python3 conformance/check.py "$dir" "$expected" "${check_args[@]}" || status=1
  port=$((port + 1))
}

check_args=("$@")
server_mode echo_server conformance/autobahn-server.json
server_mode blocking_echo_server conformance/autobahn-blocking-server.json
# kosoku dials `/`, which axum_echo answers with the same echo as `/ws`. Two
# cases at a time: half the time, and connections served side by side.
server_mode axum_echo conformance/autobahn-axum-server.json 2
client_mode autobahn_client conformance/autobahn-client.json
client_mode blocking_autobahn_client conformance/autobahn-blocking-client.json

exit $status
