"""cnp derive's initial synchronization of --docs documents next to a pure-Python loop doing the
same work, against the same pouchdb-server in the same run:

  cnp derive   `cnp derive --once`: _changes batches -> Map RPC (cnp-server, --workers) ->
               _bulk_docs -> checkpoint, all in C++ but the handler; the next batch is read
               and mapped while one is written, and a fresh initial sync does not look up rows
               of first revisions (nothing derived exists yet)
  python       one Python process: _changes batches -> the same handler, called in-process ->
               the same derived documents (same ids, sha256) -> _all_docs lookup -> _bulk_docs
               -> checkpoint; http.client with a kept-alive connection, json from the stdlib.
               The lookup is what makes a loop safe to run again (it writes nothing unchanged).
  python-blind the same loop without the lookup: _changes -> map -> _bulk_docs, the issue's
               words; right only for an empty target, as cnp derive's fresh sync is

Each run writes into a fresh target database (deleted afterwards); figures are the median of
--rounds runs of each, interleaved. Prints docs/s and the ratio.

    tests/bench/derive_bench --docs=100000
"""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BATCH = 500


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Couch:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def request(self, method, path, body=None):
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # The server closed the kept-alive connection while it sat idle: open another.
            self.conn.close()
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
        payload = response.read()
        if response.status >= 400 and response.status != 404:
            raise RuntimeError(f"{method} {path}: HTTP {response.status} {payload[:200]!r}")
        return json.loads(payload) if payload else None


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """user+sys CPU of one process, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
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


def service_cpu(server_pid):
    """CPU of cnp-server and its workers so far."""
    total = 0.0
    for pid in [server_pid] + children(server_pid):
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def sha(text, n):
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def python_loop(port, source, target, handler, lookup):
    """The baseline: what cnp derive does for a map stage, written plainly in Python; without
    `lookup` every row is written as new."""
    couch = Couch(port)
    couch.request("PUT", f"/{target}")
    since = "0"
    while True:
        changes = couch.request(
            "GET", f"/{source}/_changes?since={since}&limit={BATCH}&include_docs=true&seq_interval={BATCH}")
        if not changes["results"]:
            break
        desired = []
        for change in changes["results"]:
            doc = change.get("doc")
            if change.get("deleted") or not doc or change["id"].startswith("_design/"):
                continue
            for n, (key, value) in enumerate(handler(doc)):
                key_json = json.dumps(key, separators=(",", ":"))
                row = {"_id": f"{source}:{sha(doc['_id'], 32)}:{sha(key_json, 16)}:{n}",
                       "mr_source_id": doc["_id"], "mr_key": key, "mr_source_type": source,
                       "mr_version": 1}
                if isinstance(value, dict):
                    row.update({k: v for k, v in value.items() if not k.startswith(("_", "mr_"))})
                    row["mr_value"] = None
                else:
                    row["mr_value"] = value
                desired.append(row)
        existing = {}
        if lookup:
            found = couch.request("POST", f"/{target}/_all_docs?include_docs=true",
                                  {"keys": [row["_id"] for row in desired]})
            existing = {r["id"]: r["doc"] for r in found["rows"] if r.get("doc")}
        writes = []
        for row in desired:
            old = existing.get(row["_id"])
            if old is not None:
                rev = old.pop("_rev")
                if old == row:
                    continue
                row["_rev"] = rev
            writes.append(row)
        if writes:
            couch.request("POST", f"/{target}/_bulk_docs", {"docs": writes})
        since = str(changes["last_seq"])
        checkpoint = couch.request("GET", f"/{target}/_local/py-bench") or {}
        body = {"seq": since}
        if "_rev" in checkpoint:
            body["_rev"] = checkpoint["_rev"]
        couch.request("PUT", f"/{target}/_local/py-bench", body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=1500, help="stop starting rounds after this long")
    for name in ("cnp", "server", "worker", "python-package", "functions", "pouchdb-server"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args()

    sys.path[:0] = [args.python_package, args.functions]
    from derive_bench_fns import town  # noqa: E402  the same handler the service runs

    work = tempfile.mkdtemp(prefix="derive-bench-")
    port = free_port()
    processes = []
    try:
        processes.append(subprocess.Popen(
            ["node", os.path.abspath(args.pouchdb_server), "--in-memory", "-o", "127.0.0.1", "-p", str(port)],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        socket_path = os.path.join(work, "cnp.sock")
        processes.append(subprocess.Popen(
            [args.server, f"--listen=unix:{socket_path}", f"--worker-binary={args.worker}",
             f"--python-path={os.path.abspath(args.functions)}", f"--workers={args.workers}"],
            env=dict(os.environ, PYTHONPATH=os.path.abspath(args.python_package)),
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "server.log"), "w")))
        deadline = time.monotonic() + 30
        while True:  # wait for pouchdb-server to accept
            try:
                Couch(port).request("GET", "/")
                break
            except OSError:
                if processes[0].poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        couch = Couch(port)
        couch.request("PUT", "/src")
        towns = ["Oslo", "Paris", "Lima", "Kyoto"]
        for start in range(0, args.docs, 5000):
            couch.request("POST", "/src/_bulk_docs", {"docs": [
                {"_id": f"doc-{i:07d}", "type": "person", "town": towns[i % 4], "n": i}
                for i in range(start, min(args.docs, start + 5000))]})
        print(f"{args.docs} documents in pouchdb-server; cnp-server with {args.workers} worker(s); "
              f"batches of {BATCH}", flush=True)

        began = time.monotonic()
        setups = ("cnp derive", "python", "python-blind")
        figures = {k: [] for k in setups}     # docs/s
        couch_busy = {k: [] for k in setups}  # pouchdb-server's CPU / wall time
        couch_cpu = {k: [] for k in setups}   # pouchdb-server's CPU µs per document
        client_cpu = {k: [] for k in setups}  # CPU µs per document outside the database
        node = processes[0].pid
        for r in range(args.rounds):
            if time.monotonic() - began > args.max_seconds:
                print("time is up: fewer rounds", flush=True)
                break
            for setup in setups:
                target = f"{setup.replace(' ', '_').replace('-', '_')}_{r}"
                t, c = time.monotonic(), cpu_seconds(node)
                if setup == "cnp derive":
                    declaration = os.path.join(work, f"derive_{r}.yml")
                    with open(declaration, "w") as f:
                        f.write(f"name: bench{r}\nhandlers:\n  {target}:\n    src: "
                                "{type: map, version: 1, handler: derive_bench_fns.town}\n")
                    sc = service_cpu(processes[1].pid)
                    run = subprocess.Popen([args.cnp, "derive", "--once", f"--target=unix:{socket_path}",
                                            f"--batch-size={BATCH}", f"http://127.0.0.1:{port}",
                                            declaration], stderr=subprocess.DEVNULL)
                    _, status, usage = os.wait4(run.pid, 0)
                    run.returncode = 0
                    assert status == 0, f"cnp derive exited with status {status}"
                    client = usage.ru_utime + usage.ru_stime + service_cpu(processes[1].pid) - sc
                else:
                    pc = time.process_time()
                    python_loop(port, "src", target, town, lookup=(setup == "python"))
                    client = time.process_time() - pc
                wall = time.monotonic() - t
                used = cpu_seconds(node) - c
                figures[setup].append(args.docs / wall)
                client_cpu[setup].append(client / args.docs * 1e6)
                couch_busy[setup].append(used / wall)
                couch_cpu[setup].append(used / args.docs * 1e6)
                rows = couch.request("GET", f"/{target}")["doc_count"]
                assert rows == args.docs, f"{setup} wrote {rows} rows, not {args.docs}"
                couch.request("DELETE", f"/{target}")
            print(f"round {r + 1}: " + ", ".join(f"{k} {figures[k][-1]:,.0f} docs/s" for k in setups),
                  flush=True)

        median = {k: statistics.median(v) for k, v in figures.items()}
        busy = {k: statistics.median(v) for k, v in couch_busy.items()}
        db = {k: statistics.median(v) for k, v in couch_cpu.items()}
        cpu = {k: statistics.median(v) for k, v in client_cpu.items()}
        print(f"\ninitial sync of {args.docs} documents, median of {len(figures['python'])} "
              "(client CPU: cnp, cnp-server and workers for cnp derive; the one process for python):")
        for k in setups:
            print(f"  {k:<13}{median[k]:>10,.0f} docs/s   client CPU {cpu[k]:6.1f} µs/doc   "
                  f"pouchdb-server CPU {db[k]:6.1f} µs/doc, busy {busy[k]:.0%} of the time")
        for k in ("python", "python-blind"):
            print(f"  cnp derive / {k}: {median['cnp derive'] / median[k]:.2f}x docs/s; "
                  f"{cpu[k] / cpu['cnp derive']:.2f}x less client CPU per document")
    finally:
        for p in reversed(processes):
            p.terminate()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
