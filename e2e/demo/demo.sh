#!/usr/bin/env bash
# ferrolb in one command (`sudo make demo`): BIRD, two nodes running `ferrolb standalone`, and a
# client, each in a network namespace this script creates and always removes
# (flb-demo-<pid>-*), all on one bridged LAN 192.0.2.0/24:
#
#   router  192.0.2.1    BIRD, AS 64513, installs what it learns into its kernel
#   node-a  192.0.2.11   ferrolb standalone (AS 64512), web server, service addresses on lo
#   node-b  192.0.2.12   the same, same files, own --state; membership with node-a
#   client  192.0.2.100  arping, curl, the failover prober (route to 198.51.100.0/24 via router)
#
# It prints six short sections (assignments, BIRD's routes, ARP, curl, failover, a refused config
# change and its fix) and exits 0 only if every step worked. Needs root; installs missing Debian
# packages. Environment: FERROLB_BIN (use this binary, skip the build), CARGO (default cargo),
# DEMO_KEEP=1 (keep the work directory even on success).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEMO="$ROOT/e2e/demo"
PREFIX="flb-demo-$$"
NS_SW="$PREFIX-sw"
NS_RT="$PREFIX-rt"
NS_CL="$PREFIX-cl"
NODES=(node-a node-b)
declare -A NS=([node-a]="$PREFIX-a" [node-b]="$PREFIX-b")
declare -A ADDR=([node-a]=192.0.2.11 [node-b]=192.0.2.12)
declare -A MAC=() FLB_PID=() HTTP_PID=()
CREATED=()   # namespaces this run created, removed by name on exit
DIR=""
STEP="setup (packages, build, namespaces)"
T0=""

say() { printf '%s\n' "$*"; }
indent() { sed 's/^/    /'; }
ms() { date +%s%3N; }
elapsed() { awk -v a="$T0" -v b="$(ms)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

fail() {
  say "" >&2
  say "demo: FAILED at step $STEP: $*" >&2
  exit 1
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  disown -a 2>/dev/null || true  # no "Killed" job notices
  for ns in "${CREATED[@]}"; do
    # Every background process this run started runs inside one of its namespaces, and nothing
    # else does: kill them by pid from there (never by name, never a pid that might be reused).
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  done
  for ns in "${CREATED[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [ -n "$DIR" ] && [ -d "$DIR" ]; then
    if [ "$rc" -ne 0 ]; then
      for f in "$DIR"/node-*.log "$DIR"/node-*.out "$DIR"/bird.log; do
        [ -s "$f" ] || continue
        say "--- last lines of $(basename "$f") ---" >&2
        tail -n 15 "$f" >&2
      done
      say "demo: logs kept in $DIR" >&2
    elif [ "${DEMO_KEEP:-}" = 1 ]; then
      say "demo: files kept in $DIR"
    else
      rm -rf "$DIR"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls `cmd` every 0.1 s until it succeeds; fails the step after `secs` seconds.
wait_until() {
  local secs=$1 what=$2
  shift 2
  local deadline=$(($(ms) + secs * 1000))
  until "$@"; do
    [ "$(ms)" -lt "$deadline" ] || fail "$what: not within ${secs} s"
    sleep 0.1
  done
}

section() {
  STEP="$1 ($2)"
  say ""
  say "== $1. $2 [+$(elapsed) s] =="
}

# ---------------------------------------------------------------- prerequisites
[ "$(id -u)" -eq 0 ] || { say "demo: needs root for network namespaces: sudo make demo" >&2; exit 1; }

declare -A PKG=([ip]=iproute2 [bird]=bird2 [birdc]=bird2 [arping]=iputils-arping [curl]=curl
                [python3]=python3 [sysctl]=procps)
missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  command -v apt-get >/dev/null 2>&1 || fail "missing packages ${missing[*]} (and no apt-get to install them)"
  say "demo: installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } ||
    fail "apt-get install ${missing[*]} failed"
fi
PY=$(command -v python3)

if [ -n "${FERROLB_BIN:-}" ]; then
  BIN=$FERROLB_BIN
else
  say "demo: building ferrolb (cargo build --bin ferrolb)"
  CARGO=${CARGO:-cargo}
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] &&
     sudo -u "$SUDO_USER" -H bash -lc "command -v $CARGO" >/dev/null 2>&1; then
    # Build as the user who ran sudo, so target/ stays theirs.
    sudo -u "$SUDO_USER" -H bash -lc "cd '$ROOT' && $CARGO build -q --bin ferrolb" ||
      fail "cargo build --bin ferrolb failed"
  elif command -v "$CARGO" >/dev/null 2>&1; then
    (cd "$ROOT" && "$CARGO" build -q --bin ferrolb) || fail "cargo build --bin ferrolb failed"
  else
    fail "cargo not found (install Rust, or set FERROLB_BIN to a built ferrolb)"
  fi
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ferrolb"
fi
[ -x "$BIN" ] || fail "no ferrolb binary at $BIN"

T0=$(ms)
DIR=$(mktemp -d "/tmp/$PREFIX.XXXXXX")
cp "$DEMO/config.yaml" "$DIR/config.yaml"
cp "$DEMO/services.yaml" "$DIR/services.yaml"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/ml-secret"

# ---------------------------------------------------------------- topology
newns() {
  ip netns add "$1"
  CREATED+=("$1")
  ip -n "$1" link set lo up
}
port=0
attach() { # attach NS: its eth0 becomes a port of the LAN bridge
  ip -n "$1" link add eth0 type veth peer name "p$port" netns "$NS_SW"
  ip -n "$NS_SW" link set "p$port" master br0 up
  ip -n "$1" link set eth0 up
  port=$((port + 1))
}
# Foreground only: in the background, $! would be a subshell's pid, not the program's.
nsexec() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

newns "$NS_SW"
ip -n "$NS_SW" link add br0 type bridge forward_delay 0
ip -n "$NS_SW" link set br0 up
for ns in "$NS_RT" "${NS[node-a]}" "${NS[node-b]}" "$NS_CL"; do
  newns "$ns"
  attach "$ns"
done
ip -n "$NS_RT" addr add 192.0.2.1/24 dev eth0
nsexec "$NS_RT" sysctl -q -w net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 \
  net.ipv4.conf.eth0.send_redirects=0
for n in "${NODES[@]}"; do
  ip -n "${NS[$n]}" addr add "${ADDR[$n]}/24" dev eth0
  # Service addresses go on lo (as kube-proxy IPVS puts them on kube-ipvs0); the kernel must not
  # answer ARP for them, so only ferrolb does.
  nsexec "${NS[$n]}" sysctl -q -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
  MAC[$n]=$(nsexec "${NS[$n]}" cat /sys/class/net/eth0/address)
done
ip -n "$NS_CL" addr add 192.0.2.100/24 dev eth0
ip -n "$NS_CL" route add 198.51.100.0/24 via 192.0.2.1

cat >"$DIR/bird.conf" <<'EOF'
router id 192.0.2.1;
protocol device {}
protocol kernel { merge paths on; ipv4 { export all; import none; }; }
protocol bgp node_a {
  local 192.0.2.1 as 64513; neighbor 192.0.2.11 as 64512; passive on;
  ipv4 { import all; export none; };
}
protocol bgp node_b {
  local 192.0.2.1 as 64513; neighbor 192.0.2.12 as 64512; passive on;
  ipv4 { import all; export none; };
}
EOF
ip netns exec "$NS_RT" bird -f -c "$DIR/bird.conf" -s "$DIR/bird.ctl" >"$DIR/bird.log" 2>&1 &
birdc() { command birdc -s "$DIR/bird.ctl" "$@" | sed '/^BIRD .* ready\.$/d'; }
bird_up() { birdc show status >/dev/null 2>&1; }
wait_until 10 "BIRD started" bird_up

start_node() {
  local n=$1 other=$2
  ip netns exec "${NS[$n]}" "$BIN" standalone --config "$DIR/config.yaml" --services "$DIR/services.yaml" \
    --node "$n" --state "$DIR/state-$n.json" --ml-bind "${ADDR[$n]}:7946" \
    --ml-join "${ADDR[$other]}:7946" --ml-secret-file "$DIR/ml-secret" \
    >"$DIR/$n.out" 2>"$DIR/$n.log" </dev/null &
  FLB_PID[$n]=$!
}
start_node node-a node-b
start_node node-b node-a

say "ferrolb demo: namespaces $PREFIX-{sw,rt,a,b,cl} on one LAN, 192.0.2.0/24"
say "  router 192.0.2.1 (BIRD, AS 64513) | node-a 192.0.2.11, node-b 192.0.2.12 (ferrolb standalone,"
say "  AS 64512, membership) | client 192.0.2.100 | config: e2e/demo/config.yaml, e2e/demo/services.yaml"

# ---------------------------------------------------------------- 1. assignments
section 1 "Assignments (ferrolb standalone's own output)"
nservices=$(grep -c '^kind: Service' "$DIR/services.yaml")
assigned() {
  kill -0 "${FLB_PID[$1]}" 2>/dev/null || fail "ferrolb on $1 exited: $(tail -n 3 "$DIR/$1.log")"
  [ "$(grep -c ' -> ' "$DIR/$1.out" || true)" -ge "$nservices" ]
}
wait_until 15 "node-a assigned all $nservices Services" assigned node-a
wait_until 15 "node-b assigned all $nservices Services" assigned node-b
indent <"$DIR/node-a.out"
grep ' -> ' "$DIR/node-a.out" | sort >"$DIR/a.sorted"
grep ' -> ' "$DIR/node-b.out" | sort >"$DIR/b.sorted"
cmp -s "$DIR/a.sorted" "$DIR/b.sorted" || fail "node-a and node-b disagree: $(diff "$DIR/a.sorted" "$DIR/b.sorted" | tr '\n' ' ')"
say "  node-b printed the same $nservices assignments."
ip_of() { sed -n "s#^$1 -> \([^ ,]*\).*#\1#p" "$DIR/node-a.out" | tail -n 1; }
L2_IP=$(ip_of default/web)
BGP_IP=$(ip_of default/shop)
DNS_IP=$(ip_of kube-system/dns)
[ -n "$L2_IP" ] && [ -n "$BGP_IP" ] && [ -n "$DNS_IP" ] || fail "missing an assignment"
[ "$DNS_IP" = 192.0.2.206 ] || fail "kube-system/dns asked for 192.0.2.206 and got $DNS_IP"

# Each node: the assigned addresses on lo, and a web server that says which node it is.
for n in "${NODES[@]}"; do
  for a in "$L2_IP" "$BGP_IP" "$DNS_IP"; do ip -n "${NS[$n]}" addr add "$a/32" dev lo; done
  mkdir -p "$DIR/www-$n"
  say "hello from $n" >"$DIR/www-$n/index.html"
  ip netns exec "${NS[$n]}" "$PY" -m http.server 80 --bind 0.0.0.0 --directory "$DIR/www-$n" \
    >"$DIR/http-$n.log" 2>&1 </dev/null &
  HTTP_PID[$n]=$!
done

# ---------------------------------------------------------------- 2. BGP
section 2 "BGP: BIRD's routes for default/shop $BGP_IP (birdc show route $BGP_IP/32)"
both_paths() {
  local r
  r=$(birdc show route "$BGP_IP/32" 2>/dev/null) || return 1
  [[ $r == *"via ${ADDR[node-a]} "* && $r == *"via ${ADDR[node-b]} "* ]]
}
wait_until 15 "BIRD has routes from both nodes" both_paths
birdc show route "$BGP_IP/32" | indent
kernel_both() {
  local k
  k=$(ip -n "$NS_RT" route show "$BGP_IP")
  [[ $k == *"${ADDR[node-a]}"* && $k == *"${ADDR[node-b]}"* ]]
}
wait_until 5 "router kernel route over both nodes" kernel_both
say "  router's kernel: $(ip -n "$NS_RT" route show "$BGP_IP" | tr -s ' \n\t' ' ' | sed 's/ $//')"

# ---------------------------------------------------------------- 3. ARP
section 3 "Layer2: who answers ARP for default/web $L2_IP (arping from the client)"
arp_macs() {
  nsexec "$NS_CL" arping -c "$1" -w "$(($1 + 1))" -I eth0 "$L2_IP" 2>&1 | tee "$DIR/arping.out" |
    sed -n 's/.*reply from .*\[\(.*\)\].*/\1/p' | tr 'A-F' 'a-f'
}
one_answerer() {
  local m
  m=$(arp_macs 3)
  [ "$(printf '%s\n' "$m" | grep -c .)" -eq 3 ] && [ "$(printf '%s\n' "$m" | sort -u | wc -l)" -eq 1 ]
}
# Until the two members have found each other each counts only itself: wait for that, then for
# a single answerer.
joined() { grep -q "event=Join live=node-a,node-b" "$DIR/$1.log"; }
wait_until 15 "node-a seeing node-b (membership)" joined node-a
wait_until 15 "node-b seeing node-a (membership)" joined node-b
wait_until 15 "one node answering ARP" one_answerer
grep -E 'reply from|Received' "$DIR/arping.out" | indent
WIN_MAC=$(sed -n 's/.*reply from .*\[\(.*\)\].*/\1/p' "$DIR/arping.out" | head -n 1 | tr 'A-F' 'a-f')
WIN=""
for n in "${NODES[@]}"; do [ "${MAC[$n]}" = "$WIN_MAC" ] && WIN=$n; done
[ -n "$WIN" ] || fail "ARP reply from unknown MAC $WIN_MAC"
OTHER=node-a
[ "$WIN" = node-a ] && OTHER=node-b
say "  $WIN_MAC is $WIN's eth0 ($OTHER's is ${MAC[$OTHER]}): $WIN is the layer2 winner for $L2_IP."

# ---------------------------------------------------------------- 4. curl
section 4 "curl through each address from the client"
get() { nsexec "$NS_CL" curl -sS -m 2 "http://$1/"; }
answers() { get "$1" >/dev/null 2>&1; }
wait_until 10 "curl http://$L2_IP/" answers "$L2_IP"
l2_reply=$(get "$L2_IP") || fail "curl http://$L2_IP/ failed"
say "  curl http://$L2_IP/  (layer2)        -> $l2_reply"
[ "$l2_reply" = "hello from $WIN" ] || fail "layer2 address answered by '$l2_reply', ARP winner is $WIN"
wait_until 10 "curl http://$BGP_IP/" answers "$BGP_IP"
bgp_reply=$(get "$BGP_IP") || fail "curl http://$BGP_IP/ failed"
say "  curl http://$BGP_IP/ (bgp, via BIRD) -> $bgp_reply"
[[ $bgp_reply == "hello from node-"[ab] ]] || fail "bgp address answered '$bgp_reply'"

# ---------------------------------------------------------------- 5. failover
section 5 "Failover: $WIN dies (SIGKILL), $OTHER takes $L2_IP over"
ip netns exec "$NS_CL" "$PY" "$DEMO/probe.py" "$L2_IP" --interval 10 --timeout 0.5 --streak 30 --max 15 \
  --kill-file "$DIR/kill-ms" --log "$DIR/probe.log" >"$DIR/probe.out" 2>&1 </dev/null &
PROBE_PID=$!
probing() {
  local c
  c=$(grep -c "hello from $WIN" "$DIR/probe.log" 2>/dev/null) || true
  [ "${c:-0}" -ge 30 ]
}
wait_until 10 "prober getting answers from $WIN" probing
say "  SIGKILL to $WIN's ferrolb and web server (the node dies). The client sends an HTTP request"
say "  every 10 ms to http://$L2_IP/ (times relative to the kill):"
ms >"$DIR/kill-ms"
# The node dies: its ferrolb and its web server, SIGKILL.
disown "${FLB_PID[$WIN]}" "${HTTP_PID[$WIN]}"
kill -9 "${FLB_PID[$WIN]}" "${HTTP_PID[$WIN]}"
probe_rc=0
wait "$PROBE_PID" || probe_rc=$?
grep -v '^outage_ms=' "$DIR/probe.out" | indent
summary=$(grep '^outage_ms=' "$DIR/probe.out" || true)
[ "$probe_rc" -eq 0 ] || fail "traffic did not move to another node: ${summary:-$(cat "$DIR/probe.out")}"
outage=$(sed -n 's/^outage_ms=\([0-9]*\) .*/\1/p' <<<"$summary")
old=$(sed -n 's/.* old=\([^ ]*\) .*/\1/p' <<<"$summary")
new=$(sed -n 's/.* new=\([^ ]*\) .*/\1/p' <<<"$summary")
first_new=$(sed -n 's/.* new_first_answer_after_kill_ms=\([0-9-]*\).*/\1/p' <<<"$summary")
[ "$old" = "$WIN" ] && [ "$new" = "$OTHER" ] && [ -n "$outage" ] ||
  fail "prober saw $old then $new, want $WIN then $OTHER: $summary"
say "  traffic stopped for $outage ms; $OTHER answered the first request ${first_new} ms after the kill."
kill_ms=$(cat "$DIR/kill-ms")
{
  grep -E "membership: live set changed .*peer=$WIN event=" "$DIR/$OTHER.log" | tail -n 1
  grep -E "layer2: announcing ip=$L2_IP\$" "$DIR/$OTHER.log" | tail -n 1
} | while read -r ts _level _module msg; do
  t=$(date -d "$ts" +%s%3N)
  printf '  %s log at %+d ms: %s\n' "$OTHER" $((t - kill_ms)) "$msg" | cut -c1-110
done
after_mac() { [ "$(arp_macs 2 | sort -u)" = "${MAC[$OTHER]}" ]; }
wait_until 5 "ARP answered by $OTHER" after_mac
say "  arping $L2_IP now: $(grep -m1 'reply from' "$DIR/arping.out" | tr -s ' ') = $OTHER"
one_path() {
  local r
  r=$(birdc show route "$BGP_IP/32" 2>/dev/null) || return 1
  [[ $r == *"via ${ADDR[$OTHER]} "* && $r != *"via ${ADDR[$WIN]} "* ]]
}
wait_until 10 "BIRD dropped $WIN's route" one_path
say "  BIRD: $BGP_IP now only via ${ADDR[$OTHER]} ($OTHER); $WIN's BGP session is gone."

# ---------------------------------------------------------------- 6. config change
section 6 "A breaking config change is refused, the fix is accepted"
OUT="$DIR/$OTHER.out"
apply() { cp "$1" "$DIR/.config.tmp" && mv "$DIR/.config.tmp" "$DIR/config.yaml"; }
# The Services as `kubectl get svc -A -o yaml` would show them now (JSON is YAML), from the state.
"$PY" - "$DIR/state-$OTHER.json" >"$DIR/services-now.yaml" <<'EOF'
import json, sys
state = json.load(open(sys.argv[1]))
items = []
for key, a in sorted(state["assignments"].items()):
    ns, name = key.split("/", 1)
    items.append({"apiVersion": "v1", "kind": "Service",
                  "metadata": {"namespace": ns, "name": name},
                  "spec": {"type": "LoadBalancer"},
                  "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in a["ips"]]}}})
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=1))
EOF
grep -q -- '- 192.0.2.200/29' "$DIR/config.yaml" || fail "config.yaml has no 192.0.2.200/29 line"
sed 's#- 192.0.2.200/29#- 192.0.2.208/29#' "$DIR/config.yaml" >"$DIR/config-broken.yaml"
sed 's#^\( *\)- 192.0.2.200/29#&\n\1- 192.0.2.208/29#' "$DIR/config.yaml" >"$DIR/config-fixed.yaml"
say "  change: pool lan 192.0.2.200/29 -> 192.0.2.208/29 (meant to grow the pool, replaced its range)"
lines=$(wc -l <"$OUT")
apply "$DIR/config-broken.yaml"
refused() { tail -n +"$((lines + 1))" "$OUT" | grep -q 'config refused: keeping the previous configuration'; }
wait_until 5 "$OTHER refusing the broken config" refused
say "  ferrolb standalone ($OTHER) prints:"
tail -n +"$((lines + 1))" "$OUT" | indent
tail -n +"$((lines + 1))" "$OUT" | grep -q "kube-system/dns ip $DNS_IP" || fail "refusal does not name kube-system/dns"
say "  \$ ferrolb config check --services services-now.yaml config-broken.yaml"
rc=0
(cd "$DIR" && "$BIN" config check --services services-now.yaml config-broken.yaml) >"$DIR/check1.out" 2>&1 || rc=$?
indent <"$DIR/check1.out"
say "    (exit status $rc)"
[ "$rc" -eq 1 ] || fail "config check of the broken config exited $rc, want 1"
grep -q "breaking" "$DIR/check1.out" || fail "config check did not report the breakage"

say "  fix: keep 192.0.2.200/29 and add 192.0.2.208/29"
say "  \$ ferrolb config check --services services-now.yaml config-fixed.yaml"
rc=0
(cd "$DIR" && "$BIN" config check --services services-now.yaml config-fixed.yaml) >"$DIR/check2.out" 2>&1 || rc=$?
indent <"$DIR/check2.out"
say "    (exit status $rc)"
[ "$rc" -eq 0 ] || fail "config check of the fixed config exited $rc, want 0"
lines=$(wc -l <"$OUT")
apply "$DIR/config-fixed.yaml"
loaded() { tail -n +"$((lines + 1))" "$OUT" | grep -qx 'config loaded'; }
wait_until 5 "$OTHER loading the fixed config" loaded
say "  ferrolb standalone ($OTHER) prints:"
tail -n +"$((lines + 1))" "$OUT" | indent
if tail -n +"$((lines + 1))" "$OUT" | grep -qE ' released | -> '; then
  fail "an address moved when the fixed config loaded"
fi
l2_reply=$(get "$L2_IP") || fail "curl http://$L2_IP/ after the config change failed"
say "  curl http://$L2_IP/ -> $l2_reply (no address moved)"
[ "$l2_reply" = "hello from $OTHER" ] || fail "layer2 address answered by '$l2_reply'"

STEP="done"
say ""
say "demo: all 6 steps passed in $(elapsed) s (after the build); layer2 failover: traffic stopped for $outage ms."
