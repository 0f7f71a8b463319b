#!/usr/bin/env bash
# `rdbferry sync` of a live source into an empty target vs a native replica's full sync of
# the same source, same run, as ratios (issue 11: at most 1.5x, aim 1.0x).
#
#   - native: an empty redis-server told `REPLICAOF` the source, timed from the command until
#     its link is up and it holds every key (with the default repl-diskless-load disabled,
#     and with on-empty-db, which rdbferry's full sync sets on its target);
#   - `rdbferry sync` (no --follow; --via auto takes the full sync into an empty target: the
#     target loads the relayed snapshot as rdbferry's replica), the whole process;
#   - `rdbferry sync --via commands` (RESTORE per key), for targets that rule the full sync out.
#
# The source loads the mixed dump (--keys, default 2,000,000; scripts/gen-bench-data.py, cached
# under .cache/bench/ as for scripts/bench.sh) and streams its snapshots diskless without delay
# (repl-diskless-sync yes, repl-diskless-sync-delay 0: the 7.0 default less the wait for
# more replicas). Each target is a fresh server with the same settings. Times are the minimum
# of --runs runs (default 3), the three ways taken in turn in each run.
#
# Usage: scripts/bench-sync.sh [--keys N] [--runs N] [--results PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

KEYS=2000000
RUNS=3
RESULTS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) KEYS="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --results) RESULTS="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-sync: unknown option $1" >&2; exit 2 ;;
    esac
done

die() { echo "bench-sync: $*" >&2; exit 1; }
note() { echo "bench-sync: $*" >&2; }
for c in cargo python3 redis-server redis-cli; do
    command -v "$c" >/dev/null 2>&1 || die "$c is required"
done

TMP="$(mktemp -d)"
# The pids of the servers started (in subshells too), stopped on exit.
cleanup() {
    local pid
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < <(cat "$TMP/pids" 2>/dev/null)
    rm -rf "$TMP"
}
trap cleanup EXIT

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
note "building rdbferry (release)"
cargo build --release --quiet
BIN="$TARGET/release/rdbferry"

DATA="$(python3 scripts/gen-bench-data.py mixed --keys "$KEYS" --server 7.0)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
cli() { redis-cli -p "$1" "${@:2}"; }

# start_server NAME [ARGS...]: a server on a free port in its own dir; prints its port.
start_server() {
    local name="$1"; shift
    local port dir
    port="$(free_port)"; dir="$TMP/$name-$port"; mkdir -p "$dir"
    redis-server --port "$port" --dir "$dir" --save "" --appendonly no \
        --repl-diskless-sync yes --repl-diskless-sync-delay 0 \
        --logfile "$dir/log" "$@" >/dev/null &
    local pid=$!
    echo "$pid" >> "$TMP/pids"
    until cli "$port" PING 2>/dev/null | grep -q PONG; do
        [ -e "/proc/$pid" ] || die "$name did not start (see $dir/log)"
        sleep 0.05
    done
    echo "$port"
}
stop_server() { cli "$1" SHUTDOWN NOSAVE >/dev/null 2>&1 || true; }

keys_of() { cli "$1" DBSIZE; }

ln -s "$DATA" "$TMP/source.rdb"
note "loading the source ($DATA)"
SRC="$(start_server source --dir "$TMP" --dbfilename source.rdb)"
WANT="$(keys_of "$SRC")"
note "source on port $SRC with $WANT keys"

# native [ARGS...]: a replica with these settings, timed until loaded.
native() {
    local t start
    t="$(start_server native "$@")"
    start="$(now)"
    cli "$t" REPLICAOF 127.0.0.1 "$SRC" >/dev/null
    while :; do
        if cli "$t" INFO replication | grep -q 'master_link_status:up' \
            && [ "$(keys_of "$t")" = "$WANT" ]; then break; fi
        sleep 0.02
    done
    python3 -c "print(f'{$(now) - $start:.3f}')"
    stop_server "$t"
}

ferry() {
    local t start
    t="$(start_server target)"
    start="$(now)"
    /usr/bin/time -f "%U %S" -o "$TMP/cpu" \
        "$BIN" sync --from "redis://127.0.0.1:$SRC" --to "redis://127.0.0.1:$t" -q "$@" \
        >/dev/null 2>"$TMP/ferry.err" || { cat "$TMP/ferry.err" >&2; die "sync failed"; }
    local took; took="$(python3 -c "print(f'{$(now) - $start:.3f}')")"
    [ "$(keys_of "$t")" = "$WANT" ] || die "the target has $(keys_of "$t") keys, not $WANT"
    echo "$took $(awk '{printf "%.2f", $1 + $2}' "$TMP/cpu")"
    stop_server "$t"
}

best() { printf '%s\n' "$@" | sort -g | head -1; }
N=(); D=(); F=(); C=()
for r in $(seq 1 "$RUNS"); do
    N+=("$(native)"); D+=("$(native --repl-diskless-load on-empty-db)")
    F+=("$(ferry)"); C+=("$(ferry --via commands)")
    note "run $r: native ${N[-1]} s (diskless load ${D[-1]} s), sync ${F[-1]% *} s, sync --via commands ${C[-1]% *} s"
done
n="$(best "${N[@]}")"; d="$(best "${D[@]}")"
f="$(best "${F[@]}")"; c="$(best "${C[@]}")"
fcpu="${f#* }"; f="${f% *}"; ccpu="${c#* }"; c="${c% *}"
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
OUT="### sync of a live source ($WANT keys, $(basename "$DATA")) into an empty target, best of $RUNS
| way | seconds | vs native replica | rdbferry CPU (user+sys) |
|---|---|---|---|
| native replica (REPLICAOF, until loaded; repl-diskless-load disabled, the default) | $n | 1.00x | |
| native replica, repl-diskless-load on-empty-db (as rdbferry sets it on its target) | $d | $(ratio "$d" "$n")x | |
| rdbferry sync (full sync, relayed) | $f | $(ratio "$f" "$n")x | $fcpu s |
| rdbferry sync --via commands | $c | $(ratio "$c" "$n")x | $ccpu s |
load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$OUT"
if [ -n "$RESULTS" ]; then printf '\n%s\n' "$OUT" >> "$RESULTS"; fi
