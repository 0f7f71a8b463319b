#!/usr/bin/env bash
# Benchmarks of `rdbferry follow` (issue 10), against the physical limit on the same data:
#   1. Catch-up: an AOF of --writes writes (default 2,000,000; scripts/follow-load.py) applied
#      into an empty Redis 7.0 by `follow FILE --once`, at least once and --exactly-once, vs
#      `redis-cli --pipe` of the same file (a fresh server each run; minimum of --runs).
#      Targets: follow <= redis-cli --pipe; --exactly-once <= 1.3x at least once.
#   2. Steady state: a source with appendonly yes, appendfsync everysec, written at --rate
#      commands/s (pipelined, 10 ms slices) for --seconds, followed into a target; the lag
#      (age of the newest write the target holds, sampled every 5 ms) at the median and the
#      maximum, and rdbferry's CPU (user+sys from /proc) per second of the run. Targets: median
#      < 100 ms, max < 1 s. Then the source idles for 10 s: rdbferry's CPU over that time.
#   3. The same steady state for `rdbferry sync --follow` (issue 11): a source (no AOF) written
#      at --sync-rate commands/s (default 20,000) after rdbferry has taken its snapshot, the
#      lag the same way, rdbferry's CPU. Targets: median < 100 ms, max < 1 s.
# Figures are printed as Markdown rows, and appended to --results PATH when given.
#
# Usage: scripts/bench-follow.sh [--writes N] [--rate R] [--seconds S] [--runs N]
#                                [--sync-rate R] [--results PATH]
# Needs: cargo, python3, redis-server and redis-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
WRITES=2000000
RATE=50000
SYNC_RATE=20000
SECONDS_RUN=60
RUNS=3
RESULTS=""
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --writes) WRITES="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --sync-rate) SYNC_RATE="$2"; shift 2 ;;
        --seconds) SECONDS_RUN="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --results) RESULTS="$2"; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "bench-follow: unknown option $1" >&2; usage 2 ;;
    esac
done
die() { echo "bench-follow: $*" >&2; exit 1; }
note() { echo "bench-follow: $*" >&2; }
for c in cargo python3 redis-server redis-cli; do
    command -v "$c" >/dev/null 2>&1 || die "$c is required"
done

PIDS=()
TMP="$(mktemp -d "${TMPDIR:-/tmp}/rdbferry-bench-follow.XXXXXX")"
cleanup() {
    local p
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
row() { echo "$*"; if [ -n "$RESULTS" ]; then echo "$*" >> "$RESULTS"; fi; }
calc() { awk "BEGIN{printf \"%.${2}f\", $1}"; }
now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
note "building rdbferry (release)"
cargo build --release --quiet
BIN="$TARGET/release/rdbferry"

# start_server NAME ARGS...: a redis-server on a free port in $TMP/NAME; sets PORT, PID.
start_server() {
    local name="$1"; shift
    rm -rf "${TMP:?}/$name"; mkdir -p "$TMP/$name"
    PORT="$(free_port)"
    redis-server --port "$PORT" --bind 127.0.0.1 --dir "$TMP/$name" --save '' \
        --daemonize no "$@" > "$TMP/$name.log" 2>&1 &
    PID=$!; PIDS+=("$PID")
    for _ in $(seq 1 200); do
        redis-cli -p "$PORT" PING >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    die "redis-server did not start: $(tail -3 "$TMP/$name.log")"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ="$(getconf CLK_TCK)"

# --- 1. catch-up ----------------------------------------------------------------------------
AOF="$ROOT/.cache/bench/follow-$WRITES.aof"
if [ ! -s "$AOF" ]; then
    mkdir -p "$(dirname "$AOF")"
    note "writing an AOF of $WRITES writes"
    python3 scripts/follow-load.py gen-aof "$WRITES" "$AOF.tmp" && mv "$AOF.tmp" "$AOF"
fi
# best_of FN: the minimum wall time of $RUNS runs of FN, each into a fresh target on $PORT.
best_of() {
    local best="" i t0 t1 w
    for ((i = 0; i < RUNS; i++)); do
        start_server target
        t0="$(now)"
        "$1" >/dev/null 2>"$TMP/err" || die "failed: $1 ($(tail -3 "$TMP/err"))"
        t1="$(now)"
        [ "$(redis-cli -p "$PORT" GET c:1)" != "" ] || die "the target is empty after: $*"
        stop "$PID"
        w="$(calc "$t1-$t0" 3)"
        if [ -z "$best" ] || awk -v a="$w" -v b="$best" 'BEGIN{exit !(a<b)}'; then best="$w"; fi
    done
    BEST="$best"
}
note "catch-up: redis-cli --pipe"
pipe() { redis-cli -p "$PORT" --pipe < "$AOF"; }
at_least_once() { "$BIN" follow "$AOF" --to "redis://127.0.0.1:$PORT" --once --quiet; }
exactly_once() { "$BIN" follow "$AOF" --to "redis://127.0.0.1:$PORT" --once --exactly-once --quiet; }
best_of pipe
PIPE="$BEST"
note "catch-up: follow --once"
best_of at_least_once
ALO="$BEST"
note "catch-up: follow --once --exactly-once"
best_of exactly_once
EO="$BEST"
row ""
row "### follow: catch-up of an AOF of $WRITES writes into an empty Redis 7.0 (best of $RUNS)"
row ""
row "| redis-cli --pipe | follow --once | ratio pipe/follow (target >= 1) | --exactly-once | ratio EO/ALO (target <= 1.3) |"
row "| --- | --- | --- | --- | --- |"
row "| $PIPE s | $ALO s ($(calc "$WRITES/$ALO/1000" 0)k writes/s) | $(calc "$PIPE/$ALO" 2)x | $EO s | $(calc "$EO/$ALO" 2)x |"

# --- 2. steady state ------------------------------------------------------------------------
start_server source --appendonly yes --appendfsync everysec --aof-timestamp-enabled yes
SRC_PORT="$PORT"; SRC_DIR="$TMP/source"
start_server target
DST_PORT="$PORT"
"$BIN" follow "$SRC_DIR/appendonlydir" --to "redis://127.0.0.1:$DST_PORT" --quiet \
    2>"$TMP/follow.err" &
FPID=$!; PIDS+=("$FPID")
sleep 1
c0="$(cpu_ticks "$FPID")"
note "steady state: $RATE writes/s for $SECONDS_RUN s"
J="$(python3 scripts/follow-load.py steady --source "$SRC_PORT" --target "$DST_PORT" \
    --rate "$RATE" --seconds "$SECONDS_RUN")"
c1="$(cpu_ticks "$FPID")"
note "idle for 10 s"
sleep 10
c2="$(cpu_ticks "$FPID")"
kill -TERM "$FPID"; wait "$FPID" 2>/dev/null || true
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$J" "$1"; }
SECS="$(field seconds)"
row ""
row "### follow: steady state, a source written at $RATE commands/s (appendfsync everysec)"
row ""
row "| achieved rate | lag median (target < 100 ms) | lag max (target < 1000 ms) | samples | rdbferry CPU while writing | CPU idle (10 s) |"
row "| --- | --- | --- | --- | --- | --- |"
row "| $(field rate)/s | $(field lag_ms_median) ms | $(field lag_ms_max) ms | $(field samples) | $(calc "($c1-$c0)/$HZ/$SECS*100" 0)% of a core | $(calc "($c2-$c1)/$HZ" 2) s |"

# --- 3. sync --follow, steady state -----------------------------------------------------------
start_server sync-source --repl-diskless-sync-delay 0
SRC_PORT="$PORT"
start_server sync-target
DST_PORT="$PORT"
redis-cli -p "$SRC_PORT" SET follow:probe 0 >/dev/null
"$BIN" sync --from "redis://127.0.0.1:$SRC_PORT" --to "redis://127.0.0.1:$DST_PORT" --follow \
    --quiet 2>"$TMP/sync.err" &
SPID=$!; PIDS+=("$SPID")
# The snapshot is applied once the target holds the probe key.
for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$DST_PORT" EXISTS follow:probe)" = 1 ] && break
    sleep 0.1
done
[ "$(redis-cli -p "$DST_PORT" EXISTS follow:probe)" = 1 ] || die "sync took no snapshot: $(cat "$TMP/sync.err")"
# The probe of the snapshot is no sample: gone (on the target too) before the writes start.
redis-cli -p "$SRC_PORT" DEL follow:probe >/dev/null
for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$DST_PORT" EXISTS follow:probe)" = 0 ] && break
    sleep 0.1
done
c0="$(cpu_ticks "$SPID")"
note "sync --follow steady state: $SYNC_RATE writes/s for $SECONDS_RUN s"
J="$(python3 scripts/follow-load.py steady --source "$SRC_PORT" --target "$DST_PORT" \
    --rate "$SYNC_RATE" --seconds "$SECONDS_RUN")"
c1="$(cpu_ticks "$SPID")"
kill -TERM "$SPID"; wait "$SPID" 2>/dev/null || true
SECS="$(field seconds)"
row ""
row "### sync --follow: steady state, a source written at $SYNC_RATE commands/s"
row ""
row "| achieved rate | lag median (target < 100 ms) | lag max (target < 1000 ms) | samples | rdbferry CPU while writing |"
row "| --- | --- | --- | --- | --- |"
row "| $(field rate)/s | $(field lag_ms_median) ms | $(field lag_ms_max) ms | $(field samples) | $(calc "($c1-$c0)/$HZ/$SECS*100" 0)% of a core |"
