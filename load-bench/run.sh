#!/usr/bin/env bash
# Load comparison of silverback against other Rust WebSocket servers, on
# 127.0.0.1 only. For each scenario and implementation: start the echo server
# pinned to CPU 0, run the load generator pinned to CPU 1, collect its
# figures, stop the server. Prints one Markdown table at the end.
#
#   load-bench/run.sh            # full run (about 11 minutes)
#   load-bench/run.sh --quick    # fewer seconds and connections (about 3 minutes)
#   load-bench/run.sh --only http2 [--quick] [--streams N]
#       only some scenario groups, comma-separated: small, large, latency,
#       idle, handshakes, deflate, http2 (N WebSockets on one HTTP/2
#       connection against N HTTP/1.1 connections; N = 16 by default),
#       client (the small load driven by each client library against one
#       fixed server), broadcast (one publisher, 1 000 and 10 000 subscribers)
#
# The release build goes to $CARGO_TARGET_DIR (default: the workspace's target/).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

groups_all="small,large,latency,idle,handshakes,deflate,http2,client,broadcast"
quick=0 only="$groups_all" h2_streams=16
while [ "$#" -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --only | --streams)
      [ "$#" -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }
      if [ "$1" = --only ]; then only="$2"; else h2_streams="$2"; fi
      shift
      ;;
    -h | --help)
      sed -n '2,16p' "$0"
      exit 0
      ;;
    *)
      echo "run.sh: unknown argument $1 (use --quick, --only GROUPS, --streams N)" >&2
      exit 2
      ;;
  esac
  shift
done
for g in ${only//,/ }; do
  [[ ",$groups_all," == *",$g,"* ]] || { echo "run.sh: unknown group $g (one of $groups_all)" >&2; exit 2; }
done
[[ "$h2_streams" =~ ^[0-9]+$ ]] && [ "$h2_streams" -ge 1 ] && [ "$h2_streams" -le 1000 ] ||
  { echo "run.sh: --streams must be in [1, 1000]" >&2; exit 2; }
want() { [[ ",$only," == *",$1,"* ]]; }

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
# The http2 group: servers on hyper's automatic HTTP/1.1 + HTTP/2 builder with
# extended CONNECT; over HTTP/1.1 the plain silverback server runs too.
h2_impls=(silverback-hyper yawc-hyper axum)
h2_peers=(yawc-hyper axum)
h1_impls=(silverback "${h2_impls[@]}")
# The client group: the client libraries measured, all against this server.
client_libs=(silverback tokio-tungstenite fastwebsockets yawc)
client_peers=(tokio-tungstenite fastwebsockets yawc)
client_server=silverback
# The broadcast group: subscriber counts, one row each.
bc_impls=(silverback tokio-tungstenite fastwebsockets sockudo-ws)
bc_peers=(tokio-tungstenite fastwebsockets sockudo-ws)
if [ "$quick" = 1 ]; then bc_subs=(1000 10000) bc_secs=1; else bc_subs=(1000 10000) bc_secs=3; fi

command -v taskset >/dev/null || { echo "run.sh: taskset (util-linux) is needed" >&2; exit 1; }
if [ "$(nproc)" -lt 2 ]; then
  echo "run.sh: needs 2 CPUs (server on CPU 0, client on CPU 1)" >&2
  exit 1
fi

# Both processes hold one descriptor per idle connection, plus a few.
hard=$(ulimit -Hn)
fds=$((idle_conns + 1024))
if [ "$hard" != unlimited ] && [ "$hard" -lt "$fds" ]; then
  idle_conns=$((hard - 1024))
  echo "run.sh: descriptor limit $hard: idle scenario uses $idle_conns connections" >&2
  fds=$hard
fi
# The broadcast group holds one descriptor per subscriber too.
if want broadcast && [ "$fds" -lt $((bc_subs[-1] + 1024)) ]; then
  fds=$((bc_subs[-1] + 1024))
  if [ "$hard" != unlimited ] && [ "$hard" -lt "$fds" ]; then fds=$hard; fi
fi
ulimit -n "$fds"

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
  # The server run: IMPL, unless the caller names another in $server.
  local server_impl="${server:-$impl}"
  # A port still in use (by an earlier run's socket in TIME_WAIT, say) is
  # skipped: a few tries on the next ports.
  for attempt in 1 2 3 4 5; do
    port=$((port + 1))
    addr="127.0.0.1:$port"
    # shellcheck disable=SC2086 # server_args is a list of flags
    taskset -c 0 "$bin" server "$server_impl" "$addr" $server_args >"$log.server.out" 2>"$log.server.err" &
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
  if want small; then
    for impl in "${impls[@]}"; do
      raw=()
      [ "$impl" = raw-tcp ] && raw=(--raw)
      run_case "small#$round" "$impl" "" small "${raw[@]}" --connections "$small_conns" --depth 8 --seconds "$small_secs" --warmup "$warmup"
    done
  fi
  if want large; then
    for impl in "${impls[@]}"; do
      raw=()
      [ "$impl" = raw-tcp ] && raw=(--raw)
      run_case "large#$round" "$impl" "" large "${raw[@]}" --connections 4 --seconds "$large_secs" --warmup "$warmup"
    done
  fi
  if want latency; then
    for impl in "${impls[@]}"; do
      raw=()
      [ "$impl" = raw-tcp ] && raw=(--raw)
      run_case "latency#$round" "$impl" "" latency "${raw[@]}" --count "$latency_count"
    done
  fi
  if want http2; then
    # The same N WebSockets × 8 in flight, on one HTTP/2 connection, then
    # each on its own HTTP/1.1 connection (the small scenario's client).
    for impl in "${h2_impls[@]}"; do
      run_case "http2#$round" "$impl" "" http2 --streams "$h2_streams" --depth 8 --seconds "$small_secs" --warmup "$warmup"
    done
    for impl in "${h1_impls[@]}"; do
      run_case "http2-h1#$round" "$impl" "" small --connections "$h2_streams" --depth 8 --seconds "$small_secs" --warmup "$warmup"
    done
  fi
  if want client; then
    # The small load, driven by each client library against one server.
    for lib in "${client_libs[@]}"; do
      server="$client_server" run_case "client#$round" "$lib" "" client --lib "$lib" --connections "$small_conns" --depth 8 --seconds "$small_secs" --warmup "$warmup"
    done
  fi
done
for case in small large latency http2 http2-h1 client; do
  merge_rounds "$case"
done
if want idle; then
  for impl in "${impls[@]}"; do
    [ "$impl" = raw-tcp ] && continue
    run_case idle "$impl" "" idle --connections "$idle_conns"
  done
fi
if want handshakes; then
  for impl in "${impls[@]}"; do
    [ "$impl" = raw-tcp ] && continue
    run_case handshakes "$impl" "" handshakes --workers 4 --seconds "$handshake_secs"
  done
fi
if want deflate; then
  for impl in "${deflate_impls[@]}"; do
    run_case deflate "$impl" "--deflate" small --deflate --connections "$small_conns" --depth 8 --seconds "$small_secs" --warmup "$warmup"
  done
fi

if want broadcast; then
  for subs in "${bc_subs[@]}"; do
    if [ "$subs" -gt $((fds - 1024)) ]; then
      notes+=("broadcast-$subs: skipped, descriptor limit $fds")
      continue
    fi
    for impl in "${bc_impls[@]}"; do
      run_case "broadcast-$subs" "$impl" "--broadcast" broadcast --connections "$subs" --depth 8 --seconds "$bc_secs" --warmup "$warmup"
    done
  done
fi

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

# print_table IMPLS PEERS ROWS SB RAW: one Markdown table. IMPLS, PEERS and
# ROWS name arrays; SB is the silverback column the ratios divide, RAW the
# ceiling column ("" for none). A row whose `better` is "ratio" has a case
# "A/B" and shows, per implementation, its figure in case A over case B.
print_table() {
  local -n t_impls="$1" t_peers="$2" t_rows="$3"
  local sb_impl="$4" raw="$5" row label case key better impl v best best_impl sb r
  printf '| scenario |'
  for impl in "${t_impls[@]}"; do printf ' %s |' "$impl"; done
  printf ' %s/best-peer |' "$sb_impl"
  [ -n "$raw" ] && printf ' %s/%s |' "$sb_impl" "$raw"
  printf '\n|---|'
  for _ in "${t_impls[@]}"; do printf -- '---:|'; done
  printf -- '---:|'
  [ -n "$raw" ] && printf -- '---:|'
  printf '\n'
  for row in "${t_rows[@]}"; do
    IFS='|' read -r label case key better <<<"$row"
    printf '| %s |' "$label"
    if [ "$better" = info ]; then # figures only, no ratio
      for impl in "${t_impls[@]}"; do printf ' %s |' "${result["$case|$impl|$key"]:-—}"; done
      printf ' |'
      [ -n "$raw" ] && printf ' |'
      printf '\n'
      continue
    fi
    if [ "$better" = ratio ]; then
      for impl in "${t_impls[@]}"; do
        printf ' %s |' "$(ratio "${result["${case%/*}|$impl|$key"]:-}" "${result["${case#*/}|$impl|$key"]:-}")"
      done
      printf ' |'
      [ -n "$raw" ] && printf ' |'
      printf '\n'
      continue
    fi
    for impl in "${t_impls[@]}"; do printf ' %s |' "$(cell "$case" "$impl" "$key")"; done
    best="" best_impl=""
    for impl in "${t_peers[@]}"; do
      v="${result["$case|$impl|$key"]:-}"
      [ -n "$v" ] || continue
      if [ -z "$best" ] || awk -v v="$v" -v b="$best" -v d="$better" 'BEGIN { exit !((d == "hi") ? (v > b) : (v < b)) }'; then
        best="$v" best_impl="$impl"
      fi
    done
    sb="${result["$case|$sb_impl|$key"]:-}"
    r="$(ratio "$sb" "$best")"
    [ "$r" != "—" ] && r="$r ($best_impl)"
    printf ' %s |' "$r"
    [ -n "$raw" ] && printf ' %s |' "$(ratio "$sb" "${result["$case|$raw|$key"]:-}")"
    printf '\n'
  done
}

# Only the rows of the groups that ran.
main_rows=()
for row in "${rows[@]}"; do
  IFS='|' read -r _ case _ _ <<<"$row"
  want "$case" && main_rows+=("$row")
done
h2_rows=(
  "$h2_streams WebSockets on 1 HTTP/2 connection: msg/s|http2|msgs_per_s|hi"
  "same, server CPU µs/msg|http2|cpu_us_per_msg|lo"
  "$h2_streams WebSockets on $h2_streams HTTP/1.1 connections: msg/s|http2-h1|msgs_per_s|hi"
  "same, server CPU µs/msg|http2-h1|cpu_us_per_msg|lo"
  "msg/s, HTTP/2 ÷ HTTP/1.1|http2/http2-h1|msgs_per_s|ratio"
)
client_rows=(
  "msg/s ($small_conns conn × 8 in flight, 32 B)|client|msgs_per_s|hi"
  "client CPU µs/msg|client|client_cpu_us_per_msg|lo"
  "server CPU % (median)|client|server_cpu_pct|info"
  "server CPU µs/msg|client|server_cpu_us_per_msg|info"
)

bc_rows=()
for subs in "${bc_subs[@]}"; do
  bc_rows+=(
    "$subs subscribers: deliveries/s|broadcast-$subs|deliveries_per_s|hi"
    "$subs subscribers: delivery p50 µs|broadcast-$subs|p50_us|lo"
    "$subs subscribers: delivery p99 µs|broadcast-$subs|p99_us|lo"
    "$subs subscribers: server RSS MiB|broadcast-$subs|rss_mib|lo"
    "$subs subscribers: server CPU µs/delivery|broadcast-$subs|cpu_us_per_delivery|lo"
  )
done

table="$logs/table.md"
{
  if [ "${#main_rows[@]}" -gt 0 ]; then
    print_table impls peers main_rows silverback raw-tcp
  fi
  if want http2; then
    [ "${#main_rows[@]}" -gt 0 ] && echo
    echo "HTTP/2 (RFC 8441): $h2_streams WebSockets × 8 in flight, 32 B text, one HTTP/2 connection against one HTTP/1.1 connection each:"
    echo
    print_table h1_impls h2_peers h2_rows silverback-hyper ""
  fi
  if want client; then
    { [ "${#main_rows[@]}" -gt 0 ] || want http2; } && echo
    echo "Client libraries: the small load ($small_conns connections × 8 in flight, 32 B text) driven by each client, against the $client_server server:"
    echo
    print_table client_libs client_peers client_rows silverback ""
  fi
  if want broadcast; then
    { [ "${#main_rows[@]}" -gt 0 ] || want http2 || want client; } && echo
    echo "Broadcast: one publisher, every message to every subscriber (32 B binary, 8 in flight per subscriber):"
    echo
    print_table bc_impls bc_peers bc_rows silverback ""
  fi
} >"$table"

echo
cat "$table"
echo
if [ "${#main_rows[@]}" -gt 0 ]; then
  echo "Ratios divide silverback's figure by the other's: above 1 is better for msg/s, GiB/s and handshakes/s;"
  echo "below 1 is better for CPU, latency and memory rows. Best peer excludes raw-tcp."
fi
if want http2; then
  echo "HTTP/2 table: *-hyper and axum serve HTTP/1.1 and HTTP/2 with hyper-util's auto builder (extended CONNECT on);"
  echo "silverback (Upgrader::accept on TCP) speaks HTTP/1.1 only. Its ratio column divides silverback-hyper's figure"
  echo "by the best of yawc-hyper and axum; the last row divides each server's HTTP/2 rate by its HTTP/1.1 rate."
fi
if want client; then
  echo "Client table: columns are the client library (one connection per task, each library's own idiom), the server is"
  echo "always $client_server on CPU 0; client CPU µs/msg is the client process's CPU time per echo received (its inverse:"
  echo "messages per second per client core). A server CPU % near 100 means the msg/s figure is the server's limit."
  echo "Its figures too are the best of $rounds interleaved rounds (server CPU %: the median)."
fi
if want broadcast; then
  echo "Broadcast table: one run each (not best of rounds); latency from the publisher's send stamp to the subscriber's read."
fi
echo "† the load generator used ≥ 90% of its core in the measured window: the figure may be bounded by the client."
echo "‡ neither the server nor the client used half of its core in the measured window: something other than"
echo "  their CPU work bounded the figure (on a shared machine, usually other load; otherwise a stall)."
echo "Small, large, latency and http2 figures are the best of $rounds interleaved rounds (CPU-use marks: the median)."
echo "Server pinned to CPU 0 (1 runtime worker), client to CPU 1. $( [ "$quick" = 1 ] && echo "Quick run." )"
echo "Load average (1/5/15 min) at start: $load_start; at end: $load_end. Above ~2, other work shared these cores."
echo "Run time: ${elapsed}s. Logs: $logs"
if [ "${#notes[@]}" -gt 0 ]; then
  echo
  echo "Notes:"
  for n in "${notes[@]}"; do echo "- $n"; done
fi
