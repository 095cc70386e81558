#!/usr/bin/env bash
# HTTP-FLV fan-out against RTMP play, on Sluice, in one run: the same source and viewer count,
# RTMP viewers from bench/loadgen, HTTP-FLV viewers from one asyncio process (each a GET of
# /live/bench.flv read to the end). The server runs pinned to core 0, the publisher and the
# viewers to core 1. For each protocol: whole-core CPU of core 0 (from /proc/stat, so kernel
# and softirq time count) per viewer above the publisher-only baseline, and what each viewer
# received; then HTTP-FLV / RTMP (goal of issue 17: at most 1.2).
#
# Usage: bench/flv_fanout.sh [SECONDS_PER_RUN] [VIEWERS]      defaults: 20 200
# Needs ffmpeg and python3. Writes bench/results/flv_fanout-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-20}
N=${2:-200}
SERVER_CORE=0
LOAD_CORE=1
WORK=$(mktemp -d /tmp/sluice-flv-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release -q -p sluice -p sluice-loadgen
SLUICE=target/release/sluice
LOADGEN=target/release/sluice-loadgen

# 30 s of 1280x720 at about 2.5 Mb/s, 2 s GOP, x264 + AAC.
SRC="$WORK/src.flv"
ffmpeg -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 30 -c:v libx264 -preset veryfast -b:v 2372k -maxrate 2372k -bufsize 2372k -g 60 -keyint_min 60 \
    -sc_threshold 0 -bf 2 -pix_fmt yuv420p -c:a aac -b:a 128k -ac 2 -f flv "$SRC"

# HTTP-FLV viewers: N GETs from one process, each counting what it reads.
cat >"$WORK/flv_viewers.py" <<'EOF'
import asyncio, json, sys, time
host, port, path, n, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
total = [0]
ok = [0]
async def viewer(deadline):
    r, w = await asyncio.open_connection(host, port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await w.drain()
    got = 0
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            b = await asyncio.wait_for(r.read(262144), timeout=left)
            if not b:
                break
            got += len(b)
    except asyncio.TimeoutError:
        pass
    w.close()
    total[0] += got
    if got > 100_000:
        ok[0] += 1
async def main():
    deadline = time.monotonic() + secs
    tasks = []
    for _ in range(n):
        tasks.append(asyncio.create_task(viewer(deadline)))
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"ok": ok[0], "failed": n - ok[0], "mbps_per_viewer": round(total[0] * 8 / secs / n / 1e6, 3)}))
asyncio.run(main())
EOF

cpu0() { awk -v c="cpu$SERVER_CORE" '$1==c {b=$2+$3+$4+$7+$8; t=b+$5+$6; print b, t}' /proc/stat; }
busy() { awk -v b="$1" -v t="$2" 'BEGIN {print (t ? b / t : 0)}'; }

RESULTS=()
run_one() { # protocol
    local proto=$1
    SLUICE_RTMP_LISTEN=127.0.0.1:19361 SLUICE_HTTP_LISTEN=127.0.0.1:18861 SLUICE_API_LISTEN=127.0.0.1:19367 \
        SLUICE_SRT_ENABLED=false SLUICE_WEBRTC_ENABLED=false SLUICE_METRICS_ENABLED=false \
        SLUICE_PLAYBACK_ENABLED=false SLUICE_LOG_LEVEL=warn \
        taskset -c $SERVER_CORE "$SLUICE" >"$WORK/sluice.log" 2>&1 &
    local pid=$!
    sleep 1
    taskset -c $LOAD_CORE ffmpeg -v error -re -stream_loop -1 -i "$SRC" -c copy -f flv \
        rtmp://127.0.0.1:19361/live/bench >"$WORK/pub.log" 2>&1 &
    local pub=$!
    sleep 8
    read -r b0 t0 < <(cpu0); sleep 5; read -r b1 t1 < <(cpu0)
    local base; base=$(busy $((b1 - b0)) $((t1 - t0)))
    if [ "$proto" = rtmp ]; then
        taskset -c $LOAD_CORE "$LOADGEN" rtmp://127.0.0.1:19361/live/bench "$N" "$SECS" 2 >"$WORK/load.json" &
    else
        taskset -c $LOAD_CORE python3 "$WORK/flv_viewers.py" 127.0.0.1 18861 /live/bench.flv "$N" "$SECS" >"$WORK/load.json" &
    fi
    local lg=$!
    sleep $((N * 2 / 1000 + 3))
    read -r b0 t0 < <(cpu0); sleep $((SECS - N * 2 / 1000 - 5)); read -r b1 t1 < <(cpu0)
    local load; load=$(busy $((b1 - b0)) $((t1 - t0)))
    wait $lg || true
    kill $pub $pid 2>/dev/null || true
    wait $pub $pid 2>/dev/null || true
    sleep 1
    local line
    line=$(python3 - "$proto" "$N" "$load" "$base" "$(cat "$WORK/load.json")" <<'EOF'
import json, sys
proto, n, load, base, j = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), json.loads(sys.argv[5])
print(json.dumps(dict(proto=proto, n=n, core_busy=round(load * 100, 1), base_busy=round(base * 100, 1),
    cpu_pct_per_viewer=round(max(load - base, 0) * 100 / n, 4), ok=j.get("ok"), failed=j.get("failed"),
    mbps_per_viewer=j.get("mbps_per_viewer"))))
EOF
)
    echo "$line" >&2
    RESULTS+=("$line")
}

run_one rtmp
run_one flv

mkdir -p bench/results
OUT="bench/results/flv_fanout-$(date -u +%Y%m%d-%H%M).md"
printf '%s\n' "${RESULTS[@]}" >"$WORK/results.jsonl"
python3 - "$SECS" "$WORK/results.jsonl" >"$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
print(f"# HTTP-FLV against RTMP play on Sluice ({sys.argv[1]} s per run, server on core 0, load on core 1)\n")
print("| protocol | viewers | core 0 busy % | publisher only % | CPU %/viewer | ok/failed | Mb/s per viewer |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['proto']} | {r['n']} | {r['core_busy']} | {r['base_busy']} | {r['cpu_pct_per_viewer']} | {r['ok']}/{r['failed']} | {r['mbps_per_viewer']} |")
by = {r['proto']: r for r in rows}
if by.get('rtmp', {}).get('cpu_pct_per_viewer'):
    print(f"\nHTTP-FLV / RTMP CPU per viewer: {by['flv']['cpu_pct_per_viewer'] / by['rtmp']['cpu_pct_per_viewer']:.2f} (goal: at most 1.2)")
EOF
cat "$OUT"
echo "written to $OUT"
