#!/usr/bin/env bash
# LL-HLS origin efficiency: Sluice's CPU per delivered Gb against nginx serving the same stream
# as static files from tmpfs (the physical reference: sendfile, keep-alive, no packaging).
#
# One 720p30 H.264 + AAC stream at about 2.5 Mb/s (1 s GOP: -g 30) is published with ffmpeg
# (-re -stream_loop -1 -c copy, pre-encoded once) over RTMP to Sluice (default low-latency
# variant: 1 s segments, 200 ms parts). A mirror (llhls-load --mirror, one LL-HLS viewer of
# Sluice) writes the init, every part and segment, and then each playlist it gets into a tmpfs
# directory, atomically (rename); nginx (worker_processes 1, sendfile, tcp_nopush, keep-alive,
# no access log) serves that directory. Then, ROUNDS times, interleaved:
#   Sluice: llhls-load URL N ... --mode parts: blocking reloads + preload-hinted parts;
#   nginx:  llhls-load URL N ... --mode poll-parts: the static playlist polled every part target
#           (no blocking reload on static files), every part fetched once.
# Counted over the same SECONDS (after a WARMUP, default 5 s, for the viewers to join): the
# server's CPU (utime + stime from /proc/PID/stat: Sluice's process; nginx's master and
# worker) and the bytes the viewers received. Reports CPU seconds per delivered Gb for each run,
# the medians and the ratio Sluice / nginx (goal: at most 1.2). Sluice's CPU while the nginx run
# goes on (publisher + the mirror only) is its baseline: reported too, and the ratio with the
# baseline taken off Sluice's CPU.
#
# The servers run on core 0, ffmpeg, the mirror and the load on core 1 (PIN=0: no pinning).
# The publisher and the mirror run throughout (so Sluice has N+1 viewers in its runs).
#
# Usage: bench/hls_origin.sh [N] [SECONDS] [ROUNDS]     (defaults 1000 30 3)
# Env: CARGO_TARGET_DIR (binaries in it), SKIP_BUILD=1, NGINX_OFC=0 (nginx without its open
# file cache for media files, as before 2026-12-03), WARMUP=5, PIN=1, NOTE="..." (a line for
# the results file, e.g. what else the machine was doing), BUILT_FROM (what was built, when not
# run from a git checkout).
# Needs ffmpeg and nginx (scripts/install-test-deps.sh). Writes bench/results/origin-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-1000}
SECS=${2:-30}
ROUNDS=${3:-3}
WARM=${WARMUP:-5}
PIN=${PIN:-1}
TGT=${CARGO_TARGET_DIR:-target}
BIN=$TGT/release/sluice
GEN=$TGT/release/llhls-load
RTMP_PORT=19436
HTTP_PORT=19889
NGINX_PORT=19890
API_PORT=19891

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p sluice -p sluice-loadgen --bins
fi
for b in "$BIN" "$GEN"; do
  [ -x "$b" ] || { echo "build it: cargo build --release -p sluice -p sluice-loadgen --bins" >&2; exit 1; }
done
command -v nginx >/dev/null || { echo "needs nginx (scripts/install-test-deps.sh)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/sluice-origin.XXXXXX)
SHM=$(mktemp -d /dev/shm/sluice-origin.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK" "$SHM"' EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
HZ=$(getconf CLK_TCK)
ticks() { local t=0 p; for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
# User-space ticks alone (utime): what the server's own code costs, apart from the kernel's
# loopback TCP path, whose cost moves with the machine's state far more than user space does.
uticks() { local t=0 p; for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14}' "/proc/$p/stat"))); done; echo $t; }
# Not a function: a function run with & is a subshell, and $! would be its pid, not the server's.
CORE0=(); CORE1=()
if [ "$PIN" = 1 ]; then CORE0=(taskset -c 0); CORE1=(taskset -c 1); fi
json() { grep -o "\"$1\":[0-9.]*" | head -1 | cut -d: -f2; }

# The source: 60 s of 720p30, 2.37 Mb/s video (1 s GOP, no scene cuts) + 128 kb/s AAC.
SRC=$TGT/tmp/bench-720p30-g1s.flv
if [ ! -f "$SRC" ]; then
  mkdir -p "$(dirname "$SRC")"
  ffmpeg -v error -y -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
    -t 60 -c:v libx264 -preset veryfast -b:v 2372k -maxrate 2372k -bufsize 2372k -g 30 -keyint_min 30 \
    -sc_threshold 0 -pix_fmt yuv420p -c:a aac -b:a 128k -ac 2 -f flv "$SRC.part.flv"
  mv "$SRC.part.flv" "$SRC"
fi

# Sluice, defaults but for the listeners (and no per-IP cap: all viewers are 127.0.0.1).
printf '' > "$WORK/sluice.toml"
"${CORE0[@]}" env SLUICE_RTMP_LISTEN=127.0.0.1:$RTMP_PORT SLUICE_HTTP_LISTEN=127.0.0.1:$HTTP_PORT \
  SLUICE_SRT_ENABLED=false SLUICE_WEBRTC_ENABLED=false SLUICE_API_LISTEN=127.0.0.1:$API_PORT \
  SLUICE_METRICS_ENABLED=false SLUICE_PLAYBACK_ENABLED=false SLUICE_HTTP_MAX_CONNECTIONS_PER_IP=0 \
  SLUICE_LOG_LEVEL=warn "$BIN" --config "$WORK/sluice.toml" > "$WORK/sluice.log" 2>&1 &
SLUICE=$!
sleep 1
"${CORE1[@]}" ffmpeg -nostdin -v error -re -stream_loop -1 -i "$SRC" -c copy -f flv \
  "rtmp://127.0.0.1:$RTMP_PORT/live/bench" > "$WORK/ffmpeg.log" 2>&1 &
PUB=$!
URL=http://127.0.0.1:$HTTP_PORT/live/bench/stream.m3u8
for _ in $(seq 100); do
  curl -sf "$URL" 2>/dev/null | grep -q EXT-X-PART: && break
  sleep 0.2
done
curl -sf "$URL" | grep -q EXT-X-PART: || { echo "no LL-HLS playlist at $URL" >&2; cat "$WORK/sluice.log" >&2; exit 1; }

# The mirror, and nginx on it.
MIRROR=$SHM/live/bench
"${CORE1[@]}" "$GEN" "$URL" 1 $((ROUNDS * 2 * (SECS + WARM + 10) + 60)) --mirror "$MIRROR" > "$WORK/mirror.json" 2> "$WORK/mirror.log" &
MIR=$!
mkdir -p "$WORK/nginx"
# Parts, segments and init segments never change once written (the mirror renames complete
# files into place): nginx keeps their descriptors open (open_file_cache), which spares it the
# openat, fstat and close of each request, as a tuned HLS origin would. Not for the playlists,
# which are replaced every part, and not for missing files (a part not yet written).
OFC=""
if [ "${NGINX_OFC:-1}" = 1 ]; then
  OFC="        location ~ \.(m4s|mp4)\$ { open_file_cache max=20000 inactive=30s; open_file_cache_valid 60s; open_file_cache_errors off; }"
fi
cat > "$WORK/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 65536; }
http {
    types { application/vnd.apple.mpegurl m3u8; video/mp4 mp4 m4s; }
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx/t1; proxy_temp_path $WORK/nginx/t2; fastcgi_temp_path $WORK/nginx/t3;
    uwsgi_temp_path $WORK/nginx/t4; scgi_temp_path $WORK/nginx/t5;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $SHM;
$OFC
    }
}
EOF
"${CORE0[@]}" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" > "$WORK/nginx.log" 2>&1 &
NGINX=$!
NURL=http://127.0.0.1:$NGINX_PORT/live/bench/stream.m3u8
for _ in $(seq 50); do
  curl -sf "$NURL" 2>/dev/null | grep -q EXT-X-PART: && break
  sleep 0.2
done
curl -sf "$NURL" | grep -q EXT-X-PART: || { echo "nginx does not serve the mirror at $NURL" >&2; cat "$WORK/nginx/error.log" "$WORK/mirror.log" >&2; exit 1; }
NGINX_PIDS="$NGINX $(pgrep -P "$NGINX" | tr '\n' ' ')"

declare -A CPG RUNS UPR
BASE=""
SRUNS=""
run() { # name url mode pids...
  local name=$1 url=$2 mode=$3; shift 3
  "${CORE1[@]}" "$GEN" "$url" "$N" $((WARM + SECS)) --mode "$mode" --warmup "$WARM" > "$WORK/$name.json" &
  local gen=$!
  sleep "$WARM"
  local t1 s1 u1; t1=$(ticks "$@"); s1=$(ticks $SLUICE); u1=$(uticks "$@")
  sleep "$SECS"
  local t2 s2 u2; t2=$(ticks "$@"); s2=$(ticks $SLUICE); u2=$(uticks "$@")
  wait $gen
  local out cpu bytes gb cpg
  out=$(cat "$WORK/$name.json")
  cpu=$(echo "scale=3; ($t2 - $t1) / $HZ" | bc)
  bytes=$(echo "$out" | json bytes)
  gb=$(echo "scale=6; $bytes * 8 / 1000000000" | bc)
  cpg=$(echo "scale=4; $cpu / $gb" | bc)
  # µs of CPU per request (playlists + parts + segments + inits), all and user space alone.
  local reqs us_req uus_req
  reqs=$(( $(echo "$out" | json playlists) + $(echo "$out" | json parts) + $(echo "$out" | json segments) + $(echo "$out" | json inits) ))
  us_req=$(echo "scale=1; ($t2 - $t1) * 1000000 / $HZ / $reqs" | bc)
  uus_req=$(echo "scale=1; ($u2 - $u1) * 1000000 / $HZ / $reqs" | bc)
  UPR[$name]="${UPR[$name]:-} $uus_req"
  CPG[$name]="${CPG[$name]:-} $cpg"
  if [ "$name" = nginx ]; then BASE="$BASE $(echo "scale=3; ($s2 - $s1) / $HZ" | bc)"; else SRUNS="$SRUNS $cpu:$gb"; fi
  RUNS[$name]="${RUNS[$name]:-}| $round | $name | $cpu | $(echo "scale=3; $cpu * 100 / $SECS" | bc) | $(echo "$out" | json gbps) | $cpg | $us_req | $uus_req | $(echo "$out" | json playlists) | $(echo "$out" | json parts) | $(echo "$out" | json max_gap_ms) | $(echo "$out" | json stalls) | $(echo "$out" | grep -o '"errors":{[^}]*}' | cut -d: -f2-) |
"
  echo "round $round $name: $cpu CPU s over ${SECS} s, $(echo "$out" | json gbps) Gb/s, $cpg CPU s per Gb; viewers saw $out" >&2
}
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

START=$(date +%Y%m%d-%H%M)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
  run sluice "$URL" parts $SLUICE
  run nginx "$NURL" poll-parts $NGINX_PIDS
done
kill -0 $PUB $MIR 2>/dev/null || echo "warning: the publisher or the mirror stopped early" >&2
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

MS=$(echo "${CPG[sluice]}" | median)
MN=$(echo "${CPG[nginx]}" | median)
MB=$(echo "$BASE" | median)
RATIO=$(echo "scale=3; $MS / $MN" | bc)
# Sluice's serving CPU per Gb without its baseline (ingest, packaging, the mirror viewer).
MS_NET=$(for r in $SRUNS; do echo "scale=4; (${r%%:*} - $MB) / ${r##*:}" | bc; done | tr '\n' ' ' | median)
RATIO_NET=$(echo "scale=3; $MS_NET / $MN" | bc)
# Part readiness over the whole run (from the arrival of the frame that completes a part to the
# part being servable), from the API: the upper bounds of the histogram buckets.
READY=$(curl -sf "http://127.0.0.1:$API_PORT/v1/paths/live/bench" || echo '{}')
R_PARTS=$(echo "$READY" | json parts); R50=$(echo "$READY" | json part_ready_p50_ms); R99=$(echo "$READY" | json part_ready_p99_ms)
RES=bench/results/origin-$START.md
mkdir -p bench/results
{
  echo "# LL-HLS origin efficiency: Sluice vs nginx static files ($START)"
  echo
  echo "- Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r); load average before $LOAD_BEFORE, after $LOAD_AFTER"
  if REV=$(git rev-parse --short HEAD 2>/dev/null); then
    git diff --quiet HEAD -- crates || REV="$REV + uncommitted changes in crates/"
  else
    REV=${BUILT_FROM:-unknown (not a git checkout)}
  fi
  echo "- Sluice: $REV; nginx $(nginx -v 2>&1 | cut -d/ -f2) (open_file_cache for media files: $([ "${NGINX_OFC:-1}" = 1 ] && echo on || echo off))"
  echo "- Command: \`bench/hls_origin.sh $N $SECS $ROUNDS\` (warm-up ${WARM} s, pinning $([ "$PIN" = 1 ] && echo 'servers core 0, load core 1' || echo off))"
  echo "- Stream: 720p30 H.264 2.37 Mb/s + AAC 128 kb/s, 1 s GOP, RTMP; Sluice defaults (LL-HLS, 1 s segments, 200 ms parts)"
  echo "- Viewers: $N in one llhls-load process; Sluice: blocking reload + preload hint; nginx: playlist polled every part target; every part fetched once"
  [ -n "${NOTE:-}" ] && echo "- Note: $NOTE"
  echo
  echo "| round | server | CPU s | % of a core | delivered Gb/s | CPU s per Gb | µs per request | user-space µs per request | playlists | parts | max gap ms | stalls | errors |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for r in $(seq "$ROUNDS"); do
    echo -n "${RUNS[sluice]}" | sed -n "${r}p"
    echo -n "${RUNS[nginx]}" | sed -n "${r}p"
  done
  echo
  echo "Median CPU s per delivered Gb: Sluice $MS, nginx $MN; **Sluice / nginx = $RATIO** (goal ≤ 1.2)."
  echo
  echo "User space alone (utime; Sluice's includes its ingest, packaging and mirror viewer): median µs per request Sluice $(echo "${UPR[sluice]}" | median), nginx $(echo "${UPR[nginx]}" | median)."
  echo
  echo "Sluice's baseline (its CPU during the nginx runs: ingest, packaging, the mirror viewer): median $MB CPU s over $SECS s."
  echo "Without it, Sluice's median is $MS_NET CPU s per Gb: Sluice / nginx = $RATIO_NET."
  echo
  echo "Part readiness over the whole run ($R_PARTS parts; $N viewers on Sluice half of the time): p50 ≤ $R50 ms, p99 ≤ $R99 ms (histogram bucket bounds; goal p99 ≤ 10 ms)."
} > "$RES"
cat "$RES"
