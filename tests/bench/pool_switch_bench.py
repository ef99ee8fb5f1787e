#!/usr/bin/env python3
"""server_bench against two builds of cnp-server, run alternately, medians side by side.

Benchmark (not a test). Each DIR holds a copy of bazel-bin/tests/bench/server_bench and its
server_bench.runfiles, built from one commit; the bench program is the same code in both, so
what differs is the cnp-server (and cnp-worker) it starts. Rounds alternate before/after so a
machine that gets busier or quieter affects both alike; each figure is the median of the rounds
and the ratio is after / before.

  tests/bench/pool_switch_bench.py BEFORE_DIR AFTER_DIR [--rounds=3] [--callers=1,256]
      [-- server_bench flags]

--callers adds, per round and build, a Validate-only run (few Map documents) for each number
of concurrent callers listed, 4800 calls in all.
"""
import os
import re
import statistics
import subprocess
import sys

MAP_ROW = re.compile(r"^cnp-server, 2 workers\s+([\d.]+)\s+([\d.]+)")
VALIDATE = re.compile(r"Validate, (\d+) concurrent callers.*p50 ([\d.]+) us, p99 ([\d.]+) us, ([\d.]+) calls/s")


def run_all(directory, flags, extra_callers):
    figures = run(directory, flags)
    for callers in extra_callers:
        validate = run(directory, flags + ["--docs=5000", f"--callers={callers}",
                                           f"--validate_calls={max(1, 4800 // callers)}"])
        figures.update({k: v for k, v in validate.items() if k.startswith("Validate")})
    return figures


def run(directory, flags):
    env = dict(os.environ, RUNFILES_DIR=os.path.join(directory, "server_bench.runfiles"))
    env.pop("TEST_SRCDIR", None)
    out = subprocess.run([os.path.join(directory, "server_bench")] + flags, env=env,
                         check=True, capture_output=True, text=True).stdout
    figures = {}
    for line in out.splitlines():
        if m := MAP_ROW.match(line):
            figures["Map docs/s (2 workers)"] = float(m.group(1))
            figures["Map CPU us/doc"] = float(m.group(2))
        if m := VALIDATE.search(line):
            figures[f"Validate p50 us ({m.group(1)} callers)"] = float(m.group(2))
            figures[f"Validate p99 us ({m.group(1)} callers)"] = float(m.group(3))
            figures[f"Validate calls/s ({m.group(1)} callers)"] = float(m.group(4))
    return figures


def main():
    args = sys.argv[1:]
    flags = []
    if "--" in args:
        flags = args[args.index("--") + 1:]
        args = args[:args.index("--")]
    rounds = 3
    extra_callers = []
    for a in list(args):
        if a.startswith("--rounds="):
            rounds = int(a.split("=", 1)[1])
            args.remove(a)
        elif a.startswith("--callers="):
            extra_callers = [int(c) for c in a.split("=", 1)[1].split(",") if c]
            args.remove(a)
    before_dir, after_dir = args
    before, after = [], []
    for r in range(rounds):
        before.append(run_all(before_dir, flags, extra_callers))
        after.append(run_all(after_dir, flags, extra_callers))
        print(f"round {r + 1}: before {before[-1]}\n         after  {after[-1]}", flush=True)
    print(f"\nmedian of {rounds} rounds      before       after   after/before")
    for key in before[0]:
        b = statistics.median(f[key] for f in before)
        a = statistics.median(f[key] for f in after)
        print(f"{key:32} {b:10.1f}  {a:10.1f}   {a / b:6.2f}x")


if __name__ == "__main__":
    main()
