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
# the throw-away apiserver of e2e/k8s/start-testenv.sh (needs kubectl and curl), at the same sizes:
# per size and repetition a fresh control plane (Service CIDR 10.128.0.0/18, no NodePorts, so 10k
# Services fit), the controller started with a pool, n Services created while it runs (its
# incremental path); case ferrolb-controller: the time until all n have an address, its CPU for
# that (cpu_ms), VmHWM/RSS and idle CPU. Then the controller is restarted on the n assigned
# Services; case ferrolb-controller-restart: VmHWM and CPU until it has planned them all, and
# ip_changes, how many Services' addresses the restart changed (must be 0). FERROLB_BENCH_ONLY=
# controller skips the speaker part.
#
# Usage (root): e2e/bench/memory.sh [--smoke] [--controller]
# Output: a table on stderr, one JSON object per measurement on stdout:
#   {"bench":"memory","case":PROCESS,"n":N,"vmhwm_kib":..,"rss_kib":..,"idle_cpu_pct":..,"settle_ms":..}
#   (controller cases add "cpu_ms" and "ip_changes")
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
if [ "${FERROLB_BENCH_ONLY:-}" != controller ]; then
  for n in "${sizes[@]}"; do
    for rep in $(seq 1 "$reps"); do
      run_speaker_case "$n" "$rep"
    done
  done
fi

# --- the controller against a throw-away apiserver (optional) ---
ctl_services() { # N PARTS -> PARTS files $dir/svc.K.yaml (created in parallel)
  awk -v n="$1" -v parts="$2" -v dir="$dir" 'BEGIN {
    for (i = 0; i < n; i++) printf "apiVersion: v1\nkind: Service\nmetadata:\n  name: s%05d\n  namespace: bench\nspec:\n  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  ipFamilies: [IPv4]\n  selector: {app: s%05d}\n  ports:\n  - port: 80\n    protocol: TCP\n---\n", i, i > (dir "/svc." (i % parts) ".yaml")
  }'
}
ctl_in_use() { # PORT -> addresses in use per the controller's metrics
  curl -fs "http://127.0.0.1:$1/metrics" 2>/dev/null |
    awk '/^metallb_allocator_addresses_in_use_total/ { s += $2 } END { print s + 0 }'
}
ctl_assigned() { # KUBECONFIG -> "name ip" of every Service in namespace bench that has an address
  kubectl --kubeconfig "$1" get svc -n bench \
    -o jsonpath='{range .items[*]}{.metadata.name} {.status.loadBalancer.ingress[0].ip}{"\n"}{end}' |
    awk 'NF == 2' | sort
}
ctl_start() { # KUBECONFIG PORT IDENTITY -> pid; waits for /readyz
  RUST_LOG=warn "$FERROLB_BIN" controller --kubeconfig "$1" --identity "$3" \
    --metrics-addr "127.0.0.1:$2" >/dev/null 2>>"$dir/controller.log" &
  local p=$!
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$2/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "$p"
}
ctl_wait() { # PORT N LIMIT_S -> waits until the controller's metrics count N addresses in use
  local t0
  t0=$(date +%s)
  until [ "$(ctl_in_use "$1")" -ge "$2" ]; do
    if [ $(($(date +%s) - t0)) -ge "$3" ]; then
      echo "memory.sh: controller has $(ctl_in_use "$1") of $2 addresses after $3 s" >&2
      return 1
    fi
    sleep 0.2
  done
}
run_controller_case() { # N REP
  local n=$1 rep=$2 kc port p t0 t1 c0 c1 cpu_run parts=4 k
  testenv=$(SERVICE_CIDR=10.128.0.0/18 OWNER_PID=$$ bash e2e/k8s/start-testenv.sh 2>/dev/null | tail -1)
  kc=$testenv/kubeconfig
  kubectl --kubeconfig "$kc" create namespace metallb-system >/dev/null
  kubectl --kubeconfig "$kc" create namespace bench >/dev/null
  kubectl --kubeconfig "$kc" -n metallb-system create configmap config \
    --from-literal=config="$(printf 'address-pools:\n- name: mem\n  protocol: layer2\n  addresses:\n  - 198.18.0.0/16\n')" >/dev/null
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  p=$(ctl_start "$kc" "$port" "bench-$rep"); pids+=("$p")
  rm -f "$dir"/svc.*.yaml
  t0=$(now_ms)
  if [ "$n" -gt 0 ]; then
    ctl_services "$n" "$parts"
    local creators=()
    for k in $(seq 0 $((parts - 1))); do
      kubectl --kubeconfig "$kc" create -f "$dir/svc.$k.yaml" >/dev/null &
      creators+=($!)
    done
    for k in "${creators[@]}"; do wait "$k" || echo "memory.sh: kubectl create failed" >&2; done
    ctl_wait "$port" "$n" $((120 + n / 20)) || true
    for _ in $(seq 1 120); do
      [ "$(ctl_assigned "$kc" | grep -c .)" -ge "$n" ] && break
      sleep 0.5
    done
  fi
  t1=$(now_ms)
  cpu_run=$(cpu_ticks "$p")
  sleep 1
  c0=$(cpu_ticks "$p"); sleep "$idle"; c1=$(cpu_ticks "$p")
  echo "ferrolb-controller $n $rep $(status_kib "$p" VmHWM) $(status_kib "$p" VmRSS)" \
    "$(awk -v d=$((c1 - c0)) -v hz="$hz" -v s="$idle" 'BEGIN { printf "%.2f", 100 * d / hz / s }')" \
    "$((t1 - t0))" "$((cpu_run * 1000 / hz))" 0 >>"$results"
  # Restart on the n assigned Services: no address may change.
  ctl_assigned "$kc" >"$dir/before"
  stop_pids
  t0=$(now_ms)
  p=$(ctl_start "$kc" "$port" "bench-$rep-restart"); pids+=("$p")
  ctl_wait "$port" "$n" $((60 + n / 50)) || true
  t1=$(now_ms)
  cpu_run=$(cpu_ticks "$p")
  sleep 1
  c0=$(cpu_ticks "$p"); sleep "$idle"; c1=$(cpu_ticks "$p")
  ctl_assigned "$kc" >"$dir/after"
  local changed
  changed=$(diff "$dir/before" "$dir/after" | grep -c '^>' || true)
  [ "$changed" = 0 ] || echo "memory.sh: the controller restart changed $changed addresses" >&2
  echo "ferrolb-controller-restart $n $rep $(status_kib "$p" VmHWM) $(status_kib "$p" VmRSS)" \
    "$(awk -v d=$((c1 - c0)) -v hz="$hz" -v s="$idle" 'BEGIN { printf "%.2f", 100 * d / hz / s }')" \
    "$((t1 - t0))" "$((cpu_run * 1000 / hz))" "$changed" >>"$results"
  stop_pids
  bash e2e/k8s/stop-testenv.sh "$testenv" >/dev/null 2>&1 || true
  testenv=
}
if [ "$controller" = 1 ]; then
  if ! command -v kubectl >/dev/null || ! command -v curl >/dev/null; then
    echo "memory.sh: --controller needs kubectl and curl; skipped" >&2
  else
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
  if (NF >= 9) { run[key, c] = $8; changes[key, c] = $9; ctl[key] = 1 }
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
    extra = ""
    if (key in ctl) {
      for (j = 1; j <= k; j++) { a[j] = run[key, j] }; m = median(a, k)
      x = 0; for (j = 1; j <= k; j++) { if (changes[key, j] > x) x = changes[key, j] }
      extra = sprintf(",\"cpu_ms\":%d,\"ip_changes\":%d", m, x)
      printf "%-20s %7s   CPU until all assigned/planned: %d ms; addresses changed by the restart (max): %d\n", "", "", m, x > "/dev/stderr"
    }
    printf "{\"bench\":\"memory\",\"case\":\"%s\",\"n\":%d,\"vmhwm_kib\":%d,\"rss_kib\":%d,\"idle_cpu_pct\":%.2f,\"settle_ms\":%d,\"reps\":%d%s}\n", kp[1], kp[2], h, r, u, s, k, extra
  }
}' "$results"
