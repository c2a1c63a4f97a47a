#!/usr/bin/env bash
# Build a real kube-apiserver (v1.20.2) from Debian bookworm's `kubernetes` source package and fetch
# Debian's etcd-server, for the Kubernetes integration tests (e2e/tests/k8s/).
#
# Idempotent: when ~/.cache/ferrolb-k8s/<version>/bin/{kube-apiserver,etcd} exist it only prints
# their directory. Nothing is installed system-wide: the Go toolchain, etcd and rsync are unpacked
# from .deb files with `dpkg -x` into a scratch directory. apt is used through a private
# configuration (own source list with a deb-src line derived from this machine's apt sources, own
# lists and archives directories), so /etc/apt is never modified.
#
# One build at a time per cache directory: a caller that finds no binaries takes an exclusive
# flock on ${CACHE_ROOT}/build.lock, so when several start at once (test threads or test binaries
# each starting an apiserver, CI), one builds and the others wait, then find the binaries built.
#
# $FERROLB_K8S_FAKE_BUILD (for the test of the lock only, in e2e/src/k8s/testenv.rs): a shell
# command run under the same lock instead of the download and build; it must create
# $OUT/kube-apiserver and $OUT/etcd.
#
# Output (last line on stdout): the directory holding kube-apiserver and etcd.
set -euo pipefail

K8S_SRC_VERSION="${K8S_SRC_VERSION:-1.20.5+really1.20.2-1.1+deb12u1}"
K8S_VERSION="v1.20.2"
CACHE_ROOT="${FERROLB_K8S_CACHE:-${HOME}/.cache/ferrolb-k8s}"
PREFIX="${CACHE_ROOT}/${K8S_VERSION}"
BIN="${PREFIX}/bin"

log() { echo "build-kube-apiserver: $*" >&2; }

cached() { [[ -x "${BIN}/kube-apiserver" && -x "${BIN}/etcd" ]]; }
if cached; then
  log "cached in ${BIN}"
  echo "${BIN}"
  exit 0
fi

mkdir -p "${CACHE_ROOT}"
exec 9>"${CACHE_ROOT}/build.lock"
if ! flock --nonblock 9; then
  log "another build holds ${CACHE_ROOT}/build.lock: waiting for it"
  flock 9
fi
if cached; then
  log "built meanwhile by another caller: ${BIN}"
  echo "${BIN}"
  exit 0
fi
START=$(date +%s)
rm -rf "${BIN}.tmp"

# Puts the binaries built into ${BIN}.tmp in place; the last line printed is their directory.
finish() {
  rm -rf "${BIN}"
  mv "${BIN}.tmp" "${BIN}"
  "${BIN}/kube-apiserver" --version >&2
  log "built in $(( $(date +%s) - START )) s"
  echo "${BIN}"
  exit 0
}

if [[ -n "${FERROLB_K8S_FAKE_BUILD:-}" ]]; then
  log "FERROLB_K8S_FAKE_BUILD: running it instead of the build"
  OUT="${BIN}.tmp" bash -c "${FERROLB_K8S_FAKE_BUILD}" >&2
  finish
fi

WORK="$(mktemp -d "${CACHE_ROOT}.build.XXXXXX" 2>/dev/null || { mkdir -p "$(dirname "${CACHE_ROOT}")"; mktemp -d "${CACHE_ROOT}.build.XXXXXX"; })"
cleanup() { rm -rf "${WORK}"; }
trap cleanup EXIT
log "working in ${WORK}"

# --- private apt configuration ------------------------------------------------------------------
APT="${WORK}/apt"
mkdir -p "${APT}/sources.list.d" "${APT}/lists/partial" "${APT}/archives/partial" "${APT}/cache"
n=0
shopt -s nullglob
for f in /etc/apt/sources.list.d/*.sources; do
  # deb822 files: add deb-src to every stanza that has deb.
  sed -E 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb deb-src/' "$f" >"${APT}/sources.list.d/$(basename "$f")"
  n=$((n + 1))
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [[ -f "$f" ]] || continue
  grep -E '^[[:space:]]*deb[[:space:]]' "$f" >"${APT}/tmp.list" || true
  { cat "${APT}/tmp.list"; sed -E 's/^[[:space:]]*deb[[:space:]]/deb-src /' "${APT}/tmp.list"; } \
    >"${APT}/sources.list.d/$(basename "$f" .list)-$n.list"
  n=$((n + 1))
done
rm -f "${APT}/tmp.list"
APT_OPTS=(
  -o "Dir::Etc::SourceList=/dev/null"
  -o "Dir::Etc::SourceParts=${APT}/sources.list.d"
  -o "Dir::State::Lists=${APT}/lists"
  -o "Dir::Cache=${APT}/cache"
  -o "Dir::Cache::Archives=${APT}/archives"
  -o "APT::Sandbox::User=root"
)
log "apt-get update (private lists)"
apt-get "${APT_OPTS[@]}" -qq update >&2

# --- sources and toolchain ----------------------------------------------------------------------
mkdir -p "${WORK}/src" "${WORK}/debs" "${WORK}/root"
log "downloading src:kubernetes=${K8S_SRC_VERSION}"
(cd "${WORK}/src" && apt-get "${APT_OPTS[@]}" -qq source --download-only "kubernetes=${K8S_SRC_VERSION}" >&2)
log "downloading golang-1.19, reflect2, etcd-server, rsync"
(cd "${WORK}/debs" && apt-get "${APT_OPTS[@]}" -qq download \
  golang-1.19-go golang-1.19-src golang-github-modern-go-reflect2-dev etcd-server rsync >&2)
for d in "${WORK}"/debs/*.deb; do dpkg -x "$d" "${WORK}/root"; done
ROOT="${WORK}/root"
export GOROOT="${ROOT}/usr/lib/go-1.19"
export PATH="${GOROOT}/bin:${ROOT}/usr/bin:${PATH}"
export GOCACHE="${WORK}/gocache" GOPATH="${WORK}/gopath" GOFLAGS="-mod=vendor" GOTOOLCHAIN=local
go version >&2
rsync --version | sed -n 1p >&2

log "unpacking source"
(cd "${WORK}/src" && dpkg-source --no-check -x ./*.dsc k8s >&2)
K8S="${WORK}/src/k8s"

# vendored reflect2 v1.0.1 crashes on the Go >= 1.18 runtime (SIGSEGV in mapiternext); use
# Debian's 1.0.2 source under the same module path (vendor/modules.txt stays consistent).
R2_SRC="${ROOT}/usr/share/gocode/src/github.com/modern-go/reflect2"
R2_DST="${K8S}/vendor/github.com/modern-go/reflect2"
[[ -d "${R2_SRC}" ]] || { log "reflect2 source not found at ${R2_SRC}"; exit 1; }
rm -rf "${R2_DST}"
mkdir -p "${R2_DST}"
find "${R2_SRC}" -maxdepth 1 -type f -name '*.go' ! -name '*_test.go' -exec cp {} "${R2_DST}/" \;
cp "${R2_SRC}"/LICENSE "${R2_DST}/" 2>/dev/null || true

cat >"${WORK}/version.env" <<VER
KUBE_GIT_COMMIT='faecb196815e248d3ecfb03c680a4507229c2a56'
KUBE_GIT_TREE_STATE='clean'
KUBE_GIT_VERSION='${K8S_VERSION}'
KUBE_GIT_MAJOR='1'
KUBE_GIT_MINOR='20'
VER
log "make WHAT=cmd/kube-apiserver (several minutes)"
(cd "${K8S}" && KUBE_GIT_VERSION_FILE="${WORK}/version.env" make WHAT=cmd/kube-apiserver >&2)

OUT="$(find "${K8S}/_output" -type f -name kube-apiserver -perm -u+x | head -1)"
[[ -n "${OUT}" ]] || { log "kube-apiserver binary not produced"; exit 1; }
mkdir -p "${BIN}.tmp"
cp "${OUT}" "${BIN}.tmp/kube-apiserver"
cp "${ROOT}/usr/bin/etcd" "${BIN}.tmp/etcd"
finish
