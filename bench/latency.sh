#!/usr/bin/env bash
# Live latency in Chromium on loopback: hls.js (low-latency mode) on LL-HLS and dash.js on
# LL-DASH, the same live stream, ROUNDS rounds interleaved; p50 and p95 of each round's samples
# (four a second), then the medians over the rounds.
#
# What is measured is ingest to screen: for LL-HLS the wall clock minus the
# EXT-X-PROGRAM-DATE-TIME of the picture on screen (hls.js's playingDate), for LL-DASH
# dash.js's getCurrentLiveLatency() (the wall clock, synchronised with Sluice's /~sluice/time,
# minus the presentation time mapped through availabilityStartTime). Both clocks start when the
# frame reaches Sluice, so glass to glass is this plus the encoder's own delay (ffmpeg x264
# -tune zerolatency: about a frame) and the camera's.
#
# The publisher is ffmpeg encoding a 640x360 test picture live (-tune zerolatency, 1 s GOP)
# over RTMP; Sluice runs its defaults (1 s segments, 200 ms parts).
#
# Usage: bench/latency.sh [SECONDS] [ROUNDS]     (defaults 30 3)
# Env: CARGO_TARGET_DIR, SKIP_BUILD=1. Needs ffmpeg, node, Chromium and playwright-core
# (scripts/install-test-deps.sh). Writes bench/results/latency-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-30}
ROUNDS=${2:-3}
TGT=${CARGO_TARGET_DIR:-target}
BIN=$TGT/release/sluice
RTMP_PORT=19536
HTTP_PORT=19989
WEB=crates/server/tests/web

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p sluice
fi
[ -x "$BIN" ] || { echo "build it: cargo build --release -p sluice" >&2; exit 1; }
[ -d "$WEB/node_modules/hls.js" ] || (cd "$WEB" && npm ci --no-audit --no-fund --loglevel=error)

WORK=$(mktemp -d /tmp/sluice-latency.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM
json() { grep -o "\"$1\":[0-9.]*" | head -1 | cut -d: -f2; }

printf '' > "$WORK/sluice.toml"
env SLUICE_RTMP_LISTEN=127.0.0.1:$RTMP_PORT SLUICE_HTTP_LISTEN=127.0.0.1:$HTTP_PORT \
  SLUICE_SRT_ENABLED=false SLUICE_WEBRTC_ENABLED=false SLUICE_API_ENABLED=false \
  SLUICE_METRICS_ENABLED=false SLUICE_PLAYBACK_ENABLED=false SLUICE_LOG_LEVEL=warn \
  "$BIN" --config "$WORK/sluice.toml" > "$WORK/sluice.log" 2>&1 &
sleep 1
ffmpeg -nostdin -v error -re -f lavfi -i testsrc2=size=640x360:rate=30 \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -c:v libx264 -preset veryfast -tune zerolatency \
  -g 30 -keyint_min 30 -sc_threshold 0 -pix_fmt yuv420p -c:a aac -b:a 96k -ac 2 \
  -f flv "rtmp://127.0.0.1:$RTMP_PORT/live/lat" > "$WORK/ffmpeg.log" 2>&1 &
BASE=http://127.0.0.1:$HTTP_PORT/live/lat
for _ in $(seq 100); do
  curl -sf "$BASE/stream.m3u8" 2>/dev/null | grep -q EXT-X-PART: && break
  sleep 0.2
done
sleep 4

median() { sort -n | awk '{a[NR]=$1} END {if (NR) print (NR % 2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2); else print "n/a"}'; }
ROWS=""
: > "$WORK/hls50"; : > "$WORK/hls95"; : > "$WORK/dash50"; : > "$WORK/dash95"
for r in $(seq "$ROUNDS"); do
  h=$(timeout $((SECS + 90)) node "$WEB/llhls.mjs" "$BASE/index.m3u8" "$SECS" 2>/dev/null | grep '^{' | tail -1)
  d=$(timeout $((SECS + 90)) node "$WEB/dash.mjs" "$BASE/dash.html" "$SECS" 2>/dev/null | grep '^{' | tail -1)
  h50=$(echo "$h" | json pdt_latency_p50); h95=$(echo "$h" | json pdt_latency_p95)
  d50=$(echo "$d" | json latency_p50); d95=$(echo "$d" | json latency_p95)
  hs=$(echo "$h" | json stalls); ds=$(echo "$d" | json stalls)
  echo "$h50" >> "$WORK/hls50"; echo "$h95" >> "$WORK/hls95"
  echo "$d50" >> "$WORK/dash50"; echo "$d95" >> "$WORK/dash95"
  ROWS+="| $r | $h50 | $h95 | $hs | $d50 | $d95 | $ds |"$'\n'
  echo "round $r: LL-HLS p50 $h50 p95 $h95 (stalls $hs); LL-DASH p50 $d50 p95 $d95 (stalls $ds)"
done

OUT=bench/results/latency-$(date -u +%Y%m%d-%H%M).md
{
  echo "# Live latency in Chromium on loopback, LL-HLS (hls.js) and LL-DASH (dash.js) ($(date -u +%Y%m%d-%H%M))"
  echo
  echo "- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average before the rounds $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- Sluice: $(git rev-parse --short HEAD 2>/dev/null || echo '?') (release), defaults: 1 s segments, 200 ms parts"
  echo "- Command: \`bench/latency.sh $SECS $ROUNDS\`; publisher ffmpeg x264 -tune zerolatency 640x360 30 fps, 1 s GOP, RTMP"
  echo "- Ingest to screen (seconds): LL-HLS wall clock minus the PROGRAM-DATE-TIME on screen; LL-DASH dash.js getCurrentLiveLatency()"
  echo
  echo "| round | LL-HLS p50 | LL-HLS p95 | stalls | LL-DASH p50 | LL-DASH p95 | stalls |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s' "$ROWS"
  echo
  echo "Medians over the rounds: LL-HLS p50 $(median < "$WORK/hls50") s, p95 $(median < "$WORK/hls95") s; LL-DASH p50 $(median < "$WORK/dash50") s, p95 $(median < "$WORK/dash95") s."
} > "$OUT"
cat "$OUT"
