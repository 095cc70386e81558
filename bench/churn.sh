#!/usr/bin/env bash
# Slow viewers and churn, on RTMP, HTTP-FLV, HLS and WHEP at once (issue 17): do healthy viewers
# suffer from slow ones and from viewers that come and go, and does the server give back what
# they took (memory, file descriptors)?
#
# One publisher (ffmpeg -re -stream_loop -1 -c copy over RTMP of a generated 720p30 H.264 + AAC
# FLV at about 2.5 Mb/s, 2 s GOP, no B-frames so that WHEP viewers get every frame; the server
# derives Opus from the AAC for them) and four load generators (bench/loadgen churn-load, one
# process per protocol, all at once). Two runs, each on a fresh server:
#   baseline: HEALTHY viewers per protocol;
#   bad:      HEALTHY + SLOW (reading at a tenth of the stream's bitrate) + CHURN (connect, stay
#             1-5 s, leave abruptly, again) per protocol.
# Healthy viewers note each video frame's arrival (HLS: each new part, LL-HLS; WHEP: the RTP
# marker of the video payload type); the result is the p99 of the gaps between consecutive
# frames over every healthy viewer after the warm-up, per protocol, and the ratio bad / baseline
# (goal: at most 1.10). Server RSS (VmRSS) and open fds are read before the viewers arrive (the
# publisher live for PUBLISH_WARMUP s, so the GOP cache, frame queue and HLS window are full) and
# after every viewer left; goal: memory within 1 %, fds equal. The fds are read from 5 s after
# the viewers left until they are back (at most 15 s: WHEP sessions whose peer vanished end at
# the server's ice_timeout, 10 s). RSS is the mean (and minimum) of RSS_SAMPLES readings 1 s
# apart, the end ones from 15 s after the viewers left: the server's mimalloc gives freed memory
# back to the kernel only 10 s later (purge delay, crates/server/src/main.rs), so RSS is a
# sawtooth of several MB with a 10 s period and a single reading says little.
# PRIME=S (default 0): before the start reading, the run's viewers come for S s and leave, and
# 15 s pass; the start reading then includes what the server keeps once it has served them (the
# allocator's high-water pages, per-thread caches), so that end vs start shows growth (a leak)
# rather than first use. The issue's goal is stated without it; the report says which.
# Also reported: the peak RSS and fds during the run, the server's own CPU (/proc/PID/stat) and
# the load generators' (what they report), the busy share of each core (/proc/stat: other work on
# the machine counts there too), and what each kind of viewer got.
#
# The server runs pinned to core 0, the publisher and the load generators to core 1.
#
# Usage: bench/churn.sh [SECONDS] [HEALTHY] [SLOW] [CHURN]     defaults: 600 200 20 50
# Env: WARMUP=10 (s of each run not counted), PUBLISH_WARMUP=30, RSS_SAMPLES=20, PRIME=0,
#   PROTOS="rtmp flv hls whep",
#   SKIP_BUILD=1, SERVER_BIN (default target/release/sluice; not SLUICE_*: the server reads those), LOADGEN_DIR (default
#   target/release), RESULTS_DIR (default bench/results), NOTE="..." (a line for the report).
# Needs ffmpeg, ffprobe, curl, python3 and taskset. Writes bench/results/churn-<UTC date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-600}
HEALTHY=${2:-200}
SLOW=${3:-20}
CHURN=${4:-50}
WARM=${WARMUP:-10}
PUB_WARM=${PUBLISH_WARMUP:-30}
RSS_N=${RSS_SAMPLES:-20}
PRIME=${PRIME:-0}
read -r -a PROTOS <<<"${PROTOS:-rtmp flv hls whep}"
SERVER_CORE=0
LOAD_CORE=1
SLUICE=${SERVER_BIN:-target/release/sluice}
LOADGEN=${LOADGEN_DIR:-target/release}/churn-load
RESULTS_DIR=${RESULTS_DIR:-bench/results}
RTMP_PORT=19471
HTTP_PORT=18471
WEBRTC_PORT=18479
UDP_PORT=18179

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -q -p sluice -p sluice-loadgen
fi
for b in "$SLUICE" "$LOADGEN"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release -p sluice -p sluice-loadgen" >&2; exit 1; }
done
for t in ffmpeg ffprobe curl python3 taskset; do
    command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }
done
((SECS > WARM)) || { echo "SECONDS ($SECS) must be longer than WARMUP ($WARM)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/sluice-churn.XXXXXX)
cleanup() {
    local p
    for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# 30 s of 1280x720 at 30 fps, about 2.5 Mb/s in all, 2 s GOP, no B-frames (WebRTC), AAC.
SRC="$WORK/src.flv"
ffmpeg -nostdin -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 30 -c:v libx264 -preset veryfast -b:v 2372k -maxrate 2372k -bufsize 2372k -g 60 -keyint_min 60 \
    -sc_threshold 0 -bf 0 -pix_fmt yuv420p -c:a aac -b:a 128k -ac 2 -f flv "$SRC"
SRC_KBPS=$(ffprobe -v error -show_entries format=bit_rate -of default=nw=1:nk=1 "$SRC" | awk '{printf "%d", $1 / 1000}')
SLOW_KBPS=$((SRC_KBPS / 10))

# The server: every listener on 127.0.0.1, no per-IP cap (every viewer comes from 127.0.0.1).
cat >"$WORK/sluice.toml" <<EOF
[log]
level = "warn"
[rtmp]
listen = "127.0.0.1:$RTMP_PORT"
[http]
listen = "127.0.0.1:$HTTP_PORT"
max_connections_per_ip = 0
[webrtc]
listen = "127.0.0.1:$WEBRTC_PORT"
udp_listen = "127.0.0.1:$UDP_PORT"
tcp_listen = ""
[srt]
enabled = false
[api]
enabled = false
[metrics]
enabled = false
[playback]
enabled = false
[paths."live/bench"]
EOF
"$SLUICE" check "$WORK/sluice.toml" >/dev/null

url_of() {
    case $1 in
    rtmp) echo "rtmp://127.0.0.1:$RTMP_PORT/live/bench" ;;
    flv) echo "http://127.0.0.1:$HTTP_PORT/live/bench.flv" ;;
    hls) echo "http://127.0.0.1:$HTTP_PORT/live/bench/stream.m3u8" ;;
    whep) echo "http://127.0.0.1:$WEBRTC_PORT/live/bench/whep" ;;
    esac
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
cpu() { awk -v c="cpu$1" '$1==c {b=$2+$3+$4+$7+$8; t=b+$5+$6; print b, t}' /proc/stat; }
busy() { awk -v b="$1" -v t="$2" 'BEGIN {printf "%.1f", (t ? 100 * b / t : 0)}'; }
rss_stats() { # pid samples: mean and minimum of readings 1 s apart, kB
    local s=0 min=0 r i
    for ((i = 0; i < $2; i++)); do
        r=$(rss_kb "$1")
        s=$((s + r))
        ((min == 0 || r < min)) && min=$r
        sleep 1
    done
    echo $((s / $2)) "$min"
}
wait_all() { # limit_s pids...: wait for them to end by themselves, killed after limit_s
    local limit=$((SECONDS + $1)) p
    shift
    for p in "$@"; do
        while kill -0 "$p" 2>/dev/null && ((SECONDS < limit)); do sleep 0.5; done
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
start_load() { # seconds warmup slow churn tag: the four load generators; their pids in LGS
    local p
    LGS=()
    for p in "${PROTOS[@]}"; do
        taskset -c $LOAD_CORE "$LOADGEN" --proto "$p" --url "$(url_of "$p")" --healthy "$HEALTHY" \
            --slow "$3" --churn "$4" --seconds "$1" --warmup "$2" --slow-kbps "$SLOW_KBPS" \
            >"$WORK/$5-$p.json" 2>"$WORK/$5-$p.err" &
        LGS+=($!)
    done
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # name slow churn
    local name=$1 slow=$2 churn=$3
    taskset -c $SERVER_CORE "$SLUICE" --config "$WORK/sluice.toml" >"$WORK/sluice-$name.log" 2>&1 &
    local srv=$!
    local i
    for ((i = 0; i < 50; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$RTMP_PORT") 2>/dev/null && break
        sleep 0.1
    done
    taskset -c $LOAD_CORE ffmpeg -nostdin -v error -re -stream_loop -1 -i "$SRC" -c copy -f flv \
        "rtmp://127.0.0.1:$RTMP_PORT/live/bench" >"$WORK/pub-$name.log" 2>&1 &
    local pub=$!
    local hls; hls=$(url_of hls)
    for ((i = 0; i < 100; i++)); do
        curl -sf --max-time 2 "$hls" 2>/dev/null | grep -q EXTINF && break
        sleep 0.2
    done
    curl -sf --max-time 2 "$hls" | grep -q EXTINF || { echo "no HLS playlist at $hls" >&2; cat "$WORK/sluice-$name.log" >&2; exit 1; }
    sleep "$PUB_WARM"
    kill -0 $srv
    if ((PRIME > 0)); then
        echo "[$name] priming: the run's viewers for $PRIME s, then 15 s" >&2
        start_load "$PRIME" 0 "$slow" "$churn" "prime-$name"
        wait_all $((PRIME + 30)) "${LGS[@]}"
        sleep 15
    fi
    local rss0 min0 fd0
    read -r rss0 min0 < <(rss_stats $srv "$RSS_N")
    fd0=$(fds $srv)
    echo "[$name] start: RSS ${rss0} kB (min ${min0}), ${fd0} fds; ${#PROTOS[@]} x ($HEALTHY healthy + $slow slow + $churn churn) viewers for ${SECS} s" >&2
    start_load "$SECS" "$WARM" "$slow" "$churn" "$name"
    # During the counted window: CPU of both cores, peak RSS and fds (sampled every 2 s).
    sleep "$WARM"
    local s0 l0 s1 l1 peak_rss=0 peak_fd=0 r f k0 k1 w0=$SECONDS
    read -r -a s0 < <(cpu $SERVER_CORE); read -r -a l0 < <(cpu $LOAD_CORE)
    k0=$(ticks $srv)
    local stop=$((SECONDS + SECS - WARM - 1))
    while ((SECONDS < stop)); do
        r=$(rss_kb $srv); f=$(fds $srv)
        ((r > peak_rss)) && peak_rss=$r
        ((f > peak_fd)) && peak_fd=$f
        sleep 2
    done
    read -r -a s1 < <(cpu $SERVER_CORE); read -r -a l1 < <(cpu $LOAD_CORE)
    k1=$(ticks $srv)
    local srv_cpu
    srv_cpu=$(awk -v k=$((k1 - k0)) -v hz="$(getconf CLK_TCK)" -v w=$((SECONDS - w0)) 'BEGIN {printf "%.1f", (w ? 100 * k / hz / w : 0)}')
    # Load generators end by themselves at SECS (WHEP viewers leave within 2 s more); bounded.
    wait_all 30 "${LGS[@]}"
    # Settle: from 5 s after the viewers left, until the fds are back (or 15 s).
    local t0=$SECONDS fd1
    sleep 5
    fd1=$(fds $srv)
    while ((fd1 != fd0 && SECONDS - t0 < 15)); do sleep 1; fd1=$(fds $srv); done
    local settle=$((SECONDS - t0))
    ((SECONDS - t0 < 15)) && sleep $((15 - (SECONDS - t0)))
    local rss1 min1
    read -r rss1 min1 < <(rss_stats $srv "$RSS_N")
    fd1=$(fds $srv)
    kill -0 $srv || { echo "[$name] the server died" >&2; tail -20 "$WORK/sluice-$name.log" >&2; exit 1; }
    echo "[$name] end: RSS ${rss1} kB, ${fd1} fds (fds settled after ${settle} s)" >&2
    kill $pub $srv 2>/dev/null || true
    wait $pub $srv 2>/dev/null || true
    python3 - "$name" "$rss0" "$rss1" "$fd0" "$fd1" "$peak_rss" "$peak_fd" "$settle" \
        "$(busy $((s1[0] - s0[0])) $((s1[1] - s0[1])))" "$(busy $((l1[0] - l0[0])) $((l1[1] - l0[1])))" \
        "$(grep -c -i 'panic' "$WORK/sluice-$name.log" || true)" "$WORK" "$min0" "$min1" "$srv_cpu" \
        "${PROTOS[@]}" >>"$WORK/results.jsonl" <<'EOF'
import json, sys
name, rss0, rss1, fd0, fd1, peak_rss, peak_fd, settle, cpu0, cpu1, panics, work, min0, min1, srv_cpu = sys.argv[1:16]
protos = {}
for p in sys.argv[16:]:
    try:
        protos[p] = json.load(open(f"{work}/{name}-{p}.json"))
    except Exception as e:
        protos[p] = {"failed": f"{e}: " + open(f"{work}/{name}-{p}.err").read()[-300:]}
print(json.dumps(dict(run=name, rss0=int(rss0), rss1=int(rss1), fd0=int(fd0), fd1=int(fd1),
    peak_rss=int(peak_rss), peak_fd=int(peak_fd), settle_s=int(settle), cpu_server=float(cpu0),
    cpu_load=float(cpu1), panics=int(panics or 0), min0=int(min0), min1=int(min1),
    srv_cpu=float(srv_cpu), protos=protos)))
# What the server and the publisher complained about (timestamps and ids dropped).
import re
seen = {}
for line in open(f"{work}/sluice-{name}.log", errors="replace"):
    if " WARN " in line or " ERROR " in line:
        key = re.sub(r"^\S+\s+", "", line.strip())
        key = re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "N", key)[:200]
        seen[key] = seen.get(key, 0) + 1
pub = open(f"{work}/pub-{name}.log", errors="replace").read().strip().splitlines()
print(json.dumps(dict(run=name, log=seen, publisher=pub[-5:])), file=open(f"{work}/logs-{name}.json", "w"))
EOF
}

run baseline 0 0
run bad "$SLOW" "$CHURN"

mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/churn-$(date -u +%Y%m%d-%H%M).md"
python3 - "$WORK/results.jsonl" "$SECS" "$WARM" "$HEALTHY" "$SLOW" "$CHURN" "$SRC_KBPS" "$SLOW_KBPS" \
    "$(git describe --always --dirty 2>/dev/null || echo unknown)" "${NOTE:-}" "$PRIME" >"$OUT" <<'EOF'
import json, sys, datetime
path, secs, warm, healthy, slow, churn, src_kbps, slow_kbps, rev, note, prime = sys.argv[1:12]
runs = {r["run"]: r for r in map(json.loads, filter(str.strip, open(path)))}
base, bad = runs["baseline"], runs["bad"]
def g(r, p, *keys):
    v = r["protos"].get(p, {})
    for k in keys:
        v = v.get(k) if isinstance(v, dict) else None
    return v
def f(x, d=1):
    return "n/a" if x is None else f"{x:.{d}f}"
print(f"# Slow viewers and churn — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {rev}\n")
print(f"{secs} s per run ({warm} s warm-up not counted), per protocol: {healthy} healthy viewers; bad run adds "
      f"{slow} slow (reading at {slow_kbps} kb/s, a tenth of the {src_kbps} kb/s source) and {churn} churning "
      f"(stay 1–5 s, leave abruptly, come back). RTMP, HTTP-FLV, LL-HLS and WHEP at once, one 720p30 "
      f"H.264 + AAC publisher over RTMP. Server on core 0, publisher and load generators on core 1; a fresh "
      f"server per run. Start readings {'after a priming round of ' + prime + ' s (PRIME)' if prime != '0' else 'without priming (PRIME=0)'}."
      f"{(' ' + note) if note else ''}\n")
print("## Healthy viewers' delivery: gap between consecutive frames (HLS: parts), ms\n")
print("| protocol | baseline p50 | baseline p99 | bad p50 | bad p99 | p99 bad / baseline | goal ≤ 1.10 | max (base / bad) | gaps > 1 s (base / bad) | Mb/s per healthy viewer (base / bad) |")
print("|---|---|---|---|---|---|---|---|---|---|")
ok_all = True
for p in base["protos"]:
    b99, x99 = g(base, p, "gap_ms", "p99"), g(bad, p, "gap_ms", "p99")
    ratio = x99 / b99 if b99 and x99 is not None else None
    ok = ratio is not None and ratio <= 1.10
    ok_all &= ok
    print(f"| {p} | {f(g(base, p, 'gap_ms', 'p50'))} | {f(b99)} | {f(g(bad, p, 'gap_ms', 'p50'))} | {f(x99)} | "
          f"{f(ratio, 2)} | {'yes' if ok else '**no**'} | {f(g(base, p, 'gap_ms', 'max'))} / {f(g(bad, p, 'gap_ms', 'max'))} | "
          f"{g(base, p, 'gap_ms', 'over_1s')} / {g(bad, p, 'gap_ms', 'over_1s')} | "
          f"{f(g(base, p, 'mbps_per_viewer', 'healthy'), 3)} / {f(g(bad, p, 'mbps_per_viewer', 'healthy'), 3)} |")
print("\n## Server resources (start: publisher live, before viewers; end: after every viewer left)\n")
print("| run | RSS start MB (mean / min) | RSS end MB (mean / min) | end vs start (mean / min) | goal ±1 % | peak RSS MB | fds start | fds end | fds equal | peak fds | fds back after | server CPU (% of a core) | load generators CPU | core 0 busy | core 1 busy | panics in log |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in (base, bad):
    d = (r["rss1"] - r["rss0"]) * 100 / r["rss0"]
    dm = (r["min1"] - r["min0"]) * 100 / r["min0"]
    ok_all &= abs(d) <= 1 and r["fd0"] == r["fd1"]
    lg = sum(j.get("cpu_s") or 0 for j in r["protos"].values()) * 100 / float(secs)
    r["lg_cpu"] = lg
    print(f"| {r['run']} | {r['rss0'] / 1024:.1f} / {r['min0'] / 1024:.1f} | {r['rss1'] / 1024:.1f} / {r['min1'] / 1024:.1f} | "
          f"{d:+.2f} % / {dm:+.2f} % | {'yes' if abs(d) <= 1 else '**no**'} | "
          f"{r['peak_rss'] / 1024:.1f} | {r['fd0']} | {r['fd1']} | {'yes' if r['fd0'] == r['fd1'] else '**no**'} | {r['peak_fd']} | "
          f"{r['settle_s']} s | {r['srv_cpu']} % | {lg:.1f} % | {r['cpu_server']} % | {r['cpu_load']} % | {r['panics']} |")
print("\n## Viewers (bad run)\n")
print("| protocol | sessions healthy / slow / churn | Mb/s per viewer healthy / slow / churn | errors (whole run, by role:kind) |")
print("|---|---|---|---|")
for p, j in bad["protos"].items():
    if "failed" in j:
        print(f"| {p} | load generator failed: {j['failed']} | | |")
        continue
    s, m = j["sessions"], j["mbps_per_viewer"]
    errs = ", ".join(f"{k} {v}" for k, v in sorted(j["errors"].items(), key=lambda kv: -kv[1])) or "none"
    print(f"| {p} | {s['healthy']} / {s['slow']} / {s['churn']} | {m['healthy']:.3f} / {m['slow']:.3f} / {m['churn']:.3f} | {errs} |")
base_errs = {p: j.get("errors", j.get("failed")) for p, j in base["protos"].items()}
if any(base_errs.values()):
    print(f"\nBaseline errors: {json.dumps(base_errs)}")
if max(base["lg_cpu"], bad["lg_cpu"]) > 80 or max(base["cpu_load"], bad["cpu_load"]) > 95:
    print(f"\n**The load core was (nearly) saturated**: the load generators used up to {max(base['lg_cpu'], bad['lg_cpu']):.0f} % "
          f"of core 1, and core 1 was up to {max(base['cpu_load'], bad['cpu_load']):.0f} % busy (other work on the machine "
          "counts there too). The gaps measure the load side as much as the server: lower the viewer "
          "counts, or run on a quiet machine.")
if max(base["srv_cpu"], bad["srv_cpu"]) > 90:
    print("\n**The server core was saturated** (the server above 90 % of core 0).")
print(f"\nAll goals met: {'yes' if ok_all else 'no'}")
import os
print("\n## Server warnings and publisher errors\n")
for name in ("baseline", "bad"):
    try:
        l = json.load(open(os.path.join(os.path.dirname(path), f"logs-{name}.json")))
    except Exception:
        continue
    print(f"- {name}: " + ("; ".join(f"{n} × `{k}`" for k, n in sorted(l["log"].items(), key=lambda kv: -kv[1])[:6]) or "no server warnings")
          + (f"; publisher: `{' / '.join(l['publisher'])}`" if l["publisher"] else ""))
print("\n<details><summary>Raw results (one JSON object per run)</summary>\n\n```")
for r in (base, bad):
    print(json.dumps(r))
print("```\n</details>")
EOF
cat "$OUT"
echo "written to $OUT"
