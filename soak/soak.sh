#!/usr/bin/env bash
# Soak test (issue 17): publishers reconnecting every few minutes over every ingest protocol,
# steady readers on those paths, for an hour; no growth in memory, descriptors, threads or tasks,
# and no reader left attached to a dead path.
#
# Sluice (release build, a generated configuration on 127.0.0.1 ports, metrics and API on) runs
# pinned to core 0; the clients and this script on core 1:
#
#   publishers  soak/rtmp  ffmpeg -re -stream_loop -1 -c copy of a small test clip (FLV) over RTMP
#               soak/srt   the same clip as MPEG-TS over SRT (ffmpeg, libsrt)
#               soak/whip  GStreamer webrtcbin (crates/server/tests/gst/whip_publish.py) over WHIP,
#                          when /usr/bin/python3 has gi with GstWebRTC and x264enc/opusenc/nice
#                          are installed; otherwise left out (said in the report)
#               (no RTSP: Sluice has no RTSP ingest yet, see docs/protocols.md)
#   readers     RTMP play (ffmpeg -f null) of soak/srt, SRT read (ffmpeg) of soak/rtmp, HTTP-FLV
#               (curl) of soak/rtmp and of soak/whip (its Opus made AAC), HLS (ffmpeg) of soak/whip
#
# Each publisher is killed (SIGKILL and SIGTERM in turn) and started again every
# RECONNECT_SECONDS, staggered; each reader every 2 x RECONNECT_SECONDS. A client that exits on
# its own (a publisher refused while the server has not yet seen its predecessor go, a reader
# whose stream ended) is started again 2 s later and counted.
#
# Phases: a warm-up cycle (every client for WARMUP_SECONDS, then all stopped and the grace period
# waited out) gives the idle baseline; the run; then the publishers stop: after the grace period no
# reader session may remain and no path may hold readers without a publisher (API); then the
# readers stop and, SETTLE_SECONDS later, descriptors, threads and runtime tasks must be back at
# the baseline. Memory must not grow by more than MEM_TOLERANCE_PCT between the medians of the
# first and last thirds of the run. Every SAMPLE_SECONDS: /proc/PID (VmRSS, fds, threads),
# /metrics (sluice_runtime_alive_tasks, sluice_process_*, sluice_sessions, sluice_path_readers)
# and the API (/v1/paths, /v1/sessions) into a CSV, plotted into a PNG (matplotlib, installed with
# pip when missing).
#
# Usage: soak/soak.sh [SECONDS] [RECONNECT_SECONDS]     defaults 3600 180
# Environment: NO_BUILD=1 (use target/release/sluice as it is), SAMPLE_SECONDS (10),
#   WARMUP_SECONDS (30), SETTLE_SECONDS (10), MEM_TOLERANCE_PCT (2), PORT_BASE (29000).
# Needs ffmpeg, curl, taskset, python3 (+ matplotlib, installed if missing), openssl; for WHIP
# GStreamer 1.22 with python3-gi (scripts/install-test-deps.sh installs them).
# Writes bench/results/soak-<UTC date>.md, .csv and .png; exits 1 when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-3600}
RECONNECT=${2:-180}
INTERVAL=${SAMPLE_SECONDS:-10}
WARMUP=${WARMUP_SECONDS:-30}
SETTLE=${SETTLE_SECONDS:-10}
MEM_TOL=${MEM_TOLERANCE_PCT:-2}
GRACE=10 # [path_defaults] grace_period, seconds (the default)
READER_RESTART=$((RECONNECT * 2))
SERVER_CORE=0
LOAD_CORE=1
BASE=${PORT_BASE:-29000}
RTMP_PORT=$((BASE + 935))
HTTP_PORT=$((BASE + 888))
SRT_PORT=$((BASE + 890))
WEBRTC_PORT=$((BASE + 889))
ICE_PORT=$((BASE + 189))
API=127.0.0.1:$((BASE + 997))
METRICS=127.0.0.1:$((BASE + 998))
for v in "$DURATION" "$RECONNECT" "$INTERVAL" "$WARMUP" "$SETTLE"; do
    if ! [[ $v =~ ^[0-9]+$ ]] || ((v == 0)); then
        echo "usage: soak/soak.sh [SECONDS] [RECONNECT_SECONDS] (positive integers)" >&2
        exit 2
    fi
done

WORK=$(mktemp -d /tmp/sluice-soak.XXXXXX)
SERVER=""
declare -A PID=()   # client name -> pid (a process group leader: setsid)
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    exec 2>/dev/null # no "Killed" notices
    local p
    for p in "${PID[@]}"; do
        if [[ -n $p ]]; then kill -KILL -- "-$p" 2>/dev/null || true; fi
    done
    if [[ -n $SERVER ]] && kill -0 "$SERVER" 2>/dev/null; then
        kill -TERM "$SERVER" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER" 2>/dev/null || true
    fi
    if [[ -n ${SAMPLER:-} ]]; then kill "$SAMPLER" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need() { command -v "$1" >/dev/null 2>&1 || { echo "soak: $1 is needed ($2)" >&2; exit 2; }; }
need ffmpeg "apt-get install ffmpeg"
need curl "apt-get install curl"
need taskset "apt-get install util-linux"
need openssl "apt-get install openssl"
need python3 "apt-get install python3"
# The plot: matplotlib, installed now (not after an hour) when missing.
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    echo "soak: matplotlib missing, installing it with pip" >&2
    python3 -m pip install -q --disable-pip-version-check matplotlib 2>/dev/null ||
        python3 -m pip install -q --disable-pip-version-check --user --break-system-packages matplotlib ||
        { echo "soak: cannot install matplotlib (pip install matplotlib, or apt-get install python3-matplotlib)" >&2; exit 2; }
fi

if [[ ${NO_BUILD:-} != 1 ]]; then
    cargo build --release -q -p sluice
fi
SLUICE=target/release/sluice
[[ -x $SLUICE ]] || { echo "soak: no $SLUICE (build it: cargo build --release -p sluice)" >&2; exit 2; }
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=""
if git status --porcelain --untracked-files=no 2>/dev/null | grep -q .; then DIRTY=" + uncommitted changes"; fi
# From here on this script and what it starts without taskset stay on the load core.
taskset -cp $LOAD_CORE $$ >/dev/null

# WHIP publisher: GStreamer webrtcbin through the system Python's gi.
WHIP_NOTE=""
WHIP_PY=/usr/bin/python3
WHIP_SCRIPT=crates/server/tests/gst/whip_publish.py
if [[ -x $WHIP_PY ]] && "$WHIP_PY" -c 'import gi; gi.require_version("GstWebRTC", "1.0")' 2>/dev/null &&
    command -v gst-inspect-1.0 >/dev/null && gst-inspect-1.0 x264enc >/dev/null 2>&1 &&
    gst-inspect-1.0 opusenc >/dev/null 2>&1 && gst-inspect-1.0 nicesrc >/dev/null 2>&1 && [[ -f $WHIP_SCRIPT ]]; then
    HAVE_WHIP=1
    # GStreamer's default DTLS certificate is RSA; Sluice's DTLS takes ECDSA (as in tests/webrtc.rs).
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$WORK/k.pem" \
        -out "$WORK/c.pem" -days 2 -subj /CN=soak-whip 2>/dev/null
    cat "$WORK/c.pem" "$WORK/k.pem" >"$WORK/ec.pem"
else
    HAVE_WHIP=0
    WHIP_NOTE="WHIP publisher left out: /usr/bin/python3 with gi (GstWebRTC) and GStreamer's x264enc, opusenc and nicesrc are needed (scripts/install-test-deps.sh)."
    echo "soak: $WHIP_NOTE" >&2
fi

# A small clip: 640x360 25 fps x264 600 kb/s, 1 s GOP, no B-frames, AAC; looped by the publishers.
ffmpeg -nostdin -v error -y -f lavfi -i "testsrc2=size=640x360:rate=25" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 10 -c:v libx264 -preset ultrafast -b:v 600k -maxrate 600k -bufsize 600k -g 25 -keyint_min 25 -sc_threshold 0 \
    -bf 0 -pix_fmt yuv420p -c:a aac -b:a 64k -ac 2 -f flv "$WORK/src.flv"
ffmpeg -nostdin -v error -y -i "$WORK/src.flv" -c copy -f mpegts "$WORK/src.ts"

cat >"$WORK/sluice.toml" <<CFG
# Generated by soak/soak.sh
[log]
level = "info"
[rtmp]
listen = "127.0.0.1:$RTMP_PORT"
[http]
listen = "127.0.0.1:$HTTP_PORT"
[srt]
listen = "127.0.0.1:$SRT_PORT"
[webrtc]
listen = "127.0.0.1:$WEBRTC_PORT"
udp_listen = "127.0.0.1:$ICE_PORT"
tcp_listen = ""
[api]
listen = "$API"
[metrics]
enabled = true
listen = "$METRICS"
[playback]
enabled = false
[path_defaults]
grace_period = "${GRACE}s"
CFG
"$SLUICE" check "$WORK/sluice.toml" >/dev/null
(cd "$WORK" && exec setsid taskset -c $SERVER_CORE "$OLDPWD/$SLUICE" --config sluice.toml >sluice.log 2>&1 </dev/null) &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://$API/v1/server" -o /dev/null && break; sleep 0.1; done
curl -sf "http://$API/v1/server" -o /dev/null || { echo "soak: Sluice did not start:" >&2; cat "$WORK/sluice.log" >&2; exit 1; }

# ---- clients -------------------------------------------------------------------------------
PUBS=(pub_rtmp pub_srt)
((HAVE_WHIP)) && PUBS+=(pub_whip)
WHIP_PATH=soak/whip
((HAVE_WHIP)) || WHIP_PATH=soak/rtmp # the readers of soak/whip read soak/rtmp instead
READERS=(rd_rtmp rd_srt rd_flv rd_flv2 rd_hls)
declare -A CMD=(
    [pub_rtmp]="ffmpeg -nostdin -v error -re -stream_loop -1 -i src.flv -c copy -f flv rtmp://127.0.0.1:$RTMP_PORT/soak/rtmp"
    [pub_srt]="ffmpeg -nostdin -v error -re -stream_loop -1 -i src.ts -c copy -f mpegts 'srt://127.0.0.1:$SRT_PORT?streamid=publish:soak/srt&pkt_size=1316&latency=200000'"
    [pub_whip]="$WHIP_PY $PWD/$WHIP_SCRIPT http://127.0.0.1:$WEBRTC_PORT/soak/whip/whip $((DURATION + WARMUP + 600)) ec.pem"
    [rd_rtmp]="ffmpeg -nostdin -v error -i rtmp://127.0.0.1:$RTMP_PORT/soak/srt -c copy -f null -"
    [rd_srt]="ffmpeg -nostdin -v error -i 'srt://127.0.0.1:$SRT_PORT?streamid=read:soak/rtmp&latency=200000' -c copy -f null -"
    [rd_flv]="curl -sS -o /dev/null http://127.0.0.1:$HTTP_PORT/soak/rtmp.flv"
    [rd_flv2]="curl -sS -o /dev/null http://127.0.0.1:$HTTP_PORT/$WHIP_PATH.flv"
    [rd_hls]="ffmpeg -nostdin -v error -i http://127.0.0.1:$HTTP_PORT/$WHIP_PATH/index.m3u8 -c copy -f null -"
)
declare -A RESTARTS=() EXITS=() NEXT=() KILLSIG=()
start_client() { # NAME
    local n=$1
    (cd "$WORK" && exec setsid bash -c "exec ${CMD[$n]}" >>"$WORK/$n.log" 2>&1 </dev/null) &
    PID[$n]=$!
}
stop_client() { # NAME [SIGNAL]
    local n=$1 sig=${2:-TERM} p=${PID[$1]:-}
    [[ -z $p ]] && return 0
    kill "-$sig" -- "-$p" || true
    for _ in $(seq 30); do kill -0 "$p" || break; sleep 0.1; done
    kill -KILL -- "-$p" || true
    wait "$p" || true
    PID[$n]=""
} 2>/dev/null # also bash's "Killed" notice
alive() { [[ -n ${PID[$1]:-} ]] && kill -0 "${PID[$1]}" 2>/dev/null; }
start_all() { local n; for n in "${PUBS[@]}"; do start_client "$n"; done; sleep 3; for n in "${READERS[@]}"; do start_client "$n"; done; }
stop_readers() { local n; for n in "${READERS[@]}"; do stop_client "$n"; done; }
stop_pubs() { local n; for n in "${PUBS[@]}"; do stop_client "$n"; done; }

# ---- sampler -------------------------------------------------------------------------------
cat >"$WORK/sample.py" <<'EOF'
"""Samples Sluice every INTERVAL s into a CSV (mode loop) or once (mode once, with a label).
Usage: sample.py loop|once CSV PID METRICS API PHASEFILE INTERVAL DEADLINE_EPOCH"""
import csv, json, os, re, sys, time, urllib.request

mode, out, pid, metrics, api, phasefile, interval, deadline = sys.argv[1:9]
pid, interval, deadline = int(pid), float(interval), float(deadline)
PATHS = ["soak/rtmp", "soak/srt", "soak/whip"]
COLS = ["t", "epoch", "phase", "rss_kb", "fds", "threads", "m_tasks", "m_fds", "m_rss_kb", "m_threads",
        "sessions", "s_publisher", "s_reader", "s_output", "s_transform", "m_path_readers",
        "api_paths", "api_online", "api_readers", "api_viewers", "reader_sessions", "orphan_readers"]
for p in PATHS:
    COLS += ["online_" + p.split("/")[1], "viewers_" + p.split("/")[1]]
T0 = float(os.environ.get("SOAK_T0", time.time()))
LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

def get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()

def proc():
    st = open(f"/proc/{pid}/status").read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", st).group(1))
    thr = int(re.search(r"Threads:\s+(\d+)", st).group(1))
    return rss, len(os.listdir(f"/proc/{pid}/fd")), thr

def sample(phase):
    row = dict.fromkeys(COLS, "")
    now = time.time()
    row.update(t=round(now - T0, 1), epoch=round(now, 1), phase=phase)
    try:
        row["rss_kb"], row["fds"], row["threads"] = proc()
    except Exception:
        return None  # the server is gone
    try:
        sess = {"publisher": 0, "reader": 0, "output": 0, "transform": 0}
        tot = preaders = 0
        for line in get(f"http://{metrics}/metrics").splitlines():
            m = LINE.match(line)
            if not m or line.startswith("#"):
                continue
            name, labels, val = m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))
            if name == "sluice_runtime_alive_tasks": row["m_tasks"] = int(val)
            elif name == "sluice_process_open_fds": row["m_fds"] = int(val)
            elif name == "sluice_process_resident_memory_bytes": row["m_rss_kb"] = int(val) // 1024
            elif name == "sluice_process_threads": row["m_threads"] = int(val)
            elif name == "sluice_sessions":
                tot += val
                sess[labels.get("role", "")] = sess.get(labels.get("role", ""), 0) + val
            elif name == "sluice_path_readers": preaders += val
        row.update(sessions=int(tot), s_publisher=int(sess["publisher"]), s_reader=int(sess["reader"]),
                   s_output=int(sess["output"]), s_transform=int(sess["transform"]), m_path_readers=int(preaders))
    except Exception as e:
        print(f"metrics: {e}", file=sys.stderr)
    try:
        paths = json.loads(get(f"http://{api}/v1/paths?limit=1000"))["items"]
        sessions = json.loads(get(f"http://{api}/v1/sessions?limit=1000"))["items"]
        online = {p["name"] for p in paths if p.get("online")}
        row.update(api_paths=len(paths), api_online=len(online),
                   api_readers=sum(p.get("readers", 0) for p in paths),
                   api_viewers=sum(sum(p.get("readers_by_protocol", {}).values()) for p in paths))
        readers = [s for s in sessions if s.get("role") == "reader"]
        row["reader_sessions"] = len(readers)
        row["orphan_readers"] = sum(1 for s in readers if s.get("path") not in online)
        by = {p["name"]: p for p in paths}
        for p in PATHS:
            k = p.split("/")[1]
            row["online_" + k] = int(bool(by.get(p, {}).get("online")))
            row["viewers_" + k] = sum(by.get(p, {}).get("readers_by_protocol", {}).values())
    except Exception as e:
        print(f"api: {e}", file=sys.stderr)
    return row

def write(row):
    new = not os.path.exists(out)
    with open(out, "a", newline="") as f:
        w = csv.DictWriter(f, COLS)
        if new:
            w.writeheader()
        w.writerow(row)

def phase():
    try:
        return open(phasefile).read().strip()
    except OSError:
        return "?"

if mode == "once":
    r = sample(sys.argv[9])
    if r:
        write(r)
        print(json.dumps(r))
    sys.exit(0)
nxt = time.time()
while time.time() < deadline and not os.path.exists(phasefile + ".stop"):
    r = sample(phase())
    if r is None:
        break
    write(r)
    nxt += interval
    time.sleep(max(0.0, nxt - time.time()))
EOF
CSV="$WORK/soak.csv"
PHASE="$WORK/phase"
export SOAK_T0
SOAK_T0=$(date +%s.%N)
sample_once() { python3 "$WORK/sample.py" once "$CSV" "$SERVER" "$METRICS" "$API" "$PHASE" "$INTERVAL" 0 "$1"; }
echo start >"$PHASE"
DEADLINE=$(($(date +%s) + WARMUP + DURATION + 4 * GRACE + SETTLE + 600))
python3 "$WORK/sample.py" loop "$CSV" "$SERVER" "$METRICS" "$API" "$PHASE" "$INTERVAL" "$DEADLINE" 2>>"$WORK/sampler.err" &
SAMPLER=$!

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
log "Sluice $REV pid $SERVER on core $SERVER_CORE; work dir $WORK; run ${DURATION}s, reconnect ${RECONNECT}s"
# ---- warm-up cycle, then the idle baseline ----------------------------------------------------
echo warmup >"$PHASE"
log "warm-up: every client for ${WARMUP}s"
start_all
sleep "$WARMUP"
stop_readers
stop_pubs
echo idle >"$PHASE"
sleep $((GRACE + SETTLE))
BASELINE=$(sample_once baseline)
log "baseline: $BASELINE"

# ---- the run ---------------------------------------------------------------------------------
echo run >"$PHASE"
log "run: ${#PUBS[@]} publishers (${PUBS[*]}), ${#READERS[@]} readers (${READERS[*]})"
T_START=$(date +%s)
T_END=$((T_START + DURATION))
i=0
for n in "${PUBS[@]}"; do
    RESTARTS[$n]=0; EXITS[$n]=0; KILLSIG[$n]=KILL
    NEXT[$n]=$((T_START + RECONNECT * (i + 1) / ${#PUBS[@]}))
    i=$((i + 1))
done
start_all
i=0
for n in "${READERS[@]}"; do
    RESTARTS[$n]=0; EXITS[$n]=0; KILLSIG[$n]=TERM
    NEXT[$n]=$((T_START + 3 + READER_RESTART * (i + 1) / ${#READERS[@]}))
    i=$((i + 1))
done
declare -A DIED_AT=()
while (($(date +%s) < T_END)); do
    now=$(date +%s)
    for n in "${PUBS[@]}" "${READERS[@]}"; do
        if ((now >= NEXT[$n])); then
            stop_client "$n" "${KILLSIG[$n]}"
            [[ ${KILLSIG[$n]} == KILL ]] && KILLSIG[$n]=TERM || KILLSIG[$n]=KILL
            sleep 1
            start_client "$n"
            DIED_AT[$n]=""
            RESTARTS[$n]=$((RESTARTS[$n] + 1))
            if [[ $n == pub_* ]]; then NEXT[$n]=$((NEXT[$n] + RECONNECT)); else NEXT[$n]=$((NEXT[$n] + READER_RESTART)); fi
        elif ! alive "$n"; then
            # Exited on its own: start it again 2 s later.
            if [[ -z ${DIED_AT[$n]:-} ]]; then
                DIED_AT[$n]=$now
                EXITS[$n]=$((EXITS[$n] + 1))
                { wait "${PID[$n]}" || true; } 2>/dev/null
            elif ((now - DIED_AT[$n] >= 2)); then
                start_client "$n"
                DIED_AT[$n]=""
            fi
        fi
    done
    sleep 1
done

# ---- drain: publishers stop; after the grace period no reader may remain ------------------------
echo drain >"$PHASE"
log "drain: publishers stop, readers stay; waiting for every publisher to leave, then the grace period (${GRACE}s) + 5 s"
stop_pubs
# A publisher killed without a goodbye (SRT, WHIP) leaves when the server's timeout sees it gone
# (WebRTC: [webrtc] ice_timeout, 10 s): the grace period starts then, not at the kill.
for _ in $(seq 120); do
    online=$(curl -sf "http://$API/v1/paths?limit=1000" | python3 -c 'import json,sys; print(sum(1 for p in json.load(sys.stdin).get("items", []) if p.get("online")))' 2>/dev/null || echo 0)
    [ "$online" = 0 ] && break
    sleep 0.5
done
log "every publisher has left"
sleep $((GRACE + 5))
curl -sf "http://$API/v1/paths?limit=1000" >"$WORK/paths-end.json" || echo '{"items":[]}' >"$WORK/paths-end.json"
curl -sf "http://$API/v1/sessions?limit=1000" >"$WORK/sessions-end.json" || echo '{"items":[]}' >"$WORK/sessions-end.json"
READERS_ALIVE=""
for n in "${READERS[@]}"; do alive "$n" && READERS_ALIVE+="$n "; done
stop_readers
echo idle-end >"$PHASE"
log "readers stopped; ${SETTLE}s to settle"
sleep "$SETTLE"
END=$(sample_once end)
log "end: $END"
touch "$PHASE.stop"
wait "$SAMPLER" 2>/dev/null || true
SAMPLER=""
# A clean shutdown (SIGTERM: exit code 0, docs/configuration.md).
kill -TERM "$SERVER"
SERVER_RC=0
for _ in $(seq 100); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$SERVER" 2>/dev/null; then SERVER_RC="still running 10 s after SIGTERM"; kill -KILL "$SERVER"; fi
wait "$SERVER" 2>/dev/null || SERVER_RC=$?
SERVER=""

# ---- report --------------------------------------------------------------------------------
mkdir -p bench/results
STAMP=$(date -u +%Y%m%d-%H%M)
OUT=bench/results/soak-$STAMP
cp "$CSV" "$OUT.csv"
cp "$WORK/sluice.log" "$OUT.log"
CLIENTS=""
for n in "${PUBS[@]}" "${READERS[@]}"; do
    CLIENTS+="$n|${RESTARTS[$n]}|${EXITS[$n]}|$(tail -n 3 "$WORK/$n.log" 2>/dev/null | tr '\n|' '  ' | cut -c1-160)"$'\n'
    CLIENTS+="cmd:${CMD[$n]}"$'\n'
done
printf '%s' "$CLIENTS" >"$WORK/clients.txt"
set +e
python3 - "$OUT" "$WORK" "$DURATION" "$RECONNECT" "$INTERVAL" "$WARMUP" "$SETTLE" "$GRACE" "$MEM_TOL" \
    "$REV$DIRTY" "$(nproc --all)" "$WHIP_NOTE" "$SERVER_RC" "$READERS_ALIVE" "$(ffmpeg -version | head -1 | cut -d' ' -f3)" <<'EOF'
import csv, json, os, re, statistics, sys
(out, work, duration, reconnect, interval, warmup, settle, grace, mem_tol, rev, nproc, whip_note,
 server_rc, readers_alive, ffmpeg_v) = sys.argv[1:]
rows = list(csv.DictReader(open(out + ".csv")))
num = lambda r, k: float(r[k]) if r.get(k) not in (None, "") else None
run = [r for r in rows if r["phase"] == "run"]
base = next((r for r in rows if r["phase"] == "baseline"), None)
end = next((r for r in rows if r["phase"] == "end"), None)
fails = []

def thirds(key):
    vals = [num(r, key) for r in run if num(r, key) is not None]
    if len(vals) < 3:
        return None, None, None
    k = len(vals) // 3
    a, b = statistics.median(vals[:k]), statistics.median(vals[-k:])
    return a, b, (b - a) / a * 100 if a else 0.0

def settled(key):
    # The middle third against the last: the first third holds the steps of a server reaching
    # its working set (every client's session shape met once, the allocator's pages); growth
    # that goes on shows between the later two. Also the least-squares slope over them, MB/h.
    vals = [(float(r["t"]), num(r, key)) for r in run if num(r, key) is not None]
    if len(vals) < 6:
        return None, None, None, None
    k = len(vals) // 3
    mid, last = [v for _, v in vals[k:2 * k]], [v for _, v in vals[-k:]]
    a, b = statistics.median(mid), statistics.median(last)
    xs, ys = [t for t, _ in vals[k:]], [v for _, v in vals[k:]]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 3600 / 1024 if den else 0.0
    return a, b, (b - a) / a * 100 if a else 0.0, slope

# Plot.
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
t = [float(r["t"]) / 60 for r in rows]
series = [("rss_kb", "RSS (MB, /proc)", 1 / 1024), ("fds", "open fds (/proc)", 1), ("threads", "threads (/proc)", 1),
          ("m_tasks", "runtime tasks (metrics)", 1), ("sessions", "sessions (metrics)", 1)]
fig, axes = plt.subplots(len(series), 1, figsize=(10, 2.2 * len(series)), sharex=True)
for ax, (k, label, scale) in zip(axes, series):
    xs = [x for x, r in zip(t, rows) if num(r, k) is not None]
    ys = [num(r, k) * scale for r in rows if num(r, k) is not None]
    ax.plot(xs, ys, lw=1)
    if not ys:
        ax.text(0.5, 0.5, "not exported by this build", transform=ax.transAxes, ha="center", va="center", fontsize=8)
    ax.set_ylabel(label, fontsize=8)
    ax.grid(alpha=0.3)
    prev = None
    for x, r in zip(t, rows):  # shade the phases other than the run
        if r["phase"] != "run" and prev is not None:
            ax.axvspan(prev, x, color="0.9", lw=0)
        prev = x
axes[0].set_title(f"Sluice soak {rev}: {duration}s, publishers reconnect every {reconnect}s (grey: warm-up/idle/drain)", fontsize=9)
axes[-1].set_xlabel("minutes")
fig.tight_layout()
fig.savefig(out + ".png", dpi=90)

# Verdict.
checks = []
a, b, g, slope = settled("rss_kb")
ok = g is not None and g <= float(mem_tol)
checks.append(("memory (VmRSS) growth, median of the run's middle third → last third (slope over them)",
               f"{a/1024:.1f} → {b/1024:.1f} MB ({g:+.2f} %; {slope:+.1f} MB/h)" if g is not None else "too few samples",
               f"≤ {mem_tol} %", ok))
a1, b1, g1 = thirds("rss_kb")
if g1 is not None:
    checks.append(("... informational: first third → last third (includes the warm-up steps, see the plot)",
                   f"{a1/1024:.1f} → {b1/1024:.1f} MB ({g1:+.2f} %)", "–", None))
for key, label in (("fds", "open fds (/proc)"), ("threads", "threads (/proc)"), ("m_tasks", "runtime tasks (metrics)")):
    b0, e0 = (num(base, key) if base else None), (num(end, key) if end else None)
    if key == "m_tasks" and b0 is None and e0 is None:
        checks.append((f"{label}: idle at the end vs idle baseline",
                       "not measured: this build does not export sluice_runtime_alive_tasks", "+0", None))
        continue
    ok = b0 is not None and e0 is not None and e0 - b0 <= 0
    checks.append((f"{label}: idle at the end vs idle baseline",
                   f"{b0:.0f} → {e0:.0f} ({e0 - b0:+.0f})" if b0 is not None and e0 is not None else "missing", "+0", ok))
paths = json.load(open(os.path.join(work, "paths-end.json"))).get("items", [])
sessions = json.load(open(os.path.join(work, "sessions-end.json"))).get("items", [])
dead = [f"{p['name']} (online {p.get('online')}, readers {p.get('readers')})" for p in paths
        if not p.get("online") and p.get("readers", 0) > 0]
left = [f"#{s['id']} {s.get('protocol')} on {s.get('path')} ({s.get('state')})" for s in sessions if s.get("role") == "reader"]
checks.append((f"{grace}+5 s after the last publisher left: paths without a publisher holding readers (API)",
               ", ".join(dead) or "none", "none", not dead))
checks.append(("... and reader sessions still open (API /v1/sessions)", ", ".join(left) or "none", "none", not left))
checks.append(("clean shutdown (SIGTERM)", f"exit {server_rc}", "exit 0", server_rc == "0"))
log = open(os.path.join(work, "sluice.log"), errors="replace").read().splitlines()
panics = [l for l in log if "panick" in l.lower()]
checks.append(("panics in the server log", str(len(panics)), "0", not panics))
failed = [c for c in checks if c[3] is False]

L = []
L.append(f"# Soak: publishers reconnecting every {reconnect} s for {duration} s\n")
L.append(f"Sluice at {rev} (release build), ffmpeg {ffmpeg_v}, {nproc} cores: Sluice on core 0, the clients and the script on core 1. "
         f"Samples every {interval} s. Before the run, a {warmup} s warm-up cycle with every client, then {grace}+{settle} s idle: the baseline. "
         f"After the run the publishers stop, the readers stay until every publisher has left (the API) and {grace}+5 s more (grace period), then stop; {settle} s later the end sample.\n")
L.append(f"**Verdict: {'PASS' if not failed else 'FAIL (' + str(len(failed)) + ' check(s))'}**\n")
L.append("| check | measured | tolerance | result |\n|---|---|---|---|")
for c in checks:
    L.append(f"| {c[0]} | {c[1]} | {c[2]} | {('info' if c[2] == '–' else 'skipped') if c[3] is None else 'pass' if c[3] else '**FAIL**'} |")
L.append("\n## Series during the run (informational beyond the checks above)\n")
L.append("| series | baseline (idle) | first third median | last third median | growth | min–max in run | end (idle) |\n|---|---|---|---|---|---|---|")
for key in ("rss_kb", "m_rss_kb", "fds", "threads", "m_tasks", "sessions", "reader_sessions", "api_viewers", "orphan_readers"):
    vals = [num(r, key) for r in run if num(r, key) is not None]
    a, b, g = thirds(key)
    fmt = lambda v: "–" if v is None else f"{v:.0f}"
    L.append(f"| {key} | {fmt(num(base, key) if base else None)} | {fmt(a)} | {fmt(b)} | {'–' if g is None else f'{g:+.1f} %'} "
             f"| {fmt(min(vals) if vals else None)}–{fmt(max(vals) if vals else None)} | {fmt(num(end, key) if end else None)} |")
L.append("\n`orphan_readers`: reader sessions whose path has no publisher at the sample (expected within a grace period after a "
         "publisher restart, never at the end). `api_viewers`: viewer sessions per the API's `readers_by_protocol` (HLS viewers are requests, not sessions).\n")
L.append("## Paths during the run\n")
L.append("Log counts are over the whole log (the warm-up included).\n")
L.append("| path | samples with a publisher (API `online`) | `stream started` | `publisher left` | reader sessions ended (log) | WebRTC `ICE disconnected` |\n|---|---|---|---|---|---|")
plain = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in log]
for k in ("rtmp", "srt", "whip"):
    vals = [num(r, "online_" + k) for r in run if num(r, "online_" + k) is not None]
    pat = re.compile(r'path="?soak/' + k + r'"?(\s|$)')
    c = lambda needle: sum(1 for l in plain if needle in l and pat.search(l))
    L.append(f"| soak/{k} | {sum(vals):.0f} of {len(vals)} ({(100 * sum(vals) / len(vals)) if vals else 0:.0f} %) | {c('stream started')} "
             f"| {c(' publisher left path=')} | {c('reader ended') + c('reader closed')} | {c('ICE disconnected')} |")
L.append("\nA publisher restarted within the grace period keeps the path (and its readers); a path online in fewer samples than "
         "the others lost its publisher for longer (an SRT or WHIP publisher killed without a goodbye is seen gone after its timeout, "
         "and its successor refused meanwhile).\n")
L.append("## Clients\n")
L.append("| client | scheduled restarts | exits on its own (restarted 2 s later) | last lines of its log | command |\n|---|---|---|---|---|")
lines = open(os.path.join(work, "clients.txt")).read().splitlines()
for i in range(0, len(lines) - 1, 2):
    name, restarts, exits, tail = (lines[i].split("|", 3) + ["", "", ""])[:4]
    L.append(f"| {name} | {restarts} | {exits} | {tail.strip() or '–'} | `{lines[i + 1][4:].replace('|', '/')}` |")
if whip_note:
    L.append(f"\n{whip_note}")
L.append("\nNo RTSP publisher: Sluice has no RTSP ingest (docs/protocols.md, `sluice --print-config`).")
if readers_alive.strip():
    L.append(f"\nReader processes still running at the end of the drain (their stream had ended): {readers_alive.strip()} "
             "(HLS and curl readers may wait on an idle connection; the server-side sessions are what the check counts).")
warn = [l for l in log if re.search(r"\b(WARN|ERROR)\b", l)]
L.append(f"\n## Server log\n\n{len(log)} lines, {len(warn)} WARN/ERROR, {len(panics)} panics. Most frequent WARN/ERROR messages (addresses and numbers folded):\n")
counts = {}
for l in warn:
    k = re.sub(r"\x1b\[[0-9;]*m", "", l)
    k = re.sub(r"^\S+\s+", "", k)
    k = re.sub(r"\d+(\.\d+)*(:\d+)?", "N", k)[:200]
    counts[k] = counts.get(k, 0) + 1
L.append("```")
for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:12]:
    L.append(f"{v:6d}  {k}")
L.append("```")
L.append(f"\nFiles: [{os.path.basename(out)}.csv]({os.path.basename(out)}.csv) (every sample), "
         f"[{os.path.basename(out)}.log]({os.path.basename(out)}.log) (the server's log), "
         f"![RSS, fds, threads, tasks, sessions over time]({os.path.basename(out)}.png)")
open(out + ".md", "w").write("\n".join(L) + "\n")
sys.exit(1 if failed else 0)
EOF
RC=$?
set -e
cat "$OUT.md"
echo "written to $OUT.md (+ .csv, .png)"
exit $RC
