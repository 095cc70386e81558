#!/usr/bin/env bash
# What the health output costs per stream: the server's process CPU (utime + stime from
# /proc/PID/stat) with N RTMP publishers (bench/loadgen's rtmp-publish, one process) of an
# H.264 + 48 kHz stereo AAC file, in three runs: health off (`enabled = false`), health on
# without silence detection, and health on with it (the default). The difference against "off",
# divided by N, is the cost per stream. HTTP (HLS), SRT and WebRTC are off so only the
# publishers, the core and the health outputs run.
#
# Usage: bench/health_cost.sh [FILE.flv] [N] [SECONDS]
#   FILE defaults to the integration tests' cached source (640x360 x264 + AAC-LC 96 kb/s).
# Needs: cargo build --release -p sluice && cargo build -p sluice-loadgen
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=${1:-target/tmp/sluice-it/src-h264-aac-v1.flv}
N=${2:-20}
SECS=${3:-30}
BIN=target/release/sluice
GEN=target/debug/rtmp-publish
[ -x "$BIN" ] || { echo "build it: cargo build --release -p sluice" >&2; exit 1; }
[ -x "$GEN" ] || { echo "build it: cargo build -p sluice-loadgen" >&2; exit 1; }
[ -f "$SRC" ] || { echo "no source $SRC (run the integration tests once, or give a file)" >&2; exit 1; }
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
HZ=$(getconf CLK_TCK)

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

declare -A CPU
for mode in off nodecode on; do
  extra=()
  case $mode in
    off) extra=(SLUICE_PATH_DEFAULTS_HEALTH_ENABLED=false) ;;
    nodecode) extra=(SLUICE_PATH_DEFAULTS_HEALTH_SILENCE_DETECTION=false) ;;
  esac
  env SLUICE_RTMP_LISTEN=127.0.0.1:19435 SLUICE_HTTP_ENABLED=false SLUICE_SRT_ENABLED=false \
    SLUICE_WEBRTC_ENABLED=false SLUICE_API_LISTEN=127.0.0.1:19997 SLUICE_METRICS_ENABLED=false \
    SLUICE_LOG_LEVEL=warn "${extra[@]}" "$BIN" 2>/dev/null &
  server=$!
  sleep 1
  "$GEN" rtmp://127.0.0.1:19435/live/p "$N" $((SECS + 15)) "$SRC" >/dev/null 2>&1 &
  gen=$!
  sleep 8
  t1=$(ticks $server)
  sleep "$SECS"
  t2=$(ticks $server)
  kill $gen $server 2>/dev/null || true
  wait $gen $server 2>/dev/null || true
  CPU[$mode]=$(echo "scale=3; ($t2 - $t1) * 100 / $HZ / $SECS" | bc)
  echo "$mode: ${CPU[$mode]} % of a core for $N streams"
done
for mode in nodecode on; do
  echo "health ($mode) per stream: $(echo "scale=3; (${CPU[$mode]} - ${CPU[off]}) / $N" | bc) % of a core"
done
