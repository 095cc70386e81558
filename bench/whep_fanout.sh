#!/usr/bin/env bash
# WHEP fan-out benchmark: N WebRTC viewers (DTLS-SRTP, AES-GCM) of one stream.
#
# The server runs pinned to core 0; the publisher (ffmpeg -c copy over RTMP, H.264 without
# B-frames + AAC, so the AAC->Opus converter runs too) and the load generator (bench/loadgen
# whep-bench: N str0m viewers in one process that count SRTP bytes without decrypting them) are
# pinned to core 1. For each viewer count it reports the whole-core CPU of core 0 (from
# /proc/stat, so kernel and softirq time count too), CPU per viewer above the publisher-only
# baseline, the egress the viewers received, and egress Mb/s per core of server CPU.
#
# Usage: bench/whep_fanout.sh [SECONDS_PER_RUN] [VIEWER COUNTS...]   e.g. bench/whep_fanout.sh 20 50 100 200
# Writes a Markdown table to bench/results/whep_fanout-<date>.md.
#
# On loopback the kernel delivers each datagram to the receiving socket on the sending core, so
# core 0 also pays for the viewers' receive path. RPS=1 runs the benchmark in its own network
# namespace whose `lo` steers receive processing to core 1 (receive packet steering), as a real
# network would put it on the viewers' machines (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${RPS:-0}" = 1 ] && [ -z "${WHEP_BENCH_NS:-}" ]; then
    NS="sluice-whep-bench-$$"
    ip netns add "$NS"
    trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
    ip -n "$NS" link set lo up
    ip netns exec "$NS" sh -c 'echo 2 > /sys/class/net/lo/queues/rx-0/rps_cpus'
    WHEP_BENCH_NS="$NS" ip netns exec "$NS" bash "$0" "$@"
    exit $?
fi

SECS=${1:-20}
shift || true
COUNTS=("${@:-50 100 200}")
read -r -a COUNTS <<<"${COUNTS[*]}"
SERVER_CORE=0
LOAD_CORE=1
WORK=$(mktemp -d /tmp/sluice-whep-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p sluice -p sluice-loadgen
SLUICE=${SERVER_BIN:-target/release/sluice}
LOADGEN=target/release/whep-bench

# Source: 30 s of 1280x720 30 fps, 2 s GOP, x264 without B-frames at ~2.4 Mb/s, AAC 128 kb/s.
SRC="$WORK/src.flv"
ffmpeg -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 30 -c:v libx264 -preset veryfast -b:v 2372k -maxrate 2372k -bufsize 2372k -g 60 -keyint_min 60 \
    -sc_threshold 0 -bf 0 -pix_fmt yuv420p -c:a aac -b:a 128k -ac 2 -f flv "$SRC"

cpu0() { awk -v c="cpu$SERVER_CORE" '$1==c {b=$2+$3+$4+$7+$8; t=b+$5+$6; print b, t}' /proc/stat; }
pct() { awk -v b0="$1" -v t0="$2" -v b1="$3" -v t1="$4" 'BEGIN {printf "%.1f", 100*(b1-b0)/(t1-t0)}'; }

SLUICE_RTMP_LISTEN=127.0.0.1:19352 SLUICE_HTTP_LISTEN=127.0.0.1:18882 SLUICE_SRT_ENABLED=false \
SLUICE_WEBRTC_LISTEN=127.0.0.1:18889 SLUICE_WEBRTC_UDP_LISTEN=127.0.0.1:18189 SLUICE_LOG_LEVEL=warn \
    taskset -c $SERVER_CORE "$SLUICE" >"$WORK/sluice.log" 2>&1 &
SERVER_PID=$!
sleep 1
taskset -c $LOAD_CORE ffmpeg -v error -re -stream_loop -1 -i "$SRC" -c copy -f flv rtmp://127.0.0.1:19352/live/bench &
sleep 4

# Publisher-only baseline.
read -r b0 t0 < <(cpu0); sleep 10; read -r b1 t1 < <(cpu0)
BASE=$(pct "$b0" "$t0" "$b1" "$t1")
echo "baseline (publisher only): core0 ${BASE}%"

OUT="bench/results/whep_fanout-$(date +%Y%m%d-%H%M)${WHEP_BENCH_NS:+-rps}.md"
{
    echo "# WHEP fan-out, $(date -u +%Y-%m-%d) — ${SECS} s per run, source 2.5 Mb/s 720p30 H.264 + AAC (converted to Opus)"
    echo
    echo "Server pinned to core 0 (whole-core CPU from /proc/stat); publisher and str0m load generator on core 1."
    if [ -n "${WHEP_BENCH_NS:-}" ]; then
        echo "RPS=1: the viewers' kernel receive path is steered to core 1 (own network namespace)."
    fi
    echo "Publisher-only baseline: ${BASE}% of core 0."
    echo
    echo "| viewers | connected | core 0 CPU | CPU per viewer | egress received | egress Mb/s per core | min viewer Mb/s | server RSS |"
    echo "|---|---|---|---|---|---|---|---|"
} >"$OUT"

for N in "${COUNTS[@]}"; do
    coproc LG { taskset -c $LOAD_CORE "$LOADGEN" http://127.0.0.1:18889/live/bench/whep "$N" "$SECS"; }
    read -r start <&"${LG[0]}"
    read -r b0 t0 < <(cpu0)
    read -r result <&"${LG[0]}"
    read -r b1 t1 < <(cpu0)
    wait "$LG_PID" 2>/dev/null || true
    CPU=$(pct "$b0" "$t0" "$b1" "$t1")
    RSS=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
    TOTAL=$(sed -E 's/.*total_mbps=([0-9.]+).*/\1/' <<<"$result")
    MIN=$(sed -E 's/.*min_viewer_mbps=([0-9.]+).*/\1/' <<<"$result")
    CONN=$(sed -E 's/.*connected=([0-9]+).*/\1/' <<<"$start")
    PER=$(awk -v c="$CPU" -v b="$BASE" -v n="$N" 'BEGIN {printf "%.3f%%", (c-b)/n}')
    PERCORE=$(awk -v c="$CPU" -v t="$TOTAL" 'BEGIN {printf "%.0f", t/(c/100)}')
    echo "N=$N connected=$CONN core0=${CPU}% per-viewer=$PER egress=${TOTAL} Mb/s => ${PERCORE} Mb/s per core; min viewer ${MIN} Mb/s; RSS ${RSS} kB"
    echo "| $N | $CONN | ${CPU}% | $PER | ${TOTAL} Mb/s | ${PERCORE} | ${MIN} | $((RSS / 1024)) MB |" >>"$OUT"
    sleep 12 # sessions of the previous run time out (ICE timeout 10 s)
done
echo "wrote $OUT"
