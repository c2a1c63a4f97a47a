#!/usr/bin/env bash
# `make bench` / `make bench-smoke`: runs every benchmark of issue 7, one after the other, and
# collects their JSON lines in target/bench/results.jsonl (tables go to the terminal).
#   1. the allocator (cargo bench, no root);
#   2. every other e2e/bench/*.sh (BGP, Layer2, memory/CPU; root, network namespaces); at full size
#      memory.sh runs with --controller (controller RSS/CPU against a throw-away apiserver).
# Each piece also runs alone (see the header of each script). A piece that fails is reported and
# the others still run; benchmarks never decide pass or fail, so the exit status is 0 unless a
# piece could not run at all.
# Usage: e2e/bench/run.sh [--smoke]
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
smoke=()
[ "${1:-}" = --smoke ] && smoke=(--smoke)
cargo=${CARGO:-cargo}
out=${CARGO_TARGET_DIR:-$root/target}/bench
mkdir -p "$out"
results=$out/results.jsonl
: >"$results"
failed=()

run() { # NAME COMMAND... ; JSON lines (stdout lines starting with "{") go to $results
  local name=$1 rc
  shift
  echo "=== $name: $*" >&2
  "$@" | tee >(grep '^{' >>"$results")
  rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { echo "=== $name: exit status $rc" >&2; failed+=("$name"); }
}

echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)" >&2
run allocator "$cargo" bench --quiet -p ferrolb-controller --bench allocator -- "${smoke[@]}"
for script in e2e/bench/*.sh; do
  [ "$(basename "$script")" = run.sh ] && continue
  if [ "$(id -u)" != 0 ]; then
    echo "=== $(basename "$script" .sh): skipped (needs root)" >&2
    continue
  fi
  extra=()
  # Full size: the memory piece also measures the controller against a throw-away apiserver
  # (median of 3 at 0/1k/10k Services; ~15 min). Not at smoke size, to keep it short.
  [ "$(basename "$script")" = memory.sh ] && [ "${#smoke[@]}" = 0 ] && extra=(--controller)
  run "$(basename "$script" .sh)" bash "$script" "${smoke[@]}" "${extra[@]}"
done
echo "=== $(grep -c . "$results") measurements in $results" >&2
if [ "${#failed[@]}" -gt 0 ]; then
  echo "=== did not complete: ${failed[*]}" >&2
  exit 1
fi
