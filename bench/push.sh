#!/usr/bin/env bash
# Restreaming benchmark (issue 12): one ~6 Mb/s input pushed to N RTMP destinations, CPU per
# destination for three ways of doing it:
#
#   sluice  Sluice receives the publish and pushes it ([paths."live/sI".push] urls): Sluice's CPU
#           minus Sluice's CPU with no destination (measured next to it), per destination.
#   ffmpeg  Sluice receives the publish (no pushes); N `ffmpeg -c copy` processes, one per
#           destination as people do today, read it from Sluice and push it: the ffmpeg
#           processes' CPU (not Sluice's), per destination.
#   nginx   a second nginx-rtmp receives the publish with one `push` line per destination: its
#           CPU (master + worker) minus the same nginx with no push line, per destination.
#
# The system under test (Sluice, the ffmpeg pushers, the pushing nginx) is pinned to core 0;
# the publisher (rtmp-publish of a 6 Mb/s 720p30 x264 CBR + AAC FLV), the destination
# (ONE nginx-rtmp receiving the streams k{i}_{j}) and this script to core 1. CPU is
# the threads' run time from /proc/<pid>/task/*/schedstat (ns) over the same window for every system, after a warm-up.
# In each run the destination side is checked: the TCP connections to the destination and the
# bytes they carried in the window (ss bytes_acked, so the same measure for the three systems),
# Sluice's push states and bytes from its API, and ffprobe reading the last stream from the
# destination.
#
# INPUTS=P publishes P such inputs (paths live/s0..s{P-1}), each pushed to its own N
# destinations (k{i}_{j}): the same per-destination cost, P times the signal over the
# machine's noise (one destination's cost is about 0.1-0.3 % of a core). The publisher is
# bench/loadgen's rtmp-publish (every input from one process, the FLV file's own pacing).
#
# The machine's noise (a shared host: the same run varies by tenths of a percent of a core) is
# as large as one destination's cost, so the whole sequence is repeated ROUNDS times, the runs
# of each round one after the other, and the figures are medians over the rounds: each round's
# own per-destination values and ratios, then their median.
#
# Usage: [ROUNDS=R] [INPUTS=P] bench/push.sh [WINDOW_SECONDS] [WARMUP_SECONDS] [DESTINATION COUNTS...]
#   defaults: ROUNDS=1 INPUTS=1, 20 5 1 10 50
# Needs ffmpeg, ffprobe, nginx with libnginx-mod-rtmp, curl, ss, python3.
# Writes bench/results/push-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-1}
INPUTS=${INPUTS:-1}
WINDOW=${1:-20}
WARMUP=${2:-5}
shift 2 || shift $# || true
COUNTS=("${@:-1 10 50}")
read -r -a COUNTS <<<"${COUNTS[*]}"
SERVER_CORE=0
LOAD_CORE=1
WORK=$(mktemp -d /tmp/sluice-push-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
NPROC=$(nproc --all)
[ -n "${NO_BUILD:-}" ] || cargo build --release -q -p sluice -p sluice-loadgen
SLUICE=target/release/sluice
PUBLISH=target/release/rtmp-publish
# From here on the script and everything it starts without taskset stay on the load core.
taskset -cp $LOAD_CORE $$ >/dev/null

SRC_PORT=19391 # Sluice RTMP
API=127.0.0.1:19397
DEST_PORT=19392 # the destination nginx
PUSHER_PORT=19393 # the pushing nginx
HZ=1000000000 # ticks() counts nanoseconds

# 30 s of 1280x720 30 fps x264 CBR 5.87 Mb/s + AAC 128k (6 Mb/s in all), 2 s GOP.
SRC="$WORK/src.flv"
ffmpeg -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 30 -c:v libx264 -preset ultrafast -b:v 5872k -maxrate 5872k -minrate 5872k -bufsize 5872k \
    -x264-params nal-hrd=cbr -g 60 -keyint_min 60 -sc_threshold 0 -bf 0 -pix_fmt yuv420p \
    -c:a aac -b:a 128k -ac 2 -f flv "$SRC"
# Others may be compiling on this machine: wait (up to MAX_WAIT s) for the 1-minute load
# average to fall below MAX_LOAD; the load at the start of the measurements is in the results.
MAX_LOAD=${MAX_LOAD:-1.5}
MAX_WAIT=${MAX_WAIT:-600}
WAITED=0
while awk -v m="$MAX_LOAD" '{exit !($1 >= m)}' /proc/loadavg && ((WAITED < MAX_WAIT)); do
    sleep 10
    WAITED=$((WAITED + 10))
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
SRC_MBPS=$(ffprobe -v error -show_entries format=bit_rate -of csv=p=0 "$SRC" | awk '{printf "%.2f", $1 / 1e6}')

nginx_conf() { # DIR PORT [push lines...]
    local dir=$1 port=$2
    shift 2
    mkdir -p "$dir"
    {
        cat <<EOF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
user root;
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 65536; }
rtmp {
    server {
        listen 127.0.0.1:$port;
        chunk_size 4096;
        application live {
            live on;
EOF
        local l
        for l in "$@"; do echo "            $l"; done
        echo "        }"
        echo "    }"
        echo "}"
    } >"$dir/nginx.conf"
}
wait_port() { # PORT
    for _ in $(seq 100); do
        ss -Hltn "sport = :$1" | grep -q . && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}

# The destination: one nginx-rtmp on the load core for the whole run.
nginx_conf "$WORK/dest" $DEST_PORT
taskset -c $LOAD_CORE nginx -c "$WORK/dest/nginx.conf" -p "$WORK/dest" >"$WORK/dest.log" 2>&1 &
PIDS+=($!)
wait_port $DEST_PORT

start_sluice() { # N -> SERVER (Sluice pushing each input s{i} to k{i}_0..k{i}_{N-1})
    local n=$1 paths="" urls i j
    for ((i = 0; i < INPUTS && n > 0; i++)); do
        urls=""
        for ((j = 0; j < n; j++)); do urls+="${urls:+, }\"rtmp://127.0.0.1:$DEST_PORT/live/k${i}_$j\""; done
        paths+=$'\n'"[paths.\"live/s$i\".push]"$'\n'"urls = [$urls]"
    done
    cat >"$WORK/sluice.toml" <<CFG
[rtmp]
listen = "127.0.0.1:$SRC_PORT"
[http]
enabled = false
[srt]
enabled = false
[webrtc]
enabled = false
[metrics]
enabled = false
[playback]
enabled = false
[api]
listen = "$API"
[log]
level = "warn"
[path_defaults.health]
enabled = false
$paths
CFG
    rm -f "$WORK"/sluice.state.toml
    taskset -c $SERVER_CORE "$SLUICE" --config "$WORK/sluice.toml" >>"$WORK/sluice.log" 2>&1 &
    SERVER=$!
    PIDS+=("$SERVER")
    for _ in $(seq 100); do curl -sf "http://$API/v1/server" -o /dev/null && break; sleep 0.1; done
    wait_port $SRC_PORT
}
start_pusher() { # N -> SERVER (nginx-rtmp with N push lines)
    local n=$1 i j lines=()
    # `push URL [key=value]`: app and play path come from the URL; name= selects the *local*
    # stream to push (the published s{i}), the remote name is in the URL.
    for ((i = 0; i < INPUTS; i++)); do
        for ((j = 0; j < n; j++)); do lines+=("push rtmp://127.0.0.1:$DEST_PORT/live/k${i}_$j name=s$i;"); done
    done
    rm -rf "$WORK/pusher"
    nginx_conf "$WORK/pusher" $PUSHER_PORT "${lines[@]}"
    taskset -c $SERVER_CORE nginx -c "$WORK/pusher/nginx.conf" -p "$WORK/pusher" >"$WORK/pusher.log" 2>&1 &
    SERVER=$!
    PIDS+=("$SERVER")
    wait_port $PUSHER_PORT
}

ticks() { # CPU time in ns of the given pids' threads (those alive), from schedstat: 10 ms
    # clock ticks are too coarse for the 0.1 % of a core a push costs over a window.
    local p t=0 v
    for p in "$@"; do
        v=$(cat /proc/"$p"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}') || v=0
        t=$((t + ${v:-0}))
    done
    echo $t
}
rss_kb() { # total VmRSS of the given pids
    local f=()
    local p
    for p in "$@"; do f+=("/proc/$p/status"); done
    awk '/^VmRSS/ {s += $2} END {print s + 0}' "${f[@]}" 2>/dev/null || echo 0
}
alive() { local p c=0; for p in "$@"; do kill -0 "$p" 2>/dev/null && c=$((c + 1)); done; echo $c; }
dest_conns() { # "connections bytes_acked" of the sockets sending to the destination
    ss -Htin state established "( dport = :$DEST_PORT )" |
        awk '/^[0-9]/ || /ESTAB/ {c++} {if (match($0, /bytes_acked:[0-9]+/)) b += substr($0, RSTART + 12, RLENGTH - 12)} END {print c + 0, b + 0}'
}
pushes_json() { # every input's pushes, as one {"pushes": [...]}
    local i out=""
    for ((i = 0; i < INPUTS; i++)); do out+="$(curl -sf "http://$API/v1/paths/live/s$i" || echo '{}')"$'\n'; done
    python3 -c 'import json, sys; print(json.dumps({"pushes": [p for l in sys.stdin if l.strip() for p in json.loads(l).get("pushes", [])]}))' <<<"$out"
}
now() { date +%s.%N; }

: >"$WORK/results.jsonl"
ROUND=1
run() { # SYSTEM N
    local sys=$1 n=$2 port measured=() extra=() i j pub
    case $sys in
    sluice) start_sluice "$n"; port=$SRC_PORT ;;
    ffmpeg) start_sluice 0; port=$SRC_PORT ;;
    nginx) start_pusher "$n"; port=$PUSHER_PORT ;;
    esac
    taskset -c $LOAD_CORE "$PUBLISH" "rtmp://127.0.0.1:$port/live/s" "$INPUTS" 3600 "$SRC" >"$WORK/pub.log" 2>&1 &
    pub=$!
    PIDS+=("$pub")
    local warm=$WARMUP
    if [[ $sys == ffmpeg ]]; then
        sleep 1
        for ((i = 0; i < INPUTS; i++)); do
            for ((j = 0; j < n; j++)); do
                taskset -c $SERVER_CORE ffmpeg -nostdin -v error -i "rtmp://127.0.0.1:$SRC_PORT/live/s$i" -c copy -f flv \
                    "rtmp://127.0.0.1:$DEST_PORT/live/k${i}_$j" >"$WORK/ffpush-${i}_$j.log" 2>&1 &
                extra+=($!)
                PIDS+=($!)
            done
        done
        measured=("${extra[@]}")
        # N processes start and probe their input on the same core: give them longer to settle.
        warm=$((WARMUP + n * INPUTS / 10))
    else
        measured=("$SERVER" $(pgrep -P "$SERVER" || true))
    fi
    sleep "$warm"
    [[ $sys == nginx ]] && measured=("$SERVER" $(pgrep -P "$SERVER" || true))
    local t0 c0 s0 d0 j0 t1 c1 s1 d1 j1 rss1 rss2
    [[ $sys != nginx ]] && j0=$(pushes_json) || j0='{}'
    d0=$(dest_conns); t0=$(now); c0=$(ticks "${measured[@]}"); s0=$(ticks "$SERVER")
    sleep $((WINDOW / 2))
    rss1=$(rss_kb "${measured[@]}")
    sleep $((WINDOW - WINDOW / 2))
    c1=$(ticks "${measured[@]}"); s1=$(ticks "$SERVER"); t1=$(now); d1=$(dest_conns)
    rss2=$(rss_kb "${measured[@]}")
    [[ $sys != nginx ]] && j1=$(pushes_json) || j1='{}'
    local live_procs probe=""
    live_procs=$(alive "${measured[@]}")
    if ((n > 0)); then
        probe=$(timeout 15 ffprobe -v error -read_intervals %+2 -show_entries stream=codec_type -of csv=p=0 \
            "rtmp://127.0.0.1:$DEST_PORT/live/k$((INPUTS - 1))_$((n - 1))" 2>/dev/null | sort | tr '\n' ' ' || true)
    fi
    kill "$pub" "${extra[@]}" 2>/dev/null || true
    wait "$pub" "${extra[@]}" 2>/dev/null || true
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    sleep 1
    echo "$j0" >"$WORK/j0.json"
    echo "$j1" >"$WORK/j1.json"
    python3 - "$sys" "$n" "$HZ" "$t0" "$t1" "$c0" "$c1" "$s0" "$s1" "$d0" "$d1" "$rss1" "$rss2" "$live_procs" \
        "${#measured[@]}" "$probe" "$warm" "$WORK/j0.json" "$WORK/j1.json" "$(cut -d' ' -f1 /proc/loadavg)" "$ROUND" "$INPUTS" \
        <<'EOF' | tee -a "$WORK/results.jsonl" >&2
import json, sys
(sys_, n, hz, t0, t1, c0, c1, s0, s1, d0, d1, rss1, rss2, live, nproc, probe, warm, j0, j1, load, rnd, inputs) = sys.argv[1:]
n, hz, secs = int(n), float(hz), float(t1) - float(t0)
conns0, acked0 = map(int, d0.split()); conns1, acked1 = map(int, d1.split())
def pushes(f):
    # In the API's order (stable: by output). Not keyed by URL: short keys mask alike.
    try:
        return json.load(open(f)).get("pushes", [])
    except Exception:
        return []
p0, p1 = pushes(j0), pushes(j1)
if len(p0) != len(p1):
    p0 = [{}] * len(p1)
push_mbps = sorted((b["bytes_sent"] - a.get("bytes_sent", 0)) * 8 / secs / 1e6 for a, b in zip(p0, p1))
states = {}
for p in p1:
    states[p["state"]] = states.get(p["state"], 0) + 1
print(json.dumps(dict(
    sys=sys_, n=n, inputs=int(inputs), round=int(rnd), secs=round(secs, 2), warmup=int(warm), load=float(load),
    cpu=(int(c1) - int(c0)) / hz / secs * 100,          # measured processes, % of one core
    server_cpu=(int(s1) - int(s0)) / hz / secs * 100,   # the server (Sluice or nginx master)
    rss_kb=(int(rss1) + int(rss2)) // 2, procs=int(nproc), procs_alive=int(live),
    dest_conns=min(conns0, conns1), dest_mbps=(acked1 - acked0) * 8 / secs / 1e6,
    push_states=states, push_reconnects=sum(p.get("reconnects", 0) for p in p1),
    push_dropped=sum(p.get("dropped_frames", 0) for p in p1),
    push_mbps_min=round(push_mbps[0], 3) if push_mbps else None,
    push_mbps_max=round(push_mbps[-1], 3) if push_mbps else None,
    push_bitrate_api=sorted(p["bitrate"] for p in p1)[len(p1) // 2] if p1 else None,
    probe=probe.strip())))
EOF
}

# Alternating: in each round, for each N, Sluice without and with pushes, the ffmpeg
# processes, nginx without and with push lines.
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    for n in "${COUNTS[@]}"; do
        run sluice 0
        run sluice "$n"
        run ffmpeg "$n"
        run nginx 0
        run nginx "$n"
    done
done

mkdir -p bench/results
OUT="bench/results/push-$(date -u +%Y%m%d-%H%M).md"
python3 - "$WORK/results.jsonl" "$WINDOW" "$WARMUP" "$SRC_MBPS" "$LOAD_BEFORE / $LOAD_START after waiting $WAITED s" "$NPROC" "$(git rev-parse --short HEAD)" \
    "$(nginx -v 2>&1 | sed 's/.*: //')" "$(ffmpeg -version | head -1 | cut -d' ' -f3)" >"$OUT" <<'EOF'
import json, sys
path, window, warmup, src_mbps, load, nproc, rev, nginx_v, ffmpeg_v = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
P = rows[0].get("inputs", 1)
ns = []
for r in rows:
    if r["n"] and r["n"] not in ns:
        ns.append(r["n"])
rounds = sorted({r["round"] for r in rows})
def find(s, n, rnd, after=None):
    # the run of system s with n destinations in round rnd; for n == 0, the one measured just
    # before the run with `after` destinations
    idx = [i for i, r in enumerate(rows) if r["sys"] == s and r["n"] == n and r["round"] == rnd]
    if n == 0 and after is not None:
        j = [i for i, r in enumerate(rows) if r["sys"] == s and r["n"] == after and r["round"] == rnd][0]
        idx = [i for i in idx if i < j]
        return rows[idx[-1]]
    return rows[idx[0]]
def median(v):
    v = sorted(v)
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2
def ratio(x, y):
    return x / y if y > 0 else float("inf")
def fr(x):
    return f"{x:.2f}" if x != float("inf") else "n/a (≤ 0)"
print(f"# Restreaming: {'one' if P == 1 else P} {src_mbps} Mb/s input{'s' if P > 1 else ''} pushed to N RTMP destinations{' each' if P > 1 else ''}\n")
print(f"Sluice at {rev} (release build of the working tree), nginx {nginx_v} with libnginx-mod-rtmp, ffmpeg {ffmpeg_v}. "
      f"Machine: {nproc} cores; the system under test on core 0, the publisher (bench/loadgen rtmp-publish, inputs live/s0..s{P - 1}), the destination "
      f"(one nginx-rtmp, streams live/k{{input}}_{{0..N-1}}) and the script on core 1. CPU per destination is divided by the N × {P} destinations. Window {window} s after {warmup} s of warm-up "
      f"(the ffmpeg runs: {warmup} s + N × {P}/10 s, for their processes to start); {len(rounds)} round(s), each running every system one after the other. "
      f"Load average (1, 5, 15 min) before the build / at the start of the measurements: {load} (the load column: 1-minute load at the end of each run).\n")
print("CPU is the run time (schedstat, ns) of the measured processes' threads over the window, in % of one core:")
print("- **Sluice**: Sluice pushing to N destinations minus Sluice with no destination (measured just before), / N;")
print("- **ffmpeg**: the N `ffmpeg -c copy` processes reading from Sluice and pushing (Sluice's own CPU not counted), / N;")
print("- **nginx**: nginx-rtmp (master + worker) with N `push` lines minus the same with none, / N.\n")
per = {}
for n in ns:
    for rnd in rounds:
        a, a0 = find("sluice", n, rnd), find("sluice", 0, rnd, n)
        b = find("ffmpeg", n, rnd)
        c, c0 = find("nginx", n, rnd), find("nginx", 0, rnd, n)
        d = n * P  # destinations in all
        per[(n, rnd)] = ((a["cpu"] - a0["cpu"]) / d, b["cpu"] / d, (c["cpu"] - c0["cpu"]) / d)
print("## CPU per destination\n")
if len(rounds) > 1:
    print("Medians over the rounds: of each system's per-destination CPU, and of each round's own ratios "
          "(the systems of one round measured minutes apart, so the round's ratio is the steadier figure).\n")
print("| N | Sluice %/dest | ffmpeg %/dest | nginx %/dest | Sluice / ffmpeg | Sluice / nginx |")
print("|---|---|---|---|---|---|")
for n in ns:
    v = [per[(n, rnd)] for rnd in rounds]
    pa, pb, pc = (median([x[i] for x in v]) for i in range(3))
    rb = median([ratio(x[0], x[1]) if x[0] > 0 else 0.0 for x in v])
    rc = median([ratio(x[0], x[2]) if x[0] > 0 else 0.0 for x in v])
    print(f"| {n} | {pa:.3f} | {pb:.3f} | {pc:.3f} | {fr(rb)} | {fr(rc)} |")
if len(rounds) > 1:
    print("\n### Each round\n")
    print("| N | round | Sluice %/dest | ffmpeg %/dest | nginx %/dest | Sluice / ffmpeg | Sluice / nginx |")
    print("|---|---|---|---|---|---|---|")
    for n in ns:
        for rnd in rounds:
            pa, pb, pc = per[(n, rnd)]
            print(f"| {n} | {rnd} | {pa:.3f} | {pb:.3f} | {pc:.3f} | {fr(ratio(pa, pb))} | {fr(ratio(pa, pc))} |")
print("\n## Memory (RSS, average of two samples in the window; medians over the rounds)\n")
print("| N | Sluice pushing MB (no push) | ffmpeg processes MB (sum) | nginx pusher MB (no push) | Sluice KB/dest | ffmpeg KB/dest | nginx KB/dest |")
print("|---|---|---|---|---|---|---|")
for n in ns:
    m = lambda f: median([f(rnd) for rnd in rounds])
    a = m(lambda r: find("sluice", n, r)["rss_kb"]); a0 = m(lambda r: find("sluice", 0, r, n)["rss_kb"])
    b = m(lambda r: find("ffmpeg", n, r)["rss_kb"])
    c = m(lambda r: find("nginx", n, r)["rss_kb"]); c0 = m(lambda r: find("nginx", 0, r, n)["rss_kb"])
    print(f"| {n} | {a/1024:.1f} ({a0/1024:.1f}) | {b/1024:.1f} | {c/1024:.1f} ({c0/1024:.1f}) "
          f"| {(a-a0)/n/P:.0f} | {b/n/P:.0f} | {(c-c0)/n/P:.0f} |")
print("\n## Every run\n")
print("Measured CPU: the processes measured (Sluice / the ffmpeg pushers / nginx master+worker). "
      "Dest conns and Mb/s: TCP connections into the destination nginx and the bytes they carried in the window (ss bytes_acked), per destination. "
      "Push states, Mb/s (min–max per push, from bytes_sent) and dropped frames: Sluice's API. ffprobe: what ffprobe read from the destination's last stream after the window.\n")
print("| system | N | round | measured CPU % | Sluice CPU % | load | procs alive | RSS MB | dest conns | dest Mb/s per dest | push states | push Mb/s | reconnects / dropped | ffprobe of the last destination |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    n = r["n"]
    dm = f"{r['dest_mbps'] / n / P:.2f}" if n else "–"
    st = ", ".join(f"{k} {v}" for k, v in r["push_states"].items()) or "–"
    pm = f"{r['push_mbps_min']:.2f}–{r['push_mbps_max']:.2f}" if r["push_mbps_min"] is not None else "–"
    rd = f"{r['push_reconnects']} / {r['push_dropped']}" if r["sys"] == "sluice" and n else "–"
    sc = f"{r['server_cpu']:.2f}" if r["sys"] in ("sluice", "ffmpeg") else "–"
    print(f"| {r['sys']} | {n} | {r['round']} | {r['cpu']:.2f} | {sc} | {r['load']} | {r['procs_alive']}/{r['procs']} | {r['rss_kb']/1024:.1f} "
          f"| {r['dest_conns']} | {dm} | {st} | {pm} | {rd} | {r['probe'] or ('–' if not n else 'nothing')} |")
print("\nGoal (issue 12): Sluice's CPU per destination below both ffmpeg's and nginx-rtmp's (ratios below 1).")
EOF
cat "$OUT"
echo "written to $OUT"
