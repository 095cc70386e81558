#!/usr/bin/env bash
# The physical reference for WHEP egress (issue 17): SRTP (AES-256-GCM) protection plus UDP GSO
# sends to loopback, per core of this machine, with nothing of a WebRTC stack around it
# (bench/loadgen/src/bin/srtp-gso-limit.rs). The sender runs on core 0, a draining reader on
# core 1; core 0's whole busy time counts, as in bench/whep_fanout.sh.
#
# Usage: bench/srtp_limit.sh [SECONDS] [BATCHES...]    defaults: 8, 50 32 9 4 1
# Writes bench/results/srtp_limit-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-8}
shift || true
BATCHES=("${@:-50 32 9 4 1}")
read -r -a BATCHES <<<"${BATCHES[*]}"
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p sluice-loadgen --bin srtp-gso-limit
OUT="bench/results/srtp_limit-$(date -u +%Y%m%d-%H%M).md"
{
    echo "# SRTP + UDP GSO per core, $(date -u +%Y-%m-%d) ($SECS s per run, 1178-byte packets, sender on core 0)"
    echo
    echo "| packets per send | AES-256-GCM alone, Gb/s per core | protect + send, Gb/s per core of core 0 |"
    echo "|---|---|---|"
    for b in "${BATCHES[@]}"; do
        line=$(taskset -c 0 target/release/srtp-gso-limit "$SECS" "$b")
        echo "$line" >&2
        seal=$(sed -E 's/.*seal_gbps_per_core=([0-9.]+).*/\1/' <<<"$line")
        send=$(sed -E 's/.*send_gbps_per_core=([0-9.]+).*/\1/' <<<"$line")
        batch=$(sed -E 's/.*batch=([0-9]+).*/\1/' <<<"$line")
        echo "| $batch | $seal | $send |"
    done
} >"$OUT"
echo "wrote $OUT"
