"""Load figures: how much one replica holds, and what nginx in front of two costs.

Setups, up at once and measured interleaved in every round:
  one     one cnp-server (--workers=2), clients connect to it directly
  nginx1  nginx (packaging/nginx/cnp.conf as shipped, --nginx-workers worker processes) in front
          of one cnp-server (--workers=2): nginx's own cost, everything else equal
  nginx2  nginx in front of two cnp-servers (--workers=1 each: the same two Python workers in
          all, as two replicas on this machine's cores would share them); the ratio nginx2/one
          is the balancer's cost plus a second server process, not a speed-up
Loads (load_client): Map calls of 100 documents, Validate calls, Session streams in lockstep
(what a remote cnp-adapter sends), at 1, 16, 64 and 256 concurrent clients, each client with a
connection of its own. Every cell is the median of --rounds rounds. Goals (issue 10): nginx adds
at most 15% to p50 at 16 clients; p99 at most 3x p50 at 64 clients.

    tests/bench/load_bench                 # the table
    tests/bench/load_bench --soak=10m      # soak: RSS and descriptors of server and workers under
                                           # steady load, drift per hour
    tests/bench/load_bench --baseline-server=OTHER/cnp-server --baseline-worker=OTHER/cnp-worker \
        --kinds=session                    # this build's replica against another build's, each
                                           # --workers=2, interleaved (no nginx)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

for helpers in ("scaleout", "support"):  # cluster.py, and the cnp_testing.py it imports
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", helpers))
import cluster  # noqa: E402

KINDS = ("map", "validate", "session")


def parse_duration(text):
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def run_load(args, target, kind, clients, duration_ms):
    out = subprocess.run([args.load_client, "--target=" + target, "--kind=" + kind,
                          "--clients=%d" % clients, "--duration_ms=%d" % duration_ms],
                         capture_output=True, text=True, timeout=duration_ms / 1000 + 300)
    if out.returncode != 0:
        raise RuntimeError("load_client failed: %s" % out.stderr)
    return json.loads(out.stdout)


def median_cell(samples):
    """The median of each figure over the rounds (errors: the sum)."""
    cell = {key: statistics.median(s[key] for s in samples)
            for key in ("per_second", "p50_us", "p99_us", "p999_us")}
    cell["errors"] = sum(s["errors"] for s in samples)
    cell["first_error"] = next((s["first_error"] for s in samples if s["first_error"]), "")
    return cell


SETUPS = ("one", "nginx1", "nginx2")


def start_setups(args):
    one = cluster.Replica(args.server, args.worker, args.functions_dir, "r0", workers=2)
    behind = cluster.Replica(args.server, args.worker, args.functions_dir, "r1", workers=2)
    pair = [cluster.Replica(args.server, args.worker, args.functions_dir, name, workers=1)
            for name in ("r2", "r3")]
    nginx1 = cluster.Nginx(args.nginx_conf, [behind, behind], nginx=args.nginx,
                           worker_processes=args.nginx_workers)
    nginx2 = cluster.Nginx(args.nginx_conf, pair, nginx=args.nginx,
                           worker_processes=args.nginx_workers)
    targets = {"one": one.address, "nginx1": nginx1.address, "nginx2": nginx2.address}
    return targets, [one, behind] + pair, [nginx1, nginx2]


def start_baseline_setups(args):
    one = cluster.Replica(args.server, args.worker, args.functions_dir, "r0", workers=2)
    try:
        baseline = cluster.Replica(args.baseline_server, args.baseline_worker, args.functions_dir,
                                   "b0", workers=2)
    except BaseException:
        one.stop()
        raise
    return {"one": one.address, "baseline": baseline.address}, [one, baseline], []


def table(args):
    if args.baseline_server:
        setups, reference = ("baseline", "one"), "baseline"
        targets, replicas, nginxes = start_baseline_setups(args)
    else:
        setups, reference = SETUPS, "one"
        targets, replicas, nginxes = start_setups(args)
    samples = {}
    try:
        for round_number in range(args.rounds):
            for clients in args.clients:
                for kind in args.kinds:
                    # Each build goes first in every other round: no order bias.
                    for setup in (setups if round_number % 2 == 0 else setups[::-1]):
                        result = run_load(args, targets[setup], kind, clients, args.duration_ms)
                        samples.setdefault((kind, clients, setup), []).append(result)
                        print("round %d %-8s %3d clients %-5s %8.0f/s p50 %8.0f us p99 %8.0f us "
                              "errors %d" % (round_number + 1, kind, clients, setup,
                                             result["per_second"], result["p50_us"],
                                             result["p99_us"], result["errors"]),
                              file=sys.stderr)
    finally:
        for nginx in nginxes:
            nginx.stop()
        for replica in replicas:
            replica.stop()

    cells = {key: median_cell(value) for key, value in samples.items()}
    print("\nmedian of %d rounds, %d ms each; Map calls of 100 documents; calls/s and latency "
          "per call (µs)%s" % (args.rounds, args.duration_ms, "" if args.baseline_server else
                                "; nginx with %s worker process(es)" % args.nginx_workers))
    if args.baseline_server:
        print("one: this build (%s); baseline: %s" % (args.server, args.baseline_server))
    print("| load | clients | setup | calls/s | p50 | p99 | p99.9 | errors | p50 / %s's | "
          "p99 / %s's | calls/s / %s's |" % (reference, reference, reference))
    print("| --- " * 11 + "|")
    for kind in args.kinds:
        for clients in args.clients:
            ref = cells[(kind, clients, reference)]
            for setup in setups:
                cell = cells[(kind, clients, setup)]
                print("| %s | %d | %s | %.0f | %.0f | %.0f | %.0f | %d | %.2fx | %.2fx | %.2fx |"
                      % (kind, clients, setup, cell["per_second"], cell["p50_us"],
                         cell["p99_us"], cell["p999_us"], cell["errors"],
                         cell["p50_us"] / max(ref["p50_us"], 1e-9),
                         cell["p99_us"] / max(ref["p99_us"], 1e-9),
                         cell["per_second"] / max(ref["per_second"], 1e-9)))
    errors = {key: cell["first_error"] for key, cell in cells.items() if cell["errors"]}
    if args.baseline_server:
        if errors:
            print("\nerrors:", errors)
        return
    print("\ngoals:")
    for kind in args.kinds:
        if 16 in args.clients:
            one = cells[(kind, 16, "one")]
            for setup in ("nginx1", "nginx2"):
                added = cells[(kind, 16, setup)]["p50_us"] / one["p50_us"] - 1
                print("  %-8s %-6s adds %+.0f%% to p50 at 16 clients (goal <= 15%%): %s"
                      % (kind, setup, 100 * added, "met" if added <= 0.15 else "NOT met"))
        if 64 in args.clients:
            for setup in SETUPS:
                cell = cells[(kind, 64, setup)]
                ratio = cell["p99_us"] / cell["p50_us"]
                print("  %-8s %-6s p99 = %.1fx p50 at 64 clients (goal <= 3x): %s"
                      % (kind, setup, ratio, "met" if ratio <= 3 else "NOT met"))
    if errors:
        print("\nerrors:", errors)


def memory_and_fds(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return rss * 1024, len(os.listdir("/proc/%d/fd" % pid))
    except (OSError, StopIteration):
        return None


def slope_per_hour(points):
    """Least-squares slope of (seconds, value) points, per hour."""
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 3600 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


# How long past --soak the load clients may take to finish their last calls and report. Their
# calls and streams carry deadlines within this (60 s past the run); past it something hangs.
SOAK_MARGIN_S = 120


def soak(args):
    """Steady load on one replica (16 Map, 16 Validate and 16 Session clients at once) for
    --soak; every --sample-every seconds the RSS and open descriptors of the server and of its
    workers (summed) are read from /proc. The first fifth is warm-up; the drift is the
    least-squares slope of the rest, per hour."""
    seconds = parse_duration(args.soak)
    replica = cluster.Replica(args.server, args.worker, args.functions_dir, "r0", workers=2)
    loads = [subprocess.Popen([args.load_client, "--target=" + replica.address, "--kind=" + kind,
                               "--clients=16", "--duration_ms=%d" % (seconds * 1000)],
                              stdout=subprocess.PIPE, text=True) for kind in KINDS]
    samples = []
    start = time.monotonic()
    try:
        while any(load.poll() is None for load in loads):
            t = time.monotonic() - start
            if t > seconds + SOAK_MARGIN_S:
                hung = [kind for kind, load in zip(KINDS, loads) if load.poll() is None]
                raise RuntimeError(
                    "soak: the %s load client(s) still ran %.0f s after the soak's %.0f s "
                    "(a call or stream that never returns); killed them" %
                    (", ".join(hung), t - seconds, seconds))
            server = memory_and_fds(replica.process.pid)
            workers = [m for m in (memory_and_fds(p) for p in replica.pids()
                                   if p != replica.process.pid) if m]
            if server:
                samples.append((t, server[0], server[1], sum(m[0] for m in workers),
                                sum(m[1] for m in workers), len(workers)))
            time.sleep(args.sample_every)  # a sampling interval, not a synchronisation
        results = [json.loads(load.stdout.read()) for load in loads]
    finally:
        for load in loads:
            if load.poll() is None:
                load.kill()
            load.wait()
        replica.stop()
    steady = [s for s in samples if s[0] >= seconds / 5]
    print("soak: %.0f s of load (%s), %d samples, the first %.0f s as warm-up"
          % (seconds, ", ".join("%s %.0f calls/s, %d errors" % (r["kind"], r["per_second"],
                                                               r["errors"]) for r in results),
             len(samples), seconds / 5))
    names = ("server RSS (MiB)", "server fds", "workers RSS (MiB, all)", "workers fds (all)")
    for i, name in enumerate(names, start=1):
        scale = 1 / 2 ** 20 if "RSS" in name else 1
        values = [s[i] * scale for s in steady]
        print("  %-24s start %8.1f  end %8.1f  min %8.1f  max %8.1f  drift %+8.2f per hour"
              % (name, values[0], values[-1], min(values), max(values),
                 slope_per_hour([(s[0], s[i] * scale) for s in steady])))
    print("  workers: %s" % sorted({s[5] for s in samples}))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--load-client", required=True)
    parser.add_argument("--scalefns", required=True)
    parser.add_argument("--nginx-conf", required=True)
    parser.add_argument("--nginx", default="/usr/sbin/nginx")
    parser.add_argument("--nginx-workers", default="auto",
                        help="nginx's worker_processes (Debian's nginx.conf says auto)")
    parser.add_argument("--clients", default="1,16,64,256")
    parser.add_argument("--kinds", default=",".join(KINDS), help="loads to run, of " + ",".join(KINDS))
    parser.add_argument("--baseline-server", default="",
                        help="another build's cnp-server: compare one replica of each instead")
    parser.add_argument("--baseline-worker", default="", help="that build's cnp-worker")
    parser.add_argument("--duration-ms", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--soak", default="", help="e.g. 10m: run the soak instead of the table")
    parser.add_argument("--sample-every", type=float, default=5.0)
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    args.kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in args.kinds if k not in KINDS]
    if not args.kinds:
        parser.error("--kinds was given none; give some of %s" % ",".join(KINDS))
    if unknown:
        parser.error("--kinds takes some of %s, not %s" % (",".join(KINDS), ",".join(unknown)))
    if bool(args.baseline_server) != bool(args.baseline_worker):
        parser.error("--baseline-server and --baseline-worker go together")
    if args.soak and (args.baseline_server or args.kinds != list(KINDS)):
        parser.error("--soak runs every kind on this build alone: leave out --kinds and "
                     "--baseline-server")
    args.functions_dir = os.path.dirname(os.path.abspath(args.scalefns))
    if args.soak:
        soak(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
