#!/usr/bin/env python3
"""Run a command; report its wall time and peak anonymous memory (python3 stdlib only).

Samples /proc/PID/status every 10 ms and keeps the largest RssAnon (anonymous resident
memory: heap, stacks, anonymous mmap; the pages of a memory-mapped input file are
file-backed and not counted). Also reports max_rss_kb, the kernel's exact peak of all
resident memory (ru_maxrss, file-backed pages included), from wait4(). A RssAnon peak shorter
than the sampling interval can be missed; max_rss_kb cannot, and bounds it from above (it also
counts the forked python before exec, about 14 MB, so small values of it mean nothing).

Usage: scripts/peak-rss.py [--no-sample] [--stdout FILE] -- CMD ARGS...
The command's stdout goes to FILE (/dev/null by default); its stderr is passed through.
--no-sample: only wait, for timing runs undisturbed by the sampler (rss_anon_kb is then 0).
Prints one JSON line on stdout, e.g.
  {"wall_s": 1.23, "cpu_s": 1.2, "rss_anon_kb": 5120, "max_rss_kb": 310000, "exit": 0}
and exits with the command's exit status.
"""

import json
import os
import subprocess
import sys
import time


def rss_anon_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def main():
    args = sys.argv[1:]
    stdout_path = "/dev/null"
    sample = True
    while args[:1] in (["--stdout"], ["--no-sample"]):
        if args[0] == "--no-sample":
            sample, args = False, args[1:]
        else:
            stdout_path, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit(__doc__)
    peak_anon = 0
    with open(stdout_path, "wb") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(args, stdout=out)
        while True:
            # wait4 rather than Popen.poll: it also gives the child's ru_maxrss and CPU time.
            pid, status, usage = os.wait4(p.pid, os.WNOHANG if sample else 0)
            if pid == p.pid:
                break
            peak_anon = max(peak_anon, rss_anon_kb(p.pid))
            time.sleep(0.01)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    p.returncode = code
    cpu = usage.ru_utime + usage.ru_stime
    print(json.dumps({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "rss_anon_kb": peak_anon,
                      "max_rss_kb": usage.ru_maxrss, "exit": code}), flush=True)
    sys.exit(0 if code == 0 else 1)


if __name__ == "__main__":
    main()
