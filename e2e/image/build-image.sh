#!/usr/bin/env bash
# Build the ferrolb OCI image without a Docker engine, then run it.
#
# What the Dockerfile does, done with local tools: a static musl `ferrolb` (cargo, target
# x86_64-unknown-linux-musl), put alone on an empty (scratch) root filesystem by umoci, image
# config user 65534:65534, entrypoint /ferrolb. Then the image is unpacked again from its OCI
# layout and run, in fresh pid/mount/net/ipc/uts namespaces (no network) as uid 65534:
#   ferrolb --version
#   ferrolb config check <every manifests/examples file>, copied into the unpacked rootfs
# The runner is crun (the OCI runtime config umoci generates) when it works here, else
# unshare + chroot on the same unpacked root filesystem.
#
# Usage: e2e/image/build-image.sh [OUT_DIR]       (default target/image; needs root)
#   $FERROLB_IMAGE_BIN: use this binary instead of building one. Static: it is the whole root
#     filesystem, as above. Dynamically linked (e.g. target/debug/ferrolb, seconds instead of a
#     7-15 min release musl build; what CI runs): the image is made self-contained instead: the
#     binary (debug info stripped) plus exactly the shared libraries and dynamic loader `ldd`
#     lists, each at the path `ldd` prints. Everything after that (unpack, uid 65534, fresh
#     namespaces, the checks) is the same.
#   $FERROLB_IMAGE_TAG: image tag (default: the crate version).
# Output: OUT_DIR/oci (OCI image layout), OUT_DIR/ferrolb-<tag>.oci.tar (the layout as a tar;
# `skopeo copy oci-archive:ferrolb-<tag>.oci.tar docker-daemon:ferrolb:<tag>` or `podman load`
# imports it), sizes on stdout. Exit 0 only if every check passed.
# Debian packages: umoci, musl-tools (installed here if missing), crun optional.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-${ROOT}/target/image}"
TARGET=x86_64-unknown-linux-musl
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "${ROOT}/Cargo.toml" | head -1)"
TAG="${FERROLB_IMAGE_TAG:-${VERSION}}"
log() { echo "build-image: $*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
START=$(date +%s)

[[ "$(id -u)" == 0 ]] || fail "run as root (umoci unpack keeps file ownership; the run needs namespaces)"

# --- tools -------------------------------------------------------------------------------------
need=()
command -v umoci >/dev/null || need+=(umoci)
command -v musl-gcc >/dev/null || [[ -n "${FERROLB_IMAGE_BIN:-}" ]] || need+=(musl-tools)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi

# --- the static binary -------------------------------------------------------------------------
if [[ -n "${FERROLB_IMAGE_BIN:-}" ]]; then
  BIN="${FERROLB_IMAGE_BIN}"
else
  rustup target list --installed | grep -qx "${TARGET}" || rustup target add "${TARGET}"
  log "cargo build --release --target ${TARGET}"
  t0=$(date +%s)
  (cd "${ROOT}" && cargo build --release --locked --target "${TARGET}" --bin ferrolb)
  log "binary built in $(( $(date +%s) - t0 )) s"
  BIN="${CARGO_TARGET_DIR:-${ROOT}/target}/${TARGET}/release/ferrolb"
fi
[[ -x "${BIN}" ]] || fail "no binary at ${BIN}"
# Dynamically linked: the absolute paths of the shared objects `ldd` resolves (the loader too).
# linux-vdso has no file; a library ldd cannot find makes the build fail here, not at run time.
LIBS=()
KIND="static ${TARGET}"
if ldd_out="$(ldd "${BIN}" 2>&1)" && grep -q '=>\|ld-linux' <<<"${ldd_out}"; then
  ! grep -q 'not found' <<<"${ldd_out}" || fail "ldd ${BIN}: a library is missing:"$'\n'"${ldd_out}"
  mapfile -t LIBS < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"${ldd_out}" | sort -u)
  ((${#LIBS[@]})) || fail "ldd ${BIN} lists no library files:"$'\n'"${ldd_out}"
  KIND="dynamically linked, with ${#LIBS[@]} shared objects from ldd"
  log "${BIN} is dynamically linked: the image gets it plus ${LIBS[*]}"
fi

# --- assemble: scratch + /ferrolb --------------------------------------------------------------
rm -rf "${OUT}/oci" "${OUT}/build" "${OUT}/run"
mkdir -p "${OUT}"
umoci init --layout "${OUT}/oci"
umoci new --image "${OUT}/oci:scratch"
umoci unpack --image "${OUT}/oci:scratch" "${OUT}/build" >/dev/null
if ((${#LIBS[@]})); then
  # A debug binary is ~250 MB, mostly debug info; without it the layer gzips in seconds.
  if command -v strip >/dev/null; then strip --strip-debug -o "${OUT}/build/rootfs/ferrolb" "${BIN}"
  else cp "${BIN}" "${OUT}/build/rootfs/ferrolb"; fi
  chown 0:0 "${OUT}/build/rootfs/ferrolb"; chmod 0755 "${OUT}/build/rootfs/ferrolb"
  for lib in "${LIBS[@]}"; do
    # The file's content (symlinks followed) at exactly the path ldd printed: the loader is
    # found by the path in the binary's PT_INTERP, the libraries in the loader's default dirs.
    install -D -m 0755 -o 0 -g 0 "$(readlink -f "${lib}")" "${OUT}/build/rootfs${lib}"
  done
else
  install -m 0755 -o 0 -g 0 "${BIN}" "${OUT}/build/rootfs/ferrolb"
fi
want_files="$(cd "${OUT}/build/rootfs" && find . -mindepth 1 | sort | tr '\n' ' ')"
rootfs_bytes="$(du -sb "${OUT}/build/rootfs" | cut -f1)"
umoci repack --image "${OUT}/oci:scratch" "${OUT}/build"
umoci config --image "${OUT}/oci:scratch" --tag "${TAG}" \
  --os linux --architecture amd64 \
  --config.user 65534:65534 \
  --config.entrypoint /ferrolb --config.cmd=--help \
  --config.workingdir / \
  --config.exposedports 7472/tcp --config.exposedports 7473/tcp \
  --config.exposedports 7946/tcp --config.exposedports 7946/udp \
  --config.label "org.opencontainers.image.title=ferrolb" \
  --config.label "org.opencontainers.image.version=${VERSION}" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0" \
  --history.created_by "install /ferrolb (${KIND}) on scratch"
umoci rm --image "${OUT}/oci:scratch"
umoci gc --layout "${OUT}/oci"
rm -rf "${OUT}/build"
(cd "${OUT}/oci" && tar --sort=name --owner=0 --group=0 --numeric-owner -cf "../ferrolb-${TAG}.oci.tar" .)

# --- run it from a fresh unpack ----------------------------------------------------------------
umoci unpack --image "${OUT}/oci:${TAG}" "${OUT}/run" >/dev/null
ROOTFS="${OUT}/run/rootfs"
files="$(cd "${ROOTFS}" && find . -mindepth 1 | sort | tr '\n' ' ')"
[[ "${files}" == "${want_files}" ]] || fail "image root filesystem holds ${files}, want ${want_files}"
# The configuration checked inside the container: copied into the unpacked rootfs only.
mkdir -p "${ROOTFS}/check"
cp "${ROOT}"/manifests/examples/*.yaml "${ROOTFS}/check/"

python3 - "${OUT}/run/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
p = c["process"]
assert p["user"]["uid"] == 65534 and p["user"]["gid"] == 65534, p["user"]
assert p["args"] == ["/ferrolb", "--help"], p["args"]
ns = {n["type"] for n in c["linux"]["namespaces"]}
assert "network" in ns, ns  # the container gets its own empty network namespace
print("build-image: runtime config: user 65534:65534, args", p["args"], "namespaces", sorted(ns), file=sys.stderr)
PY

# run ARGS...: the image's entrypoint with ARGS, as the image's user, no network.
RUNNER=""
run_crun() {
  local id="flb-$$-img-${RANDOM}"
  python3 - "${OUT}/run/config.json" "$@" <<'PY'
import json, sys
path, args = sys.argv[1], sys.argv[2:]
c = json.load(open(path))
c["process"]["args"] = ["/ferrolb"] + args
c["process"]["terminal"] = False
c["root"]["readonly"] = True
json.dump(c, open(path, "w"))
PY
  crun run --bundle "${OUT}/run" "${id}"
}
run_chroot() {
  unshare --pid --fork --mount --net --ipc --uts \
    chroot --userspec=65534:65534 "${ROOTFS}" /ferrolb "$@"
}
if command -v crun >/dev/null && out="$(run_crun --version 2>&1)"; then
  RUNNER=crun
else
  log "crun unavailable or not usable here (${out:-not installed}); using unshare + chroot"
  RUNNER=chroot
  out="$(run_chroot --version)"
fi
run() { if [[ "${RUNNER}" == crun ]]; then run_crun "$@"; else run_chroot "$@"; fi; }

echo "== ferrolb --version (in the image, ${RUNNER})"
echo "${out}"
[[ "${out}" == "ferrolb ${VERSION}" ]] || fail "--version printed '${out}', want 'ferrolb ${VERSION}'"
for f in "${ROOTFS}"/check/*.yaml; do
  name="/check/$(basename "${f}")"
  echo "== ferrolb config check ${name} (in the image, ${RUNNER})"
  run config check "${name}" || fail "config check ${name}"
done
echo "== ferrolb config render /check/cluster.yaml (in the image, ${RUNNER})"
run config render /check/cluster.yaml | head -5
# A broken configuration is refused inside the image too (exit 1, message on stderr).
printf 'address-pools:\n- name: a\n  protocol: layer3\n  addresses: [192.0.2.0/24]\n' >"${ROOTFS}/check/broken.conf"
set +e
msg="$(run config check /check/broken.conf 2>&1)"; rc=$?
set -e
echo "== ferrolb config check /check/broken.conf (in the image): exit ${rc}"
echo "${msg}"
[[ ${rc} == 1 ]] || fail "a broken configuration gave exit ${rc}, want 1"

# --- sizes --------------------------------------------------------------------------------------
manifest_digest="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"].split(":")[1])' "${OUT}/oci/index.json")"
layers_bytes="$(python3 - "${OUT}/oci" "${manifest_digest}" <<'PY'
import json, sys
root, digest = sys.argv[1], sys.argv[2]
m = json.load(open(f"{root}/blobs/sha256/{digest}"))
print(sum(l["size"] for l in m["layers"]))
PY
)"
bin_bytes="$(stat -c %s "${BIN}")"
tar_bytes="$(stat -c %s "${OUT}/ferrolb-${TAG}.oci.tar")"
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "== image ferrolb:${TAG} (${OUT}/oci, ${OUT}/ferrolb-${TAG}.oci.tar)"
echo "binary given: ${bin_bytes} bytes ($(mib "${bin_bytes}")) (${KIND})"
echo "image root filesystem (uncompressed): ${rootfs_bytes} bytes ($(mib "${rootfs_bytes}"))"
echo "compressed layer (what a registry stores and a node pulls): ${layers_bytes} bytes ($(mib "${layers_bytes}"))"
echo "OCI layout tar: ${tar_bytes} bytes ($(mib "${tar_bytes}"))"
echo "runner: ${RUNNER}; total $(( $(date +%s) - START )) s"
rm -rf "${OUT}/run"
