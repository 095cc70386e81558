#!/usr/bin/env bash
# SRT ingest benchmark: Sluice and srt-live-transmit side by side, relaying the same stream.
#
# Each relay runs pinned to core 0; the sender and the reader (bench/loadgen's srt-bench, on
# libsrt) are pinned to core 1. Sluice ingests the SRT stream into its media core (MPEG-TS
# demux) and serves it to one SRT reader (MPEG-TS mux); srt-live-transmit relays it listener
# to listener. Reported per rate: whole-core CPU of core 0 (/proc/stat), throughput per core,
# the CPU ratio, and the end-to-end delay beyond the two hops' SRT latency.
#
# Usage: bench/srt_ingest.sh [SECONDS] [RATES_MBPS...]     e.g. bench/srt_ingest.sh 15 50 200 400
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-15}
shift || true
RATES=("${@:-50 200 400}")
read -r -a RATES <<<"${RATES[*]}"
LATENCY_MS=120
WORK=$(mktemp -d /tmp/sluice-srt-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

cargo build --release -q -p sluice -p sluice-loadgen
SLUICE=target/release/sluice
BENCH=target/release/srt-bench

cpu0() { awk '$1=="cpu0" {b=$2+$3+$4+$7+$8; t=b+$5+$6; print b, t}' /proc/stat; }

cat >"$WORK/sluice.toml" <<EOF
[log]
level = "warn"
[rtmp]
enabled = false
[http]
enabled = false
[srt]
listen = "127.0.0.1:19890"
[path_defaults.srt]
latency = "${LATENCY_MS}ms"
EOF

RESULTS=()
run_one() { # relay rate
    local relay=$1 rate=$2 pub_url read_url pid
    case $relay in
    sluice)
        taskset -c 0 "$SLUICE" --config "$WORK/sluice.toml" >"$WORK/sluice.log" 2>&1 &
        pid=$!
        pub_url="srt://127.0.0.1:19890?streamid=publish:live/bench&latency=${LATENCY_MS}000"
        read_url="srt://127.0.0.1:19890?streamid=read:live/bench&latency=${LATENCY_MS}000"
        ;;
    srt-live-transmit)
        taskset -c 0 srt-live-transmit -q \
            "srt://127.0.0.1:19891?mode=listener&latency=$LATENCY_MS" \
            "srt://127.0.0.1:19892?mode=listener&latency=$LATENCY_MS" >"$WORK/slt.log" 2>&1 &
        pid=$!
        pub_url="srt://127.0.0.1:19891?latency=${LATENCY_MS}000"
        read_url="srt://127.0.0.1:19892?latency=${LATENCY_MS}000"
        ;;
    esac
    sleep 1
    # srt-live-transmit opens its output once input flows, so the reader starts after the sender.
    taskset -c 1 "$BENCH" send "$pub_url" "$rate" $((SECS + 4)) >"$WORK/send.json" &
    local snd=$!
    sleep 0.5
    taskset -c 1 "$BENCH" recv "$read_url" $((SECS + 2)) >"$WORK/recv.json" &
    local rcv=$!
    sleep 2
    read -r b0 t0 < <(cpu0)
    sleep $((SECS - 2))
    read -r b1 t1 < <(cpu0)
    wait $rcv || true
    wait $snd || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local line
    line=$(python3 - "$relay" "$rate" "$((b1 - b0))" "$((t1 - t0))" "$(cat "$WORK/recv.json")" "$LATENCY_MS" <<'EOF'
import json, sys
relay, rate, db, dt, recv, lat = sys.argv[1:]
busy = int(db) / max(int(dt), 1)
r = json.loads(recv) if recv.strip() else {}
mbps = r.get("recv_mbps", 0.0)
print(json.dumps(dict(relay=relay, rate=float(rate), core_busy_pct=round(busy * 100, 1),
    recv_mbps=mbps, mbps_per_core=round(mbps / busy, 0) if busy > 0 else None,
    delay_p50_ms=r.get("delay_p50_ms"), delay_p95_ms=r.get("delay_p95_ms"),
    added_p50_ms=round(r.get("delay_p50_ms", 0) - 2 * int(lat), 1), frames=r.get("frames"))))
EOF
)
    echo "$line" >&2
    RESULTS+=("$line")
}

for rate in "${RATES[@]}"; do
    run_one sluice "$rate"
    run_one srt-live-transmit "$rate"
done

mkdir -p bench/results
OUT="bench/results/srt_ingest-$(date -u +%Y%m%d-%H%M).md"
printf '%s\n' "${RESULTS[@]}" >"$WORK/results.jsonl"
python3 - "$SECS" "$LATENCY_MS" "$WORK/results.jsonl" >"$OUT" <<'EOF'
import json, sys
secs, lat, path = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
print(f"# SRT ingest: Sluice vs srt-live-transmit ({secs} s per run, relay on core 0, sender and reader on core 1, latency {lat} ms per hop)\n")
print("| rate Mb/s | relay | received Mb/s | core 0 busy % | Mb/s per core | delay p50 ms | delay p95 ms | added beyond 2 x latency, p50 ms |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['rate']:.0f} | {r['relay']} | {r['recv_mbps']} | {r['core_busy_pct']} | {r['mbps_per_core']} | {r['delay_p50_ms']} | {r['delay_p95_ms']} | {r['added_p50_ms']} |")
print("\n## Ratios (Sluice / srt-live-transmit)\n")
print("| rate Mb/s | CPU | delay p50 |")
print("|---|---|---|")
by = {(r['rate'], r['relay']): r for r in rows}
for (rate, relay), r in by.items():
    if relay != 'sluice' or (rate, 'srt-live-transmit') not in by:
        continue
    g = by[(rate, 'srt-live-transmit')]
    cpu = r['core_busy_pct'] / g['core_busy_pct'] if g['core_busy_pct'] else float('nan')
    d = (r['delay_p50_ms'] or 0) / (g['delay_p50_ms'] or 1)
    print(f"| {rate:.0f} | {cpu:.2f} | {d:.2f} |")
EOF
cat "$OUT"
echo "written to $OUT"
