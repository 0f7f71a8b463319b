#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), one after the other, with
# one job: the targets only have to avoid panicking, hanging (-timeout) or allocating without
# bound (-rss_limit_mb). Installs cargo-fuzz if missing; needs the nightly toolchain. Not part of
# scripts/test.sh (CI time budget).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Seeds: fuzz/corpus/<target>/ (not committed) is seeded from testdata/ and, when present,
# ../shared/corpus (or $RDBFERRY_CORPUS), skipping files over 200 KB. Crashes land in
# fuzz/artifacts/<target>/; minimise one with `cargo +nightly fuzz tmin <target> <file>` and add
# it to tests/fuzz_regressions.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(rdb_reader rdb_stream aof_reader manifest resp blobs jsonl_reader replica_handshake loadable)
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "the nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz
fi

corpus_src=("testdata")
shared="${RDBFERRY_CORPUS:-../shared/corpus}"
[ -d "$shared" ] && corpus_src+=("$shared")

seed() { # seed TARGET find-args...: copy matching small files into fuzz/corpus/TARGET
    local t="$1"
    shift
    mkdir -p "fuzz/corpus/$t"
    find "${corpus_src[@]}" -type f -size -200k "$@" -print0 |
        while IFS= read -r -d '' f; do
            cp "$f" "fuzz/corpus/$t/seed-$(cksum <"$f" | cut -d' ' -f1)"
        done
}
seed rdb_reader -name '*.rdb'
seed loadable -name '*.rdb'
seed aof_reader \( -name '*.aof' -o -name '*.protocol' \)
seed resp \( -name '*.aof' -o -name '*.protocol' \)
seed manifest -name '*.manifest'
seed jsonl_reader -name '*.jsonl'
# jsonl_reader: also a few lines at a time of our own JSONL (whole files exceed -max_len).
find testdata -name '*.jsonl' -print0 |
    while IFS= read -r -d '' f; do
        split -l 3 -a 3 "$f" "fuzz/corpus/jsonl_reader/lines-$(cksum <"$f" | cut -d' ' -f1)-"
    done
# rdb_stream: the first byte sets the chunk size, so prefix each RDB with a few.
mkdir -p fuzz/corpus/rdb_stream
for f in fuzz/corpus/rdb_reader/seed-*; do
    for c in 0 7 255; do
        { printf "\\x$(printf %02x "$c")"; cat "$f"; } >"fuzz/corpus/rdb_stream/$(basename "$f")-$c"
    done
done
mkdir -p fuzz/corpus/blobs
# replica_handshake: what a Redis replica sends the listener.
mkdir -p fuzz/corpus/replica_handshake
printf '*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nAUTH\r\n$8\r\npassword\r\n*3\r\n$8\r\nREPLCONF\r\n$14\r\nlistening-port\r\n$4\r\n6380\r\n*5\r\n$8\r\nREPLCONF\r\n$4\r\ncapa\r\n$3\r\neof\r\n$4\r\ncapa\r\n$6\r\npsync2\r\n*3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n' \
    >fuzz/corpus/replica_handshake/seed-handshake
printf 'PING\r\nREPLCONF capa eof\r\nSYNC\r\n' >fuzz/corpus/replica_handshake/seed-inline

for t in "${targets[@]}"; do
    echo "== $t: ${secs}s" >&2
    cargo +nightly fuzz run --debug-assertions "$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536
done
