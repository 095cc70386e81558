#!/usr/bin/env bash
# API and metrics under load: 1000 RTMP viewers open on one ffmpeg-published path, then
#   1. latency of GET /v1/paths and GET /metrics (p50, p99 over REQUESTS sequential requests each);
#   2. the server's CPU with a scrape every second vs none (alternating windows), from
#      /proc/<pid>/stat (utime + stime of every thread);
#   3. the CPU one request costs, from bursts of back-to-back requests minus the idle rate: the
#      precise figure behind (2), since the fan-out's own CPU varies more than a scrape costs.
# Goal (issue 10): scraping every second costs the media path at most 1 % of a core.
#
# The server runs pinned to core 0; the publisher, the load generator (bench/loadgen, 1000
# viewers in one process) and the HTTP clients to core 1.
#
# Usage: bench/metrics_load.sh [VIEWERS] [REQUESTS] [WINDOW_SECONDS] [ROUNDS]
#   defaults: 1000 300 10 3
# Needs ffmpeg, curl, python3. Writes bench/results/metrics_load-<date>.md.
# BIN=dir runs the sluice and sluice-loadgen binaries found there instead of building them (e.g.
# copies built from a clean checkout while the working tree holds unfinished work).
set -euo pipefail
cd "$(dirname "$0")/.."

VIEWERS=${1:-1000}
REQUESTS=${2:-300}
WINDOW=${3:-10}
ROUNDS=${4:-3}
SERVER_CORE=0
LOAD_CORE=1
WORK=$(mktemp -d /tmp/sluice-metrics-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ -z "${BIN:-}" ]; then
    cargo build --release -q -p sluice -p sluice-loadgen
    BIN=target/release
fi
SLUICE=$BIN/sluice
LOADGEN=$BIN/sluice-loadgen
RTMP=127.0.0.1:19361
API=127.0.0.1:19397
METRICS=127.0.0.1:19398
HZ=$(getconf CLK_TCK)

# A 30 s source, 2 s GOP, x264 + AAC at about 232 kb/s (as bench/rtmp_fanout.sh's low rate).
SRC="$WORK/src.flv"
ffmpeg -v error -y -f lavfi -i "testsrc2=size=320x180:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 30 -c:v libx264 -preset veryfast -b:v 168k -maxrate 168k -bufsize 168k -g 60 -keyint_min 60 \
    -sc_threshold 0 -bf 2 -pix_fmt yuv420p -c:a aac -b:a 64k -ac 2 -f flv "$SRC"

SLUICE_RTMP_LISTEN=$RTMP SLUICE_HTTP_LISTEN=127.0.0.1:18891 SLUICE_API_LISTEN=$API \
    SLUICE_METRICS_LISTEN=$METRICS SLUICE_SRT_ENABLED=false SLUICE_WEBRTC_ENABLED=false \
    SLUICE_LOG_LEVEL=warn taskset -c $SERVER_CORE "$SLUICE" >"$WORK/sluice.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 50); do curl -sf "http://$METRICS/metrics" -o /dev/null && break; sleep 0.2; done

taskset -c $LOAD_CORE ffmpeg -v error -re -stream_loop -1 -i "$SRC" -c copy -f flv \
    "rtmp://$RTMP/live/bench" >"$WORK/pub.log" 2>&1 &
PIDS+=($!)
sleep 3
# Viewers for longer than every phase needs; stopped at the end.
taskset -c $LOAD_CORE "$LOADGEN" "rtmp://$RTMP/live/bench" "$VIEWERS" 3600 2 >"$WORK/load.json" 2>"$WORK/load.err" &
PIDS+=($!)

sessions() { # open sessions, from the metrics
    curl -sf "http://$METRICS/metrics" | awk '/^sluice_sessions\{/ {n += $2} END {print n + 0}'
}
for _ in $(seq 150); do
    n=$(sessions)
    [ "$n" -ge "$VIEWERS" ] && break
    sleep 0.2
done
sleep 5
OPEN=$(sessions)
echo "sessions open: $OPEN" >&2

cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
now() { date +%s.%N; }

# 1. Latency.
latency() { # URL OUT
    for _ in $(seq "$REQUESTS"); do
        taskset -c $LOAD_CORE curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "$1"
    done >"$2"
}
latency "http://$API/v1/paths" "$WORK/paths.txt"
latency "http://$METRICS/metrics" "$WORK/metrics.txt"

# 2. CPU with and without a scrape every second, alternating windows.
window() { # scrape(0/1) -> "seconds ticks"
    local t0 c0 t1 c1 end
    t0=$(now); c0=$(cpu_ticks)
    # printf: awk's print would write the epoch as 1.7961e+09 (OFMT %.6g), an end up to an hour off.
    end=$(awk -v t="$t0" -v w="$WINDOW" 'BEGIN {printf "%.3f", t + w}')
    while awk -v e="$end" -v n="$(now)" 'BEGIN {exit !(n < e)}'; do
        if [ "$1" = 1 ]; then
            taskset -c $LOAD_CORE curl -s -o /dev/null "http://$METRICS/metrics"
        fi
        sleep 1
    done
    t1=$(now); c1=$(cpu_ticks)
    awk -v a="$t0" -v b="$t1" -v x="$c0" -v y="$c1" 'BEGIN {print b - a, y - x}'
}
: >"$WORK/windows.txt"
for r in $(seq "$ROUNDS"); do
    echo "idle $(window 0)" >>"$WORK/windows.txt"
    echo "scrape $(window 1)" >>"$WORK/windows.txt"
done

# 3. CPU per request: bursts of back-to-back requests, the idle rate taken just before.
burst() { # URL N -> "idle_s idle_ticks burst_s burst_ticks"
    local t0 c0 t1 c1 t2 c2
    t0=$(now); c0=$(cpu_ticks)
    sleep 5
    t1=$(now); c1=$(cpu_ticks)
    for _ in $(seq "$2"); do taskset -c $LOAD_CORE curl -s -o /dev/null "$1"; done
    t2=$(now); c2=$(cpu_ticks)
    awk -v a="$t0" -v b="$t1" -v c="$t2" -v x="$c0" -v y="$c1" -v z="$c2" 'BEGIN {print b - a, y - x, c - b, z - y}'
}
: >"$WORK/bursts.txt"
for r in $(seq "$ROUNDS"); do
    echo "metrics 100 $(burst "http://$METRICS/metrics" 100)" >>"$WORK/bursts.txt"
    echo "paths 100 $(burst "http://$API/v1/paths" 100)" >>"$WORK/bursts.txt"
done
SERIES=$(curl -sf "http://$METRICS/metrics" | grep -vc '^#' || true)
OMITTED=$(curl -sf "http://$METRICS/metrics" | awk '/^sluice_session_series_omitted / {print $2}')
RSS=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status")

mkdir -p bench/results
OUT="bench/results/metrics_load-$(date -u +%Y%m%d-%H%M).md"
python3 - "$WORK" "$HZ" "$VIEWERS" "$OPEN" "$REQUESTS" "$WINDOW" "$SERIES" "$OMITTED" "$RSS" "$(nproc)" >"$OUT" <<'EOF'
import statistics, sys
work, hz, viewers, open_, requests, window, series, omitted, rss, nproc = sys.argv[1:]
hz = float(hz)

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]

def lat(name):
    rows = [l.split() for l in open(f"{work}/{name}.txt") if l.strip()]
    t = [float(r[0]) * 1000 for r in rows]
    size = int(float(rows[-1][1])) if rows else 0
    return t, size

print(f"# API and metrics under load ({open_} sessions open: {viewers} RTMP viewers of one path)\n")
print(f"Server pinned to core 0; publisher, load generator and curl on core 1; {nproc} cores. "
      f"Per-session series exported: capped at 1000 ([metrics] max_session_series), "
      f"{omitted} sessions left out of each scrape; {series} samples per scrape; server RSS {int(rss) // 1024} MiB.\n")
print("## Latency (sequential curl requests, time_total)\n")
print("| endpoint | requests | body | p50 ms | p99 ms | max ms |")
print("|---|---|---|---|---|---|")
for name, ep in (("paths", "GET /v1/paths"), ("metrics", "GET /metrics")):
    t, size = lat(name)
    print(f"| {ep} | {len(t)} | {size / 1024:.0f} KiB | {pct(t, 50):.2f} | {pct(t, 99):.2f} | {max(t):.2f} |")

print("\n## Server CPU with a scrape every second vs none\n")
print(f"Alternating {window} s windows; whole-process CPU (all threads) from /proc/<pid>/stat, in % of one core.\n")
print("| window | seconds | CPU % |")
print("|---|---|---|")
idle, scrape = [], []
for l in open(f"{work}/windows.txt"):
    kind, secs, ticks = l.split()
    p = float(ticks) / hz / float(secs) * 100
    (idle if kind == "idle" else scrape).append(p)
    print(f"| {kind} | {float(secs):.1f} | {p:.2f} |")
di, ds = statistics.mean(idle), statistics.mean(scrape)
print(f"\nMean without scraping {di:.2f} %, with a scrape every second {ds:.2f} %: difference {ds - di:+.2f} % of a core "
      f"(the fan-out's own variation between windows is {max(idle) - min(idle):.2f} points).\n")

print("## CPU per request (bursts of back-to-back requests, minus the idle rate measured just before)\n")
print("| endpoint | requests | burst s | CPU ms per request | CPU % of a core at 1 request/s |")
print("|---|---|---|---|---|")
per = {}
for l in open(f"{work}/bursts.txt"):
    name, n, i_s, i_t, b_s, b_t = l.split()
    n, i_s, i_t, b_s, b_t = int(n), float(i_s), float(i_t), float(b_s), float(b_t)
    idle_rate = i_t / hz / i_s
    cost = max(b_t / hz - idle_rate * b_s, 0.0) / n
    per.setdefault(name, []).append(cost)
    print(f"| {'GET /metrics' if name == 'metrics' else 'GET /v1/paths'} | {n} | {b_s:.2f} | {cost * 1000:.2f} | {cost * 100:.3f} |")
m = statistics.median(per["metrics"])
print(f"\n**A scrape every second costs {m * 100:.3f} % of a core** (median of the bursts; goal ≤ 1 %: "
      f"{'met' if m * 100 <= 1.0 else 'NOT met'}).")
EOF
cat "$OUT"
echo "written to $OUT" >&2
