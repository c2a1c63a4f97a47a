# syntax=docker/dockerfile:1
# One image for both roles (`ferrolb controller`, `ferrolb speaker`): a static musl binary on an
# empty (scratch) base. No shell, no libc, no package manager; the only file is /ferrolb.
#
#   docker build -t ferrolb:0.1.0 .
#
# Runs as uid/gid 65534 (nobody) by default, which is what the controller uses. The speaker needs
# CAP_NET_RAW for ARP/NDP, and Kubernetes grants added capabilities only to uid 0, so
# manifests/base/speaker.yaml sets runAsUser: 0 with every other capability dropped, a read-only root
# filesystem and allowPrivilegeEscalation: false.
#
# Without a Docker engine, e2e/image/build-image.sh (`make image`) builds the same image with
# umoci from a locally built static binary and runs it.

ARG RUST_VERSION=1
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "${TARGET}"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "${TARGET}" --bin ferrolb \
 && install -D -m 0755 "target/${TARGET}/release/ferrolb" /out/ferrolb \
 && /out/ferrolb --version

FROM scratch
COPY --from=build /out/ferrolb /ferrolb
USER 65534:65534
# controller: 7472 (metrics/health); speaker: 7473 (metrics/health), 7946 (memberlist TCP+UDP)
EXPOSE 7472 7473 7946 7946/udp
ENTRYPOINT ["/ferrolb"]
CMD ["--help"]
