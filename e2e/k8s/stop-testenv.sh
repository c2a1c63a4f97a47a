#!/usr/bin/env bash
# Stop a control plane started by start-testenv.sh (by the PIDs it recorded) and remove its state.
# Usage: stop-testenv.sh STATE_DIR
set -euo pipefail
STATE="${1:?usage: stop-testenv.sh STATE_DIR}"
[[ -d "${STATE}" ]] || exit 0
for name in apiserver etcd; do
  pidfile="${STATE}/${name}.pid"
  [[ -f "${pidfile}" ]] || continue
  pid="$(cat "${pidfile}")"
  kill "${pid}" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
  kill -9 "${pid}" 2>/dev/null || true
done
rm -rf "${STATE}"
