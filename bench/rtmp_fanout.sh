#!/usr/bin/env bash
# RTMP fan-out benchmark: Sluice and nginx-rtmp side by side on the same source and machine.
#
# Each server runs pinned to core 0; the publisher (ffmpeg -c copy) and the load generator
# (bench/loadgen, N RTMP viewers in one process) are pinned to core 1. For each server, bitrate
# and viewer count it reports: whole-core CPU of core 0 (from /proc/stat, so kernel and softirq
# time count too) per viewer above the publisher-only baseline, resident memory per viewer, time
# to first frame (p50/p95) and what each viewer actually received; then the ratios.
#
# Usage: bench/rtmp_fanout.sh [SECONDS_PER_RUN] [VIEWER COUNTS...]
#   e.g. bench/rtmp_fanout.sh 20 50 200 1000
# Needs ffmpeg, nginx with libnginx-mod-rtmp (scripts/install-test-deps.sh installs both).
# Writes a Markdown table to bench/results/rtmp_fanout-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-20}
shift || true
COUNTS=("${@:-50 200 1000}")
read -r -a COUNTS <<<"${COUNTS[*]}"
SERVER_CORE=0
LOAD_CORE=1
WORK=$(mktemp -d /tmp/sluice-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p sluice -p sluice-loadgen
SLUICE=${SERVER_BIN:-target/release/sluice}
LOADGEN=target/release/sluice-loadgen

# Sources: 30 s, 2 s GOP, x264 + AAC, at about 232 kb/s and 2.5 Mb/s in total.
make_source() { # name size vbitrate abitrate
    local out="$WORK/$1.flv"
    ffmpeg -v error -y -f lavfi -i "testsrc2=size=$2:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
        -t 30 -c:v libx264 -preset veryfast -b:v "$3" -maxrate "$3" -bufsize "$3" -g 60 -keyint_min 60 \
        -sc_threshold 0 -bf 2 -pix_fmt yuv420p -c:a aac -b:a "$4" -ac 2 -f flv "$out"
    echo "$out"
}
declare -A SRC
SRC[232k]=$(make_source low 320x180 168k 64k)
SRC[2.5M]=$(make_source high 1280x720 2372k 128k)

cpu0() { # busy and total jiffies of the server core
    awk -v c="cpu$SERVER_CORE" '$1==c {b=$2+$3+$4+$7+$8; t=b+$5+$6; print b, t}' /proc/stat
}
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
tree_rss_kb() { # RSS of a process and its children (nginx master + worker)
    local total=0 p
    for p in $1 $(pgrep -P "$1" || true); do total=$((total + $(rss_kb "$p"))); done
    echo $total
}

start_sluice() {
    SLUICE_RTMP_LISTEN=127.0.0.1:19351 SLUICE_HTTP_LISTEN=127.0.0.1:18881 SLUICE_LOG_LEVEL=warn \
        taskset -c $SERVER_CORE "$SLUICE" >"$WORK/sluice.log" 2>&1 &
    SERVER_PID=$!
}
start_nginx() {
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
user root;
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 65536; }
rtmp {
    server {
        listen 127.0.0.1:19352;
        chunk_size 4096;
        application live { live on; }
    }
}
EOF
    taskset -c $SERVER_CORE nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx.log" 2>&1 &
    SERVER_PID=$!
}

RESULTS=()
run_one() { # server bitrate viewers
    local server=$1 rate=$2 n=$3 pid port
    case $server in
    sluice) start_sluice; port=19351 ;;
    nginx) start_nginx; port=19352 ;;
    esac
    pid=$SERVER_PID
    sleep 1
    taskset -c $LOAD_CORE ffmpeg -v error -re -stream_loop -1 -i "${SRC[$rate]}" -c copy -f flv \
        "rtmp://127.0.0.1:$port/live/bench" >"$WORK/pub.log" 2>&1 &
    local pub=$!
    # Warm up until the path's frame queue (reader_queue frames) is full, so that memory the
    # path holds anyway is not counted against the viewers.
    sleep 8
    # Baseline: publisher only.
    read -r b0 t0 < <(cpu0)
    local rss_sum=0 rss_n=0 i
    for i in 1 2 3 4 5 6; do
        rss_sum=$((rss_sum + $(tree_rss_kb "$pid"))); rss_n=$((rss_n + 1)); sleep 0.5
    done
    read -r b1 t1 < <(cpu0)
    local base_busy
    base_busy=$(awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" 'BEGIN {print (t ? b / t : 0)}')
    # Memory is compared as averages over each window (the GOP cache and allocator make
    # single samples noisy).
    local rss0=$((rss_sum / rss_n))
    # Load: ramp N viewers (2 ms apart), then measure CPU over the steady part of the run.
    taskset -c $LOAD_CORE "$LOADGEN" "rtmp://127.0.0.1:$port/live/bench" "$n" "$SECS" 2 >"$WORK/load.json" &
    local lg=$!
    sleep $((n * 2 / 1000 + 3))
    read -r b0 t0 < <(cpu0)
    local peak r sum=0 cnt=0
    local end=$((SECONDS + SECS - n * 2 / 1000 - 5))
    while ((SECONDS < end)); do
        r=$(tree_rss_kb "$pid")
        sum=$((sum + r)); cnt=$((cnt + 1))
        sleep 0.5
    done
    peak=$((sum / (cnt > 0 ? cnt : 1)))
    read -r b1 t1 < <(cpu0)
    wait $lg || true
    kill $pub "$pid" 2>/dev/null || true
    wait $pub "$pid" 2>/dev/null || true
    pkill -f "nginx -c $WORK" 2>/dev/null || true
    sleep 1
    local busy
    busy=$(awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" 'BEGIN {print (t ? b / t : 0)}')
    local j
    j=$(cat "$WORK/load.json")
    local line
    line=$(python3 - "$server" "$rate" "$n" "$busy" "$base_busy" "$rss0" "$peak" "$j" <<'EOF'
import json, sys
server, rate, n, busy, base, rss0, peak, j = sys.argv[1:]
n = int(n); busy = float(busy); base = float(base); j = json.loads(j)
cpu_per_viewer = max(busy - base, 0.0) * 100 / n   # % of one core per viewer
kb_per_viewer = max(int(peak) - int(rss0), 0) / n
print(json.dumps(dict(server=server, rate=rate, n=n, core_busy=round(busy * 100, 1),
    base_busy=round(base * 100, 1), cpu_pct_per_viewer=round(cpu_per_viewer, 4),
    kb_per_viewer=round(kb_per_viewer, 1), ttff_p50=j["ttff_p50_ms"], ttff_p95=j["ttff_p95_ms"],
    ok=j["ok"], failed=j["failed"], mbps_per_viewer=j["mbps_per_viewer"], errors=j["errors"])))
EOF
)
    echo "$line" >&2
    RESULTS+=("$line")
}

for rate in 232k 2.5M; do
    for n in "${COUNTS[@]}"; do
        run_one sluice "$rate" "$n"
        run_one nginx "$rate" "$n"
    done
done

mkdir -p bench/results
OUT="bench/results/rtmp_fanout-$(date -u +%Y%m%d-%H%M).md"
printf '%s\n' "${RESULTS[@]}" >"$WORK/results.jsonl"
python3 - "$SECS" "$WORK/results.jsonl" >"$OUT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
secs = sys.argv[1]
print(f"# RTMP fan-out: Sluice vs nginx-rtmp ({secs} s per run, server on core 0, load on core 1)\n")
print("| bitrate | viewers | server | core 0 busy % | CPU %/viewer | KB/viewer | TTFF p50 ms | TTFF p95 ms | ok/failed | Mb/s per viewer |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['rate']} | {r['n']} | {r['server']} | {r['core_busy']} | {r['cpu_pct_per_viewer']} | {r['kb_per_viewer']} | {r['ttff_p50']} | {r['ttff_p95']} | {r['ok']}/{r['failed']} | {r['mbps_per_viewer']} |")
print("\n## Ratios (Sluice / nginx-rtmp; below 1 is better for CPU and memory)\n")
print("| bitrate | viewers | CPU per viewer | memory per viewer | TTFF p95 |")
print("|---|---|---|---|---|")
by = {(r['rate'], r['n'], r['server']): r for r in rows}
for (rate, n, s), r in by.items():
    if s != 'sluice' or (rate, n, 'nginx') not in by:
        continue
    g = by[(rate, n, 'nginx')]
    f = lambda a, b: f"{a / b:.2f}" if b else "n/a"
    print(f"| {rate} | {n} | {f(r['cpu_pct_per_viewer'], g['cpu_pct_per_viewer'])} | {f(r['kb_per_viewer'], g['kb_per_viewer'])} | {f(r['ttff_p95'], g['ttff_p95'])} |")
EOF
cat "$OUT"
echo "written to $OUT"
