#!/usr/bin/env bash
# BGP benchmark (issue 7, item 2): ferrolb standalone vs gobgpd vs exabgp sending 752 IPv4 and
# 1k/10k/100k IPv6 VIPs into the same BIRD, in network namespaces. Prints a table and JSON lines.
# Usage (root): e2e/bench/bgp.sh [--smoke] [--senders ferrolb,gobgpd,exabgp] [--sizes 752,10000]
# Measures target/release/ferrolb (built here) unless FERROLB_BIN is set.
exec "$(dirname "$0")/../scripts/run-bench-example.sh" bench_bgp "$@"
