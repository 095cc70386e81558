#!/usr/bin/env bash
# Recording cost: PATHS paths published at about 5 Mb/s each, the server's CPU and bytes
# written with recording off and on (alternating windows, one server per phase), then `/list`
# latency over 30 days of 1-minute segments (43 200 files, generated as hard links of one
# real recorded segment) and the start-up scan that catalogs them.
#
# Goals (issue 11): recording costs <= 10 % more CPU; write amplification (bytes the server
# writes / media bytes it receives) <= 1.02; /list over 30 days under 50 ms.
#
# The server runs pinned to core 0; the publisher (bench/loadgen rtmp-publish, every path from
# one process) to core 1. Recordings go to a directory on the disk under target/ (not tmpfs).
#
# CPU is the server's threads' run time (schedstat) over a window that starts after WARM seconds
# (the server's memory at its steady size: freed memory is kept 10 s before it goes back to the
# kernel, and pages faulted in the first seconds would count as recording cost). Bytes written
# and recorded are taken over the whole run, from the server's start to its files completed
# after the publisher left (over a window they would depend on where fragments fall).
#
# Each round also measures the floor of writing those bytes: the server with recording off
# beside `disk-floor` (bench/loadgen), a program that does nothing but append PATHS files at
# the stream's bitrate, a 1 s burst each (a fragment), copying the bytes once into an aligned
# buffer and writing whole blocks with direct I/O: the least any recorder spends on the disk
# writes and the one copy they need. Its CPU per byte written is set beside the recorder's.
#
# Usage: bench/record.sh [PATHS] [WINDOW_SECONDS] [ROUNDS] [WARM]    defaults: 20 20 2 25
# Needs ffmpeg, curl, python3. Writes bench/results/record-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PATHS_N=${1:-20}
WINDOW=${2:-20}
ROUNDS=${3:-2}
WARM=${4:-25}
SERVER_CORE=0
LOAD_CORE=1
WORK=$(mktemp -d "$PWD/target/sluice-record-bench.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q -p sluice -p sluice-loadgen
SLUICE=target/release/sluice
PUBLISH=target/release/rtmp-publish
FLOOR=target/release/disk-floor
RTMP=127.0.0.1:19371
API=127.0.0.1:19377
PLAYBACK=127.0.0.1:19376
HZ=$(getconf CLK_TCK)

# 20 s of 1280x720 x264 at 5 Mb/s CBR + AAC 128k, 2 s GOP.
SRC="$WORK/src.flv"
ffmpeg -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 20 -c:v libx264 -preset ultrafast -b:v 5M -maxrate 5M -minrate 5M -bufsize 5M -x264-params nal-hrd=cbr \
    -g 60 -keyint_min 60 -sc_threshold 0 -bf 0 -pix_fmt yuv420p -c:a aac -b:a 128k -ac 2 -f flv "$SRC"

start_server() { # RECORD(true/false) DIR -> server pid in SERVER
    cat >"$WORK/cfg.toml" <<CFG
[rtmp]
listen = "$RTMP"
[http]
enabled = false
[srt]
enabled = false
[webrtc]
enabled = false
[metrics]
enabled = false
[api]
listen = "$API"
[playback]
listen = "$PLAYBACK"
[log]
level = "warn"
[path_defaults.health]
enabled = false
[path_defaults.record]
enabled = $1
path = "$2/%path/%Y-%m-%d_%H-%M-%S-%f"
segment_duration = "1m"
CFG
    taskset -c $SERVER_CORE "$SLUICE" --config "$WORK/cfg.toml" >>"$WORK/sluice.log" 2>&1 &
    SERVER=$!
    PIDS+=("$SERVER")
    for _ in $(seq 100); do curl -sf "http://$API/v1/server" -o /dev/null && break; sleep 0.1; done
}

bytes_in() { # media bytes received on every path, from the API
    curl -sf "http://$API/v1/paths?limit=1000" | python3 -c 'import json,sys; print(sum(p["bytes_in"] for p in json.load(sys.stdin)["items"]))'
}
cpu_ns() { cat /proc/"$SERVER"/task/*/schedstat ${FLOORPID:+/proc/$FLOORPID/task/*/schedstat} | awk '{s += $1} END {printf "%.0f\n", s}'; }
wchar() { awk '/^wchar/ {print $2}' "/proc/$SERVER/io"; }
now() { date +%s.%N; }

phase() { # RECORD (true, false or floor) -> "record seconds cpu_ns bytes_in wchar disk_bytes"
    local dir="$WORK/rec-$1-$RANDOM"
    mkdir -p "$dir"
    start_server "$([ "$1" = true ] && echo true || echo false)" "$dir"
    taskset -c $LOAD_CORE "$PUBLISH" "rtmp://$RTMP/live/p" "$PATHS_N" $((WARM + WINDOW + 5)) "$SRC" >"$WORK/pub.json" 2>>"$WORK/pub.err" &
    local pub=$!
    PIDS+=("$pub")
    FLOORPID=
    if [ "$1" = floor ]; then
        taskset -c $SERVER_CORE "$FLOOR" "$dir/floor" "$PATHS_N" "$BITRATE" $((WARM + WINDOW + 2)) >"$WORK/floor.json" &
        FLOORPID=$!
        PIDS+=("$FLOORPID")
    fi
    sleep "$WARM"
    local t0 c0 t1 c1 b w d
    t0=$(now); c0=$(cpu_ns)
    sleep "$WINDOW"
    t1=$(now); c1=$(cpu_ns)
    if [ "$1" = floor ]; then
        wait "$FLOORPID" || true
        # The floor writer's bytes over the window, from its total over its whole run.
        w=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(round(j["bytes"] * float(sys.argv[2]) / j["elapsed_s"]))' "$WORK/floor.json" "$WINDOW")
        FLOORPID=
    fi
    # Totals: the media received up to the publisher's end (read just before it is stopped),
    # what the server wrote once its recordings are complete, and what is on disk.
    b=$(bytes_in)
    kill "$pub" 2>/dev/null || true
    wait "$pub" 2>/dev/null || true
    for _ in $(seq 100); do
        [ "$(curl -sf "http://$API/v1/paths" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')" = 0 ] && break
        sleep 0.1
    done
    sleep 1
    [ "$1" = floor ] || w=$(wchar)
    kill "$SERVER"
    wait "$SERVER" 2>/dev/null || true
    d=$(find "$dir" -type f -printf "%s\n" | awk "{s += \$1} END {print s + 0}")
    [ "$1" = true ] || d=0
    rm -rf "$dir"
    awk -v r="$1" -v a="$t0" -v b="$t1" -v x="$c0" -v y="$c1" -v p="$b" -v u="$w" -v n="$d" \
        'BEGIN {printf "%s %.3f %.0f %.0f %.0f %.0f\n", r, b - a, y - x, p, u, n}'
}

: >"$WORK/phases.txt"
# The stream's bitrate (the source file is 20 s long): what the floor writer writes per file.
BITRATE=$(( $(stat -c %s "$SRC") * 8 / 20 ))
for _ in $(seq "$ROUNDS"); do
    phase false >>"$WORK/phases.txt"
    phase true >>"$WORK/phases.txt"
    phase floor >>"$WORK/phases.txt"
done

# /list over 30 days of 1-minute segments: one real segment (complete, its header has its
# duration), hard-linked under 43 200 names a minute apart.
LISTDIR="$WORK/list"
mkdir -p "$LISTDIR"
start_server true "$LISTDIR"
taskset -c $LOAD_CORE "$PUBLISH" "rtmp://$RTMP/live/one" 1 5 "$SRC" >/dev/null 2>&1 || true
sleep 2
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
ONE=$(find "$LISTDIR" -name '*.mp4' | head -1)
python3 - "$ONE" "$LISTDIR/live/cam" <<'EOF'
import os, sys, datetime
one, d = sys.argv[1], sys.argv[2]
os.makedirs(d, exist_ok=True)
# Its header says 60 s: every minute is covered.
data = bytearray(open(one, "rb").read())
i = data.find(b"mehd")
data[i + 8:i + 16] = (60000).to_bytes(8, "big")
src = os.path.join(os.path.dirname(d), "template.bin")
open(src, "wb").write(data)
t0 = datetime.datetime(2026, 10, 1, tzinfo=datetime.timezone.utc)
for m in range(30 * 24 * 60):
    t = t0 + datetime.timedelta(minutes=m)
    os.link(src, os.path.join(d, t.strftime("%Y-%m-%d_%H-%M-%S-000000.mp4")))
os.remove(src)
EOF
find "$LISTDIR/live" -maxdepth 1 -type d -name 'one*' -exec rm -rf {} +
STARTED=$(now)
start_server true "$LISTDIR"
READY=$(now)
FILES=$(find "$LISTDIR/live/cam" -name '*.mp4' | wc -l)
list_latency() { # QUERY OUT
    for _ in $(seq 200); do
        taskset -c $LOAD_CORE curl -s -o /dev/null -w '%{time_total} %{size_download} %{http_code}\n' "http://$PLAYBACK/list?$1"
    done >"$2"
}
list_latency "path=live/cam" "$WORK/list_all.txt"
list_latency "path=live/cam&start=2026-10-15T00:00:00Z&end=2026-10-16T00:00:00Z" "$WORK/list_day.txt"
SPANS=$(curl -sf "http://$PLAYBACK/list?path=live/cam" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(len(v), v[0]["duration"])')
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true

mkdir -p bench/results
OUT="bench/results/record-$(date -u +%Y%m%d-%H%M).md"
python3 - "$WORK" "$HZ" "$PATHS_N" "$WINDOW" "$FILES" "$STARTED" "$READY" "$SPANS" "$(nproc)" "$WARM" >"$OUT" <<'EOF'
import sys
work, hz, paths, window, files, started, ready, spans, nproc, warm = sys.argv[1:]
hz = float(hz)
rows = [l.split() for l in open(f"{work}/phases.txt") if l.strip()]
def agg(rec):
    r = [x for x in rows if x[0] == rec]
    secs = sum(float(x[1]) for x in r)
    ns = sum(int(x[2]) for x in r)
    bin_ = sum(int(x[3]) for x in r)
    wch = sum(int(x[4]) for x in r)
    disk = sum(int(x[5]) for x in r)
    return secs, ns / 1e9 / secs * 100, bin_, wch, disk
off = agg("false")
on = agg("true")
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
def lat(name):
    r = [l.split() for l in open(f"{work}/{name}.txt") if l.strip()]
    t = [float(x[0]) * 1000 for x in r]
    codes = sorted({x[2] for x in r})
    return pct(t, 50), pct(t, 99), max(t), r[0][1], codes
la = lat("list_all")
ld = lat("list_day")
print(f"# Recording cost — {paths} paths at ~5 Mb/s, {window} s windows\n")
print(f"Machine: {nproc} cores; server pinned to core 0, publisher (rtmp-publish) to core 1; recordings on disk (under target/), fMP4, 1 min segments, 1 s fragments. CPU over {window} s windows after {warm} s of warm-up; bytes over each whole run.\n")
print("| | recording off | recording on | ratio on/off |")
print("|---|---|---|---|")
print(f"| server CPU (% of a core) | {off[1]:.2f} | {on[1]:.2f} | {on[1]/off[1]:.3f} |")
print(f"| media received (bytes, all paths, all runs) | {off[2]} | {on[2]} | |")
print(f"| bytes written by the server (write syscalls) | {off[3]} | {on[3]} | |")
print(f"| write amplification (written / received) | — | {on[3]/on[2]:.4f} | |")
print(f"| recorded files / received | — | {on[4]/on[2]:.4f} | |")
# Each round's on/off pair measured minutes apart: the machine's drift between rounds (a
# shared host) moves the totals; the median of the rounds' own ratios is steadier.
def median(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
rounds = [rows[i:i + 3] for i in range(0, len(rows) - 2, 3)]
def rate(x):
    return float(x[2]) / float(x[1])
pairs = [rate(b) / rate(a) for a, b, _ in rounds]
if pairs:
    print(f"\nCPU ratio of each round (on / off, measured one after the other): {', '.join(f'{x:.3f}' for x in pairs)}; median **{median(pairs):.3f}**.")
# The floor: ingest beside a program that only writes the same bytes (one copy, direct I/O).
floor = agg("floor")
if rounds and floor[0] > 0:
    fl = [rate(c) / rate(a) for a, _, c in rounds]
    # Both write the same bitrate per path (the recorder about 1 % more: its boxes), so the
    # two costs on top of the ingest compare as they are.
    rec = [rate(b) - rate(a) for a, b, _ in rounds]
    flo = [rate(c) - rate(a) for a, _, c in rounds]
    mb_s = sum(int(c[4]) / float(c[1]) for _, _, c in rounds) / len(rounds) / 1e6
    print(f"\nThe floor (ingest beside `disk-floor` writing the same bitrate per path: one copy, direct I/O, nothing else): CPU {floor[1]:.2f} % of a core; ratio floor / off of each round: {', '.join(f'{x:.3f}' for x in fl)}; median **{median(fl):.3f}**.")
    pct = lambda v: ', '.join(f'{x / 1e7:.2f}' for x in v)
    print(f"\nCPU on top of the ingest (% of a core), writing {mb_s:.1f} MB/s: the recorder {pct(rec)} (median {median(rec) / 1e7:.2f}); the floor writer {pct(flo)} (median {median(flo) / 1e7:.2f}); recorder / floor **{median(rec) / max(median(flo), 1):.2f}**. The goal's 10 % of the ingest is {off[1] / 10:.2f} % of a core.")
print(f"\nPhases (record: false, true or floor; window seconds, CPU ns in the window, media bytes received, bytes written, bytes on disk):\n")
for r in rows:
    print(f"    {' '.join(r)}")
print(f"\n## /list over 30 days of 1-minute segments\n")
print(f"{files} segment files; the server started and cataloged them in {float(ready)-float(started):.2f} s (start to API answering).\n")
print("| query | p50 ms | p99 ms | max ms | bytes | status |")
print("|---|---|---|---|---|---|")
print(f"| whole month (`/list?path=live/cam`) | {la[0]:.2f} | {la[1]:.2f} | {la[2]:.2f} | {la[3]} | {','.join(la[4])} |")
print(f"| one day (`&start=..&end=..`) | {ld[0]:.2f} | {ld[1]:.2f} | {ld[2]:.2f} | {ld[3]} | {','.join(ld[4])} |")
print(f"\nSpans answered for the month (count, seconds): {spans}. 200 sequential curl requests each, from core 1.")
print("\nGoals: CPU ratio <= 1.10, write amplification <= 1.02, /list < 50 ms.")
EOF
cat "$OUT"
