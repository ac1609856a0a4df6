#!/usr/bin/env bash
# Load comparison of silverback against other Rust WebSocket servers, on
# 127.0.0.1 only. For each scenario and implementation: start the echo server
# pinned to CPU 0, run the load generator pinned to CPU 1, collect its
# figures, stop the server. Prints one Markdown table at the end.
#
#   load-bench/run.sh            # full run (about 9 minutes)
#   load-bench/run.sh --quick    # fewer seconds and connections (about 2 minutes)
#
# The release build goes to $CARGO_TARGET_DIR (default: the workspace's target/).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h | --help)
      sed -n '2,10p' "$0"
      exit 0
      ;;
    *)
      echo "run.sh: unknown argument $arg (use --quick)" >&2
      exit 2
      ;;
  esac
done

# The small, large and latency scenarios run in `rounds` rounds, each round
# going through every implementation once, and the table shows each figure's
# best value over the rounds (highest rate, lowest time): other load on a
# shared machine only ever makes a figure worse, so the best round is the
# least disturbed one, and a burst that spoils one round of one
# implementation does not decide the comparison.
rounds=5
if [ "$quick" = 1 ]; then
  small_conns=50 small_secs=1 warmup=0.3 large_secs=1 latency_count=3000 idle_conns=2000 handshake_secs=2
else
  small_conns=100 small_secs=3 warmup=0.5 large_secs=3 latency_count=10000 idle_conns=10000 handshake_secs=5
fi

impls=(silverback tokio-tungstenite fastwebsockets yawc tokio-websockets sockudo-ws raw-tcp)
peers=(tokio-tungstenite fastwebsockets yawc tokio-websockets sockudo-ws)
deflate_impls=(silverback yawc sockudo-ws)

command -v taskset >/dev/null || { echo "run.sh: taskset (util-linux) is needed" >&2; exit 1; }
if [ "$(nproc)" -lt 2 ]; then
  echo "run.sh: needs 2 CPUs (server on CPU 0, client on CPU 1)" >&2
  exit 1
fi

# Both processes hold one descriptor per idle connection, plus a few.
hard=$(ulimit -Hn)
want=$((idle_conns + 1024))
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
  idle_conns=$((hard - 1024))
  echo "run.sh: descriptor limit $hard: idle scenario uses $idle_conns connections" >&2
  want=$hard
fi
ulimit -n "$want"

echo "== building load-bench (release)" >&2
(cd "$root" && cargo build --release -p load-bench --quiet)
bin="${CARGO_TARGET_DIR:-$root/target}/release/load-bench"
[ -x "$bin" ] || { echo "run.sh: $bin not found" >&2; exit 1; }

logs="$(mktemp -d "${TMPDIR:-/tmp}/load-bench.XXXXXX")"
# Server ports below the kernel's ephemeral range, where the clients' own
# connections (tens of thousands in the idle scenario) take theirs.
port=$((10000 + RANDOM % 10000))
load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
started=$(date +%s)

declare -A result   # "case|impl|key" -> value
notes=()

# run_case CASE IMPL "server args" CLIENT-SCENARIO client args...
run_case() {
  local case="$1" impl="$2" server_args="$3" scenario="$4"
  shift 4
  local addr log="$logs/$case.$impl" spid i attempt
  # A port still in use (by an earlier run's socket in TIME_WAIT, say) is
  # skipped: a few tries on the next ports.
  for attempt in 1 2 3 4 5; do
    port=$((port + 1))
    addr="127.0.0.1:$port"
    # shellcheck disable=SC2086 # server_args is a list of flags
    taskset -c 0 "$bin" server "$impl" "$addr" $server_args >"$log.server.out" 2>"$log.server.err" &
    spid=$!
    for i in $(seq 100); do
      grep -q listening "$log.server.out" 2>/dev/null && break
      kill -0 "$spid" 2>/dev/null || break
      sleep 0.1
    done
    grep -q listening "$log.server.out" 2>/dev/null && break
    wait "$spid" 2>/dev/null || true
    grep -q "Address already in use" "$log.server.err" 2>/dev/null || break
  done
  if ! grep -q listening "$log.server.out" 2>/dev/null; then
    notes+=("$case/$impl: server did not start: $(head -c 300 "$log.server.err")")
    kill -KILL "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    return
  fi
  printf '   %-14s %-18s ' "$case" "$impl" >&2
  local rc=0
  taskset -c 1 timeout 300 "$bin" client "$scenario" "$addr" --server-pid "$spid" "$@" >"$log.client" 2>&1 || rc=$?
  kill -TERM "$spid" 2>/dev/null || true
  for i in $(seq 50); do
    kill -0 "$spid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true

  local key value
  while read -r _ kv; do
    key="${kv%%=*}" value="${kv#*=}"
    result["$case|$impl|$key"]="$value"
  done < <(grep '^RESULT ' "$log.client" || true)
  if [ "$rc" != 0 ]; then
    result["$case|$impl|failed"]=1
    notes+=("$case/$impl: client failed (exit $rc): $(grep -v '^RESULT\|^NOTE' "$log.client" | tail -n 2 | tr '\n' ' ' | head -c 400)")
  fi
  while read -r line; do
    notes+=("$case/$impl: ${line#NOTE }")
  done < <(grep '^NOTE ' "$log.client" || true)
  local summary
  summary="$(grep 'summary:' "$log.server.err" || true)"
  if [ -n "$summary" ] && ! grep -q 'errors=0$' <<<"$summary"; then
    notes+=("$case/$impl: ${summary#server } — first: $(grep -m1 '^server error' "$log.server.err" | head -c 300)")
  fi
  grep -v '^RESULT\|^NOTE\|CPU' "$log.client" | head -n 1 | cut -c1-110 >&2 || true
  [ "$rc" = 0 ] || echo "      (failed, see $log.client)" >&2
}

# merge_rounds CASE: the best over the rounds "CASE#1".."CASE#N" of every
# figure (the median for the CPU-use percentages), stored as CASE's; a
# failure in any round is a failure.
merge_rounds() {
  local case="$1" k impl key r v
  local -A keys=()
  for k in "${!result[@]}"; do
    [[ "$k" == "$case#"* ]] || continue
    IFS='|' read -r _ impl key <<<"$k"
    keys["$impl|$key"]=1
  done
  for k in "${!keys[@]}"; do
    IFS='|' read -r impl key <<<"$k"
    local values=()
    for r in $(seq "$rounds"); do
      v="${result["$case#$r|$impl|$key"]:-}"
      [ -n "$v" ] && values+=("$v")
    done
    local pick
    case "$key" in
      failed) result["$case|$impl|failed"]=1; continue ;;
      *_per_s) pick='END { print v[NR] }' ;;            # highest rate
      *_pct) pick='END { print v[int((NR + 1) / 2)] }' ;; # median
      *) pick='END { print v[1] }' ;;                  # lowest time or size
    esac
    result["$case|$impl|$key"]="$(printf '%s\n' "${values[@]}" | sort -g | awk "{ v[NR] = \$1 } $pick")"
  done
}

echo "== running (logs in $logs)" >&2
for round in $(seq "$rounds"); do
  for impl in "${impls[@]}"; do
    raw=()
    [ "$impl" = raw-tcp ] && raw=(--raw)
    run_case "small#$round" "$impl" "" small "${raw[@]}" --connections "$small_conns" --depth 8 --seconds "$small_secs" --warmup "$warmup"
  done
  for impl in "${impls[@]}"; do
    raw=()
    [ "$impl" = raw-tcp ] && raw=(--raw)
    run_case "large#$round" "$impl" "" large "${raw[@]}" --connections 4 --seconds "$large_secs" --warmup "$warmup"
  done
  for impl in "${impls[@]}"; do
    raw=()
    [ "$impl" = raw-tcp ] && raw=(--raw)
    run_case "latency#$round" "$impl" "" latency "${raw[@]}" --count "$latency_count"
  done
done
for case in small large latency; do
  merge_rounds "$case"
done
for impl in "${impls[@]}"; do
  [ "$impl" = raw-tcp ] && continue
  run_case idle "$impl" "" idle --connections "$idle_conns"
done
for impl in "${impls[@]}"; do
  [ "$impl" = raw-tcp ] && continue
  run_case handshakes "$impl" "" handshakes --workers 4 --seconds "$handshake_secs"
done
for impl in "${deflate_impls[@]}"; do
  run_case deflate "$impl" "--deflate" small --deflate --connections "$small_conns" --depth 8 --seconds "$small_secs" --warmup "$warmup"
done

load_end="$(cut -d' ' -f1-3 /proc/loadavg)"
elapsed=$(($(date +%s) - started))

# ---------------------------------------------------------------- the table
# rows: label | case | key | better (hi or lo)
rows=(
  "small: msg/s ($small_conns conn × 8 in flight, 32 B)|small|msgs_per_s|hi"
  "small: server CPU µs/msg|small|cpu_us_per_msg|lo"
  "large: GiB/s (4 conn × 1 MiB)|large|gib_per_s|hi"
  "large: server CPU µs per 1 MiB msg|large|cpu_us_per_msg|lo"
  "latency: p50 µs (32 B)|latency|p50_us|lo"
  "latency: p99 µs (32 B)|latency|p99_us|lo"
  "idle: server KiB/conn ($idle_conns conn)|idle|kib_per_conn|lo"
  "handshakes/s (4 workers)|handshakes|handshakes_per_s|hi"
  "handshakes: server CPU µs each|handshakes|cpu_us_per_handshake|lo"
  "small + deflate: msg/s|deflate|msgs_per_s|hi"
  "small + deflate: server CPU µs/msg|deflate|cpu_us_per_msg|lo"
)

cell() { # case impl key -> value with marks, or — / ERR
  local case="$1" impl="$2" key="$3"
  local v="${result["$case|$impl|$key"]:-}"
  if [ -z "$v" ]; then
    if [ -n "${result["$case|$impl|failed"]:-}" ]; then echo "ERR"; else echo "—"; fi
    return
  fi
  local c="${result["$case|$impl|client_cpu_pct"]:-}" s="${result["$case|$impl|server_cpu_pct"]:-}"
  case "$key" in
    msgs_per_s | gib_per_s | handshakes_per_s)
      if [ -n "$c" ] && [ "$c" -ge 90 ]; then
        v="$v†"
      elif [ -n "$c" ] && [ -n "$s" ] && [ "$c" -lt 50 ] && [ "$s" -lt 50 ]; then
        v="$v‡"
      fi
      ;;
  esac
  echo "$v"
}

ratio() { # a b -> a/b with 2 decimals, or —
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "—"; else printf "%.2f\n", a / b }'
}

table="$logs/table.md"
{
  printf '| scenario |'
  for impl in "${impls[@]}"; do printf ' %s |' "$impl"; done
  printf ' silverback/best-peer | silverback/raw-tcp |\n'
  printf '|---|'
  for _ in "${impls[@]}"; do printf -- '---:|'; done
  printf -- '---:|---:|\n'
  for row in "${rows[@]}"; do
    IFS='|' read -r label case key better <<<"$row"
    printf '| %s |' "$label"
    for impl in "${impls[@]}"; do printf ' %s |' "$(cell "$case" "$impl" "$key")"; done
    best="" best_impl=""
    for impl in "${peers[@]}"; do
      v="${result["$case|$impl|$key"]:-}"
      [ -n "$v" ] || continue
      if [ -z "$best" ] || awk -v v="$v" -v b="$best" -v d="$better" 'BEGIN { exit !((d == "hi") ? (v > b) : (v < b)) }'; then
        best="$v" best_impl="$impl"
      fi
    done
    sb="${result["$case|silverback|$key"]:-}"
    r="$(ratio "$sb" "$best")"
    [ "$r" != "—" ] && r="$r ($best_impl)"
    printf ' %s | %s |\n' "$r" "$(ratio "$sb" "${result["$case|raw-tcp|$key"]:-}")"
  done
} >"$table"

echo
cat "$table"
echo
echo "Ratios divide silverback's figure by the other's: above 1 is better for msg/s, GiB/s and handshakes/s;"
echo "below 1 is better for CPU, latency and memory rows. Best peer excludes raw-tcp."
echo "† the load generator used ≥ 90% of its core in the measured window: the figure may be bounded by the client."
echo "‡ neither the server nor the client used half of its core in the measured window: something other than"
echo "  their CPU work bounded the figure (on a shared machine, usually other load; otherwise a stall)."
echo "Small, large and latency figures are the best of $rounds interleaved rounds (CPU-use marks: the median)."
echo "Server pinned to CPU 0 (1 runtime worker), client to CPU 1. $( [ "$quick" = 1 ] && echo "Quick run." )"
echo "Load average (1/5/15 min) at start: $load_start; at end: $load_end. Above ~2, other work shared these cores."
echo "Run time: ${elapsed}s. Logs: $logs"
if [ "${#notes[@]}" -gt 0 ]; then
  echo
  echo "Notes:"
  for n in "${notes[@]}"; do echo "- $n"; done
fi
