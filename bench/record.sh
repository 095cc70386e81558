#!/usr/bin/env bash
# Recording cost: PATHS paths published at about 5 Mb/s each to two servers at once, one
# recording them and one not, beside the floor of writing those bytes; then `/list` latency
# over 30 days of 1-minute segments (43 200 files, generated as hard links of one real
# recorded segment) and the start-up scan that catalogs them.
#
# Goals (issue 11): recording costs <= 10 % more CPU; write amplification (bytes the server
# writes / media bytes it receives) <= 1.02; /list over 30 days under 50 ms.
#
# Each round runs, at the same time and all pinned to core 0: server A (recording off), server
# B (recording on), and two `disk-floor` processes (bench/loadgen) that do nothing but append
# PATHS files at the stream's bitrate, one 1 s burst each (a fragment) written in whole blocks
# with direct I/O: one copies the bytes once into its aligned buffer first (what any recorder
# of frames received at arbitrary addresses needs), the other does not (the writes alone, as if
# frames arrived aligned). Two publishers (bench/loadgen rtmp-publish) on core 1 feed A and B
# the same paths. Measured over the same window, the machine's drift (a shared host: the same
# configuration measured sequentially varied by half between runs) moves all four alike.
# Recordings go to a directory on the disk under target/ (not tmpfs).
#
# CPU is each process's threads' run time (schedstat) over a window that starts after WARM
# seconds (the servers' memory at its steady size: freed memory is kept 10 s before it goes
# back to the kernel, and pages faulted in the first seconds would count as recording cost).
# Bytes written and recorded are taken over B's whole run, from its start to its files
# completed after the publisher left (over a window they would depend on where fragments fall).
#
# Usage: bench/record.sh [PATHS] [WINDOW_SECONDS] [ROUNDS] [WARM]    defaults: 20 30 5 25
# Needs ffmpeg, curl, python3. Writes bench/results/record-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PATHS_N=${1:-20}
WINDOW=${2:-30}
ROUNDS=${3:-5}
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
# Server A's ports; B's are the next ones (+100).
RTMP=127.0.0.1:19371
API=127.0.0.1:19377
PLAYBACK=127.0.0.1:19376
HZ=$(getconf CLK_TCK)

# 20 s of 1280x720 x264 at 5 Mb/s CBR + AAC 128k, 2 s GOP.
SRC="$WORK/src.flv"
ffmpeg -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 20 -c:v libx264 -preset ultrafast -b:v 5M -maxrate 5M -minrate 5M -bufsize 5M -x264-params nal-hrd=cbr \
    -g 60 -keyint_min 60 -sc_threshold 0 -bf 0 -pix_fmt yuv420p -c:a aac -b:a 128k -ac 2 -f flv "$SRC"

start_server() { # RECORD(true/false) DIR [PORT_OFFSET] -> server pid in SERVER, its API in SAPI
    local off=${3:-0}
    local rtmp="127.0.0.1:$((${RTMP##*:} + off))" api="127.0.0.1:$((${API##*:} + off))" pb="127.0.0.1:$((${PLAYBACK##*:} + off))"
    cat >"$WORK/cfg-$off.toml" <<CFG
[rtmp]
listen = "$rtmp"
[http]
enabled = false
[srt]
enabled = false
[webrtc]
enabled = false
[metrics]
enabled = false
[api]
listen = "$api"
[playback]
listen = "$pb"
[log]
level = "warn"
[path_defaults.health]
enabled = false
[path_defaults.record]
enabled = $1
path = "$2/%path/%Y-%m-%d_%H-%M-%S-%f"
segment_duration = "1m"
CFG
    taskset -c $SERVER_CORE "$SLUICE" --config "$WORK/cfg-$off.toml" >>"$WORK/sluice-$off.log" 2>&1 &
    SERVER=$!
    SAPI=$api
    PIDS+=("$SERVER")
    for _ in $(seq 100); do curl -sf "http://$api/v1/server" -o /dev/null && break; sleep 0.1; done
}

bytes_in() { # API -> media bytes received on every path
    curl -sf "http://$1/v1/paths?limit=1000" | python3 -c 'import json,sys; print(sum(p["bytes_in"] for p in json.load(sys.stdin)["items"]))'
}
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f\n", s}'; }
wchar() { awk '/^wchar/ {print $2}' "/proc/$1/io"; }
now() { date +%s.%N; }
paths_left() { curl -sf "http://$1/v1/paths" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))'; }

round() { # -> "seconds cpu_ns_off cpu_ns_on cpu_ns_floor cpu_ns_floor0 bytes_in_on wchar_on disk_on floor_bytes"
    local dir="$WORK/round-$RANDOM"
    mkdir -p "$dir/off" "$dir/on"
    start_server false "$dir/off" 0
    local a=$SERVER a_api=$SAPI
    start_server true "$dir/on" 100
    local b=$SERVER b_api=$SAPI
    local run=$((WARM + WINDOW + 5))
    taskset -c $LOAD_CORE "$PUBLISH" "rtmp://127.0.0.1:${RTMP##*:}/live/p" "$PATHS_N" $run "$SRC" >/dev/null 2>>"$WORK/pub.err" &
    local pa=$!
    taskset -c $LOAD_CORE "$PUBLISH" "rtmp://127.0.0.1:$((${RTMP##*:} + 100))/live/p" "$PATHS_N" $run "$SRC" >/dev/null 2>>"$WORK/pub.err" &
    local pb=$!
    taskset -c $SERVER_CORE "$FLOOR" "$dir/floor" "$PATHS_N" "$BITRATE" $((WARM + WINDOW + 2)) >"$dir/floor.json" &
    local f1=$!
    taskset -c $SERVER_CORE "$FLOOR" "$dir/floor0" "$PATHS_N" "$BITRATE" $((WARM + WINDOW + 2)) --no-copy >"$dir/floor0.json" &
    local f0=$!
    PIDS+=("$pa" "$pb" "$f1" "$f0")
    sleep "$WARM"
    local t0 t1 a0 a1 b0 b1 x0 x1 y0 y1 bi w d fb
    t0=$(now); a0=$(cpu_ns $a); b0=$(cpu_ns $b); x0=$(cpu_ns $f1); y0=$(cpu_ns $f0)
    sleep "$WINDOW"
    t1=$(now); a1=$(cpu_ns $a); b1=$(cpu_ns $b); x1=$(cpu_ns $f1); y1=$(cpu_ns $f0)
    wait "$f1" "$f0" || true
    fb=$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(round(j["bytes"] * float(sys.argv[2]) / j["elapsed_s"]))' "$dir/floor.json" "$WINDOW")
    # B's totals: the media received up to the publisher's end (read just before it is
    # stopped), what it wrote once its recordings are complete, and what is on disk.
    bi=$(bytes_in "$b_api")
    kill "$pa" "$pb" 2>/dev/null || true
    wait "$pa" "$pb" 2>/dev/null || true
    for _ in $(seq 100); do
        [ "$(paths_left "$b_api")" = 0 ] && break
        sleep 0.1
    done
    sleep 1
    w=$(wchar $b)
    kill "$a" "$b"
    wait "$a" "$b" 2>/dev/null || true
    d=$(find "$dir/on" -type f -printf "%s\n" | awk "{s += \$1} END {print s + 0}")
    rm -rf "$dir"
    awk -v t="$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" -v a="$((a1 - a0))" -v b="$((b1 - b0))" \
        -v x="$((x1 - x0))" -v y="$((y1 - y0))" -v p="$bi" -v u="$w" -v n="$d" -v f="$fb" \
        'BEGIN {printf "%.3f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\n", t, a, b, x, y, p, u, n, f}'
}

# The stream's bitrate (the source file is 20 s long): what the floor writers write per file.
BITRATE=$(( $(stat -c %s "$SRC") * 8 / 20 ))
: >"$WORK/rounds.txt"
for _ in $(seq "$ROUNDS"); do
    round >>"$WORK/rounds.txt"
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
rows = [[float(v) for v in l.split()] for l in open(f"{work}/rounds.txt") if l.strip()]
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
def median(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
def lat(name):
    r = [l.split() for l in open(f"{work}/{name}.txt") if l.strip()]
    t = [float(x[0]) * 1000 for x in r]
    codes = sorted({x[2] for x in r})
    return pct(t, 50), pct(t, 99), max(t), r[0][1], codes
la = lat("list_all")
ld = lat("list_day")
# % of a core of each process in each round.
core = lambda r, i: r[i] / 1e9 / r[0] * 100
off = [core(r, 1) for r in rows]
on = [core(r, 2) for r in rows]
fl = [core(r, 3) for r in rows]
fl0 = [core(r, 4) for r in rows]
rec = [b - a for a, b in zip(off, on)]
ratio = [b / a for a, b in zip(off, on)]
fratio = [(a + f) / a for a, f in zip(off, fl)]
f0ratio = [(a + f) / a for a, f in zip(off, fl0)]
vs = [r / f for r, f in zip(rec, fl)]
received = sum(r[5] for r in rows)
written = sum(r[6] for r in rows)
disk = sum(r[7] for r in rows)
mbs = median([r[8] / r[0] / 1e6 for r in rows])
j = lambda v, f="{:.2f}": ", ".join(f.format(x) for x in v)
print(f"# Recording cost — {paths} paths at ~5 Mb/s, {window} s windows, {len(rows)} rounds\n")
print(f"Machine: {nproc} cores. Each round, at the same time on core 0: server A (recording off), server B (recording on), and the two floor writers (`disk-floor`, {paths} files at the stream's bitrate, {mbs:.1f} MB/s in all, 1 s bursts, direct I/O: with one copy, and without); two publishers (rtmp-publish) on core 1 feed A and B the same {paths} paths. Recordings on disk (under target/), fMP4, 1 min segments, 1 s fragments. CPU over {window} s windows after {warm} s of warm-up; bytes over B's whole runs.\n")
print("| % of a core, per round (median) | |")
print("|---|---|")
print(f"| A: ingest alone | {j(off)} (**{median(off):.2f}**) |")
print(f"| B: ingest + recording | {j(on)} (**{median(on):.2f}**) |")
print(f"| B − A: what recording costs | {j(rec)} (**{median(rec):.2f}**) |")
print(f"| floor writer, one copy + direct writes | {j(fl)} (**{median(fl):.2f}**) |")
print(f"| floor writer, direct writes alone | {j(fl0)} (**{median(fl0):.2f}**) |")
print(f"| the goal's budget: 10 % of A | {j([x / 10 for x in off])} (**{median(off) / 10:.2f}**) |")
print()
print("| ratio, per round (median) | |")
print("|---|---|")
print(f"| B / A (goal ≤ 1.10) | {j(ratio, '{:.3f}')} (**{median(ratio):.3f}**) |")
print(f"| (A + floor writer) / A: the least a recorder that copies once can reach | {j(fratio, '{:.3f}')} (**{median(fratio):.3f}**) |")
print(f"| (A + writes alone) / A: the least any recorder can reach | {j(f0ratio, '{:.3f}')} (**{median(f0ratio):.3f}**) |")
print(f"| recording's cost / the floor writer's | {j(vs)} (**{median(vs):.2f}**) |")
print()
print(f"Write amplification (B's bytes written by write system calls / media bytes received): **{written / received:.4f}**; recorded files / received: {disk / received:.4f} ({int(written)} / {int(received)} bytes, all rounds).")
print(f"\nRounds (window s, CPU ns of A, B, floor, floor without copy; B's media bytes received, bytes written, bytes on disk; floor bytes in the window):\n")
for r in rows:
    print("    " + " ".join(f"{v:.0f}" if i else f"{v:.3f}" for i, v in enumerate(r)))
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
