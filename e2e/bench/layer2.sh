#!/usr/bin/env bash
# Layer2 benchmark (issue 7, item 3): ARP/NDP reply latency of ferrolb vs the kernel (2 and 10k
# VIPs) and failover time (fast and lan membership profiles, plus a control run without gratuitous
# ARP), in network namespaces. Prints a table and JSON lines.
# Usage (root): e2e/bench/layer2.sh [--smoke]
# Measures target/release/ferrolb (built here) unless FERROLB_BIN is set.
exec "$(dirname "$0")/../scripts/run-bench-example.sh" bench_layer2 "$@"
