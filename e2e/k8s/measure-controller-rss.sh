#!/usr/bin/env bash
# Measure the memory of `ferrolb controller` against the test kube-apiserver, to size the
# Deployment's requests/limits (manifests/base/controller.yaml). Needs kubectl (any recent client).
#
# Usage: e2e/k8s/measure-controller-rss.sh [BINARY] [N...]
#   BINARY: the ferrolb to measure (default target/x86_64-unknown-linux-musl/release/ferrolb,
#           the one the image ships); N: Service counts (default 0 1000 5000).
# For each N: a fresh control plane (Service CIDR 10.128.0.0/18: 16 382 addresses, a 2 KiB bitmap the apiserver rewrites in etcd per create; no NodePorts), a pool of a /16,
# the controller started, N LoadBalancer Services created, and once the last one has its address
# the controller's peak (VmHWM) and current (VmRSS) resident set size are printed, with its CPU
# (utime + stime) over the whole run, the load average and the commit.
# $PARALLEL (default 1): 1 creates the Services with one `kubectl apply` (as the figures in
# docs/benchmarks.md before 2026-11-29 21:00); N > 1 with N parallel `kubectl create` (faster, and
# without kubectl's last-applied-configuration annotation).
# $CONTROLLER_LOG: the controller's RUST_LOG (default warn); $APISERVER_FLAGS: extra
# kube-apiserver flags (e.g. --v=1); $KEEP_LOGS: a directory to copy both logs into per N.
# The addresses only exist as data in the test apiserver; nothing is announced.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${1:-${ROOT}/target/x86_64-unknown-linux-musl/release/ferrolb}"
shift || true
COUNTS=("${@:-0 1000 5000}")
PARALLEL="${PARALLEL:-1}"
read -r -a COUNTS <<<"${COUNTS[*]}"
[[ -x "${BIN}" ]] || { echo "no binary ${BIN}" >&2; exit 2; }
command -v kubectl >/dev/null || { echo "needs kubectl" >&2; exit 2; }

kib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
field() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/status"; }

for n in "${COUNTS[@]}"; do
  STATE="$(mktemp -d /dev/shm/ferrolb-rss.XXXXXX)"
  SERVICE_CIDR=10.128.0.0/18 OWNER_PID=$$ bash "${ROOT}/e2e/k8s/start-testenv.sh" "${STATE}" >/dev/null
  export KUBECONFIG="${STATE}/kubeconfig"
  kubectl create namespace metallb-system >/dev/null
  kubectl create namespace apps >/dev/null
  kubectl -n metallb-system create configmap config \
    --from-literal=config=$'address-pools:\n- name: big\n  protocol: layer2\n  addresses:\n  - 198.18.0.0/16\n' >/dev/null
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  RUST_LOG="${CONTROLLER_LOG:-warn}" "${BIN}" controller --kubeconfig "${KUBECONFIG}" --identity rss \
    --metrics-addr "127.0.0.1:${port}" >"${STATE}/controller.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:${port}/readyz" >/dev/null && break
    sleep 0.1
  done
  start=$(date +%s.%N)
  if ((n > 0)); then
    python3 - "${n}" >"${STATE}/services.yaml" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print(f"""---
apiVersion: v1
kind: Service
metadata: {{name: s{i:05d}, namespace: apps}}
spec:
  type: LoadBalancer
  allocateLoadBalancerNodePorts: false
  selector: {{app: s{i:05d}}}
  ports: [{{port: 80, protocol: TCP}}]""")
PY
    if ((PARALLEL > 1)); then
      awk -v parts="${PARALLEL}" -v dir="${STATE}" \
        '/^---$/ { k = (k + 1) % parts } { print > (dir "/part." k ".yaml") }' "${STATE}/services.yaml"
      creators=()
      for f in "${STATE}"/part.*.yaml; do
        kubectl create -f "${f}" >/dev/null & creators+=($!)
      done
      for c in "${creators[@]}"; do wait "${c}"; done
    else
      kubectl apply -f "${STATE}/services.yaml" >/dev/null
    fi
    last="s$(printf %05d $((n - 1)))"
    for _ in $(seq 1 1200); do
      ip="$(kubectl -n apps get svc "${last}" -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)"
      [[ -n "${ip}" ]] && break
      sleep 0.5
    done
    [[ -n "${ip}" ]] || { echo "N=${n}: ${last} got no address" >&2; }
    for _ in $(seq 1 120); do
      assigned="$(kubectl get svc -A -o jsonpath='{range .items[*]}{.status.loadBalancer.ingress[0].ip}{"\n"}{end}' | grep -c . || true)"
      ((assigned >= n)) && break
      sleep 1
    done
  else
    assigned=0
  fi
  elapsed="$(awk -v s="${start}" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')"
  sleep 2
  hwm="$(field VmHWM "${pid}")"; rss="$(field VmRSS "${pid}")"
  cpu="$(awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/${pid}/stat")"
  echo "N=${n} Services (${assigned} with an address, ${elapsed} s incl. kubectl): peak RSS $(kib "${hwm}"), RSS $(kib "${rss}"), CPU ${cpu} s; load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git -C "${ROOT}" rev-parse --short HEAD)"
  kill "${pid}"; wait "${pid}" 2>/dev/null || true
  if [[ -n "${KEEP_LOGS:-}" ]]; then
    mkdir -p "${KEEP_LOGS}"
    cp "${STATE}/controller.log" "${KEEP_LOGS}/controller.${n}.log"
    cp "${STATE}/apiserver.log" "${KEEP_LOGS}/apiserver.${n}.log"
  fi
  bash "${ROOT}/e2e/k8s/stop-testenv.sh" "${STATE}"
done
