#!/usr/bin/env python3
"""Regenerate the RDB/AOF files under testdata/ from real Redis servers.

For each server version (7.0: the system `redis-server`; 6.2 and 6.0: the binaries that
scripts/fetch-old-servers.sh puts under .cache/servers/) this script starts a private server on a
free loopback port in a temp dir, writes the same deterministic data set (plus what only that
version can write), SAVEs, and copies the dump to testdata/redis-<v>/all-types.rdb. Next to it goes
all-types.rdb.expect.json: the server's own view of every key (TYPE, OBJECT ENCODING, PTTL, value)
and DEBUG DIGEST. The copied file is then loaded by a fresh server to check that it gives the same
digest. For 7.0 and 6.2 it also writes AOF test data (a multi-part appendonlydir, a single-file
appendonly.aof), both with an RDB preamble and a RESP tail.

Standard library only; the servers are spoken to in RESP over a socket, so binary keys and values
need no quoting. Every server is killed by pid on exit, also on errors and on SIGINT/SIGTERM.

    python3 scripts/gen-testdata.py              # all versions
    python3 scripts/gen-testdata.py --only 7.0   # one version (repeatable)

Stream ids and expire times are explicit, so two runs write the same data. The files still differ
byte for byte between runs (ctime and used-mem aux fields, consumer seen/delivery times).
"""

import argparse
import atexit
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTDATA = os.path.join(ROOT, "testdata")
GENERATOR = "scripts/gen-testdata.py"

# Far-future expire times (ms since the epoch) so that no key expires before the tests read it.
EXPIRE_2100 = 4102444800000  # 2100-01-01T00:00:00Z
EXPIRE_2100_MS = 4102444800123  # the same with a millisecond part
EXPIRE_2033 = 2000000000000
EXPIRE_2286_S = 9999999999  # EXPIREAT takes seconds

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

VALUE_ENCODING = 'bulk strings that are valid UTF-8 are JSON strings, others are {"hex": ...}'


def log(msg):
    print(f"gen-testdata: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# RESP client


class RedisError(Exception):
    pass


class Client:
    """A minimal RESP2 client: one socket, one command at a time."""

    def __init__(self, port, timeout=60):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    @staticmethod
    def _arg(a):
        if isinstance(a, bytes):
            return a
        if isinstance(a, str):
            return a.encode()
        if isinstance(a, (int, float)):
            return repr(a).encode() if isinstance(a, float) else str(a).encode()
        raise TypeError(f"bad argument {a!r}")

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = self._arg(a)
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2 :]
                return line
            self._fill()

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RedisError(f"unexpected reply line {line!r}")

    def cmd(self, *args):
        self.send(*args)
        reply = self.read()
        if isinstance(reply, RedisError):
            raise RedisError(f"{' '.join(repr(self._arg(a))[2:-1][:40] for a in args)[:200]}: {reply}")
        return reply

    def pipeline(self, commands):
        """Send many commands, then read all replies; raise on the first error."""
        for i in range(0, len(commands), 500):
            part = commands[i : i + 500]
            payload = []
            for args in part:
                payload.append(b"*%d\r\n" % len(args))
                for a in args:
                    b = self._arg(a)
                    payload.append(b"$%d\r\n%s\r\n" % (len(b), b))
            self.sock.sendall(b"".join(payload))
            for args in part:
                reply = self.read()
                if isinstance(reply, RedisError):
                    raise RedisError(f"{args[:3]}: {reply}")


# --------------------------------------------------------------------------------------------
# Servers

SERVERS = []  # every Server started, so that they can be killed on exit


def _kill_all():
    for s in list(SERVERS):
        s.kill()


atexit.register(_kill_all)


def _on_signal(signum, _frame):
    _kill_all()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def _port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port():
    """A free loopback port below 55535 whose port + 10000 (cluster bus) is free too."""
    for _ in range(200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port < 55535 and port != 6379 and _port_free(port) and _port_free(port + 10000):
            return port
    raise RuntimeError("no free port pair found")


def server_version(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    for tok in out.split():
        if tok.startswith("v="):
            return tok[2:]
    raise RuntimeError(f"cannot read the version of {binary}: {out!r}")


class Server:
    def __init__(self, binary, workdir, extra_args=()):
        self.binary = binary
        self.version = server_version(binary)
        self.version_tuple = tuple(int(x) for x in self.version.split(".")[:3])
        self.major = self.version_tuple[0]
        self.dir = workdir
        self.port = free_port()
        self.logfile = os.path.join(workdir, "redis.log")
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", workdir,
            "--logfile", self.logfile,
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "no",
            "--dbfilename", "dump.rdb",
        ]
        if self.major >= 7:
            # Only 7.0 knows the option; 6.x refuses unknown options at start-up.
            args += ["--enable-debug-command", "yes"]
        args += list(extra_args)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        SERVERS.append(self)
        deadline = time.time() + 10
        while True:
            try:
                c = Client(self.port, timeout=2)
                try:
                    if c.cmd("PING") == "PONG":
                        break
                finally:
                    c.close()
            except (OSError, RedisError, ConnectionError):
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server {self.version} did not answer PING on port "
                                   f"{self.port}; log:\n{self.read_log()}")
            time.sleep(0.05)
        self.c = Client(self.port)

    def read_log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return "(no log)"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self in SERVERS:
            SERVERS.remove(self)

    def shutdown_nosave(self):
        """SHUTDOWN NOSAVE: with appendonly on, the server fsyncs its AOF before it exits."""
        try:
            self.c.send("SHUTDOWN", "NOSAVE")
            self.c.read()
        except (OSError, ConnectionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def info(self, section):
        text = self.c.cmd("INFO", section).decode()
        out = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out


# --------------------------------------------------------------------------------------------
# The data set


def incompressible(n, seed):
    """n printable bytes that LZF cannot shrink (hex of a hash chain), deterministic."""
    out = b""
    h = seed.encode()
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h.hex().encode()
    return out[:n]


def populate(srv):
    """Write the all-types data set. Returns {(db, key): absolute expire ms} for keys with a TTL."""
    c = srv.c
    v7 = srv.major >= 7
    expires = {}

    def expire_at_ms(db, key, ms):
        c.cmd("PEXPIREAT", key, ms)
        expires[(db, key)] = ms

    c.cmd("SELECT", 0)

    # ---- strings
    ints = {
        "string:int:small": 42,
        "string:int:zero": 0,
        "string:int:neg": -5,
        "string:int:int8": -128,
        "string:int:int16": 32767,
        "string:int:int16min": -32768,
        "string:int:int32": 2147483647,
        "string:int:int32min": -2147483648,
        "string:int:over32": 4294967296,
        "string:int:int64max": INT64_MAX,
        "string:int:int64min": INT64_MIN,
    }
    for k, v in ints.items():
        c.cmd("SET", k, v)
    c.cmd("SET", "string:notint:leading-zero", "007")  # not int-encoded: would not round-trip
    c.cmd("SET", "string:notint:space", " 1")
    c.cmd("SET", "string:notint:over64", "12345678901234567890")
    c.cmd("SET", "string:embstr", "hello world")
    c.cmd("SET", "string:empty", "")
    c.cmd("SET", "string:raw", incompressible(100, "raw"))  # > 44 bytes: raw encoding, no LZF
    lzf = b"".join(b"line %05d: the quick brown fox jumps over the lazy dog\n" % i
                   for i in range(360))
    c.cmd("SET", "string:lzf", lzf[:20000])  # compressible, > 20 bytes: saved LZF-compressed
    c.cmd("SET", "string:lzf-short", b"a" * 64)  # smallest kind of LZF win
    c.cmd("SET", b"bin:\x00key\xff\xfe", b"\x00\x01\x02\xff\xfe value with NUL \x00 and 0xff")
    c.cmd("SET", b"invalid-utf8:\xc3\x28\xa0\xa1", b"\xe2\x28\xa1 \xf0\x90\x28\xbc \x80")
    c.cmd("SET", "unicode:ключ:键:🔑", "значение — 值 — 🎉 — e\u0301")

    # ---- lists
    c.cmd("RPUSH", "list:small", "a", "bb", "", "ccc", 1, -1, "x" * 40)
    # Integers at every width boundary of listpack (7/13/16/24/32/64-bit) and ziplist
    # (4-bit immediate 0..12, int8/16/24/32/64).
    list_ints = [0, 1, 12, 13, 63, 64, 127, 128, 255, 256, -1, -63, -64, -65, -128, -129,
                 4095, 4096, -4096, -4097, 32767, 32768, -32768, -32769,
                 8388607, 8388608, -8388608, -8388609,
                 2147483647, 2147483648, -2147483648, -2147483649,
                 4294967295, 4294967296, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1]
    c.cmd("RPUSH", "list:ints", *list_ints)
    c.pipeline([("RPUSH", "list:quicklist", *[f"item-{i:05d}" for i in range(j, j + 100)])
                for j in range(0, 2000, 100)])
    # Compressed quicklist nodes: the depth is fixed when a list is created, so set it only
    # around this key.
    c.cmd("CONFIG", "SET", "list-compress-depth", "1")
    c.pipeline([("RPUSH", "list:compressed",
                 *[f"compressible element number {i:05d}" for i in range(j, j + 100)])
                for j in range(0, 1500, 100)])
    c.cmd("CONFIG", "SET", "list-compress-depth", "0")
    if v7:
        # A PLAIN quicklist node (7.0+): normally only for elements over 1 GB, so lower the
        # threshold for this one push.
        c.cmd("RPUSH", "list:plain", "before-1", "before-2")
        c.cmd("DEBUG", "QUICKLIST-PACKED-THRESHOLD", "1024")
        c.cmd("RPUSH", "list:plain", b"P" * 4096)
        c.cmd("DEBUG", "QUICKLIST-PACKED-THRESHOLD", str(1 << 30))
        c.cmd("RPUSH", "list:plain", "after-1", 99)

    # ---- sets
    c.cmd("SADD", "set:intset16", 1, 2, 3, -7, 32767, -32768)
    c.cmd("SADD", "set:intset32", 1, 70000, -70000, 2147483647, -2147483648)
    c.cmd("SADD", "set:intset64", 1, -1, 2147483648, -2147483649, INT64_MAX, INT64_MIN)
    c.cmd("SADD", "set:small", "apple", "banana", "cherry", "", "1")
    c.cmd("SADD", "set:big", *[f"member-{i:04d}" for i in range(600)])
    c.cmd("SADD", "set:bigint", *range(0, 1200, 2))  # > 512 integers: hashtable

    # ---- sorted sets
    c.cmd("ZADD", "zset:small", 1, "one", 2.5, "two.five", -3, "minus3", "inf", "pinf",
          "-inf", "ninf", 0.1, "tenth", 0, "zero")
    big = []
    for i in range(200):
        score = ((i * 7919) % 2001 - 1000) / 8.0 + (i % 7) * 0.001
        big += [repr(score), f"zm-{i:04d}"]
    big += ["-inf", "big-ninf", "inf", "big-pinf", "1e300", "huge", "-2.5e-300", "tiny"]
    c.cmd("ZADD", "zset:big", *big)
    c.cmd("ZADD", "zset:longmember", 1, "short", 2, "m" * 100)  # member > 64 bytes: skiplist

    # ---- hashes
    c.cmd("HSET", "hash:small", "f1", "v1", "f2", 2, "f3", "", "num", -42, "big", INT64_MAX)
    c.pipeline([("HSET", "hash:big", *sum(([f"field-{i:04d}", f"value-{i}"]
                                           for i in range(j, j + 100)), []))
                for j in range(0, 600, 100)])
    c.cmd("HSET", "hash:bigvalue", "short", "x", "long", "L" * 100)
    c.cmd("HSET", b"hash:bin\xff", b"f\x00", b"\xff\xfe", "n", 7)

    # ---- streams (explicit ids: `*` would depend on the clock)
    s = "stream:s1"
    base = 1700000000000
    cmds = []
    for i in range(1, 251):
        sid = f"{base}-{i}" if i <= 200 else f"{base + i}-0"
        if i % 50 == 0:
            fields = ["n", i, "payload", f"entry-{i}", "extra", "different field set"]
        elif i % 37 == 0:
            fields = ["other", f"only-{i}"]
        else:
            fields = ["n", i, "payload", f"entry-{i}"]
        cmds.append(("XADD", s, sid, *fields))
    c.pipeline(cmds)
    c.cmd("XDEL", s, f"{base}-1", f"{base}-2", f"{base}-120", f"{base + 250}-0")
    c.cmd("XGROUP", "CREATE", s, "g1", "0")
    c.cmd("XREADGROUP", "GROUP", "g1", "alice", "COUNT", 10, "STREAMS", s, ">")
    c.cmd("XREADGROUP", "GROUP", "g1", "bob", "COUNT", 5, "STREAMS", s, ">")
    c.cmd("XACK", s, "g1", f"{base}-3", f"{base}-4", f"{base}-13")
    c.cmd("XCLAIM", s, "g1", "bob", 0, f"{base}-5", f"{base}-6")
    c.cmd("XGROUP", "CREATE", s, "g2", f"{base}-100")
    c.cmd("XREADGROUP", "GROUP", "g2", "carol", "COUNT", 3, "STREAMS", s, ">")
    if srv.version_tuple >= (6, 2):
        c.cmd("XGROUP", "CREATECONSUMER", s, "g2", "idle-consumer")  # a consumer with no PEL
    c.cmd("XGROUP", "CREATE", s, "g3", "$")  # a group with nothing delivered
    c.cmd("XGROUP", "CREATE", "stream:empty", "g0", "$", "MKSTREAM")
    c.cmd("XADD", "stream:trimmed", "5-1", "a", 1)
    c.cmd("XADD", "stream:trimmed", "5-2", "b", 2)
    c.cmd("XDEL", "stream:trimmed", "5-1", "5-2")
    # No deletions before the group reads: 7.0 can then track entries-read and lag.
    for i in range(1, 6):
        c.cmd("XADD", "stream:counted", f"1-{i}", "i", i)
    c.cmd("XGROUP", "CREATE", "stream:counted", "g", "0")
    c.cmd("XREADGROUP", "GROUP", "g", "dave", "COUNT", 2, "STREAMS", "stream:counted", ">")
    c.cmd("XACK", "stream:counted", "g", "1-1")
    c.cmd("XADD", "stream:setid", "10-1", "k", "v")
    c.cmd("XADD", "stream:setid", "20-1", "k", "v2")
    c.cmd("XDEL", "stream:setid", "10-1")
    if v7:
        c.cmd("XSETID", "stream:setid", "100-0", "ENTRIESADDED", 10, "MAXDELETEDID", "90-0")
    else:
        c.cmd("XSETID", "stream:setid", "100-0")

    # ---- TTLs (absolute, so the file is the same whenever it is made)
    c.cmd("SET", "ttl:string", "expires in 2100")
    expire_at_ms(0, "ttl:string", EXPIRE_2100)
    c.cmd("HSET", "ttl:hash", "f", "v")
    expire_at_ms(0, "ttl:hash", EXPIRE_2100_MS)
    c.cmd("RPUSH", "ttl:list", "a", "b")
    expire_at_ms(0, "ttl:list", EXPIRE_2033)
    c.cmd("SADD", "ttl:set", 1, 2, 3)
    c.cmd("EXPIREAT", "ttl:set", EXPIRE_2286_S)
    expires[(0, "ttl:set")] = EXPIRE_2286_S * 1000
    c.cmd("SET", "ttl:int", 12345)
    expire_at_ms(0, "ttl:int", EXPIRE_2100 + 1)

    # ---- other databases
    c.cmd("SELECT", 1)
    c.cmd("SET", "db1:string", "in db 1")
    c.cmd("RPUSH", "db1:list", 1, 2, 3)
    c.cmd("ZADD", "db1:zset", 1, "a")
    c.cmd("SET", "db1:ttl", "x")
    expire_at_ms(1, "db1:ttl", EXPIRE_2100)
    c.cmd("SELECT", 5)
    c.cmd("SET", "db5:string", "in db 5")
    c.cmd("HSET", "db5:hash", "a", 1, "b", 2)
    c.cmd("SADD", "db5:set", "x", "y")
    c.cmd("SELECT", 0)

    # ---- functions (7.0+)
    if v7:
        c.cmd("FUNCTION", "LOAD",
              "#!lua name=rdbferrylib\n"
              "redis.register_function('echo_first', function(keys, args) return args[1] end)\n")
    return expires


# --------------------------------------------------------------------------------------------
# Capturing the server's view


def digest(c):
    d = c.cmd("DEBUG", "DIGEST")  # a status reply on 7.0, a bulk string on some 6.x
    return d.decode() if isinstance(d, bytes) else d


def jb(b):
    """JSON form of a bulk string."""
    if isinstance(b, bytes):
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": b.hex()}
    if isinstance(b, list):
        return [jb(x) for x in b]
    return b


def pairs(flat):
    return [[jb(flat[i]), jb(flat[i + 1])] for i in range(0, len(flat), 2)]


def capture(srv, expires=None):
    """The server's view of all its data, as a JSON-ready dict."""
    c = srv.c
    v7 = srv.major >= 7
    dbsize = {}
    keys = []
    for db in range(16):
        c.cmd("SELECT", db)
        n = c.cmd("DBSIZE")
        if n == 0:
            continue
        dbsize[str(db)] = n
        names = set()
        cursor = b"0"
        while True:
            cursor, batch = c.cmd("SCAN", cursor, "COUNT", 1000)
            names.update(batch)
            if cursor == b"0":
                break
        for key in sorted(names):
            typ = c.cmd("TYPE", key)
            enc = c.cmd("OBJECT", "ENCODING", key).decode()
            pttl = c.cmd("PTTL", key)
            if v7:
                pexpiretime = c.cmd("PEXPIRETIME", key)
            elif pttl < 0:
                pexpiretime = -1
            else:
                # 6.x has no PEXPIRETIME; the generator knows what it set (None: set relatively).
                pexpiretime = (expires or {}).get((db, key.decode(errors="replace")))
            if typ == "string":
                value = jb(c.cmd("GET", key))
            elif typ == "list":
                value = jb(c.cmd("LRANGE", key, 0, -1))
            elif typ == "set":
                value = jb(sorted(c.cmd("SMEMBERS", key)))
            elif typ == "zset":
                value = pairs(c.cmd("ZRANGE", key, 0, -1, "WITHSCORES"))
            elif typ == "hash":
                flat = c.cmd("HGETALL", key)
                value = [[jb(f), jb(v)] for f, v in sorted(zip(flat[::2], flat[1::2]))]
            elif typ == "stream":
                entries = [[jb(eid), jb(fields)] for eid, fields in c.cmd("XRANGE", key, "-", "+")]
                groups = c.cmd("XINFO", "GROUPS", key)
                xpending = {}
                for g in groups:
                    gd = dict(zip(g[::2], g[1::2]))
                    name = gd[b"name"]
                    xpending[jb(name)] = jb(c.cmd("XPENDING", key, name))
                value = {
                    "entries": entries,
                    "xinfo_stream_full": jb(c.cmd("XINFO", "STREAM", key, "FULL")),
                    "xinfo_groups": jb(groups),
                    "xpending": xpending,
                }
            else:
                raise RuntimeError(f"unexpected type {typ} for {key!r}")
            keys.append({
                "db": db,
                "key": jb(key),
                "type": typ,
                "encoding": enc,
                "pttl": pttl,
                "pexpiretime": pexpiretime,
                "value": value,
            })
    c.cmd("SELECT", 0)
    functions = jb(c.cmd("FUNCTION", "LIST", "WITHCODE")) if v7 else []
    return {
        "generator": GENERATOR,
        "server_version": srv.version,
        "debug_digest": digest(c),
        "value_encoding": VALUE_ENCODING,
        "volatile_fields": "pttl, and seen-time/active-time/delivery-time/idle in streams, "
                           "depend on when the capture ran",
        "dbsize": dbsize,
        "keys": keys,
        "functions": functions,
    }


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.write("\n")
    log(f"wrote {os.path.relpath(path, ROOT)}")


def encodings_summary(data):
    seen = {}
    for k in data["keys"]:
        seen.setdefault(k["type"], set()).add(k["encoding"])
    return ", ".join(f"{t}: {'/'.join(sorted(e))}" for t, e in sorted(seen.items()))


def reload_digest(binary, files, tmp, extra_args=()):
    """Start a fresh server on copies of `files` (name -> source path); return its digest."""
    d = tempfile.mkdtemp(prefix="reload-", dir=tmp)
    for name, src in files.items():
        dst = os.path.join(d, name)
        if os.path.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    srv = Server(binary, d, extra_args)
    try:
        # Make sure loading finished (it is quick for these sizes, but be explicit).
        for _ in range(200):
            if srv.info("persistence").get("loading") == "0":
                break
            time.sleep(0.05)
        return digest(srv.c)
    finally:
        srv.kill()


# --------------------------------------------------------------------------------------------
# Generators


def gen_rdb(binary, outdir, tmp):
    work = tempfile.mkdtemp(prefix="rdb-", dir=tmp)
    srv = Server(binary, work)
    try:
        log(f"{srv.version} on port {srv.port}: writing all-types data")
        expires = populate(srv)
        data = capture(srv, expires)
        srv.c.cmd("SAVE")
    finally:
        srv.kill()
    os.makedirs(outdir, exist_ok=True)
    dst = os.path.join(outdir, "all-types.rdb")
    shutil.copyfile(os.path.join(work, "dump.rdb"), dst)
    got = reload_digest(binary, {"dump.rdb": dst}, tmp)
    data["reload_digest"] = got
    data["reload_digest_ok"] = got == data["debug_digest"]
    if not data["reload_digest_ok"]:
        raise RuntimeError(f"{dst}: a fresh server loads digest {got}, "
                           f"the writer had {data['debug_digest']}")
    write_json(dst + ".expect.json", data)
    log(f"{os.path.relpath(dst, ROOT)}: {os.path.getsize(dst)} bytes; {encodings_summary(data)}")
    return data


def aof_writes(srv):
    """Populate a few keys, rewrite the AOF (RDB preamble), then write a RESP tail."""
    c = srv.c
    c.cmd("SELECT", 0)
    c.cmd("SET", "aof:string", "before rewrite")
    c.cmd("SET", "aof:counter", 10)
    c.cmd("RPUSH", "aof:list", "a", "b", "c", 1, 2, 3)
    c.cmd("HSET", "aof:hash", "f1", "v1", "f2", "v2")
    c.cmd("SADD", "aof:set", 1, 2, 3)
    c.cmd("ZADD", "aof:zset", 1, "one", 2.5, "two.five")
    c.cmd("XADD", "aof:stream", "1-1", "f", "v")
    c.cmd("SET", "aof:to-delete", "gone soon")
    c.cmd("SET", b"aof:bin\x00\xff", b"\x00\xff")
    c.cmd("PEXPIREAT", "aof:string", EXPIRE_2100)
    c.cmd("SELECT", 3)
    c.cmd("SET", "aof:db3", "in db 3 (preamble)")
    c.cmd("SELECT", 0)
    c.cmd("BGREWRITEAOF")
    deadline = time.time() + 30
    while True:
        p = srv.info("persistence")
        if p.get("aof_rewrite_in_progress") == "0" and p.get("aof_rewrite_scheduled") == "0":
            break
        if time.time() > deadline:
            raise RuntimeError("BGREWRITEAOF did not finish in 30 s")
        time.sleep(0.05)
    if p.get("aof_last_bgrewrite_status") != "ok":
        raise RuntimeError(f"BGREWRITEAOF failed: {p}")
    # The RESP tail.
    c.cmd("SET", "aof:string", "after rewrite")
    c.cmd("PEXPIREAT", "aof:string", EXPIRE_2100_MS)
    c.cmd("INCR", "aof:counter")
    c.cmd("INCRBY", "aof:counter", 100)
    c.cmd("DEL", "aof:to-delete")
    c.cmd("SET", "aof:expire", "relative expire")
    c.cmd("EXPIRE", "aof:expire", 100000000)  # logged as an absolute PEXPIREAT
    c.cmd("MULTI")
    c.cmd("LPUSH", "aof:list", "in-multi")
    c.cmd("HSET", "aof:hash", "f3", "v3")
    c.cmd("SET", "aof:multi", "set in MULTI")
    c.cmd("EXEC")
    c.cmd("SELECT", 2)
    c.cmd("SET", "aof:db2", "in db 2 (tail)")
    c.cmd("RPUSH", "aof:db2:list", "x", "y")
    c.cmd("SELECT", 0)
    c.cmd("XADD", "aof:stream", "2-1", "g", "w")
    c.cmd("SREM", "aof:set", 2)
    c.cmd("ZINCRBY", "aof:zset", 1, "one")


def gen_aof(binary, outdir, tmp, multipart):
    work = tempfile.mkdtemp(prefix="aof-", dir=tmp)
    extra = ["--appendonly", "yes", "--aof-use-rdb-preamble", "yes", "--appendfsync", "always",
             "--appendfilename", "appendonly.aof"]
    if multipart:
        extra += ["--appenddirname", "appendonlydir"]
    srv = Server(binary, work, extra)
    try:
        log(f"{srv.version} on port {srv.port}: writing AOF data")
        aof_writes(srv)
        data = capture(srv)
        srv.shutdown_nosave()
    finally:
        srv.kill()
    os.makedirs(outdir, exist_ok=True)
    name = "appendonlydir" if multipart else "appendonly.aof"
    dst = os.path.join(outdir, name)
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    elif os.path.exists(dst):
        os.remove(dst)
    src = os.path.join(work, name)
    if multipart:
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
    got = reload_digest(binary, {name: dst}, tmp, extra)
    data["reload_digest"] = got
    data["reload_digest_ok"] = got == data["debug_digest"]
    data["aof"] = {
        "appendonly": "yes",
        "aof-use-rdb-preamble": "yes",
        "layout": "multi-part (manifest + base .rdb + incr .aof)" if multipart
        else "single file: RDB preamble, then RESP commands",
    }
    if not data["reload_digest_ok"]:
        raise RuntimeError(f"{dst}: a fresh server loads digest {got}, "
                           f"the writer had {data['debug_digest']}")
    write_json(dst + ".expect.json", data)
    log(f"{os.path.relpath(dst, ROOT)}: {encodings_summary(data)}")


def binaries():
    return {
        "7.0": shutil.which("redis-server") or "/usr/bin/redis-server",
        "6.2": os.environ.get("RDBFERRY_REDIS_62")
        or os.path.join(ROOT, ".cache/servers/redis-6.2/redis-server"),
        "6.0": os.environ.get("RDBFERRY_REDIS_60")
        or os.path.join(ROOT, ".cache/servers/redis-6.0/redis-server"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=["7.0", "6.2", "6.0"],
                    help="generate for this version only (repeatable)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (for debugging)")
    args = ap.parse_args()
    versions = args.only or ["7.0", "6.2", "6.0"]
    bins = binaries()
    for v in versions:
        if not os.access(bins[v], os.X_OK):
            sys.exit(f"gen-testdata: no Redis {v} binary at {bins[v]}; "
                     "run scripts/fetch-old-servers.sh first")
        got = server_version(bins[v])
        if not got.startswith(v + "."):
            sys.exit(f"gen-testdata: {bins[v]} is Redis {got}, expected {v}.x")
    tmp = tempfile.mkdtemp(prefix="rdbferry-gen-")
    try:
        for v in versions:
            outdir = os.path.join(TESTDATA, f"redis-{v}")
            gen_rdb(bins[v], outdir, tmp)
            if v == "7.0":
                gen_aof(bins[v], outdir, tmp, multipart=True)
            elif v == "6.2":
                gen_aof(bins[v], outdir, tmp, multipart=False)
    finally:
        _kill_all()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
