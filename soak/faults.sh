#!/usr/bin/env bash
# Fault tests (issue 17): the publisher's network dropping for 1, 5 and 30 s, a push destination
# that blackholes, the recording directory turning read-only and (as root) the recording disk
# filling up. Each fault is checked against what the docs promise, for the log line that says
# what happened, and for the other paths and viewers not being disturbed.
#
# Everything runs on 127.0.0.1, unprivileged except the full disk (a tmpfs, root only):
#
#   relay 1/5/30 s  ffmpeg publishes fault/relay through a TCP relay (python asyncio) that stops
#                   forwarding both ways for N s (a network that drops: nothing arrives, nothing is
#                   refused). docs: [rtmp] idle_timeout (10 s) disconnects a publisher that sends
#                   nothing; grace_period (10 s) keeps its readers. So 1 s and 5 s: the same
#                   publisher and reader sessions go on; 30 s: "RTMP publisher closed: timed out:
#                   publisher sent nothing for 10s", "publisher left", the readers end after the
#                   grace period, and the encoder (ffmpeg restarted in a loop, as OBS reconnects)
#                   is back once the network is.
#   blackhole push  fault/blackhole is pushed ([..push] urls) to a TCP listener that accepts and
#                   never reads. docs/restream.md: the reason is logged ("push failed: ...;
#                   retrying in ..."), retried with backoff from retry_min (1 s) doubling, state
#                   in the API's pushes; the publisher and the other outputs are not touched.
#   read-only dir   fault/ro is recorded (2 s segments); its directory is made read-only
#                   (chattr +i as root, who ignores permissions; chmod a-w otherwise).
#                   docs/recording.md: "recording stopped, retrying: ...", state "error" in the
#                   API and metrics, the live stream untouched, "recording resumed" within
#                   retry_after (5 s) of the directory being writable again.
#   full disk       (root) fault/full is recorded on a 1 MB tmpfs: "recording stopped, retrying:
#                   the disk is full or failing: ...", the file cut back to its last whole
#                   fragment (ffprobe reads it), "recording resumed" once the tmpfs is grown.
#
# Throughout, fault/steady has its own publisher and an ffmpeg RTMP reader: after each fault the
# same publisher and reader sessions must be there and the reader's frames must have kept coming.
#
# Usage: soak/faults.sh          Environment: NO_BUILD=1, PORT_BASE (28000)
# Needs ffmpeg, ffprobe, curl, jq, python3; root for the tmpfs case.
# Writes bench/results/faults-<UTC date>.md; exits 1 when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${PORT_BASE:-28000}
RTMP_PORT=$((BASE + 935))
HTTP_PORT=$((BASE + 888))
RELAY_PORT=$((BASE + 936))
BLACKHOLE_PORT=$((BASE + 940))
NGINX_PORT=$((BASE + 941))
RELAY2_PORT=$((BASE + 942))
API=127.0.0.1:$((BASE + 997))
METRICS=127.0.0.1:$((BASE + 998))
FPS=25
GRACE=10
WORK=$(mktemp -d /tmp/sluice-faults.XXXXXX)
SERVER=""
TMPFS=""
declare -A PID=()
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
    wait 2>/dev/null || true
    if [[ -n $TMPFS ]]; then umount "$TMPFS" 2>/dev/null || umount -l "$TMPFS" 2>/dev/null || true; fi
    if [[ -d $WORK/rec ]]; then
        chattr -R -i "$WORK/rec" 2>/dev/null || true
        chmod -R u+w "$WORK/rec" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for c in ffmpeg ffprobe curl jq python3; do
    command -v "$c" >/dev/null 2>&1 || { echo "faults: $c is needed" >&2; exit 2; }
done
if [[ ${NO_BUILD:-} != 1 ]]; then
    cargo build --release -q -p sluice
fi
SLUICE=target/release/sluice
[[ -x $SLUICE ]] || { echo "faults: no $SLUICE" >&2; exit 2; }
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if git status --porcelain --untracked-files=no 2>/dev/null | grep -q .; then REV+=" + uncommitted changes"; fi
ROOT=0
[[ $(id -u) == 0 ]] && ROOT=1

ffmpeg -nostdin -v error -y -f lavfi -i "testsrc2=size=640x360:rate=$FPS" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 10 -c:v libx264 -preset ultrafast -b:v 600k -maxrate 600k -bufsize 600k -g $FPS -keyint_min $FPS -sc_threshold 0 \
    -bf 0 -pix_fmt yuv420p -c:a aac -b:a 64k -ac 2 -f flv "$WORK/src.flv"

# For the stalled destination: ~9 Mb/s (lossless x264), so that the kernel's socket buffers
# (several MB on loopback) fill within seconds and the destination really takes nothing.
ffmpeg -nostdin -v error -y -f lavfi -i "testsrc2=size=960x540:rate=$FPS" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 4 -c:v libx264 -preset ultrafast -qp 0 -g $FPS -bf 0 -pix_fmt yuv420p -c:a aac -b:a 64k -ac 2 -f flv "$WORK/big.flv"

# ---- the network helpers: a relay that pauses, a blackhole ------------------------------------
cat >"$WORK/netfault.py" <<'EOF'
"""relay LISTEN TARGET CONTROL: TCP relay 127.0.0.1:LISTEN -> 127.0.0.1:TARGET that forwards
nothing, either way, while the time in the CONTROL file (Unix seconds) is in the future.
blackhole LISTEN: accepts connections and never reads from them."""
import asyncio, socket, sys, time

def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)

async def relay(listen, target, control):
    cache = [0.0, 0.0]  # (checked at, paused until)

    def paused():
        now = time.time()
        if now - cache[0] > 0.05:
            cache[0] = now
            try:
                cache[1] = float(open(control).read().strip() or 0)
            except (OSError, ValueError):
                cache[1] = 0.0
        return now < cache[1]

    async def hold(name):
        if paused():
            log(f"{name}: paused")
            while paused():
                await asyncio.sleep(0.05)
            log(f"{name}: resumed")

    async def pipe(r, w, name):
        try:
            while True:
                await hold(name)
                data = await r.read(65536)
                # What arrives while the network is down (bytes, or the peer's close) is held
                # until it is back: neither end learns anything meanwhile.
                await hold(name)
                if not data:
                    break
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError) as e:
            log(f"{name}: {e}")
        finally:
            log(f"{name}: closed")
            w.close()

    async def handle(cr, cw):
        while paused():  # a connection attempt while the network is down waits for it
            await asyncio.sleep(0.05)
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", target)
        except OSError as e:
            log(f"cannot reach {target}: {e}")
            cw.close()
            return
        # Small buffers, so a pause backs up into the sender quickly (as on a real link).
        for w in (cw, uw):
            s = w.get_extra_info("socket")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        log("connection")
        await asyncio.gather(pipe(cr, uw, "up"), pipe(ur, cw, "down"))

    srv = await asyncio.start_server(handle, "127.0.0.1", listen, reuse_address=True)
    for s in srv.sockets:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    async with srv:
        await srv.serve_forever()

async def blackhole(listen):
    held = []

    async def handle(r, w):
        held.append(w)  # never read, never close
        log(f"accepted #{len(held)}")

    srv = await asyncio.start_server(handle, "127.0.0.1", listen, reuse_address=True)
    for s in srv.sockets:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    async with srv:
        await srv.serve_forever()

if sys.argv[1] == "relay":
    asyncio.run(relay(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
else:
    asyncio.run(blackhole(int(sys.argv[2])))
EOF

# ---- the server ------------------------------------------------------------------------------
mkdir -p "$WORK/rec"
cat >"$WORK/sluice.toml" <<CFG
# Generated by soak/faults.sh
[log]
level = "info"
[rtmp]
listen = "127.0.0.1:$RTMP_PORT"
[http]
listen = "127.0.0.1:$HTTP_PORT"
[srt]
enabled = false
[webrtc]
enabled = false
[api]
listen = "$API"
[metrics]
listen = "$METRICS"
[playback]
enabled = false
[path_defaults]
grace_period = "${GRACE}s"
[paths."fault/*"]
[paths."fault/blackhole".push]
urls = ["rtmp://127.0.0.1:$BLACKHOLE_PORT/live/blackhole"]
[paths."fault/stall".push]
urls = ["rtmp://127.0.0.1:$RELAY2_PORT/live/stall"]
[paths."fault/ro".record]
enabled = true
path = "$WORK/rec/%path/%Y-%m-%d_%H-%M-%S-%f"
segment_duration = "2s"
retry_after = "5s"
[paths."fault/full".record]
enabled = true
path = "$WORK/full/%path/%Y-%m-%d_%H-%M-%S-%f"
retry_after = "5s"
CFG
"$SLUICE" check "$WORK/sluice.toml" >/dev/null
mkdir -p "$WORK/full"
(cd "$WORK" && exec setsid "$OLDPWD/$SLUICE" --config sluice.toml >sluice.log 2>&1 </dev/null) &
SERVER=$!
for _ in $(seq 100); do curl -sf "http://$API/v1/server" -o /dev/null && break; sleep 0.1; done
curl -sf "http://$API/v1/server" -o /dev/null || { echo "faults: Sluice did not start:" >&2; cat "$WORK/sluice.log" >&2; exit 1; }
LOG=$WORK/sluice.log

start() { # NAME COMMAND...: in its own process group, cwd $WORK, output in NAME.log
    local n=$1
    shift
    (cd "$WORK" && exec setsid "$@" >>"$WORK/$n.log" 2>&1 </dev/null) &
    PID[$n]=$!
}
stop() { # NAME
    local p=${PID[$1]:-}
    [[ -z $p ]] && return 0
    kill -TERM -- "-$p" || true
    for _ in $(seq 30); do kill -0 "$p" || break; sleep 0.1; done
    kill -KILL -- "-$p" || true
    wait "$p" || true
    PID[$1]=""
} 2>/dev/null # also bash's "Killed" notice
alive() { [[ -n ${PID[$1]:-} ]] && kill -0 "${PID[$1]}" 2>/dev/null; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
publish() { # NAME PATH [PORT]: ffmpeg publishing the clip in a loop
    start "$1" ffmpeg -nostdin -v error -re -stream_loop -1 -i src.flv -c copy -f flv "rtmp://127.0.0.1:${3:-$RTMP_PORT}/$2"
}
read_rtmp() { # NAME PATH
    start "$1" ffmpeg -nostdin -v error -i "rtmp://127.0.0.1:$RTMP_PORT/$2" -c copy -f null -
}
api() { curl -sf "http://$API$1" 2>/dev/null || echo '{}'; }
# "publisher-session reader-session reader-frames" of a path (first RTMP reader), "" if none.
snap() { # PATH
    local p s
    p=$(api "/v1/paths/$1" | jq -r '.publisher.session // "none"')
    s=$(api "/v1/sessions?path=$1&limit=1000" | jq -r '[.items[] | select(.role == "reader" and .protocol == "rtmp")][0] | "\(.id // "none") \(.frames_out // 0)"')
    echo "$p $s"
}
# Did a path go on undisturbed between two snapshots taken SECONDS apart?
undisturbed() { # BEFORE AFTER SECONDS -> prints a verdict, returns 1 if disturbed
    local b a secs=$3 want
    read -r -a b <<<"$1"
    read -r -a a <<<"$2"
    want=$((secs * FPS / 2)) # half the frames at least (the machine is busy)
    local got=$((a[2] - b[2]))
    if [[ ${b[0]} != none && ${b[0]} == "${a[0]}" && ${b[1]} != none && ${b[1]} == "${a[1]}" ]] && ((got >= want)); then
        echo "same publisher #${a[0]} and reader #${a[1]}, +$got frames in ${secs}s"
        return 0
    fi
    echo "publisher #${b[0]}→#${a[0]}, reader #${b[1]}→#${a[1]}, +$got frames in ${secs}s (want same sessions, ≥ $want)"
    return 1
}
lines() { wc -l <"$LOG"; }
# The first server log line after line MARK that matches every given regex (ANSI colours stripped).
found() { # MARK REGEX...
    local mark=$1
    shift
    local out
    out=$(tail -n +"$((mark + 1))" "$LOG" | sed 's/\x1b\[[0-9;]*m//g')
    local r
    for r in "$@"; do out=$(grep -E -- "$r" <<<"$out" || true); done
    head -n 1 <<<"$out" | cut -c1-300
}
count() { # MARK REGEX...
    local mark=$1
    shift
    local out r
    out=$(tail -n +"$((mark + 1))" "$LOG" | sed 's/\x1b\[[0-9;]*m//g')
    for r in "$@"; do out=$(grep -E -- "$r" <<<"$out" || true); done
    grep -c . <<<"$out" || true
}
wait_for() { # SECONDS COMMAND...: poll every 0.5 s until the command succeeds
    local end=$((SECONDS + $1))
    shift
    while ((SECONDS < end)); do "$@" && return 0; sleep 0.5; done
    return 1
}
online() { [[ $(api "/v1/paths/$1" | jq -r '.online // false') == true ]]; }
has_line() { [[ -n $(found "$@") ]]; }

RESULTS=()
result() { # FAULT PROMISE OBSERVED LOGLINE OTHERS PASS(0/1)
    RESULTS+=("$1"$'\x1f'"$2"$'\x1f'"$3"$'\x1f'"$4"$'\x1f'"$5"$'\x1f'"$6")
    log "$1: $([[ $6 == 1 ]] && echo pass || echo FAIL): $3"
}

# ---- the steady path, undisturbed throughout --------------------------------------------------
publish pub_steady fault/steady
wait_for 15 online fault/steady || { echo "faults: fault/steady did not go live" >&2; cat "$LOG" >&2; exit 1; }
read_rtmp rd_steady fault/steady

# ---- 1. the publisher's network drops for 1, 5 and 30 s ----------------------------------------
echo 0 >"$WORK/pause"
start relay python3 netfault.py relay "$RELAY_PORT" "$RTMP_PORT" "$WORK/pause"
sleep 0.5
# The encoder: reconnects 1 s after losing its connection, as OBS does.
start pub_relay bash -c "for i in \$(seq 200); do ffmpeg -nostdin -v error -re -stream_loop -1 -i src.flv -c copy -f flv rtmp://127.0.0.1:$RELAY_PORT/fault/relay; echo \"encoder exited (\$?), reconnecting\"; sleep 1; done"
wait_for 15 online fault/relay || { echo "faults: fault/relay did not go live through the relay" >&2; exit 1; }
read_rtmp rd_relay fault/relay
sleep 4
for n in 1 5 30; do
    log "relay: the network drops for ${n}s"
    mark=$(lines)
    s0=$(snap fault/steady)
    r0=$(snap fault/relay)
    until_ms=$(($(date +%s%3N) + n * 1000))
    printf '%d.%03d\n' $((until_ms / 1000)) $((until_ms % 1000)) >"$WORK/pause"
    t0=$SECONDS
    if ((n < 10)); then
        # Under idle_timeout: nothing must end. Look 5 s after the network is back.
        sleep $((n + 5))
        r1=$(snap fault/relay)
        s1=$(snap fault/steady)
        secs=$((SECONDS - t0))
        rel=$(undisturbed "$r0" "$r1" "$secs") && rok=1 || rok=0
        oth=$(undisturbed "$s0" "$s1" "$secs") && sok=1 || sok=0
        closed=$(found "$mark" "RTMP publisher closed|publisher left" "fault/relay")
        stall=$(found "$mark" "health: stream" "fault/relay")
        ok=$((rok && sok && ${#closed} == 0))
        result "network drop ${n}s" "under [rtmp] idle_timeout (10 s): the publisher's session goes on, its readers keep it; no disconnect" \
            "fault/relay: $rel${closed:+; but: $closed}" "${stall:-(none: nothing ended; no health stall line)}" "$oth" "$ok"
    else
        # Over idle_timeout: the server drops the publisher, readers wait the grace period, then
        # end; the encoder comes back when the network does.
        wait_for 20 has_line "$mark" "RTMP publisher closed" "fault/relay" || true
        l_idle=$(found "$mark" "RTMP publisher closed" "fault/relay")
        t_idle=$((SECONDS - t0))
        wait_for $((GRACE + 8)) has_line "$mark" "ending session|RTMP reader (ended|closed)" "fault/relay" || true
        l_reader=$(found "$mark" "ending session|RTMP reader (ended|closed)" "fault/relay")
        t_reader=$((SECONDS - t0))
        gone=$(api "/v1/paths/fault/relay" | jq -r '.name // "gone"')
        left=$(api "/v1/sessions?path=fault/relay&limit=1000" | jq '[.items[] | select(.role == "reader")] | length')
        remain=$((n - (SECONDS - t0)))
        ((remain > 0)) && sleep "$remain"
        mark2=$(lines)
        back=0
        wait_for 20 has_line "$mark2" "RTMP publisher started" "fault/relay" && back=1
        t_back=$((SECONDS - t0))
        s1=$(snap fault/steady)
        oth=$(undisturbed "$s0" "$s1" $((SECONDS - t0))) && sok=1 || sok=0
        ok=$((${#l_idle} > 0 && ${#l_reader} > 0 && back && sok && left == 0))
        result "network drop ${n}s" "over idle_timeout: publisher closed after 10 s with the reason; readers kept through the grace period (10 s) then ended; the reconnecting encoder is live again once the network is back" \
            "publisher closed at ~${t_idle}s; reader ended at ~${t_reader}s (path after: ${gone}, reader sessions left: ${left}); encoder back: $([[ $back == 1 ]] && echo "yes, at ~${t_back}s" || echo no)" \
            "$l_idle // $l_reader" "$oth" "$ok"
    fi
    sleep 3
done
stop rd_relay
stop pub_relay
stop relay

# ---- 2. a push destination that blackholes ------------------------------------------------------
log "push: destination accepts and never reads"
start blackhole python3 netfault.py blackhole "$BLACKHOLE_PORT"
sleep 0.5
mark=$(lines)
s0=$(snap fault/steady)
publish pub_bh fault/blackhole
wait_for 15 online fault/blackhole || true
read_rtmp rd_bh fault/blackhole
sleep 3
b0=$(snap fault/blackhole)
t0=$SECONDS
# connect_timeout (10 s), then 1 s, then 2 s of backoff: two failures within ~30 s.
bh_failed_twice() { (($(count "$mark" "push failed" "fault/blackhole") >= 2)); }
wait_for 35 bh_failed_twice || true
b1=$(snap fault/blackhole)
s1=$(snap fault/steady)
secs=$((SECONDS - t0))
fails=$(count "$mark" "push failed" "fault/blackhole")
l1=$(found "$mark" "push failed" "fault/blackhole")
waits=$(tail -n +"$((mark + 1))" "$LOG" | grep -E "push failed" | grep -oE "retrying in [0-9.]+ s" | head -3 | tr '\n' ',' | sed 's/,$//')
push=$(api "/v1/paths/fault/blackhole" | jq -c '[.pushes[]? | {state, last_error, reconnects}]')
own=$(undisturbed "$b0" "$b1" "$secs") && bok=1 || bok=0
oth=$(undisturbed "$s0" "$s1" "$((SECONDS - t0 + 3))") && sok=1 || sok=0
state_ok=0
jq -e 'length > 0 and (.[0].state == "retrying" or .[0].state == "connecting") and (.[0].last_error // "" | length > 0)' <<<"$push" >/dev/null && state_ok=1
result "push destination blackholes" "the reason logged, retried with backoff (1 s doubling, ±20 %), state in the API's pushes; the publisher, its readers and other paths untouched" \
    "$fails failures ($waits); API pushes: $push; fault/blackhole itself: $own" "$l1" "$oth" $((fails >= 2 && state_ok && bok && sok))
stop rd_bh
stop pub_bh
stop blackhole

# ---- 2b. a push destination that stops taking anything mid-stream (relay in front of nginx-rtmp) --
if command -v nginx >/dev/null && [[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ]]; then
    log "push: a live destination stops reading for 30 s"
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<NGX
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 64; }
rtmp { server { listen 127.0.0.1:$NGINX_PORT; application live { live on; } } }
NGX
    start nginx nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx"
    echo 0 >"$WORK/pause2"
    start relay2 python3 netfault.py relay "$RELAY2_PORT" "$NGINX_PORT" "$WORK/pause2"
    sleep 0.5
    mark=$(lines)
    start pub_stall ffmpeg -nostdin -v error -re -stream_loop -1 -i big.flv -c copy -f flv "rtmp://127.0.0.1:$RTMP_PORT/fault/stall"
    wait_for 15 online fault/stall || true
    read_rtmp rd_stall fault/stall
    wait_for 15 has_line "$mark" "push live" "fault/stall" || true
    sleep 4
    s0=$(snap fault/steady)
    b0=$(snap fault/stall)
    mark=$(lines)
    until_ms=$(($(date +%s%3N) + 30000))
    printf '%d.%03d\n' $((until_ms / 1000)) $((until_ms % 1000)) >"$WORK/pause2"
    t0=$SECONDS
    wait_for 29 has_line "$mark" "push failed" "fault/stall" || true
    l_fail=$(found "$mark" "push failed" "fault/stall")
    t_fail=$((SECONDS - t0))
    l_drop=$(found "$mark" "reads too slowly" "fault/stall")
    push_during=$(api "/v1/paths/fault/stall" | jq -c '[.pushes[]? | {state, last_error, dropped_frames}]')
    remain=$((30 - (SECONDS - t0)))
    ((remain > 0)) && sleep "$remain"
    mark2=$(lines)
    back=0
    wait_for 45 has_line "$mark2" "push live" "fault/stall" && back=1
    t_back=$((SECONDS - t0))
    b1=$(snap fault/stall)
    s1=$(snap fault/steady)
    own=$(undisturbed "$b0" "$b1" $((SECONDS - t0))) && bok=1 || bok=0
    oth=$(undisturbed "$s0" "$s1" $((SECONDS - t0))) && sok=1 || sok=0
    ok=$((${#l_fail} > 0 && back && bok && sok))
    result "push destination stops reading for 30 s" "one that takes nothing for stall_timeout (10 s) is dropped and retried, the reason logged; it reconnects by itself; the publisher and viewers never wait for it" \
        "$([[ -n $l_fail ]] && echo "push failed ~${t_fail}s into the pause" || echo "no push failure within ${t_fail}s of the pause"); API during: $push_during; live again: $([[ $back == 1 ]] && echo "yes, at ~${t_back}s" || echo no); fault/stall: $own" \
        "${l_fail:-no 'push failed' line}${l_drop:+ // $l_drop}" "$oth" "$ok"
    stop rd_stall
    stop pub_stall
    stop relay2
    stop nginx
else
    result "push destination stops reading" "dropped after stall_timeout and retried" "skipped: needs nginx with libnginx-mod-rtmp" "–" "–" 1
fi

# ---- 3. the recording directory becomes read-only -------------------------------------------
log "recording: the directory becomes read-only"
publish pub_ro fault/ro
wait_for 15 online fault/ro || true
read_rtmp rd_ro fault/ro
wait_for 15 test -d "$WORK/rec/fault/ro" || true
sleep 5
DIR=$WORK/rec/fault/ro
HOW=""
if ((ROOT)) && command -v chattr >/dev/null && chattr +i "$DIR" 2>/dev/null; then
    HOW="chattr +i (root ignores permissions)"
elif ((!ROOT)); then
    chmod a-w "$DIR"
    HOW="chmod a-w"
fi
if [[ -z $HOW ]]; then
    result "recording directory read-only" "recording error logged, retried" "skipped: running as root and chattr +i does not work on $(df -T "$DIR" | awk 'NR==2 {print $2}')" "–" "–" 1
else
    mark=$(lines)
    s0=$(snap fault/steady)
    o0=$(snap fault/ro)
    t0=$SECONDS
    wait_for 15 has_line "$mark" "recording stopped, retrying" "fault/ro" || true
    l_err=$(found "$mark" "recording stopped, retrying" "fault/ro")
    st=$(api "/v1/paths/fault/ro" | jq -c '.recording | {state, last_error}')
    m=$(curl -sf "http://$METRICS/metrics" | grep -E '^sluice_recording_state\{' | grep 'path="fault/ro"' | grep 'state="error"' | awk '{print $2}' || true)
    sleep 2
    mark2=$(lines)
    chattr -i "$DIR" 2>/dev/null || true
    chmod u+w "$DIR"
    t1=$SECONDS
    wait_for 15 has_line "$mark2" "recording resumed" "fault/ro" || true
    l_res=$(found "$mark2" "recording resumed" "fault/ro")
    t_res=$((SECONDS - t1))
    o1=$(snap fault/ro)
    s1=$(snap fault/steady)
    own=$(undisturbed "$o0" "$o1" $((SECONDS - t0))) && ook=1 || ook=0
    oth=$(undisturbed "$s0" "$s1" $((SECONDS - t0))) && sok=1 || sok=0
    bad=0
    nfiles=0
    for f in "$DIR"/*.mp4; do
        [[ -e $f ]] || continue
        nfiles=$((nfiles + 1))
        ffprobe -v error -show_entries format=duration -of csv=p=0 "$f" >/dev/null 2>&1 || bad=$((bad + 1))
    done
    ok=$((${#l_err} > 0 && ${#l_res} > 0 && ook && sok && bad == 0))
    [[ $st == *'"error"'* ]] || ok=0
    [[ $m == 1 ]] || ok=0
    result "recording directory read-only ($HOW)" "recording stops with a log line, state error in the API and metrics, the live stream untouched; resumes in a new file within retry_after (5 s)" \
        "API during: $st; sluice_recording_state{state=\"error\"} ${m:-absent}; resumed ${t_res}s after the directory was writable; $nfiles files, $bad unreadable (ffprobe); fault/ro: $own" \
        "$l_err // ${l_res:-no 'recording resumed'}" "$oth" "$ok"
fi
stop rd_ro
stop pub_ro

# ---- 4. the recording disk fills up (root: a 1 MB tmpfs) -----------------------------------------
if ((ROOT)) && mount -t tmpfs -o size=1m sluice-faults "$WORK/full" 2>/dev/null; then
    TMPFS=$WORK/full
    log "recording: a 1 MB tmpfs fills up"
    mark=$(lines)
    s0=$(snap fault/steady)
    publish pub_full fault/full
    wait_for 15 online fault/full || true
    read_rtmp rd_full fault/full
    sleep 3
    o0=$(snap fault/full)
    t0=$SECONDS
    wait_for 40 has_line "$mark" "recording stopped, retrying" "fault/full" || true
    l_err=$(found "$mark" "recording stopped, retrying" "fault/full")
    t_err=$((SECONDS - t0))
    st=$(api "/v1/paths/fault/full" | jq -c '.recording | {state, last_error, dropped_fragments}')
    bad=0
    nfiles=0
    sizes=""
    for f in "$WORK"/full/fault/full/*.mp4; do
        [[ -e $f ]] || continue
        nfiles=$((nfiles + 1))
        sizes+="$(stat -c %s "$f") "
        ffprobe -v error -show_entries format=duration -of csv=p=0 "$f" >/dev/null 2>&1 || bad=$((bad + 1))
    done
    sleep 2
    mark2=$(lines)
    mount -o remount,size=64m "$TMPFS"
    t1=$SECONDS
    wait_for 20 has_line "$mark2" "recording resumed" "fault/full" || true
    l_res=$(found "$mark2" "recording resumed" "fault/full")
    t_res=$((SECONDS - t1))
    o1=$(snap fault/full)
    s1=$(snap fault/steady)
    own=$(undisturbed "$o0" "$o1" $((SECONDS - t0))) && ook=1 || ook=0
    oth=$(undisturbed "$s0" "$s1" $((SECONDS - t0))) && sok=1 || sok=0
    ok=$((${#l_err} > 0 && ${#l_res} > 0 && ook && sok && bad == 0 && nfiles > 0))
    result "recording disk full (1 MB tmpfs)" "recording stops with a log line (disk full), the file kept up to its last whole fragment, the live stream untouched; resumes in a new file once there is room" \
        "full after ~${t_err}s; API: $st; files when full: $nfiles (bytes: ${sizes% }), $bad unreadable (ffprobe); resumed ${t_res}s after the tmpfs grew; fault/full: $own" \
        "$l_err // ${l_res:-no 'recording resumed'}" "$oth" "$ok"
    stop rd_full
    stop pub_full
    sleep 1
else
    result "recording disk full" "recording error logged, retried" "skipped: needs root to mount a tmpfs" "–" "–" 1
fi

# ---- the steady path at the end, the server's exit -------------------------------------------
steady_alive="reader process $(alive rd_steady && echo alive || echo GONE), publisher process $(alive pub_steady && echo alive || echo GONE)"
stop rd_steady
stop pub_steady
kill -TERM "$SERVER"
SERVER_RC=0
for _ in $(seq 100); do kill -0 "$SERVER" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$SERVER" 2>/dev/null; then kill -KILL "$SERVER"; fi
wait "$SERVER" 2>/dev/null || SERVER_RC=$?
SERVER=""
panics=$(grep -ci panick "$LOG" || true)
result "whole run" "no panic; SIGTERM ends the server with exit code 0; fault/steady's reader never dropped" \
    "$steady_alive; exit code $SERVER_RC; $panics panics" "–" "–" $((SERVER_RC == 0 && panics == 0))

mkdir -p bench/results
OUT=bench/results/faults-$(date -u +%Y%m%d-%H%M).md
FAILED=0
{
    echo "# Faults: network drops, a blackholing destination, read-only and full recording disks"
    echo
    echo "Sluice at $REV (release build), ffmpeg $(ffmpeg -version | head -1 | cut -d' ' -f3), $(nproc --all) cores, on 127.0.0.1;"
    echo "a 640x360 ${FPS} fps 600 kb/s H.264 + AAC clip published in a loop. [rtmp] idle_timeout 10 s, grace_period ${GRACE}s, push and record defaults"
    echo "except fault/ro's 2 s segments. Throughout, fault/steady has its own publisher and an ffmpeg RTMP reader:"
    echo "\"others\" is whether the same publisher and reader sessions were there after the fault, and the reader's frames kept coming."
    echo
    echo "| fault | what the docs promise | observed | log line found | others (fault/steady) | result |"
    echo "|---|---|---|---|---|---|"
    for r in "${RESULTS[@]}"; do
        IFS=$'\x1f' read -r f p o l s ok <<<"$r"
        [[ $ok == 1 ]] || FAILED=$((FAILED + 1))
        echo "| $f | $p | ${o//|//} | \`${l//|//}\` | $s | $([[ $ok == 1 ]] && echo pass || echo '**FAIL**') |"
    done
    echo
    echo "**$((${#RESULTS[@]} - FAILED)) of ${#RESULTS[@]} pass.**"
    echo
    echo "Server log: $(wc -l <"$LOG") lines, $(grep -cE '\b(WARN|ERROR)\b' "$LOG" || true) WARN/ERROR. Relay events:"
    echo
    echo '```'
    grep -E "paused|resumed|closed|connection" "$WORK/relay.log" 2>/dev/null | head -20 || true
    echo '```'
} >"$OUT"
cat "$OUT"
echo "written to $OUT"
((FAILED == 0))
