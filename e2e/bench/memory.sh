#!/usr/bin/env bash
# Memory and CPU benchmark (issue 7, item 4): peak RSS (VmHWM), RSS and idle CPU of
# `ferrolb standalone` (the speaker's announcer plus the allocator, in one process) holding 0, 1k
# and 10k Services announced over BGP, next to the BIRD and gobgpd that receive and hold the same
# routes, all in the same run. Each size starts fresh processes (VmHWM is per size); every figure
# is the median of $REPS repetitions.
#
# Topology (namespaces flb-<pid>-m*, removed on exit, documentation addresses only):
#   mbr (BIRD)    r0 2001:db8::1/64     ---- n0 2001:db8::2/64       mnd (ferrolb standalone)
#   mgb (gobgpd)  g0 2001:db8:0:1::2/64 ---- n1 2001:db8:0:1::1/64
# VIPs: IPv6 /128s from 2001:db8:100::/108.
#
# With --controller (or FERROLB_BENCH_CONTROLLER=1) it also measures `ferrolb controller` against
# the throw-away apiserver of e2e/k8s/start-testenv.sh at the same sizes (slow: Services are
# created through the API; untested so far).
#
# Usage (root): e2e/bench/memory.sh [--smoke] [--controller]
# Output: a table on stderr, one JSON object per measurement on stdout:
#   {"bench":"memory","case":PROCESS,"n":N,"vmhwm_kib":..,"rss_kib":..,"idle_cpu_pct":..,"settle_ms":..}
# Measures target/release/ferrolb (built here) unless FERROLB_BIN is set.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

smoke=0
controller=${FERROLB_BENCH_CONTROLLER:-0}
for a in "$@"; do
  case "$a" in
  --smoke) smoke=1 ;;
  --controller) controller=1 ;;
  *) echo "memory.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
[ -n "${FERROLB_BENCH_SMOKE:-}" ] && [ "${FERROLB_BENCH_SMOKE}" != 0 ] && smoke=1
if [ "$smoke" = 1 ]; then
  sizes=(0 100); reps=3; idle=2
else
  sizes=(0 1000 10000); reps=3; idle=10
fi
# Overrides for profiling one size, e.g. FERROLB_BENCH_SIZES=10000 FERROLB_BENCH_REPS=1.
[ -n "${FERROLB_BENCH_SIZES:-}" ] && read -r -a sizes <<<"$FERROLB_BENCH_SIZES"
reps=${FERROLB_BENCH_REPS:-$reps}

if [ "$(id -u)" != 0 ]; then
  echo "memory.sh: needs root (network namespaces)" >&2
  exit 1
fi
for p in bird birdc gobgpd gobgp ip; do
  command -v "$p" >/dev/null || { echo "memory.sh: needs $p (make deps)" >&2; exit 1; }
done
cargo=${CARGO:-cargo}
target=${CARGO_TARGET_DIR:-$root/target}
if [ -z "${FERROLB_BIN:-}" ]; then
  "$cargo" build --quiet --release --bin ferrolb
  FERROLB_BIN=$target/release/ferrolb
fi

tag="flb-$$"
ns_nd="$tag-mnd" ns_br="$tag-mbr" ns_gb="$tag-mgb"
dir=$(mktemp -d "${TMPDIR:-/tmp}/$tag-mem.XXXXXX")
pids=()
testenv=

stop_pids() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  pids=()
}

cleanup() {
  trap - EXIT INT TERM
  stop_pids
  local ns
  for ns in "$ns_nd" "$ns_br" "$ns_gb"; do
    if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
  [ -n "$testenv" ] && bash e2e/k8s/stop-testenv.sh "$testenv" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# --- topology ---
for ns in "$ns_nd" "$ns_br" "$ns_gb"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip -n "$ns_nd" link add n0 type veth peer name r0 netns "$ns_br"
ip -n "$ns_nd" link add n1 type veth peer name g0 netns "$ns_gb"
addr() { ip -n "$1" addr add "$3" dev "$2" nodad; ip -n "$1" link set "$2" up; }
addr "$ns_nd" n0 2001:db8::2/64
addr "$ns_br" r0 2001:db8::1/64
addr "$ns_nd" n1 2001:db8:0:1::1/64
addr "$ns_gb" g0 2001:db8:0:1::2/64

cat >"$dir/bird.conf" <<'EOF'
router id 192.0.2.1;
protocol device {}
protocol bgp ferrolb {
  local 2001:db8::1 as 64513; neighbor 2001:db8::2 as 64512;
  connect delay time 1; connect retry time 1; error wait time 1, 2;
  ipv6 { import all; export none; };
}
EOF
cat >"$dir/gobgpd.toml" <<'EOF'
[global.config]
  as = 64514
  router-id = "192.0.2.3"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "2001:db8:0:1::1"
    peer-as = 64512
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
EOF
cat >"$dir/ferrolb.yaml" <<'EOF'
peers:
- peer-address: 2001:db8::1
  peer-asn: 64513
  my-asn: 64512
- peer-address: 2001:db8:0:1::2
  peer-asn: 64514
  my-asn: 64512
address-pools:
- name: mem
  protocol: bgp
  addresses:
  - 2001:db8:100::/108
EOF

services_yaml() { # N -> stdout
  local n=$1
  if [ "$n" = 0 ]; then
    echo "apiVersion: v1"; echo "kind: List"; echo "items: []"
    return
  fi
  awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++) printf "apiVersion: v1\nkind: Service\nmetadata:\n  name: s%d\n  namespace: bench\nspec:\n  type: LoadBalancer\n  ipFamilies: [IPv6]\n  ipFamilyPolicy: SingleStack\n  ports:\n  - port: 80\n    protocol: TCP\n---\n", i }'
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
hz=$(getconf CLK_TCK)
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
bird_routes() { # routes in BIRD's master6 table
  ip netns exec "$ns_br" birdc -s "$dir/bird.ctl" show route count table master6 2>/dev/null |
    awk '/routes for/ { print $1; exit }'
}
gobgp_routes() {
  ip netns exec "$ns_gb" gobgp global rib -a ipv6 summary 2>/dev/null |
    awk -F'[:,] *' '/Destination/ { print $2; exit }'
}
wait_for() { # DESCRIPTION TIMEOUT_S COMMAND... -> waits until the command prints "ok"
  local what=$1 limit=$2 t0
  shift 2
  t0=$(date +%s)
  until [ "$("$@")" = ok ]; do
    if [ $(($(date +%s) - t0)) -ge "$limit" ]; then
      echo "memory.sh: timed out waiting for $what (BIRD: $(bird_routes) routes, gobgpd: $(gobgp_routes))" >&2
      tail -n 5 "$dir"/*.log >&2 || true
      return 1
    fi
    sleep 0.05
  done
}
have_n() { # N -> "ok" when BIRD and gobgpd hold N routes
  local b g
  b=$(bird_routes); g=$(gobgp_routes)
  [ "${b:-x}" = "$1" ] && [ "${g:-x}" = "$1" ] && echo ok || true
}
sessions_up() {
  ip netns exec "$ns_br" birdc -s "$dir/bird.ctl" show protocols ferrolb 2>/dev/null | grep -q Established &&
    ip netns exec "$ns_gb" gobgp neighbor 2>/dev/null | grep -q Establ && echo ok || true
}

# results: "process n rep vmhwm rss cpu settle" lines
results=$dir/results
: >"$results"

run_speaker_case() { # N REP
  local n=$1 rep=$2 t0 t1 p_f p_b p_g c0f c0b c0g c1f c1b c1g
  services_yaml "$n" >"$dir/services.yaml"
  rm -f "$dir/state.json" "$dir/bird.ctl"
  ip netns exec "$ns_br" bird -f -c "$dir/bird.conf" -s "$dir/bird.ctl" 2>"$dir/bird.log" &
  p_b=$!; pids+=("$p_b")
  ip netns exec "$ns_gb" gobgpd -f "$dir/gobgpd.toml" -t toml -l warn >"$dir/gobgpd.log" 2>&1 &
  p_g=$!; pids+=("$p_g")
  sleep 0.3
  t0=$(now_ms)
  RUST_LOG=warn ip netns exec "$ns_nd" "$FERROLB_BIN" standalone --config "$dir/ferrolb.yaml" \
    --services "$dir/services.yaml" --state "$dir/state.json" --node bench >/dev/null 2>"$dir/ferrolb.log" &
  p_f=$!; pids+=("$p_f")
  wait_for "both BGP sessions" 60 sessions_up
  wait_for "$n routes at BIRD and gobgpd" 120 have_n "$n"
  t1=$(now_ms)
  sleep 1
  c0f=$(cpu_ticks "$p_f"); c0b=$(cpu_ticks "$p_b"); c0g=$(cpu_ticks "$p_g")
  sleep "$idle"
  c1f=$(cpu_ticks "$p_f"); c1b=$(cpu_ticks "$p_b"); c1g=$(cpu_ticks "$p_g")
  local name pid c0 c1
  for name in ferrolb-standalone bird gobgpd; do
    case $name in
    ferrolb-standalone) pid=$p_f c0=$c0f c1=$c1f ;;
    bird) pid=$p_b c0=$c0b c1=$c1b ;;
    gobgpd) pid=$p_g c0=$c0g c1=$c1g ;;
    esac
    echo "$name $n $rep $(status_kib "$pid" VmHWM) $(status_kib "$pid" VmRSS)" \
      "$(awk -v d=$((c1 - c0)) -v hz="$hz" -v s="$idle" 'BEGIN { printf "%.2f", 100 * d / hz / s }')" \
      "$((t1 - t0))" >>"$results"
  done
  stop_pids
}

echo "memory benchmark ($([ "$smoke" = 1 ] && echo smoke || echo full); sizes ${sizes[*]}; median of $reps; idle window ${idle}s)" >&2
for n in "${sizes[@]}"; do
  for rep in $(seq 1 "$reps"); do
    run_speaker_case "$n" "$rep"
  done
done

# --- the controller against a throw-away apiserver (optional) ---
run_controller_case() { # N REP
  local n=$1 rep=$2 kc p t0 t1 c0 c1
  kc=$testenv/kubeconfig
  local kubectl=(kubectl --kubeconfig "$kc")
  "${kubectl[@]}" delete namespace bench --wait=true >/dev/null 2>&1 || true
  "${kubectl[@]}" create namespace bench >/dev/null
  if [ "$n" -gt 0 ]; then
    services_yaml "$n" >"$dir/svc.yaml"
    "${kubectl[@]}" apply -f "$dir/svc.yaml" >/dev/null
  fi
  t0=$(now_ms)
  RUST_LOG=warn "$FERROLB_BIN" controller --kubeconfig "$kc" >/dev/null 2>"$dir/controller.log" &
  p=$!; pids+=("$p")
  local limit=$((60 + n / 50)) start
  start=$(date +%s)
  until [ "$("${kubectl[@]}" get svc -n bench -o jsonpath='{range .items[*]}{.status.loadBalancer.ingress[0].ip}{"\n"}{end}' | grep -c .)" -ge "$n" ]; do
    [ $(($(date +%s) - start)) -ge "$limit" ] && { echo "memory.sh: controller did not assign $n" >&2; break; }
    sleep 0.5
  done
  t1=$(now_ms)
  sleep 1
  c0=$(cpu_ticks "$p"); sleep "$idle"; c1=$(cpu_ticks "$p")
  echo "ferrolb-controller $n $rep $(status_kib "$p" VmHWM) $(status_kib "$p" VmRSS)" \
    "$(awk -v d=$((c1 - c0)) -v hz="$hz" -v s="$idle" 'BEGIN { printf "%.2f", 100 * d / hz / s }')" \
    "$((t1 - t0))" >>"$results"
  stop_pids
}
if [ "$controller" = 1 ]; then
  if ! command -v kubectl >/dev/null; then
    echo "memory.sh: --controller needs kubectl; skipped" >&2
  else
    testenv=$(OWNER_PID=$$ bash e2e/k8s/start-testenv.sh | tail -1)
    kubectl --kubeconfig "$testenv/kubeconfig" apply -f manifests/ >/dev/null 2>&1 || true
    kubectl --kubeconfig "$testenv/kubeconfig" -n metallb-system create configmap config \
      --from-literal=config="$(printf 'address-pools:\n- name: mem\n  protocol: layer2\n  addresses:\n  - 2001:db8:100::/108\n')" >/dev/null
    for n in "${sizes[@]}"; do
      for rep in $(seq 1 "$reps"); do run_controller_case "$n" "$rep"; done
    done
  fi
fi

# --- medians, table, JSON lines ---
awk -v reps="$reps" '
function median(arr, k,   i, j, t, m) {
  for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
  m = int((k + 1) / 2)
  return (k % 2) ? arr[m] : (arr[m] + arr[m + 1]) / 2
}
{
  key = $1 " " $2
  if (!(key in cnt)) { order[++nk] = key }
  c = ++cnt[key]
  hwm[key, c] = $4; rss[key, c] = $5; cpu[key, c] = $6; settle[key, c] = $7
}
END {
  printf "%-20s %7s %12s %12s %12s %12s\n", "process", "n", "VmHWM MiB", "RSS MiB", "idle CPU %", "settle ms" > "/dev/stderr"
  for (i = 1; i <= nk; i++) {
    key = order[i]; split(key, kp, " "); k = cnt[key]
    for (j = 1; j <= k; j++) { a[j] = hwm[key, j] }; h = median(a, k)
    for (j = 1; j <= k; j++) { a[j] = rss[key, j] }; r = median(a, k)
    for (j = 1; j <= k; j++) { a[j] = cpu[key, j] }; u = median(a, k)
    for (j = 1; j <= k; j++) { a[j] = settle[key, j] }; s = median(a, k)
    printf "%-20s %7d %12.1f %12.1f %12.2f %12d\n", kp[1], kp[2], h / 1024, r / 1024, u, s > "/dev/stderr"
    printf "{\"bench\":\"memory\",\"case\":\"%s\",\"n\":%d,\"vmhwm_kib\":%d,\"rss_kib\":%d,\"idle_cpu_pct\":%.2f,\"settle_ms\":%d,\"reps\":%d}\n", kp[1], kp[2], h, r, u, s, k
  }
}' "$results"
