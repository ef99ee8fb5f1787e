"""Index-build speed as CouchDB sees it: lines sent one at a time, each reply awaited (CouchDB
never pipelines), through the three ways of serving CouchDB in the same run:

  direct   cnp-adapter hands CouchDB's pipes to a session worker of cnp-server (one hop)
  stream   cnp-adapter -> gRPC Session stream -> cnp-server -> worker -> back
  python   a pure-Python line-protocol query server (/usr/bin/python3.11), the baseline
  ceiling  a one-process server that answers without parsing JSON or running Python
           (ceiling_query_server.cc): what the pipe round trip alone allows on this machine,
           the bound for every real server (the issue's "throw-away" row on a real CouchDB)

for map (map_doc of small documents) and reduce (reduce lines of --reduce-rows rows; figures per
row). Prints docs/s and CPU µs per document (user+sys from /proc) for each process of each setup
(adapter, server, workers; or the Python server), the median of --rounds runs, the ratios to the
baseline, and the memory (RSS and PSS) of a session worker next to a bare python3.11.

    tests/bench/adapter_lockstep_bench --docs=100000
"""

import argparse
import json
import os
import subprocess
import sys
import time

for helpers in ("adapter", "support"):  # harness.py, and the cnp_testing.py it imports
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", helpers))
import harness  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
FUNCTION = "fixture_fns.town_n|1"
REDUCE_FUNCTION = "fixture_fns.count_total|2"
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
            if not (reply.startswith(b"[[") or reply.startswith(b"[true,")):
                raise RuntimeError(f"unexpected reply {reply[:200]!r}")


def cpu_by_part(parts):
    """CPU seconds per named part: {name: [pids]}."""
    return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in parts().items()}


def reduce_lines(count, rows):
    """`count` reduce lines of `rows` rows each, as CouchDB sends them for a custom reduce."""
    lines = []
    for i in range(count):
        kvs = [[[[TOWNS[(i + r) % 4], (i + r) % 3], f"doc-{i:06d}-{r}"], i + r] for r in range(rows)]
        lines.append(json.dumps(["reduce", [REDUCE_FUNCTION], kvs], separators=(",", ":")).encode()
                     + b"\n")
    return lines


def measure(name, process, parts, function, warmup, lines, per_line):
    """Drives one query server; returns docs/s and CPU µs per doc, in total and by part."""
    driver = LockstepDriver(process)
    assert driver.exchange(b'["reset",{"reduce_limit":true,"timeout":5000}]\n') == b"true"
    if function is not None:
        assert driver.exchange(json.dumps(["add_fun", function]).encode() + b"\n") == b"true"
    driver.run(warmup)
    part_pids = parts()
    cpu_before, wall_before = cpu_by_part(lambda: part_pids), time.perf_counter()
    driver_before = time.process_time()
    driver.run(lines)
    wall = time.perf_counter() - wall_before
    # The driver plays CouchDB in Python: its own cost per document bounds every setup's docs/s,
    # so when it nears the wall time per document the ratios say little about the servers.
    driver_cpu = time.process_time() - driver_before
    cpu_after = cpu_by_part(lambda: part_pids)
    split = {part: cpu_after[part] - cpu_before.get(part, 0.0) for part in cpu_after}
    memory = {part: memory_kib(pids[0]) for part, pids in part_pids.items()
              if part in ("session worker", "python") and pids}
    process.stdin.close()
    process.wait(timeout=30)
    docs = len(lines) * per_line
    return {"name": name, "docs_per_s": docs / wall,
            "cpu_us_per_doc": sum(split.values()) / docs * 1e6,
            "split": {part: seconds / docs * 1e6 for part, seconds in split.items()},
            "driver_cpu_us_per_doc": driver_cpu / docs * 1e6,
            "memory": memory}


def memory_kib(pid):
    """(RSS, PSS) of a process in KiB, from /proc/PID/smaps_rollup."""
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                fields = line.split()
                if fields and fields[0] in ("Rss:", "Pss:"):
                    values[fields[0]] = int(fields[1])
    except OSError:
        return None
    return values.get("Rss:"), values.get("Pss:")


def session_worker_pid(server, adapter_pid):
    with open(server.log_path, errors="replace") as log:
        for line in log:
            marker = f"started: adapter pid {adapter_pid}, worker pid "
            if marker in line:
                return int(line.split(marker, 1)[1].split()[0])
    raise RuntimeError(f"no direct session for adapter pid {adapter_pid} in {server.log_path}")


def run_cnp(binaries, server, session, function, warmup, lines, per_line):
    adapter = subprocess.Popen([binaries.adapter, f"--target={server.target}",
                                f"--session={session}"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)

    def parts():
        workers = children(server.process.pid)
        if session == "direct":
            mine = session_worker_pid(server, adapter.pid)
            return {"adapter": [adapter.pid], "server": [server.process.pid],
                    "session worker": [mine],
                    "other workers": [pid for pid in workers if pid != mine]}
        return {"adapter": [adapter.pid], "server": [server.process.pid], "workers": workers}
    return measure(session, adapter, parts, function, warmup, lines, per_line)


def run_pure_python(binaries, function, warmup, lines, per_line):
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(binaries.functions), binaries.python_package]))
    process = subprocess.Popen(["/usr/bin/python3.11", os.path.join(here, "pure_python_query_server.py")],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, env=env)
    return measure("python", process, lambda: {"python": [process.pid]}, function, warmup, lines,
                   per_line)


def run_ceiling(ceiling, function, warmup, lines, per_line):
    process = subprocess.Popen([ceiling], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    return measure("ceiling", process, lambda: {"ceiling": [process.pid]}, function, warmup, lines,
                   per_line)


def bare_python_memory():
    """(RSS, PSS) of /usr/bin/python3.11 doing nothing but wait, for scale."""
    process = subprocess.Popen(["/usr/bin/python3.11", "-c", "import sys; print(1, flush=True); sys.stdin.read()"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    process.stdout.readline()
    memory = memory_kib(process.pid)
    process.stdin.close()
    process.wait(timeout=10)
    return memory


def median_of(results):
    ordered = sorted(results, key=lambda r: r["docs_per_s"])
    return ordered[len(ordered) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100_000, help="map_doc lines per run")
    parser.add_argument("--reduce-lines", type=int, default=20_000, help="reduce lines per run")
    parser.add_argument("--reduce-rows", type=int, default=10, help="rows per reduce line")
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each setup; the median counts")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--python-package", required=True, help="dir holding couch_named_python")
    parser.add_argument("--ceiling", required=True, help="the ceiling_query_server binary")
    binaries, rest = harness.parse_binaries(sys.argv[1:])
    options = parser.parse_args(rest)
    binaries.python_package = os.path.abspath(options.python_package)
    if options.docs > 1_000_000 or options.reduce_lines > 1_000_000 or options.rounds > 10:
        parser.error("--docs and --reduce-lines are bounded to 1,000,000, --rounds to 10")

    workloads = [
        ("map", FUNCTION, doc_lines(options.warmup), doc_lines(options.docs), 1),
        (f"reduce ({options.reduce_rows} rows a line)", None,
         reduce_lines(options.warmup // 10, options.reduce_rows),
         reduce_lines(options.reduce_lines, options.reduce_rows), options.reduce_rows),
    ]
    print(f"lockstep, {os.cpu_count()} CPUs; map: {options.docs:,} small docs emitting "
          f"(doc.town, doc.n); reduce: {options.reduce_lines:,} lines; median of "
          f"{options.rounds} runs", flush=True)
    memory = {}
    with harness.socket_dir("cnp-bench-") as workdir:
        server = harness.Server(binaries, os.path.join(workdir, "cnp.sock"), workers=options.workers)
        try:
            for title, function, warmup, lines, per_line in workloads:
                runs = {"direct": [], "stream": [], "python": [], "ceiling": []}
                for _ in range(options.rounds):
                    for session in ("direct", "stream"):
                        runs[session].append(run_cnp(binaries, server, session, function, warmup,
                                                     lines, per_line))
                    runs["python"].append(run_pure_python(binaries, function, warmup, lines,
                                                          per_line))
                    runs["ceiling"].append(run_ceiling(options.ceiling, function, warmup, lines,
                                                       per_line))
                print(f"\n{title}:")
                base = median_of(runs["python"])
                for name, results in runs.items():
                    r = median_of(results)
                    print(f"  {name:<7} {r['docs_per_s']:>10,.0f} docs/s "
                          f"({1e6 / r['docs_per_s']:.1f} µs wall/doc) {r['cpu_us_per_doc']:>7.1f} "
                          f"CPU µs/doc  ({r['docs_per_s'] / base['docs_per_s']:.2f}x the Python "
                          f"server's docs/s)   by process: " + ", ".join(
                              f"{part} {us:.1f}" for part, us in r["split"].items())
                          + f"; the driver itself {r['driver_cpu_us_per_doc']:.1f}", flush=True)
                    memory.update({part: kib for part, kib in r["memory"].items() if kib})
                ceiling = median_of(runs["ceiling"])["docs_per_s"]
                print(f"  no query server can pass the ceiling's {ceiling / base['docs_per_s']:.2f}x "
                      f"here; the direct session reaches "
                      f"{median_of(runs['direct'])['docs_per_s'] / ceiling:.0%} of it", flush=True)
        finally:
            server.stop()
    bare = bare_python_memory()
    print("\nmemory (RSS / PSS, MiB) at the end of a run:")
    for part, (rss, pss) in list(memory.items()) + [("bare python3.11", bare)]:
        print(f"  {part:<16} {rss / 1024:6.1f} / {pss / 1024:6.1f}")


if __name__ == "__main__":
    main()
