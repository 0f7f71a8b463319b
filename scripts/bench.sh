#!/usr/bin/env bash
# Whole-process benchmarks of rdbferry on the same data as its peers, with ratios. Every time
# counts the whole process, start-up included.
#
#   1. Reading a file: redis-server start-up load time of an RDB (its log's "DB loaded from
#      disk: X seconds", and the wall time until PING answers) and redis-check-rdb, vs
#      `rdbferry check` (target: >= 10x faster than the load) and `rdbferry inspect` (target:
#      <= 1.2x check), and `cat` of the file to /dev/null (the page cache's read speed, which
#      check should approach on huge values).
#   2. Conversion on the mixed dump (--keys, default 2,000,000): `convert --format jsonl` and
#      `--format resp` to /dev/null, in MB/s of output and keys/s (target: >= 750 MB/s); `cat`
#      of the same output bytes to /dev/null, and both again into a file next to the dump
#      (rdbferry -o FILE, cat > FILE); and the fastest Rust peer, `rdb --format json` of the
#      `rdb` crate 0.4 (cargo install, into .cache/rdb-rs), to /dev/null through stdout, its
#      fastest way (target: >= 5x in wall time).
#   3. `convert --format jsonl` vs `rdb --command json` (PyPI rdbtools), both to /dev/null, on
#      mixed dumps written by Redis 6.2 (rdbtools reads RDB <= v9 only) of each size in
#      --rdbtools-keys (default 100000 and 1000000), in keys per second of the whole process
#      (target: >= 100x). rdbtools runs once per size (it takes minutes on 1M keys).
#   4. Peak anonymous memory (RssAnon sampled every 10 ms by scripts/peak-rss.py; the pages of
#      the memory-mapped input are file-backed and do not count) of check, inspect and convert
#      (jsonl and resp) on mixed, big-collections and huge-values. Target: < 32 MB.
#   5. A small file: check, inspect and convert of a 1 MB mixed dump (target: < 20 ms wall).
#   6. `rdbferry import` into an empty Redis 7.0 (fresh server per run; `--via auto` takes
#      the full sync there, and `--via commands` is timed too, for targets that rule it out)
#      vs the same server's start-up load of the same RDB (target: import <= 2x the load) and
#      vs `redis-cli --pipe` of the equivalent RESP (`convert --format resp`, target: import
#      >= 1.5x faster); then `rdbferry verify` of the file against the imported server
#      (target: <= 2x the import; `--via auto` compares a snapshot of the target, and
#      `--via commands`, key by key, is timed after the `--via commands` import), and the
#      import's peak anonymous memory (bounded whatever the file or value size).
#   7. `rdbferry follow`: catch-up of an AOF vs `redis-cli --pipe`, --exactly-once vs at least
#      once, lag and CPU under a steady write load, CPU idle (scripts/bench-follow.sh).
#   8. RDB writing (issue 12) on the mixed and big-collections dumps: `convert --format rdb`
#      of the same version (values copied byte for byte) vs `cat` of the file, to /dev/null
#      and to a file (target: at least half cat's speed); down-conversion 7.0 -> RDB 9
#      (`--rdb-version 9`) vs Redis 6.2's start-up load of the down-converted file (target:
#      >= 5x faster); and `import` of the 7.0 dump into an empty Redis 6.2 (a full sync,
#      down-converted on the fly; fresh server per run) vs that load (target: <= 1.5x).
# Every figure is printed, and written to benches/results/YYYY-MM-DD.md (or --results PATH)
# with the machine, the versions and the load average before and after.
#
# Data comes from scripts/gen-bench-data.py and is cached under .cache/bench/. Times are the
# minimum of --runs runs (default 3); CPU time (user+sys) of that run is shown too, since it
# is less disturbed than wall time when the machine is shared.
#
# Usage: scripts/bench.sh [--keys N] [--rdbtools-keys "N..."] [--runs N] [--skip-rdbtools]
#                         [--skip-rdb-rs] [--skip-huge] [--skip-big] [--skip-import]
#                         [--skip-follow] [--skip-rdb-write] [--results PATH]
# Needs: cargo, python3, redis-server and redis-cli (Debian: redis-server, redis-tools);
# fetches the Redis 6.2 binary (scripts/fetch-old-servers.sh) and rdbtools (pip, into
# .cache/rdbtools-venv) when the comparison with rdbtools runs, and installs the `rdb` crate
# (cargo install, into .cache/rdb-rs) when the comparison with it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

KEYS=2000000
RDBTOOLS_KEYS="100000 1000000"
SMALL_KEYS=6500  # about 1 MB
RUNS=3
SKIP_RDBTOOLS=0
SKIP_RDBRS=0
SKIP_HUGE=0
SKIP_BIG=0
SKIP_IMPORT=0
SKIP_FOLLOW=0
SKIP_RDBWRITE=0
RESULTS="benches/results/$(date -u +%Y-%m-%d).md"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) KEYS="$2"; shift 2 ;;
        --rdbtools-keys) RDBTOOLS_KEYS="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --skip-rdbtools) SKIP_RDBTOOLS=1; shift ;;
        --skip-rdb-rs) SKIP_RDBRS=1; shift ;;
        --skip-huge) SKIP_HUGE=1; shift ;;
        --skip-big) SKIP_BIG=1; shift ;;
        --skip-import) SKIP_IMPORT=1; shift ;;
        --skip-follow) SKIP_FOLLOW=1; shift ;;
        --skip-rdb-write) SKIP_RDBWRITE=1; shift ;;
        --results) RESULTS="$2"; shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "bench: unknown option $1" >&2; usage 2 ;;
    esac
done

die() { echo "bench: $*" >&2; exit 1; }
note() { echo "bench: $*" >&2; }
for c in cargo python3 redis-server redis-cli redis-check-rdb; do
    command -v "$c" >/dev/null 2>&1 || die "$c is required"
done

SERVERS=()  # pids of the servers this script started, stopped on exit
TMPDIRS=()
cleanup() {
    local pid
    for pid in "${SERVERS[@]+"${SERVERS[@]}"}"; do kill "$pid" 2>/dev/null || true; done
    if [ "${#TMPDIRS[@]}" -gt 0 ]; then rm -rf "${TMPDIRS[@]}"; fi
}
trap cleanup EXIT

# --- results --------------------------------------------------------------------------------
OUT="$(mktemp)"; TMPDIRS+=("$OUT")
row() { echo "$*" | tee -a "$OUT"; }          # a line for both the terminal and the file
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- build ----------------------------------------------------------------------------------
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
note "building rdbferry (release)"
cargo build --release --quiet
BIN="$TARGET/release/rdbferry"
[ -x "$BIN" ] || die "no binary at $BIN"

# --- data -----------------------------------------------------------------------------------
GEN="python3 scripts/gen-bench-data.py"
MIXED="$($GEN mixed --keys "$KEYS" --server 7.0)"
BIG=""; HUGE=""
[ "$SKIP_BIG" = 1 ] || BIG="$($GEN big-collections --server 7.0)"
[ "$SKIP_HUGE" = 1 ] || HUGE="$($GEN huge-values --server 7.0)"
SMALL="$($GEN mixed --keys "$SMALL_KEYS" --server 7.0)"
MIXED62=()
if [ "$SKIP_RDBTOOLS" = 0 ]; then
    bash scripts/fetch-old-servers.sh >&2
    for k in $RDBTOOLS_KEYS; do MIXED62+=("$($GEN mixed --keys "$k" --server 6.2)"); done
    VENV="$ROOT/.cache/rdbtools-venv"
    if [ ! -x "$VENV/bin/rdb" ]; then
        note "installing rdbtools into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check rdbtools python-lzf
    fi
fi
RDBRS="$ROOT/.cache/rdb-rs/bin/rdb"
if [ "$SKIP_RDBRS" = 0 ] && [ ! -x "$RDBRS" ]; then
    note "installing the rdb crate (0.4) into .cache/rdb-rs"
    cargo install --quiet --locked rdb --version '^0.4' --root "$ROOT/.cache/rdb-rs" >&2 \
        || cargo install --quiet rdb --version '^0.4' --root "$ROOT/.cache/rdb-rs" >&2
fi

# --- helpers --------------------------------------------------------------------------------
# measure CMD...: run CMD $RUNS times; sets WALL, CPU (user+sys of the fastest run).
measure() {
    local i j
    RUN_WALL=""
    for ((i = 0; i < RUNS; i++)); do
        j="$(python3 scripts/peak-rss.py --no-sample -- "$@")" || die "failed: $*"
        keep_best RUN "$j"
    done
    WALL="$RUN_WALL"; CPU="$RUN_CPU"
}
# peak CMD...: one run with the sampler; sets ANON_KB, MAXRSS_KB.
peak() {
    local j
    j="$(python3 scripts/peak-rss.py -- "$@")" || die "failed: $*"
    ANON_KB="$(jget "$j" rss_anon_kb)"; MAXRSS_KB="$(jget "$j" max_rss_kb)"
}
jget() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
# keep_best NAME JSON: NAME_WALL and NAME_CPU keep the fastest run (peak-rss.py's JSON) so far.
keep_best() {
    local wall_var="$1_WALL" cpu_var="$1_CPU" w
    w="$(jget "$2" wall_s)"
    if [ -z "${!wall_var:-}" ] || awk -v a="$w" -v b="${!wall_var}" 'BEGIN{exit !(a<b)}'; then
        printf -v "$wall_var" '%s' "$w"
        printf -v "$cpu_var" '%s' "$(jget "$2" cpu_s)"
    fi
}
calc() { awk "BEGIN{printf \"%.${2:-2}f\", $1}"; }
meta() { jget "$(cat "$1.json")" "$2"; }
mb() { calc "$1/1e6" 1; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN{print (r>=t) ? "meets" : "MISSES"}'; }

free_port() {
    python3 - <<'PY'
import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p != 6379 and 1024 < p < 55535:
        print(p); break
PY
}

# redis_load SERVER FILE: start SERVER on a copy-free link to FILE; sets LOAD_LOG_S (the log's
# figure) and LOAD_PING_S (start to first PONG: process start-up plus loading).
redis_load() {
    local server="$1" file="$2" dir port pid t0 t1 i=0
    dir="$(mktemp -d "${TMPDIR:-/tmp}/rdbferry-bench.XXXXXX")"; TMPDIRS+=("$dir")
    ln -s "$(readlink -f "$file")" "$dir/dump.rdb"
    port="$(free_port)"
    t0="$(date +%s.%N)"
    "$server" --port "$port" --bind 127.0.0.1 --dir "$dir" --dbfilename dump.rdb --save "" \
        --appendonly no --logfile "$dir/server.log" --proto-max-bulk-len 2gb >/dev/null 2>&1 &
    pid=$!; SERVERS+=("$pid")
    until [ "$(redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null)" = PONG ]; do
        kill -0 "$pid" 2>/dev/null || die "redis-server exited: $(tail -5 "$dir/server.log")"
        sleep 0.01
        i=$((i + 1)); [ "$i" -lt 60000 ] || die "redis-server did not load $file in 10 min"
    done
    t1="$(date +%s.%N)"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    LOAD_PING_S="$(calc "$t1-$t0" 3)"
    LOAD_LOG_S="$(sed -n 's/.*DB loaded from disk: \([0-9.]*\) seconds.*/\1/p' "$dir/server.log" | tail -1)"
    [ -n "$LOAD_LOG_S" ] || die "no 'DB loaded from disk' line in $dir/server.log"
    rm -rf "$dir"
}
redis_load_best() {
    local k best_log="" best_ping=""
    for ((k = 0; k < RUNS; k++)); do
        redis_load "$@"
        if [ -z "$best_log" ] || awk -v a="$LOAD_LOG_S" -v b="$best_log" 'BEGIN{exit !(a<b)}'; then
            best_log="$LOAD_LOG_S"
        fi
        if [ -z "$best_ping" ] || awk -v a="$LOAD_PING_S" -v b="$best_ping" 'BEGIN{exit !(a<b)}'; then
            best_ping="$LOAD_PING_S"
        fi
    done
    LOAD_LOG_S="$best_log"; LOAD_PING_S="$best_ping"
}

# start_server [BINARY]: an empty redis-server (default the system 7.0) on a free port; sets
# PORT and PID.
start_server() {
    local dir i=0
    dir="$(mktemp -d "${TMPDIR:-/tmp}/rdbferry-bench.XXXXXX")"; TMPDIRS+=("$dir")
    PORT="$(free_port)"
    "${1:-redis-server}" --port "$PORT" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
        --logfile "$dir/server.log" --proto-max-bulk-len 2gb --client-query-buffer-limit 4gb \
        >/dev/null 2>&1 &
    PID=$!; SERVERS+=("$PID")
    until [ "$(redis-cli -h 127.0.0.1 -p "$PORT" PING 2>/dev/null)" = PONG ]; do
        kill -0 "$PID" 2>/dev/null || die "redis-server exited: $(tail -5 "$dir/server.log")"
        sleep 0.01
        i=$((i + 1)); [ "$i" -lt 3000 ] || die "redis-server did not start"
    done
}
stop_server() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
declare -A LOADS=()

# --- header ---------------------------------------------------------------------------------
CPU_MODEL="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
MEM_GB="$(awk '/MemTotal/{printf "%.1f", $2/1048576}' /proc/meminfo)"
row "# rdbferry benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
row ""
row "- machine: $(nproc) CPUs, ${CPU_MODEL:-unknown CPU}, ${MEM_GB} GiB RAM, Linux $(uname -r)"
row "- load average before: $LOAD_BEFORE"
row "- rdbferry: $("$BIN" --version) (git $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ', with uncommitted changes')), $(rustc --version)"
row "- redis-server: $(redis-server --version)"
if [ "$SKIP_RDBTOOLS" = 0 ]; then
    row "- redis-server 6.2: $("$ROOT/.cache/servers/redis-6.2/redis-server" --version)"
    row "- rdbtools: $("$VENV/bin/pip" show rdbtools 2>/dev/null | sed -n 's/^Version: //p'), python-lzf $("$VENV/bin/pip" show python-lzf 2>/dev/null | sed -n 's/^Version: //p'), $("$VENV/bin/python" --version)"
fi
if [ "$SKIP_RDBRS" = 0 ]; then
    row "- rdb crate: $(sed -n 's/^"\(rdb [0-9.]*\) .*/\1/p' "$ROOT/.cache/rdb-rs/.crates.toml" | head -1) (cargo install, .cache/rdb-rs)"
fi
row "- options: --keys $KEYS --rdbtools-keys \"$RDBTOOLS_KEYS\" --runs $RUNS$([ "$SKIP_RDBTOOLS" = 1 ] && echo ' --skip-rdbtools')$([ "$SKIP_RDBRS" = 1 ] && echo ' --skip-rdb-rs')$([ "$SKIP_BIG" = 1 ] && echo ' --skip-big')$([ "$SKIP_HUGE" = 1 ] && echo ' --skip-huge')$([ "$SKIP_IMPORT" = 1 ] && echo ' --skip-import')"
row "- times: best of $RUNS runs (wall), with the CPU time (user+sys) of that run; whole processes, start-up included"
row ""
row "## Data"
row ""
row "| file | written by | keys | size |"
row "|---|---|---:|---:|"
for f in "$MIXED" "$BIG" "$HUGE" "$SMALL" "${MIXED62[@]+"${MIXED62[@]}"}"; do
    [ -n "$f" ] || continue
    row "| $(basename "$f") | redis $(meta "$f" server) | $(meta "$f" keys) | $(mb "$(stat -c %s "$f")") MB |"
done

# --- 1. load vs check -----------------------------------------------------------------------
row ""
row "## Reading a file: redis-server start-up load and redis-check-rdb vs rdbferry check and inspect"
row ""
row "cat is \`cat FILE > /dev/null\` of the same file: the speed of reading it from the page cache."
row ""
row "| file | redis load (log) | redis start to PONG | redis-check-rdb | cat | rdbferry check (CPU) | check MB/s | load / check | target 10x | inspect (CPU) | inspect / check | target <= 1.2x |"
row "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"
for f in "$MIXED" "$BIG" "$HUGE"; do
    [ -n "$f" ] || continue
    note "load vs check: $(basename "$f")"
    redis_load_best redis-server "$f"
    LOADS["$f"]="$LOAD_LOG_S"
    measure redis-check-rdb "$f"; RCR="$WALL"
    measure sh -c 'exec cat "$1" > /dev/null' sh "$f"; CAT="$WALL"
    measure "$BIN" check --quiet "$f"; CHECK="$WALL"; CHECK_CPU="$CPU"
    measure "$BIN" inspect --quiet "$f"; INSPECT="$WALL"; INSPECT_CPU="$CPU"
    size="$(stat -c %s "$f")"
    ratio="$(calc "$LOAD_LOG_S/$CHECK" 1)"
    ir="$(calc "$INSPECT/$CHECK" 2)"
    row "| $(basename "$f") | ${LOAD_LOG_S} s | ${LOAD_PING_S} s | ${RCR} s | ${CAT} s ($(calc "$size/1e6/$CAT" 0) MB/s) | ${CHECK} s (${CHECK_CPU} s) | $(calc "$size/1e6/$CHECK" 0) | ${ratio}x | $(verdict "$ratio" 10) | ${INSPECT} s (${INSPECT_CPU} s) | ${ir}x | $(awk -v r="$ir" 'BEGIN{print (r<=1.2) ? "meets" : "MISSES"}') |"
done

# --- 2. conversion speed --------------------------------------------------------------------
row ""
row "## Conversion: rdbferry convert vs cat of the same bytes, and vs the rdb crate"
row ""
n="$(meta "$MIXED" keys)"
row "On $(basename "$MIXED") ($n keys, $(mb "$(stat -c %s "$MIXED")") MB). To /dev/null unless said; cat is \`cat OUT > /dev/null\` (or \`> FILE\`) of the output convert wrote (written first, untimed); to a file means a new file next to the dump."
row ""
row "| command | output | wall (CPU) | MB/s out | keys/s | cat of the output | convert / cat | target 750 MB/s |"
row "|---|---:|---:|---:|---:|---:|---:|---|"
outdir="$(dirname "$MIXED")"
for fmt in jsonl resp; do
    note "convert --format $fmt: $(basename "$MIXED")"
    out="$outdir/bench-out.$fmt"; TMPDIRS+=("$out")
    "$BIN" convert --quiet --format "$fmt" -o "$out" "$MIXED"
    bytes="$(stat -c %s "$out")"
    measure "$BIN" convert --quiet --format "$fmt" -o /dev/null "$MIXED"; CW="$WALL"; CC="$CPU"
    measure sh -c 'exec cat "$1" > /dev/null' sh "$out"; CATW="$WALL"
    mbs="$(calc "$bytes/1e6/$CW" 0)"
    row "| convert --format $fmt | $(mb "$bytes") MB | ${CW} s (${CC} s) | $mbs | $(calc "$n/$CW" 0) | ${CATW} s | $(calc "$CW/$CATW" 1)x | $(verdict "$mbs" 750) |"
    eval "CONVERT_$fmt=$CW CONVERT_CPU_$fmt=$CC"
    measure "$BIN" convert --quiet --format "$fmt" -o "$out.copy" "$MIXED"; FW="$WALL"; FC="$CPU"
    measure sh -c 'exec cat "$1" > "$2"' sh "$out" "$out.copy"; FCAT="$WALL"
    rm -f "$out.copy" "$out"
    row "| convert --format $fmt, to a file | $(mb "$bytes") MB | ${FW} s (${FC} s) | $(calc "$bytes/1e6/$FW" 0) | $(calc "$n/$FW" 0) | ${FCAT} s | $(calc "$FW/$FCAT" 1)x | |"
done
if [ "$SKIP_RDBRS" = 0 ]; then
    note "rdb crate on $(basename "$MIXED")"
    measure sh -c 'exec "$1" --format json "$2" > /dev/null' sh "$RDBRS" "$MIXED"; PW="$WALL"; PC="$CPU"
    r="$(calc "$PW/$CONVERT_jsonl" 1)"
    row ""
    row "rdb crate \`rdb --format json FILE > /dev/null\` (its fastest way here; \`-o /dev/null\` is slower): ${PW} s (${PC} s CPU), $(calc "$n/$PW" 0) keys/s. rdbferry convert --format jsonl is **${r}x** faster in wall time ($(verdict "$r" 5) the 5x target), $(calc "$PC/$CONVERT_CPU_jsonl" 1)x in CPU time."
fi

# --- 3. rdbtools ----------------------------------------------------------------------------
if [ "$SKIP_RDBTOOLS" = 0 ]; then
    row ""
    row "## JSON conversion: rdbferry convert --format jsonl vs rdbtools rdb --command json"
    row ""
    row "Both read the same dump written by Redis 6.2 (rdbtools reads RDB <= v9 only) and write to /dev/null; whole processes, compared in keys per second. rdbtools runs once per file."
    row ""
    row "| file | keys | rdbtools wall (CPU) | rdbtools keys/s | rdbferry wall (CPU) | rdbferry keys/s | ratio (wall) | by CPU | target 100x |"
    row "|---|---:|---:|---:|---:|---:|---:|---:|---|"
    for f in "${MIXED62[@]}"; do
        n="$(meta "$f" keys)"
        note "rdbtools on $(basename "$f") (slow: a few thousand keys/s)"
        RT_RUNS="$RUNS"; RUNS=1
        measure "$VENV/bin/rdb" --command json -f /dev/null "$f"; RT="$WALL"; RT_CPU="$CPU"
        RUNS="$RT_RUNS"
        measure "$BIN" convert --quiet --format jsonl -o /dev/null "$f"; RF="$WALL"; RF_CPU="$CPU"
        ratio="$(calc "$RT/$RF" 1)"
        row "| $(basename "$f") | $n | ${RT} s (${RT_CPU} s) | $(calc "$n/$RT" 0) | ${RF} s (${RF_CPU} s) | $(calc "$n/$RF" 0) | **${ratio}x** | $(calc "$RT_CPU/$RF_CPU" 1)x | $(verdict "$ratio" 100) |"
    done
fi

# --- 4. memory ------------------------------------------------------------------------------
row ""
row "## Peak memory (RssAnon sampled every 10 ms; max RSS incl. the mapped file in brackets)"
row ""
row "| file | check | inspect | convert jsonl | convert resp | convert jsonl wall (CPU) | target < 32 MB |"
row "|---|---:|---:|---:|---:|---:|---|"
for f in "$MIXED" "$BIG" "$HUGE"; do
    [ -n "$f" ] || continue
    note "memory: $(basename "$f")"
    worst=0; cells=()
    for cmd in "check --quiet" "inspect --quiet" "convert --quiet --format jsonl -o /dev/null" \
        "convert --quiet --format resp -o /dev/null"; do
        # shellcheck disable=SC2086
        peak "$BIN" $cmd "$f"
        cells+=("$(calc "$ANON_KB/1024" 1) MB ($(calc "$MAXRSS_KB/1024" 0) MB)")
        [ "$ANON_KB" -gt "$worst" ] && worst="$ANON_KB"
    done
    RUNS_SAVED="$RUNS"; RUNS=1
    measure "$BIN" convert --quiet --format jsonl -o /dev/null "$f"
    RUNS="$RUNS_SAVED"
    row "| $(basename "$f") | ${cells[0]} | ${cells[1]} | ${cells[2]} | ${cells[3]} | ${WALL} s (${CPU} s) | $(awk -v k="$worst" 'BEGIN{print (k<32768) ? "meets" : "MISSES"}') |"
done

# --- 5. a small file ------------------------------------------------------------------------
row ""
row "## A small file: $(basename "$SMALL") ($(meta "$SMALL" keys) keys, $(mb "$(stat -c %s "$SMALL")") MB)"
row ""
row "Best of $((RUNS * 5)) runs; no thread pool is started for a file this small."
row ""
row "| command | wall (CPU) | target < 20 ms |"
row "|---|---:|---|"
RUNS_SAVED="$RUNS"; RUNS=$((RUNS * 5))
for cmd in "check --quiet" "inspect --quiet" "convert --quiet --format jsonl -o /dev/null" \
    "convert --quiet --format resp -o /dev/null"; do
    # shellcheck disable=SC2086
    measure "$BIN" $cmd "$SMALL"
    row "| ${cmd// --quiet/} | $(calc "$WALL*1000" 1) ms ($(calc "$CPU*1000" 1) ms) | $(awk -v w="$WALL" 'BEGIN{print (w<0.02) ? "meets" : "MISSES"}') |"
done
RUNS="$RUNS_SAVED"

# --- 6. import and verify -------------------------------------------------------------------
if [ "$SKIP_IMPORT" = 0 ]; then
    row ""
    row "## Import into an empty Redis 7.0, and verify"
    row ""
    row "Each import run goes into a fresh empty server; redis load is the start-up load of the same file (first section). redis-cli --pipe replays \`convert --format resp\` of the same file into a fresh server (the RESP file is written first, untimed)."
    row ""
    row "| file | redis load | import wall (CPU) | via | import / load | target <= 2x | redis-cli --pipe | pipe / import | target >= 1.5x | verify wall (CPU) | verify / import | target <= 2x | import peak RssAnon | --via commands wall (CPU) | commands / load | pipe / commands | verify --via commands wall (CPU) | its / commands import |"
    row "|---|---:|---:|---|---:|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"
    for f in "$MIXED" "$BIG" "$HUGE"; do
        [ -n "$f" ] || continue
        note "import and verify: $(basename "$f")"
        IMP_WALL=""; VER_WALL=""; CMD_WALL=""; CVER_WALL=""
        for ((k = 0; k < RUNS; k++)); do
            start_server
            summary="$(mktemp "${TMPDIR:-/tmp}/rdbferry-bench-summary.XXXXXX")"; TMPDIRS+=("$summary")
            j="$(python3 scripts/peak-rss.py --no-sample --stdout "$summary" -- "$BIN" import --quiet --json "$f" --to "redis://127.0.0.1:$PORT")" \
                || die "import of $f failed"
            VIA="$(jget "$(cat "$summary")" via)"
            keep_best IMP "$j"
            j="$(python3 scripts/peak-rss.py --no-sample -- "$BIN" verify --quiet "$f" --to "redis://127.0.0.1:$PORT")" \
                || die "verify of $f after the import found differences"
            keep_best VER "$j"
            stop_server
        done
        IMP="$IMP_WALL"; VER="$VER_WALL"
        for ((k = 0; k < RUNS; k++)); do
            start_server
            j="$(python3 scripts/peak-rss.py --no-sample -- "$BIN" import --quiet --via commands "$f" --to "redis://127.0.0.1:$PORT")" \
                || die "import --via commands of $f failed"
            keep_best CMD "$j"
            j="$(python3 scripts/peak-rss.py --no-sample -- "$BIN" verify --quiet --via commands "$f" --to "redis://127.0.0.1:$PORT")" \
                || die "verify --via commands of $f found differences"
            keep_best CVER "$j"
            stop_server
        done
        cbest="$CMD_WALL"; cvbest="$CVER_WALL"
        start_server
        peak "$BIN" import --quiet "$f" --to "redis://127.0.0.1:$PORT"
        stop_server
        resp="$(mktemp "${TMPDIR:-/tmp}/rdbferry-bench-resp.XXXXXX")"; TMPDIRS+=("$resp")
        "$BIN" convert --quiet --format resp -o "$resp" "$f"
        pbest=""
        for ((k = 0; k < RUNS; k++)); do
            start_server
            t0="$(date +%s.%N)"
            redis-cli -h 127.0.0.1 -p "$PORT" --pipe < "$resp" >/dev/null 2>&1 || die "redis-cli --pipe failed"
            t1="$(date +%s.%N)"
            stop_server
            w="$(calc "$t1-$t0" 3)"
            if [ -z "$pbest" ] || awk -v a="$w" -v b="$pbest" 'BEGIN{exit !(a<b)}'; then pbest="$w"; fi
        done
        rm -f "$resp"
        load="${LOADS[$f]}"
        r_load="$(calc "$IMP/$load" 2)"
        r_pipe="$(calc "$pbest/$IMP" 2)"
        r_ver="$(calc "$VER/$IMP" 2)"
        row "| $(basename "$f") | ${load} s | ${IMP} s (${IMP_CPU} s) | ${VIA} | ${r_load}x | $(awk -v r="$r_load" 'BEGIN{print (r<=2) ? "meets" : "MISSES"}') | ${pbest} s | ${r_pipe}x | $(verdict "$r_pipe" 1.5) | ${VER} s (${VER_CPU} s) | ${r_ver}x | $(awk -v r="$r_ver" 'BEGIN{print (r<=2) ? "meets" : "MISSES"}') | $(calc "$ANON_KB/1024" 1) MB | ${cbest} s (${CMD_CPU} s) | $(calc "$cbest/$load" 2)x | $(calc "$pbest/$cbest" 2)x | ${cvbest} s (${CVER_CPU} s) | $(calc "$cvbest/$cbest" 2)x |"
    done
fi

# --- 8. RDB writing (issue 12) -----------------------------------------------------------------
if [ "$SKIP_RDBWRITE" = 0 ]; then
    bash scripts/fetch-old-servers.sh >&2
    R62="$ROOT/.cache/servers/redis-6.2/redis-server"
    row ""
    row "## RDB writing: same-version copy vs cat, down-conversion 7.0 -> 9 and full sync into 6.2 vs 6.2's load"
    row ""
    row "copy: \`convert --format rdb\` (same version: values byte for byte) vs \`cat\` of the dump, both to /dev/null and to a new file next to the dump. down: \`convert --format rdb --rdb-version 9\` to /dev/null vs redis-server 6.2's start-up load (log figure) of the file it writes. import: \`rdbferry import\` of the 7.0 dump into an empty 6.2 (fresh server per run; \`via\` as its JSON report says) vs the same load."
    row ""
    row "| file | copy wall (CPU) | cat | cat / copy | target >= 0.5 | copy to a file | cat to a file | ratio | down 7.0->9 wall (CPU) | 6.2 load of its output | load / down | target >= 5x | import into 6.2 wall (CPU) | via | import / load | target <= 1.5x |"
    row "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---|"
    for f in "$MIXED" "$BIG"; do
        [ -n "$f" ] || continue
        note "rdb writing: $(basename "$f")"
        out="$(dirname "$f")/bench-out.rdb"; TMPDIRS+=("$out" "$out.v9")
        measure "$BIN" convert --quiet --format rdb -o /dev/null "$f"; CW="$WALL"; CC="$CPU"
        measure sh -c 'exec cat "$1" > /dev/null' sh "$f"; CATW="$WALL"
        measure "$BIN" convert --quiet --format rdb -o "$out" "$f"; FW="$WALL"
        measure sh -c 'exec cat "$1" > "$2"' sh "$f" "$out"; FCAT="$WALL"
        rm -f "$out"
        measure "$BIN" convert --quiet --format rdb --rdb-version 9 -o /dev/null "$f"; DW="$WALL"; DC="$CPU"
        "$BIN" convert --quiet --format rdb --rdb-version 9 -o "$out.v9" "$f"
        redis_load_best "$R62" "$out.v9"; L62="$LOAD_LOG_S"
        rm -f "$out.v9"
        IMP62_WALL=""
        for ((k = 0; k < RUNS; k++)); do
            start_server "$R62"
            summary="$(mktemp "${TMPDIR:-/tmp}/rdbferry-bench-summary.XXXXXX")"; TMPDIRS+=("$summary")
            j="$(python3 scripts/peak-rss.py --no-sample --stdout "$summary" -- "$BIN" import --quiet --json "$f" --to "redis://127.0.0.1:$PORT")" \
                || die "import of $f into 6.2 failed"
            VIA62="$(jget "$(cat "$summary")" via)"
            keep_best IMP62 "$j"
            stop_server
        done
        r_copy="$(calc "$CATW/$CW" 2)"; r_file="$(calc "$FCAT/$FW" 2)"
        r_down="$(calc "$L62/$DW" 1)"; r_imp="$(calc "$IMP62_WALL/$L62" 2)"
        row "| $(basename "$f") | ${CW} s (${CC} s) | ${CATW} s | ${r_copy} | $(verdict "$r_copy" 0.5) | ${FW} s | ${FCAT} s | ${r_file} | ${DW} s (${DC} s) | ${L62} s | **${r_down}x** | $(verdict "$r_down" 5) | ${IMP62_WALL} s (${IMP62_CPU} s) | ${VIA62} | ${r_imp}x | $(awk -v r="$r_imp" 'BEGIN{print (r<=1.5) ? "meets" : "MISSES"}') |"
    done
fi

# --- follow (issue 10): scripts/bench-follow.sh, into the same results --------------------------
if [ "$SKIP_FOLLOW" = 0 ]; then
    bash scripts/bench-follow.sh --runs "$RUNS" --results "$OUT"
fi

row ""
row "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
mkdir -p "$(dirname "$RESULTS")"
cp "$OUT" "$RESULTS"
note "results written to $RESULTS"
