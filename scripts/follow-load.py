#!/usr/bin/env python3
"""Load for the `follow` benchmarks of scripts/bench-follow.sh (standard library only).

  follow-load.py gen-aof N PATH
      Write an AOF of N writes (SET, INCR, RPUSH, HSET in turn, a MULTI/EXEC block every
      1000), as Redis writes it, to PATH.

  follow-load.py steady --source PORT --target PORT --rate R --seconds S
      Write R commands per second to the source (pipelined, in 10 ms slices), each slice ending
      with `SET follow:probe <ms since the epoch>`; meanwhile read the probe on the target every
      5 ms. The lag of a sample is now minus the newest probe the target holds (an upper bound:
      up to one slice more than the true lag). Prints one JSON line: writes, seconds, achieved
      rate, lag median and maximum in ms, samples.
"""

import json
import socket
import statistics
import sys
import threading
import time


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def command(i):
    k = i % 4
    if k == 0:
        return resp("SET", "s:%d" % (i % 100000), "v%d" % i)
    if k == 1:
        return resp("INCR", "c:%d" % (i % 1000))
    if k == 2:
        return resp("RPUSH", "l:%d" % (i % 1000), i)
    return resp("HSET", "h:%d" % (i % 1000), "f%d" % (i % 50), i)


def gen_aof(n, path):
    with open(path, "wb") as f:
        f.write(resp("SELECT", 0))
        buf = []
        for i in range(n):
            if i % 1000 == 999:
                buf.append(resp("MULTI") + command(i) + resp("EXEC"))
            else:
                buf.append(command(i))
            if len(buf) >= 10000:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def replies(self, n):
        """Read n simple replies (+OK, :n, $-1 or a short bulk); returns the last one."""
        last = None
        while n > 0:
            line_end = self.buf.find(b"\r\n")
            if line_end < 0:
                chunk = self.s.recv(1 << 16)
                if not chunk:
                    raise EOFError("connection closed")
                self.buf += chunk
                continue
            line = self.buf[:line_end]
            if line.startswith(b"$") and line != b"$-1":
                size = int(line[1:])
                need = line_end + 2 + size + 2
                while len(self.buf) < need:
                    chunk = self.s.recv(1 << 16)
                    if not chunk:
                        raise EOFError("connection closed")
                    self.buf += chunk
                last = self.buf[line_end + 2 : line_end + 2 + size]
                self.buf = self.buf[need:]
            else:
                if line.startswith(b"-"):
                    raise RuntimeError(line.decode())
                last = line
                self.buf = self.buf[line_end + 2 :]
            n -= 1
        return last


def steady(source, target, rate, seconds):
    stop = threading.Event()
    lags = []

    def probe():
        c = Conn(target)
        get = resp("GET", "follow:probe")
        while not stop.is_set():
            c.send(get)
            v = c.replies(1)
            if v and v != b"$-1":
                lags.append(time.time() * 1000 - int(v))
            time.sleep(0.005)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    w = Conn(source)
    per_slice = max(1, rate // 100)
    start = time.monotonic()
    i = writes = 0
    while time.monotonic() - start < seconds:
        slice_start = time.monotonic()
        cmds = [command(i + j) for j in range(per_slice - 1)]
        i += per_slice - 1
        cmds.append(resp("SET", "follow:probe", int(time.time() * 1000)))
        w.send(b"".join(cmds))
        w.replies(per_slice)
        writes += per_slice
        left = 0.01 - (time.monotonic() - slice_start)
        if left > 0:
            time.sleep(left)
    elapsed = time.monotonic() - start
    # Let the target catch up with the last probe before the samples end.
    time.sleep(1)
    stop.set()
    t.join()
    during = lags[: max(1, len(lags) - 150)]
    print(
        json.dumps(
            {
                "writes": writes,
                "seconds": round(elapsed, 2),
                "rate": round(writes / elapsed),
                "lag_ms_median": round(statistics.median(during), 1) if during else None,
                "lag_ms_max": round(max(during), 1) if during else None,
                "samples": len(during),
            }
        )
    )


def main():
    a = sys.argv[1:]
    if len(a) == 3 and a[0] == "gen-aof":
        gen_aof(int(a[1]), a[2])
    elif a and a[0] == "steady":
        opts = dict(zip(a[1::2], a[2::2]))
        steady(
            int(opts["--source"]),
            int(opts["--target"]),
            int(opts.get("--rate", 50000)),
            float(opts.get("--seconds", 60)),
        )
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
