#!/usr/bin/env bash
# Sweep of the corpus through `import --via full-sync` (not part of scripts/test.sh: about
# 3 minutes). For every RDB under $RDBFERRY_CORPUS (default ../shared/corpus) that `check`
# accepts: import it by full sync into one fresh Redis 7.0 and by commands into another, then
# compare their DEBUG DIGEST. Prints every file the full sync declined (with the reason), any
# digest difference, and any target that stopped: the last two must never happen.
#
#   scripts/corpus-fullsync.sh            (build first: cargo build --release)
set -uo pipefail
cd "$(dirname "$0")/.."
corpus="${RDBFERRY_CORPUS:-../shared/corpus}"
bin="${CARGO_TARGET_DIR:-target}/release/rdbferry"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }
tmp="$(mktemp -d)"
trap 'redis-cli -p "$p1" shutdown nosave >/dev/null 2>&1; redis-cli -p "$p2" shutdown nosave >/dev/null 2>&1; rm -rf "$tmp"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p1="$(free_port)"; p2="$(free_port)"
start() {
    rm -rf "$tmp/$1"; mkdir -p "$tmp/$1"
    redis-server --port "$1" --bind 127.0.0.1 --dir "$tmp/$1" --save '' --daemonize yes \
        --logfile "$tmp/$1/log" --enable-debug-command yes >/dev/null
    for _ in $(seq 50); do redis-cli -p "$1" ping >/dev/null 2>&1 && return; sleep 0.05; done
}
stop() { redis-cli -p "$1" shutdown nosave >/dev/null 2>&1; sleep 0.1; }
synced=0; differ=0; skipped=0; died=0
while IFS= read -r f; do
    "$bin" check -q "$f" >/dev/null 2>&1 || { skipped=$((skipped + 1)); continue; }
    start "$p1"; start "$p2"
    out="$("$bin" import "$f" --to "redis://127.0.0.1:$p1" --via full-sync -q --json --force --on-error skip 2>&1)"
    code=$?
    "$bin" import "$f" --to "redis://127.0.0.1:$p2" --via commands -q --force --on-error skip >/dev/null 2>&1
    if ! redis-cli -p "$p1" ping >/dev/null 2>&1; then
        echo "TARGET STOPPED: $f"; died=$((died + 1))
    elif [ "$code" -eq 0 ]; then
        synced=$((synced + 1))
        if [ "$(redis-cli -p "$p1" debug digest)" != "$(redis-cli -p "$p2" debug digest)" ]; then
            echo "DIGEST DIFFERS: $f"; differ=$((differ + 1))
        fi
    else
        echo "not synced: $f: $(echo "$out" | tail -1 | cut -c1-160)"
    fi
    stop "$p1"; stop "$p2"
done < <(find "$corpus" -name '*.rdb' | sort)
echo "synced $synced (digest differs on $differ), skipped $skipped (check fails), targets stopped $died"
[ "$differ" -eq 0 ] && [ "$died" -eq 0 ]
