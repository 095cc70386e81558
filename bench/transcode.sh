#!/usr/bin/env bash
# What a rendition ladder costs in Sluice against one plain ffmpeg doing the same ladder, side by
# side on the same input: a 1080p30 H.264 + AAC file, read in real time, made into 720p, 480p and
# 360p x264 renditions (decode once, split, three encodes, one AAC encode).
#   ffmpeg:  one `ffmpeg -re -i SRC -filter_complex split=3... -f mpegts /dev/null` process;
#   Sluice:  the file published over RTMP (`ffmpeg -re -c copy`, not counted) to a Sluice whose
#            path has the same ladder; counted: the server process and its encoder child.
# CPU is utime + stime from /proc over the same SECONDS after a warm-up. Reports both and the
# ratio (goal: at most 1.05). The machine must keep real time for the preset (ultrafast on 2
# cores): the Sluice run checks that every rendition is still being published at the end.
#
# Usage: bench/transcode.sh [SECONDS] [PRESET]
# Needs: cargo build --release -p sluice
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-30}
PRESET=${2:-ultrafast}
BIN=target/release/sluice
[ -x "$BIN" ] || { echo "build it: cargo build --release -p sluice" >&2; exit 1; }
SRC=target/tmp/bench-1080p30.flv
if [ ! -f "$SRC" ]; then
  mkdir -p target/tmp
  ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=1920x1080:rate=30 \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 -c:v libx264 -preset veryfast -b:v 6M \
    -g 60 -keyint_min 60 -sc_threshold 0 -pix_fmt yuv420p -c:a aac -b:a 128k -ac 2 -f flv "$SRC"
fi
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
HZ=$(getconf CLK_TCK)
ticks() { local t=0; for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }

LADDER="[0:v:0]split=3[a][b][c];[a]scale=-2:720[v0];[b]scale=-2:480[v1];[c]scale=-2:360[v2]"
ffmpeg -nostdin -hide_banner -loglevel error -re -stream_loop -1 -i "$SRC" -filter_complex "$LADDER" \
  -map '[v0]' -map '[v1]' -map '[v2]' -map 0:a:0 -c:v libx264 -preset "$PRESET" \
  -b:v:0 2500k -b:v:1 1200k -b:v:2 700k -bf:v 0 -c:a aac -b:a 128k -f mpegts -y /dev/null &
ff=$!
sleep 5
t1=$(ticks $ff); sleep "$SECS"; t2=$(ticks $ff)
kill $ff; wait $ff 2>/dev/null || true
FF=$(echo "scale=3; ($t2 - $t1) * 100 / $HZ / $SECS" | bc)
echo "ffmpeg ladder: $FF % of a core"

CONF=$(mktemp)
cat > "$CONF" <<TOML
[paths."live/*".transcode]
preset = "$PRESET"
renditions = [
  { name = "720p", height = 720, video_bitrate = "2500k" },
  { name = "480p", height = 480, video_bitrate = "1200k" },
  { name = "360p", height = 360, video_bitrate = "700k" },
]
TOML
env SLUICE_RTMP_LISTEN=127.0.0.1:19435 SLUICE_HTTP_ENABLED=false SLUICE_SRT_ENABLED=false \
  SLUICE_WEBRTC_ENABLED=false SLUICE_API_LISTEN=127.0.0.1:19997 SLUICE_METRICS_ENABLED=false \
  SLUICE_PLAYBACK_ENABLED=false SLUICE_PATH_DEFAULTS_HEALTH_ENABLED=false SLUICE_LOG_LEVEL=warn \
  "$BIN" --config "$CONF" 2>/dev/null &
server=$!
sleep 1
ffmpeg -nostdin -hide_banner -loglevel error -re -stream_loop -1 -i "$SRC" -c copy -f flv rtmp://127.0.0.1:19435/live/cam &
pub=$!
sleep 5
enc=$(pgrep -P $server ffmpeg | head -1)
t1=$(ticks $server $enc); s1=$(ticks $server); sleep "$SECS"; t2=$(ticks $server $enc); s2=$(ticks $server)
SL=$(echo "scale=3; ($t2 - $t1) * 100 / $HZ / $SECS" | bc)
SV=$(echo "scale=3; ($s2 - $s1) * 100 / $HZ / $SECS" | bc)
echo "Sluice ladder (server + encoder): $SL % of a core (the server alone: $SV %)"
echo "  speed and added latency per rendition (GET /v1/paths/live/cam, transcode.outputs):"
curl -s http://127.0.0.1:19997/v1/paths/live/cam | python3 -c '
import json, sys
t = json.load(sys.stdin)["transcode"]
for o in t["outputs"]:
    print("  %s: %s fps, %s b/s, speed %s, added latency %s ms" % (o["path"], o["fps"], o["bitrate"], o["speed"], o.get("added_latency_ms")))
'
for r in 720p 480p 360p; do
  n1=$(curl -s "http://127.0.0.1:19997/v1/paths/live/cam/~$r" | grep -o '"frames_in":[0-9]*' | cut -d: -f2)
  sleep 1
  n2=$(curl -s "http://127.0.0.1:19997/v1/paths/live/cam/~$r" | grep -o '"frames_in":[0-9]*' | cut -d: -f2)
  echo "  ~$r: $((n2 - n1)) frames in the last second (30 fps video + audio: about 77 if it keeps real time)"
done
echo "Sluice / ffmpeg: $(echo "scale=3; $SL / $FF" | bc)"
rm -f "$CONF"
