#!/usr/bin/env bash
# The fuzzing campaign of issue 17: every target run until it has done 10 M executions or
# 10 minutes in all (across sessions: fuzz/campaign-state.tsv keeps each target's totals), on
# its corpus under fuzz/corpus/<target>/ (seeded by fuzz/seed-corpus.sh), one target at a time,
# pinned to one core at the lowest priority.
#
# Per target: libFuzzer with -max_total_time=<what is left of SECONDS and of the 10 minutes>
# and -runs=<what is left of the 10 M>, -rss_limit_mb=2048, -timeout=25 (a hang is a finding);
# the executions (stat::number_of_executed_units), time, coverage and features at the end are
# recorded; a crash is minimised (cargo fuzz tmin), its stack written beside it under
# fuzz/artifacts/<target>/, and the campaign goes on with the next target. Then the corpus is
# minimised: the seeds (seed-*, real captures) are kept as they are, the fuzzer's own finds are
# merged over them (libFuzzer -merge=1, what `cargo fuzz cmin` runs) so only those adding
# coverage stay.
#
# Usage: fuzz/campaign.sh [SECONDS_PER_TARGET] [TARGETS...]
#   SECONDS_PER_TARGET   default 600 (at most what the target still needs of its 10 minutes)
#   TARGETS              default: every target, network parsers first; targets already at
#                        their goal are skipped unless named
#   STOP_AFTER=S         (env) start no new target S seconds after the campaign began
#   FORCE=1              (env) run named targets even past their goal, for SECONDS
#   CORPUS_KB=K          (env) a target's corpus above K KB after minimising is merged again
#                        with shorter finds (default 4096; fuzz/corpus stays under ~20 MB)
# Writes fuzz/campaign-<UTC date-time>.md and updates fuzz/campaign-state.tsv.
set -uo pipefail
cd "$(dirname "$0")"
FUZZ=$PWD
export RUSTC_BOOTSTRAP=1
GOAL_RUNS=10000000
GOAL_SECS=600
PER=${1:-600}
shift || true
ALL=(rtmp_chunk rtmp_handshake rtmp_sessions amf0 ts_demux webrtc_offer srt_streamid fmp4_stream
    fmp4_demux flv_tag codec_config http_range auth_header access_query signed_url jwt_token record_probe)
NAMED=$#
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")
STATE=$FUZZ/campaign-state.tsv
[ -f "$STATE" ] || printf 'target\texecutions\tseconds\tcrashes\tlast_run\n' >"$STATE"
STAMP=$(date -u +%Y%m%d-%H%M)
OUT=$FUZZ/campaign-$STAMP.md
LOGS=$FUZZ/target/campaign-logs/$STAMP
mkdir -p "$LOGS"
BEGAN=$(date +%s)
BIN=$FUZZ/target/x86_64-unknown-linux-gnu/release
RUN=(nice -n 19 taskset -c 1)
CHILD=
trap '[ -n "$CHILD" ] && kill "$CHILD" 2>/dev/null; exit 130' INT TERM

state_get() { # TARGET COLUMN(2=executions 3=seconds 4=crashes)
    awk -F'\t' -v t="$1" -v c="$2" '$1 == t {v = $c} END {print v + 0}' "$STATE"
}
state_put() { # TARGET EXECS SECS CRASHES
    local tmp
    tmp=$(mktemp)
    awk -F'\t' -v t="$1" '$1 != t' "$STATE" >"$tmp"
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(date -u +%FT%TZ)" >>"$tmp"
    mv "$tmp" "$STATE"
}

echo "building the fuzz targets (nice 19)..." >&2
nice -n 19 cargo fuzz build >"$LOGS/build.log" 2>&1 || { echo "cargo fuzz build failed, see $LOGS/build.log" >&2; }

{
    echo "# Fuzzing campaign $(date -u '+%Y-%m-%d %H:%M') UTC"
    echo
    echo "Issue 17 goal: every target ≥ 10 M executions or 10 minutes (cumulative over sessions, fuzz/campaign-state.tsv)."
    echo "One target at a time, \`nice -n 19 taskset -c 1\`, \`-rss_limit_mb=2048 -timeout=25\`, up to ${PER} s per target this run."
    echo "Host: $(nproc) cores, $(uname -r); $(cargo --version 2>/dev/null) (RUSTC_BOOTSTRAP=1); cargo-fuzz $(cargo fuzz --version 2>/dev/null | awk '{print $2}')."
    echo
    echo "| target | executions | seconds | exec/s | cov | ft | corpus files | corpus KB | crashes | total executions | total s | goal |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"
} >"$OUT"
FINDINGS=()

for t in "${TARGETS[@]}"; do
    if [ -n "${STOP_AFTER:-}" ] && [ $(($(date +%s) - BEGAN)) -ge "$STOP_AFTER" ]; then
        echo "STOP_AFTER reached: not starting $t" >&2
        echo "| $t | not run (time) | | | | | | | | $(state_get "$t" 2) | $(state_get "$t" 3) | |" >>"$OUT"
        continue
    fi
    done_runs=$(state_get "$t" 2); done_secs=$(state_get "$t" 3); crashes_before=$(state_get "$t" 4)
    if [ -z "${FORCE:-}" ] && { [ "$done_runs" -ge $GOAL_RUNS ] || [ "$done_secs" -ge $GOAL_SECS ]; }; then
        echo "$t: already at its goal ($done_runs executions, $done_secs s), skipped" >&2
        echo "| $t | skipped (at goal) | | | | | | | | $done_runs | $done_secs | ✅ |" >>"$OUT"
        continue
    fi
    secs=$PER; runs=$GOAL_RUNS
    if [ -z "${FORCE:-}" ]; then
        [ $((GOAL_SECS - done_secs)) -lt "$secs" ] && secs=$((GOAL_SECS - done_secs))
        runs=$((GOAL_RUNS - done_runs))
    fi
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(ls "artifacts/$t" | sort)
    log=$LOGS/$t.log
    echo "$(date -u +%T) $t: up to $secs s / $runs executions" >&2
    t0=$(date +%s.%N)
    "${RUN[@]}" cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -runs="$runs" -rss_limit_mb=2048 \
        -timeout=25 -print_final_stats=1 -print_pcs=0 >"$log" 2>&1 &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    CHILD=
    t1=$(date +%s.%N)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%d", b - a + 0.5}')
    execs=$(awk -F': *' '/stat::number_of_executed_units/ {v = $2} END {print v + 0}' "$log")
    if [ "$execs" = 0 ]; then # no final stats (killed): the last status line
        execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#'); execs=${execs:-0}
    fi
    fsecs=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | awk '{print $5}' | tail -1)
    [ -n "$fsecs" ] || fsecs=$wall
    last=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -1)
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last"); ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
    rate=$(awk -v e="$execs" -v s="$fsecs" 'BEGIN {printf "%d", (s > 0) ? e / s : 0}')

    # Findings: new artifacts (crash-, leak-, timeout-, oom-, slow-unit-).
    new=$(comm -13 <(echo "$before") <(ls "artifacts/$t" | sort) | grep -E '^(crash|leak|timeout|oom)-' || true)
    ncrash=0
    for a in $new; do
        ncrash=$((ncrash + 1))
        art=artifacts/$t/$a
        echo "$t: FINDING $art, minimising" >&2
        "${RUN[@]}" cargo fuzz tmin -r 2000 "$t" "$art" -- -rss_limit_mb=2048 -timeout=25 >"$LOGS/$t-tmin-$a.log" 2>&1 || true
        min=$(ls -t "artifacts/$t"/minimized-from-* 2>/dev/null | head -1)
        [ -n "$min" ] || min=$art
        "${RUN[@]}" env RUST_BACKTRACE=1 "$BIN/$t" -rss_limit_mb=2048 -timeout=25 "$min" >"$art.stack.txt" 2>&1 || true
        FINDINGS+=("$t|$art|$min")
    done
    [ "$rc" = 0 ] || [ "$ncrash" -gt 0 ] || echo "$t: libFuzzer exited $rc without an artifact, see $log" >&2

    # Corpus minimisation: seeds kept, the fuzzer's finds merged over them. A corpus still over
    # CORPUS_KB (default 4096) is merged again with its finds cut shorter (-max_len 16384, then
    # 8192, 4096): edge coverage stays, the hit-count features of long inputs go.
    if [ -x "$BIN/$t" ]; then
        for maxlen in "" 16384 8192 4096; do
            m=$(mktemp -d "$FUZZ/target/cmin-$t.XXXXXX")
            cp corpus/"$t"/seed-* "$m"/ 2>/dev/null || true
            if "${RUN[@]}" "$BIN/$t" -merge=1 ${maxlen:+-max_len=$maxlen} -rss_limit_mb=2048 -timeout=25 "$m" "corpus/$t" \
                >"$LOGS/$t-cmin${maxlen:+-$maxlen}.log" 2>&1; then
                rm -rf "corpus/$t" && mv "$m" "corpus/$t"
            else
                echo "$t: corpus merge failed, corpus left as it was ($LOGS/$t-cmin${maxlen:+-$maxlen}.log)" >&2
                rm -rf "$m"
                break
            fi
            [ "$(du -sk "corpus/$t" | cut -f1)" -le "${CORPUS_KB:-4096}" ] && break
        done
    fi
    files=$(find "corpus/$t" -type f | wc -l)
    kb=$(du -sk "corpus/$t" | cut -f1)
    tot_runs=$((done_runs + execs)); tot_secs=$((done_secs + fsecs))
    state_put "$t" "$tot_runs" "$tot_secs" $((crashes_before + ncrash))
    goal="❌ $((tot_runs * 100 / GOAL_RUNS))% runs, $((tot_secs * 100 / GOAL_SECS))% time"
    { [ $tot_runs -ge $GOAL_RUNS ] || [ $tot_secs -ge $GOAL_SECS ]; } && goal="✅"
    [ $ncrash -gt 0 ] && goal="$goal (stopped at a finding)"
    crash_cell=$ncrash
    [ $ncrash -gt 0 ] && crash_cell="$ncrash: $(echo $new | tr ' ' ',')"
    echo "| $t | $execs | $fsecs | $rate | ${cov:-?} | ${ft:-?} | $files | $kb | $crash_cell | $tot_runs | $tot_secs | $goal |" >>"$OUT"
    echo "$(date -u +%T) $t: $execs executions in $fsecs s ($rate/s), cov ${cov:-?} ft ${ft:-?}, corpus $files files $kb KB, findings $ncrash" >&2
done

{
    echo
    echo "Corpus in all: $(du -sk corpus | cut -f1) KB in $(find corpus -type f | wc -l) files."
    echo
    if [ ${#FINDINGS[@]} -gt 0 ]; then
        echo "## Findings"
        for f in "${FINDINGS[@]}"; do
            IFS='|' read -r t art min <<<"$f"
            echo
            echo "### $t: \`$art\`"
            echo
            echo "Minimised: \`$min\` ($(stat -c %s "$FUZZ/$min") bytes): \`$(xxd -p "$FUZZ/$min" | tr -d '\n' | cut -c1-400)\`"
            echo
            echo '```'
            grep -E 'panicked|ERROR|SUMMARY|^ +[0-9]+: |at \./|at /work' "$FUZZ/$art.stack.txt" | head -40
            echo '```'
        done
    else
        echo "No findings in this run."
    fi
    echo
    echo "Logs: fuzz/target/campaign-logs/$STAMP/. Resume: \`fuzz/campaign.sh\` (targets at their goal are skipped)."
} >>"$OUT"
echo "summary: $OUT" >&2
