"""Index-build speed as CouchDB sees it: map_doc lines sent one at a time, each reply awaited
(CouchDB never pipelines), through cnp-adapter → cnp-server → cnp-worker, next to a pure-Python
line-protocol query server driven the same way in the same run.

Prints docs/s, wall µs/doc and CPU µs/doc (user+sys of every process of each setup, from
/proc: adapter, server and its workers; or the Python server), and the ratios.

    bazel run -c opt //tests/bench:adapter_lockstep_bench -- --docs=100000
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "adapter"))
import harness  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
FUNCTION = "fixture_fns.town_n|1"
TOWNS = ["Oslo", "Paris", "Lima", "Kyoto"]


def cpu_seconds(pid):
    """user+sys CPU of one process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid):
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                found += [int(child) for child in listing.read().split()]
    except OSError:
        pass
    return found


def doc_lines(count):
    return [json.dumps(["map_doc", {"_id": f"doc-{i:06d}", "_rev": "1-2101244a50b598053422a529f25605d9",
                                    "type": "person", "town": TOWNS[i % 4], "n": i}],
                       separators=(",", ":")).encode() + b"\n"
            for i in range(count)]


class LockstepDriver:
    """Writes a line, reads the one reply line, repeat: CouchDB's pattern."""

    def __init__(self, process):
        self.process = process
        self.write_fd = process.stdin.fileno()
        self.read_fd = process.stdout.fileno()
        self.buffer = b""

    def exchange(self, line):
        os.write(self.write_fd, line)
        while b"\n" not in self.buffer:
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                raise RuntimeError("the query server closed its output")
            self.buffer += chunk
        reply, self.buffer = self.buffer.split(b"\n", 1)
        return reply

    def run(self, lines):
        for line in lines:
            reply = self.exchange(line)
            if not reply.startswith(b"[["):
                raise RuntimeError(f"unexpected reply {reply[:200]!r}")


def cpu_by_part(parts):
    """CPU seconds per named part: {name: [pids]}."""
    return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in parts().items()}


def measure(name, process, parts, warmup, lines):
    driver = LockstepDriver(process)
    assert driver.exchange(b'["reset",{"reduce_limit":true,"timeout":5000}]\n') == b"true"
    assert driver.exchange(json.dumps(["add_fun", FUNCTION]).encode() + b"\n") == b"true"
    driver.run(warmup)
    cpu_before, wall_before = cpu_by_part(parts), time.perf_counter()
    driver.run(lines)
    wall = time.perf_counter() - wall_before
    cpu_after = cpu_by_part(parts)
    split = {part: cpu_after[part] - cpu_before.get(part, 0.0) for part in cpu_after}
    cpu = sum(split.values())
    process.stdin.close()
    process.wait(timeout=30)
    docs = len(lines)
    if name is None:
        return None
    result = {"name": name, "docs_per_s": docs / wall, "us_per_doc": wall / docs * 1e6,
              "cpu_us_per_doc": cpu / docs * 1e6}
    print(f"{name:<34} {result['docs_per_s']:>10,.0f} docs/s {result['us_per_doc']:>8.1f} µs/doc "
          f"{result['cpu_us_per_doc']:>8.1f} CPU µs/doc", flush=True)
    if len(split) > 1:
        print("    CPU µs/doc by process: " + ", ".join(
            f"{part} {seconds / docs * 1e6:.1f}" for part, seconds in split.items()), flush=True)
    return result


def run_cnp(binaries, workdir, warmup, lines, workers):
    server = harness.Server(binaries, os.path.join(workdir, "cnp.sock"), workers=workers)
    try:
        # Warm the server and its worker with an adapter of its own, so that the measured
        # adapter's --stats (a mean over everything it forwarded) covers the measured docs only.
        warmer = subprocess.Popen([binaries.adapter, f"--target={server.target}"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        measure(None, warmer, lambda: {}, warmup, [])
        adapter = subprocess.Popen([binaries.adapter, f"--target={server.target}", "--stats"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, bufsize=0)
        result = measure("cnp-adapter + cnp-server + worker", adapter,
                         lambda: {"adapter": [adapter.pid], "server": [server.process.pid],
                                  "workers": children(server.process.pid)}, [], lines)
        stats = adapter.stderr.read().decode()
        service_us = float(stats.split("mean_service_us=")[1].split()[0])
        print(f"    wall µs/doc: {service_us:.1f} waiting for cnp-server (gRPC stream → server "
              f"→ worker → back), {result['us_per_doc'] - service_us:.1f} in the pipes and the "
              f"adapter", flush=True)
        return result
    finally:
        server.stop()


def run_pure_python(binaries, warmup, lines):
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(binaries.functions), binaries.python_package]))
    process = subprocess.Popen(["/usr/bin/python3.11", os.path.join(here, "pure_python_query_server.py")],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env)
    return measure("pure-Python line server (3.11)", process, lambda: {"python": [process.pid]}, warmup, lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs of both setups")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--python-package", required=True, help="dir holding couch_named_python")
    binaries, rest = harness.parse_binaries(sys.argv[1:])
    options = parser.parse_args(rest)
    binaries.python_package = os.path.abspath(options.python_package)
    if options.docs > 1_000_000:
        parser.error("--docs is bounded to 1,000,000")

    lines = doc_lines(options.docs)
    warmup = doc_lines(options.warmup)
    print(f"lockstep map_doc, {options.docs:,} small docs, map emitting (doc.town, doc.n); "
          f"{os.cpu_count()} CPUs", flush=True)
    cnp, pure = [], []
    with harness.socket_dir("cnp-bench-") as workdir:
        for _ in range(options.rounds):
            cnp.append(run_cnp(binaries, workdir, warmup, lines, options.workers))
            pure.append(run_pure_python(binaries, warmup, lines))
    best_cnp = max(cnp, key=lambda r: r["docs_per_s"])
    best_pure = max(pure, key=lambda r: r["docs_per_s"])
    print(f"ratio cnp / pure-Python: {best_cnp['docs_per_s'] / best_pure['docs_per_s']:.2f}x docs/s, "
          f"{best_cnp['cpu_us_per_doc'] / best_pure['cpu_us_per_doc']:.2f}x CPU per doc "
          f"(best of {options.rounds} round(s) each)")


if __name__ == "__main__":
    main()
