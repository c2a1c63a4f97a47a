#!/usr/bin/env bash
# Start a throw-away Kubernetes control plane (etcd + kube-apiserver v1.20.2) on 127.0.0.1.
#
# Usage: start-testenv.sh [STATE_DIR]
#   STATE_DIR (created; default a fresh directory under /dev/shm) receives etcd's data, the
#   certificates, the static token, the logs, the PIDs and `kubeconfig` (admin), plus
#   `kubeconfig-controller` / `kubeconfig-speaker` that authenticate as the ServiceAccounts
#   metallb-system/controller and metallb-system/speaker (bind them with manifests/base/rbac.yaml).
# Ports: $ETCD_PORT, $ETCD_PEER_PORT, $APISERVER_PORT if set, else free ports picked here.
# $SERVICE_CIDR: the Service cluster IP range (default 198.51.100.0/24, room for 254 Services).
# $APISERVER_FLAGS: extra kube-apiserver flags (word-split; e.g. --v=1).
# Binaries: $FERROLB_K8S_BIN if set, else e2e/k8s/build-kube-apiserver.sh (cached; builds once).
# Prints the state directory on the last line of stdout. Stop with stop-testenv.sh STATE_DIR.
# With $OWNER_PID set, a watchdog stops the control plane when that process is gone.
#
# The apiserver has token auth (one static token in system:masters), RBAC, a service CIDR and a
# NodePort range (so clusterIP/nodePort allocation really happens), no endpoint reconciler, and the
# built-in discovery.k8s.io/v1beta1 group disabled so that a test-only EndpointSlice v1 CRD can
# serve discovery.k8s.io/v1 (1.20 predates it).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
log() { echo "start-testenv: $*" >&2; }

STATE="${1:-}"
if [[ -z "${STATE}" ]]; then
  STATE="$(mktemp -d /dev/shm/ferrolb-k8s.XXXXXX)"
else
  mkdir -p "${STATE}"
fi
STATE="$(cd "${STATE}" && pwd)"
BIN="${FERROLB_K8S_BIN:-$("${HERE}/build-kube-apiserver.sh" | tail -1)}"
[[ -x "${BIN}/kube-apiserver" && -x "${BIN}/etcd" ]] || { log "no kube-apiserver/etcd in ${BIN}"; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
ETCD_PORT="${ETCD_PORT:-$(free_port)}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-$(free_port)}"
APISERVER_PORT="${APISERVER_PORT:-$(free_port)}"

# --- certificates: a CA, a serving cert for 127.0.0.1 signed by it, a service-account key ---
PKI="${STATE}/pki"
mkdir -p "${PKI}"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ferrolb-test-ca" \
  -keyout "${PKI}/ca.key" -out "${PKI}/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
  -keyout "${PKI}/server.key" -out "${PKI}/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >"${PKI}/server.ext"
openssl x509 -req -in "${PKI}/server.csr" -CA "${PKI}/ca.crt" -CAkey "${PKI}/ca.key" -CAcreateserial \
  -days 2 -extfile "${PKI}/server.ext" -out "${PKI}/server.crt" 2>/dev/null
openssl genrsa -out "${PKI}/sa.key" 2048 2>/dev/null
openssl rsa -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null
TOKEN="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
echo "${TOKEN},ferrolb-test-admin,ferrolb-test-admin,system:masters" >"${PKI}/tokens.csv"
echo "${TOKEN}" >"${STATE}/token"
# Tokens that authenticate as the ServiceAccounts of manifests/base/rbac.yaml, so tests can run the
# binaries with exactly the permissions a cluster would give them (kubeconfig-<name>).
for sa in controller speaker; do
  t="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  echo "${t},system:serviceaccount:metallb-system:${sa},sa-${sa},\"system:serviceaccounts,system:serviceaccounts:metallb-system\"" >>"${PKI}/tokens.csv"
  echo "${t}" >"${STATE}/token-${sa}"
done

# --- etcd ---
"${BIN}/etcd" --name default --data-dir "${STATE}/etcd" \
  --listen-client-urls "http://127.0.0.1:${ETCD_PORT}" --advertise-client-urls "http://127.0.0.1:${ETCD_PORT}" \
  --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-cluster "default=http://127.0.0.1:${ETCD_PEER_PORT}" \
  >"${STATE}/etcd.log" 2>&1 &
echo $! >"${STATE}/etcd.pid"

# --- kube-apiserver ---
"${BIN}/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:${ETCD_PORT}" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "${APISERVER_PORT}" --insecure-port 0 \
  --tls-cert-file "${PKI}/server.crt" --tls-private-key-file "${PKI}/server.key" \
  --token-auth-file "${PKI}/tokens.csv" --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "${PKI}/sa.pub" --service-account-signing-key-file "${PKI}/sa.key" \
  --service-cluster-ip-range "${SERVICE_CIDR:-198.51.100.0/24}" --service-node-port-range 30000-32767 \
  --endpoint-reconciler-type none \
  --runtime-config discovery.k8s.io/v1beta1=false \
  --feature-gates MixedProtocolLBService=true,ServiceLBNodePortControl=true \
  --enable-priority-and-fairness=false \
  ${APISERVER_FLAGS:-} \
  >"${STATE}/apiserver.log" 2>&1 &
echo $! >"${STATE}/apiserver.pid"

URL="https://127.0.0.1:${APISERVER_PORT}"
api() { curl -sS --cacert "${PKI}/ca.crt" -H "Authorization: Bearer ${TOKEN}" "$@"; }
for _ in $(seq 1 300); do
  if [[ "$(api -o /dev/null -w '%{http_code}' "${URL}/readyz" 2>/dev/null || true)" == 200 ]]; then break; fi
  if ! kill -0 "$(cat "${STATE}/apiserver.pid")" 2>/dev/null; then
    log "kube-apiserver exited; log tail:"; tail -20 "${STATE}/apiserver.log" >&2; exit 1
  fi
  sleep 0.2
done
[[ "$(api -o /dev/null -w '%{http_code}' "${URL}/readyz")" == 200 ]] || { log "apiserver not ready"; exit 1; }

# --- EndpointSlice v1 CRD shim (discovery.k8s.io/v1 does not exist in 1.20) ---
api -o /dev/null -X POST -H 'Content-Type: application/json' --data-binary @"${HERE}/eps-v1-crd.json" \
  "${URL}/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
for _ in $(seq 1 150); do
  if [[ "$(api -o /dev/null -w '%{http_code}' "${URL}/apis/discovery.k8s.io/v1/endpointslices")" == 200 ]]; then break; fi
  sleep 0.2
done

write_kubeconfig() { # FILE USER TOKEN
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: ferrolb-test
  cluster:
    server: ${URL}
    certificate-authority-data: $(base64 -w0 "${PKI}/ca.crt")
users:
- name: $2
  user:
    token: $3
contexts:
- name: ferrolb-test
  context:
    cluster: ferrolb-test
    user: $2
    namespace: default
current-context: ferrolb-test
KC
}
write_kubeconfig "${STATE}/kubeconfig" ferrolb-test-admin "${TOKEN}"
for sa in controller speaker; do
  write_kubeconfig "${STATE}/kubeconfig-${sa}" "${sa}" "$(cat "${STATE}/token-${sa}")"
done
echo "${URL}" >"${STATE}/url"

# With $OWNER_PID set (the test process), stop everything if the owner dies without cleaning up.
if [[ -n "${OWNER_PID:-}" ]]; then
  nohup bash -c 'while kill -0 "$1" 2>/dev/null && [[ -d "$2" ]]; do sleep 1; done; [[ -d "$2" ]] && bash "$3" "$2"' \
    watchdog "${OWNER_PID}" "${STATE}" "${HERE}/stop-testenv.sh" >/dev/null 2>&1 &
fi
log "ready at ${URL} (state ${STATE})"
echo "${STATE}"
