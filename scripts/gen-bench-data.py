#!/usr/bin/env python3
"""Generate benchmark RDB files with a real redis-server (python3 stdlib only).

Each dataset is written as RESP into `redis-cli --pipe` against a private redis-server (free
loopback port, temp dir, never 6379), saved with SAVE, and cached under .cache/bench/ (never
committed). A file already in the cache is reused unless --force is given.

Datasets:
  mixed            --keys N small keys (default 2,000,000 ~ 300 MB): 60% strings of ~100 bytes,
                   10% each of small hashes, lists, sets (half intset, half strings), zsets;
                   20% of keys carry a TTL. -> .cache/bench/mixed-N-<ver>.rdb
  big-collections  200 collections of 50,000 elements: 50 each of lists, hashes, sets, zsets.
                   -> .cache/bench/big-collections-<ver>.rdb
  huge-values      one 1 GiB string (random bytes, so LZF leaves it raw) and one list of
                   10,000,000 elements. -> .cache/bench/huge-values-<ver>.rdb
                   Made with redis too: the server is started with proto-max-bulk-len 2gb and
                   the string is built with APPEND in 1 MiB chunks, so no single request is big.
                   Needs about 2.5 GB of RAM in the server while it runs.

<ver> is 7.0 (Debian's redis-server) or 6.2 (.cache/servers/redis-6.2/redis-server from
scripts/fetch-old-servers.sh); rdbtools reads RDB <= v9 only, so it is compared on the 6.2 files.
Content is deterministic (fixed seeds; TTLs are absolute times in 2100), so two runs with the
same arguments give the same keys and values.

Usage:
  scripts/gen-bench-data.py mixed --keys 200000 --server 7.0 --server 6.2
  scripts/gen-bench-data.py big-collections huge-values
Prints the path of every file it made or found, one per line, on stdout.
"""

import argparse
import base64
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache", "bench")
SERVERS = {
    "7.0": "redis-server",
    "6.2": os.path.join(ROOT, ".cache", "servers", "redis-6.2", "redis-server"),
}
# Absolute expiry times in 2100: deterministic and never in the past.
TTL_BASE_MS = 4102444800000


def log(msg):
    print(f"gen-bench-data: {msg}", file=sys.stderr, flush=True)


def free_port():
    """A free loopback port below 55535 (cluster bus headroom), never 6379."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 6379 and 1024 < port < 55535:
            return port


class Server:
    """A private redis-server in a temp dir; stopped by pid."""

    def __init__(self, binary, extra=()):
        self.dir = tempfile.mkdtemp(prefix="rdbferry-gen-")
        self.port = free_port()
        self.log = os.path.join(self.dir, "server.log")
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", self.dir, "--dbfilename", "dump.rdb", "--save", "",
            "--appendonly", "no", "--logfile", self.log, "--daemonize", "no",
            *extra,
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"redis-server exited: {open(self.log).read()[-2000:]}")
            if self.cli("PING", check=False).strip() == "PONG":
                return
            time.sleep(0.05)
        self.stop()
        raise SystemExit("redis-server did not answer PING in 20 s")

    def cli(self, *args, check=True):
        r = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True, text=True,
        )
        if check and r.returncode != 0:
            raise SystemExit(f"redis-cli {' '.join(args)}: {r.stderr}")
        return r.stdout

    def version(self):
        for line in self.cli("INFO", "server").splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
        return "?"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def pipe(server, chunks):
    """Write an iterable of RESP byte chunks through `redis-cli --pipe`; fail on any error."""
    p = subprocess.Popen(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(server.port), "--pipe"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    buf = []
    size = 0
    for c in chunks:
        buf.append(c)
        size += len(c)
        if size >= 1 << 20:
            p.stdin.write(b"".join(buf))
            buf, size = [], 0
    if buf:
        p.stdin.write(b"".join(buf))
    p.stdin.close()
    out = p.stdout.read().decode(errors="replace")
    p.wait()
    summary = [line for line in out.splitlines() if line.startswith("errors:")]
    if p.returncode != 0 or not summary or not summary[-1].startswith("errors: 0,"):
        raise SystemExit(f"redis-cli --pipe failed:\n{out[-3000:]}")
    log(summary[-1])


def text(rng, n):
    """n printable bytes of random content (LZF finds nothing to compress in it)."""
    return base64.b64encode(rng.randbytes(n * 3 // 4 + 3))[:n]


def gen_mixed(keys, seed=1):
    """The mixed dataset. Sizes tuned so 2M keys give a file of about 300 MB."""
    rng = random.Random(seed)
    for i in range(keys):
        r = rng.random()
        ttl = rng.random() < 0.2
        if r < 0.60:
            key = b"str:%09d" % i
            yield resp(b"SET", key, text(rng, rng.randint(80, 120)))
        elif r < 0.70:
            key = b"hash:%09d" % i
            args = [b"HSET", key]
            for f in range(rng.randint(3, 8)):
                args += [b"field%d" % f, text(rng, rng.randint(10, 30))]
            yield resp(*args)
        elif r < 0.80:
            key = b"list:%09d" % i
            yield resp(b"RPUSH", key, *[text(rng, rng.randint(10, 30)) for _ in range(rng.randint(4, 12))])
        elif r < 0.90:
            key = b"set:%09d" % i
            n = rng.randint(4, 12)
            if rng.random() < 0.5:
                members = [b"%d" % rng.randint(0, 1 << 40) for _ in range(n)]
            else:
                members = [text(rng, rng.randint(10, 24)) for _ in range(n)]
            yield resp(b"SADD", key, *members)
        else:
            key = b"zset:%09d" % i
            args = [b"ZADD", key]
            for _ in range(rng.randint(4, 12)):
                args += [b"%.3f" % (rng.random() * 1e6), text(rng, rng.randint(8, 20))]
            yield resp(*args)
        if ttl:
            yield resp(b"PEXPIREAT", key, TTL_BASE_MS + i)


def gen_big_collections(per=50_000, count=200, batch=1000, seed=2):
    """count collections of per elements each, types in turn."""
    rng = random.Random(seed)
    kinds = [b"list", b"hash", b"set", b"zset"]
    for c in range(count):
        kind = kinds[c % 4]
        key = b"big:%s:%03d" % (kind, c)
        for start in range(0, per, batch):
            n = min(batch, per - start)
            if kind == b"list":
                yield resp(b"RPUSH", key, *[text(rng, 16) for _ in range(n)])
            elif kind == b"hash":
                args = [b"HSET", key]
                for j in range(start, start + n):
                    args += [b"f%07d" % j, text(rng, 16)]
                yield resp(*args)
            elif kind == b"set":
                yield resp(b"SADD", key, *[b"m%07d:%s" % (j, text(rng, 8)) for j in range(start, start + n)])
            else:
                args = [b"ZADD", key]
                for j in range(start, start + n):
                    args += [b"%d" % rng.randint(0, 1 << 30), b"m%07d" % j]
                yield resp(*args)


def gen_huge(string_bytes=1 << 30, list_len=10_000_000, seed=3):
    rng = random.Random(seed)
    chunk = 1 << 20
    for _ in range(string_bytes // chunk):
        yield resp(b"APPEND", b"huge:string", rng.randbytes(chunk))
    batch = 10_000
    for start in range(0, list_len, batch):
        yield resp(b"RPUSH", b"huge:list", *[b"%d" % j for j in range(start, start + batch)])


def make(name, ver, gen, extra=(), force=False):
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"{name}-{ver}.rdb")
    meta = path + ".json"
    if os.path.exists(path) and os.path.exists(meta) and not force:
        log(f"{path}: cached")
        return path
    binary = SERVERS[ver]
    if shutil.which(binary) is None and not os.access(binary, os.X_OK):
        raise SystemExit(f"no redis-server for {ver} at {binary} (run scripts/fetch-old-servers.sh)")
    t0 = time.time()
    srv = Server(binary, extra)
    try:
        version = srv.version()
        log(f"{name}: writing into redis {version} on port {srv.port}")
        pipe(srv, gen())
        dbsize = int(srv.cli("DBSIZE").strip())
        srv.cli("SAVE")
        tmp = path + ".tmp"
        shutil.move(os.path.join(srv.dir, "dump.rdb"), tmp)
        os.replace(tmp, path)
    finally:
        srv.stop()
    info = {
        "dataset": name, "server": version, "keys": dbsize,
        "bytes": os.path.getsize(path), "seconds": round(time.time() - t0, 1),
    }
    with open(meta, "w") as f:
        json.dump(info, f)
    log(f"{path}: {info}")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", choices=["mixed", "big-collections", "huge-values"])
    ap.add_argument("--keys", type=int, default=2_000_000, help="keys of the mixed dataset")
    ap.add_argument("--server", action="append", choices=["7.0", "6.2"],
                    help="server(s) that write the files (repeatable; default 7.0)")
    ap.add_argument("--force", action="store_true", help="regenerate even if cached")
    a = ap.parse_args()
    for ver in a.server or ["7.0"]:
        for d in a.datasets:
            if d == "mixed":
                p = make(f"mixed-{a.keys}", ver, lambda: gen_mixed(a.keys), force=a.force)
            elif d == "big-collections":
                p = make("big-collections", ver, gen_big_collections, force=a.force)
            else:
                p = make("huge-values", ver, gen_huge,
                         extra=("--proto-max-bulk-len", "2gb"), force=a.force)
            print(p, flush=True)


if __name__ == "__main__":
    main()
