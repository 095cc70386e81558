#!/usr/bin/env bash
# Two Sluice builds side by side under the same LL-HLS load at the same time: CPU per request
# and per delivered Gb of each. For a change whose effect is smaller than this machine's drift
# between the rounds of bench/hls_origin.sh (which runs one server at a time): here both see the
# same moment of the machine.
#
# Both servers run on core 0, each with its own ffmpeg publisher (-c copy of the same file) and
# its own llhls-load of N viewers (blocking reload + preload-hinted parts) on core 1; each round
# counts each server's CPU (utime + stime) over SECONDS after a 5 s warm-up.
#
# Usage: bench/hls_origin_ab.sh BIN_A BIN_B [N] [SECONDS] [ROUNDS]     (defaults 300 30 3)
# Env: ENV_A / ENV_B: one VAR=value for that server (default none); LOADGEN (default
# target/release/llhls-load); SRC, a 720p30 FLV (default: made as bench/hls_origin.sh makes it).
# Writes bench/results/origin-ab-<date>.md.
set -uo pipefail
cd "$(dirname "$0")/.."
A=${1:?BIN_A}; B=${2:?BIN_B}; N=${3:-300}; SECS=${4:-30}; ROUNDS=${5:-3}
GEN=${LOADGEN:-target/release/llhls-load}
SRC=${SRC:-target/tmp/bench-720p30-g1s.flv}
[ -x "$GEN" ] || { echo "build it: cargo build --release -p sluice-loadgen --bins" >&2; exit 1; }
if [ ! -f "$SRC" ]; then
  mkdir -p "$(dirname "$SRC")"
  ffmpeg -v error -y -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
    -t 60 -c:v libx264 -preset veryfast -b:v 2372k -maxrate 2372k -bufsize 2372k -g 30 -keyint_min 30 \
    -sc_threshold 0 -pix_fmt yuv420p -c:a aac -b:a 128k -ac 2 -f flv "$SRC.part.flv" && mv "$SRC.part.flv" "$SRC"
fi
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# User space alone (utime): the server's own code, apart from the kernel's loopback TCP path.
uticks() { awk '{print $14}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
declare -A PID PORT BIN ENVS
BIN[a]=$A; BIN[b]=$B; ENVS[a]=${ENV_A:-SLUICE_LOG_LEVEL=warn}; ENVS[b]=${ENV_B:-SLUICE_LOG_LEVEL=warn}
PORT[a]=19910; PORT[b]=19920
for s in a b; do
  taskset -c 0 env SLUICE_RTMP_LISTEN=127.0.0.1:$((PORT[$s] + 1)) SLUICE_HTTP_LISTEN=127.0.0.1:${PORT[$s]} \
    SLUICE_SRT_ENABLED=false SLUICE_WEBRTC_ENABLED=false SLUICE_API_LISTEN=127.0.0.1:$((PORT[$s] + 2)) \
    SLUICE_METRICS_ENABLED=false SLUICE_PLAYBACK_ENABLED=false SLUICE_HTTP_MAX_CONNECTIONS_PER_IP=0 \
    SLUICE_LOG_LEVEL=warn ${ENVS[$s]} "${BIN[$s]}" --config /dev/null > "$W/$s.log" 2>&1 &
  PID[$s]=$!
done
sleep 1
for s in a b; do
  taskset -c 1 ffmpeg -nostdin -v error -re -stream_loop -1 -i "$SRC" -c copy -f flv \
    "rtmp://127.0.0.1:$((PORT[$s] + 1))/live/bench" > "$W/ff-$s.log" 2>&1 &
done
sleep 6
OUT=bench/results/origin-ab-$(date -u +%Y%m%d-%H%M).md
{
  echo "# Two Sluice builds side by side under LL-HLS load ($(date -u +%Y%m%d-%H%M))"
  echo
  echo "- A: \`$A\` ${ENV_A:-}; B: \`$B\` ${ENV_B:-}"
  echo "- Command: \`bench/hls_origin_ab.sh $*\`; $N viewers each, $SECS s per round, both servers on core 0"
  echo
  echo "| round | server | CPU s | requests | µs CPU per request | user-space µs per request | Gb delivered | CPU s per Gb | errors |"
  echo "|---|---|---|---|---|---|---|---|---|"
} > "$OUT"
for r in $(seq "$ROUNDS"); do
  for s in a b; do
    taskset -c 1 "$GEN" "http://127.0.0.1:${PORT[$s]}/live/bench/stream.m3u8" "$N" $((SECS + 5)) \
      --mode parts --warmup 5 > "$W/load-$s.json" &
  done
  sleep 5
  declare -A T0 U0
  for s in a b; do T0[$s]=$(ticks "${PID[$s]}"); U0[$s]=$(uticks "${PID[$s]}"); done
  sleep "$SECS"
  declare -A DT DU
  for s in a b; do DT[$s]=$(( $(ticks "${PID[$s]}") - T0[$s] )); DU[$s]=$(( $(uticks "${PID[$s]}") - U0[$s] )); done
  sleep 2
  for s in a b; do
    j=$(cat "$W/load-$s.json")
    bytes=$(echo "$j" | grep -o '"bytes":[0-9]*' | cut -d: -f2)
    req=$(( $(echo "$j" | grep -o '"playlists":[0-9]*' | cut -d: -f2) + $(echo "$j" | grep -o '"parts":[0-9]*' | cut -d: -f2) ))
    errs=$(echo "$j" | grep -o '"errors":{[^}]*}' | cut -d: -f2-)
    awk -v r="$r" -v s="$s" -v t="${DT[$s]}" -v u="${DU[$s]}" -v hz="$HZ" -v req="$req" -v b="$bytes" -v e="$errs" 'BEGIN {
      cpu = t / hz; ucpu = u / hz; gb = b * 8 / 1e9
      printf "| %d | %s | %.2f | %d | %.1f | %.1f | %.2f | %.4f | %s |\n", r, toupper(s), cpu, req, req ? cpu * 1e6 / req : 0, req ? ucpu * 1e6 / req : 0, gb, gb ? cpu / gb : 0, e
    }' | tee -a "$OUT"
  done
done
# Part readiness over the whole run (from the arrival of the frame that completes a part to the
# part being servable; the upper bounds of the histogram buckets), from each server's API.
{
  echo
  for s in a b; do
    j=$(curl -sf "http://127.0.0.1:$((PORT[$s] + 2))/v1/paths/live/bench" || echo '{}')
    p50=$(echo "$j" | grep -o '"part_ready_p50_ms":[0-9.]*' | cut -d: -f2)
    p99=$(echo "$j" | grep -o '"part_ready_p99_ms":[0-9.]*' | cut -d: -f2)
    echo "Part readiness, $(echo $s | tr a-z A-Z): p50 ≤ ${p50:-?} ms, p99 ≤ ${p99:-?} ms."
  done
} | tee -a "$OUT"
echo "written: $OUT"
