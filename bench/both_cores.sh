#!/usr/bin/env bash
# Both cores on one hot stream (issue 17): Sluice unpinned, one 2.5 Mb/s RTMP path and VIEWERS
# RTMP viewers of it (bench/loadgen, also unpinned: the load generator shares the machine).
# Reports each server thread's share of the server's CPU over the window, from
# /proc/PID/task/*/schedstat, and whether the work is spread: no single thread above 60 % of
# the server's total.
#
# Usage: bench/both_cores.sh [SECONDS] [VIEWERS]      defaults: 20 2000
# Needs ffmpeg and python3. Writes bench/results/both_cores-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-20}
N=${2:-2000}
WORK=$(mktemp -d /tmp/sluice-both-cores.XXXXXX)
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

SLUICE_RTMP_LISTEN=127.0.0.1:19361 SLUICE_HTTP_LISTEN=127.0.0.1:18891 SLUICE_LOG_LEVEL=warn \
    "$SLUICE" >"$WORK/sluice.log" 2>&1 &
SERVER=$!
sleep 1
ffmpeg -v error -re -stream_loop -1 -i "$SRC" -c copy -f flv rtmp://127.0.0.1:19361/live/hot >"$WORK/pub.log" 2>&1 &
sleep 5
"$LOADGEN" rtmp://127.0.0.1:19361/live/hot "$N" $((SECS + N * 2 / 1000 + 8)) 2 >"$WORK/load.json" &
LOAD=$!
sleep $((N * 2 / 1000 + 4))

threads() { # "tid name runtime_ns" per thread of the server
    local t
    for t in /proc/"$SERVER"/task/*; do
        printf '%s %s %s\n' "${t##*/}" "$(tr ' ' '_' <"$t/comm")" "$(cut -d' ' -f1 "$t/schedstat")"
    done
}
busy() { awk '$1=="cpu" {print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
threads >"$WORK/t0"
read -r b0 a0 < <(busy)
T0=$(date +%s.%N)
sleep "$SECS"
threads >"$WORK/t1"
read -r b1 a1 < <(busy)
T1=$(date +%s.%N)
wait $LOAD || true

mkdir -p bench/results
OUT="bench/results/both_cores-$(date -u +%Y%m%d-%H%M).md"
python3 - "$WORK" "$T0" "$T1" "$N" "$SECS" "$b0" "$a0" "$b1" "$a1" "$(git rev-parse --short HEAD)" >"$OUT" <<'EOF'
import json, sys
work, t0, t1, n, secs, b0, a0, b1, a1, rev = sys.argv[1:]
wall = float(t1) - float(t0)
def load(f):
    d = {}
    for l in open(f"{work}/{f}"):
        tid, name, ns = l.split()
        d[tid] = (name, int(ns))
    return d
before, after = load("t0"), load("t1")
rows = []
for tid, (name, ns) in after.items():
    ns0 = before.get(tid, (name, 0))[1]
    rows.append((ns - ns0, tid, name))
rows.sort(reverse=True)
total = sum(r[0] for r in rows)
j = json.load(open(f"{work}/load.json"))
machine = (int(b1) - int(b0)) / max(int(a1) - int(a0), 1) * 100
print(f"# Both cores on one hot stream: {n} RTMP viewers of one 2.5 Mb/s path, server unpinned\n")
print(f"Sluice {rev}, 2 cores; server and load generator unpinned; window {wall:.1f} s after the viewers joined.")
print(f"Viewers that received video: {j['ok']} of {j['viewers']} (failed {j['failed']}); {j['total_mbps']} Mb/s received in total, {j['mbps_per_viewer']} per viewer.\n")
print(f"Server CPU: {total / 1e9 / wall * 100:.1f} % of one core; whole machine busy {machine:.1f} % (of both cores).\n")
print("| thread | name | % of one core | share of the server's CPU |")
print("|---|---|---|---|")
for ns, tid, name in rows:
    if ns == 0:
        continue
    print(f"| {tid} | {name} | {ns / 1e9 / wall * 100:.1f} | {ns / total * 100:.1f} % |")
top = rows[0][0] / total * 100 if total else 0
verdict = "met" if top <= 60 else "NOT met"
print(f"\nBusiest thread: {top:.1f} % of the server's CPU (goal: no thread above 60 %): **{verdict}**.")
EOF
cat "$OUT"
