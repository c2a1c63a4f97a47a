#!/usr/bin/env bash
# Helper for the scripts in e2e/bench/: builds the release ferrolb binary (unless FERROLB_BIN is
# set) and the named example of the e2e crate (debug: it only drives and times), runs it, and
# removes the namespaces (flb-<pid>-*) and temp files of that run even when it is interrupted or
# killed.
set -euo pipefail
example=$1
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if [ "$(id -u)" != 0 ]; then
  echo "$example: needs root (network namespaces)" >&2
  exit 1
fi
cargo=${CARGO:-cargo}
target=${CARGO_TARGET_DIR:-$root/target}
if [ -z "${FERROLB_BIN:-}" ]; then
  "$cargo" build --quiet --release --bin ferrolb
  export FERROLB_BIN=$target/release/ferrolb
fi
"$cargo" build --quiet -p ferrolb-e2e --example "$example"

child=
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$child" ]; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
    # Only the namespaces and files of this run: named after the benchmark's process id.
    for ns in $(ip netns list | awk '{print $1}' | grep "^flb-$child-" || true); do
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "${TMPDIR:-/tmp}/flb-$child-"* 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
"$target/debug/examples/$example" "$@" &
child=$!
set +e
wait "$child"
rc=$?
set -e
exit $rc
