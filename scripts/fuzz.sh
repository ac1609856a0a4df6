#!/usr/bin/env bash
# Fuzz the protocol core: every cargo-fuzz target in fuzz/ for N seconds each
# (default 10), starting from a temporary copy of its committed seeds.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Installs cargo-fuzz if it is missing, builds all targets once, replays the
# inputs in fuzz/regressions/, then fuzzes each target in turn and prints one
# line per target with its exec count and speed. Exits non-zero if any target
# crashes (the input is kept in fuzz/artifacts/<target>/). The grown corpus is
# thrown away; see fuzz/README.md for longer runs that keep it.
#
# The toolchain here is stable: cargo-fuzz needs nightly flags (sanitizers,
# coverage), which RUSTC_BOOTSTRAP=1 allows on stable.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-10}
shift || true
case $secs in
  '' | *[!0-9]*) echo "usage: $0 [seconds-per-target] [target...]" >&2; exit 2 ;;
esac

export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never
# The fuzz crate builds into fuzz/target, apart from the root crate's target.
unset CARGO_TARGET_DIR

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# Build flags: cargo fuzz's defaults (optimised, with debug assertions and
# overflow checks, AddressSanitizer). `run` must use the same flags as `build`
# so that it does not rebuild.
echo "== building ${#targets[@]} fuzz targets"
if [ $# -gt 0 ]; then
  for t in "${targets[@]}"; do cargo fuzz build "$t"; done
else
  cargo fuzz build
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/silverback-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

# libFuzzer options: a hang or a runaway allocation is a failure too.
opts=(-timeout=20 -rss_limit_mb=2048 -print_final_stats=1)

# Prints why a run failed: the panic message or sanitizer report, and where
# libFuzzer wrote the input.
show_failure() {
  {
    grep -m1 -A3 'panicked at' "$1" || grep -m1 -A2 -E '^==[0-9]+==ERROR' "$1" || true
    grep -E 'Test unit written to|^SUMMARY' "$1" || true
  } | head -8 | sed 's/^/    /'
}

status=0
regressions=()
for t in "${targets[@]}"; do
  for f in regressions/"$t"-*; do
    [ -e "$f" ] && regressions+=("$t:$f")
  done
done
if [ ${#regressions[@]} -gt 0 ]; then
  echo "== replaying ${#regressions[@]} regression inputs"
  for r in "${regressions[@]}"; do
    t=${r%%:*}
    f=${r#*:}
    if ! cargo fuzz run "$t" "$f" -- -runs=1 "${opts[@]}" >"$work/regression.log" 2>&1; then
      echo "REGRESSION  $t  $f"
      show_failure "$work/regression.log"
      status=1
    fi
  done
fi

echo "== fuzzing each target for ${secs}s"
printf '%-16s %-7s %14s %10s\n' target result execs exec/s
for t in "${targets[@]}"; do
  corpus="$work/corpus/$t"
  mkdir -p "$corpus"
  if [ -d "seeds/$t" ]; then
    cp seeds/"$t"/* "$corpus"/
  fi
  log="$work/$t.log"
  if cargo fuzz run "$t" "$corpus" -- -max_total_time="$secs" "${opts[@]}" >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    status=1
  fi
  # The closing status line, e.g. "#123456	DONE   cov: 866 ft: 1452 corp: ... exec/s: 12345 rss: 42Mb";
  # after a crash, the last status line libFuzzer printed.
  line=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -n 1 || true)
  execs=$(sed -nE 's/^#([0-9]+)[[:space:]].*/\1/p' <<<"$line")
  rate=$(sed -nE 's/.*exec\/s: ([0-9]+).*/\1/p' <<<"$line")
  stat_execs=$(sed -nE 's/^stat::number_of_executed_units: ([0-9]+).*/\1/p' "$log" | tail -n 1)
  stat_rate=$(sed -nE 's/^stat::average_exec_per_sec: +([0-9]+).*/\1/p' "$log" | tail -n 1)
  printf '%-16s %-7s %14s %10s\n' "$t" "$result" "${stat_execs:-${execs:-?}}" "${stat_rate:-${rate:-?}}"
  if [ "$result" != ok ]; then
    show_failure "$log"
  fi
done

exit $status
