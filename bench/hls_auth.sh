#!/usr/bin/env bash
# What access control costs HLS viewers: the server's process CPU (utime + stime from
# /proc/PID/stat) while N simple HLS viewers (bench/loadgen's hls-bench, one process) follow one
# RTMP-published stream, in three runs side by side: the open path, the path with a per-path
# read token (each playlist request carries ?token=), and the jwt method (each playlist request
# carries an HS256 ?jwt=). Segments carry no secret in any run. The three runs are repeated
# ROUNDS times, interleaved (open, token, jwt, open, ...), so that a machine's drift hits all
# three alike; reports each run and the ratio of the medians to the open one (goal: at most 1.05).
#
# Usage: bench/hls_auth.sh [N] [SECONDS] [ROUNDS] [FILE.flv]
# Needs: cargo build --release -p sluice -p sluice-loadgen --bins
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-500}
SECS=${2:-30}
ROUNDS=${3:-3}
SRC=${4:-target/tmp/sluice-it/src-h264-aac-v1.flv}
BIN=target/release/sluice
PUB=target/release/rtmp-publish
GEN=target/release/hls-bench
for b in "$BIN" "$PUB" "$GEN"; do
  [ -x "$b" ] || { echo "build it: cargo build --release -p sluice -p sluice-loadgen --bins" >&2; exit 1; }
done
[ -f "$SRC" ] || { echo "no source $SRC (run the integration tests once, or give a file)" >&2; exit 1; }
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TMP=$(mktemp -d)

# An HS256 token for read on live/*, valid for an hour (header.payload.signature, base64url).
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
EXP=$(( $(date +%s) + 3600 ))
H=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
P=$(printf '{"exp":%d,"sluice_permissions":[{"action":"read","path":"live/*"}]}' "$EXP" | b64url)
S=$(printf '%s.%s' "$H" "$P" | openssl dgst -sha256 -hmac bench-secret -binary | b64url)
JWT="$H.$P.$S"

printf '' > "$TMP/open.toml"
printf '[paths."live/*".access]\nread_token = "viewer-token"\n' > "$TMP/token.toml"
printf '[auth]\nmethod = "jwt"\n[[auth.users]]\nuser = "any"\npermissions = [{ action = "publish" }]\n[auth.jwt]\nsecret = "bench-secret"\n' > "$TMP/jwt.toml"

declare -A CPU QUERY=([open]="" [token]="?token=viewer-token" [jwt]="?jwt=$JWT")
for round in $(seq "$ROUNDS"); do
for mode in open token jwt; do
  env SLUICE_RTMP_LISTEN=127.0.0.1:19435 SLUICE_HTTP_LISTEN=127.0.0.1:19888 SLUICE_SRT_ENABLED=false \
    SLUICE_WEBRTC_ENABLED=false SLUICE_API_ENABLED=false SLUICE_METRICS_ENABLED=false \
    SLUICE_HTTP_MAX_CONNECTIONS_PER_IP=0 \
    SLUICE_PLAYBACK_ENABLED=false SLUICE_LOG_LEVEL=warn "$BIN" --config "$TMP/$mode.toml" 2>/dev/null &
  server=$!
  sleep 1
  "$PUB" rtmp://127.0.0.1:19435/live/p 1 $((SECS + 20)) "$SRC" >/dev/null 2>&1 &
  pub=$!
  sleep 4
  "$GEN" "http://127.0.0.1:19888/live/p0/stream.m3u8${QUERY[$mode]}" "$N" $((SECS + 10)) > "$TMP/$mode.json" &
  gen=$!
  sleep 5
  t1=$(ticks $server)
  sleep "$SECS"
  t2=$(ticks $server)
  wait $gen || true
  kill $pub $server 2>/dev/null || true
  wait $pub $server 2>/dev/null || true
  c=$(echo "scale=3; ($t2 - $t1) * 100 / $HZ / $SECS" | bc)
  CPU[$mode]="${CPU[$mode]:-} $c"
  echo "round $round $mode: $c % of a core for $N viewers; viewers saw $(cat "$TMP/$mode.json")"
done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
declare -A MED
for mode in open token jwt; do
  MED[$mode]=$(echo "${CPU[$mode]}" | median)
  echo "$mode: median ${MED[$mode]} % of a core (runs:${CPU[$mode]})"
done
for mode in token jwt; do
  echo "$mode / open: $(echo "scale=3; ${MED[$mode]} / ${MED[open]}" | bc)"
done
rm -rf "$TMP"
