#!/usr/bin/env bash
# What a map function that raises on every document costs per document, this build against
# another (the worker now finds where the function raised and formats a few tracebacks a
# second): one cnp-server of each build (--workers=1), `cnp map` over the same documents,
# interleaved, median of --runs (3). A function that emits is timed too, as the control.
#
#   tests/bench/raising_map_bench.sh BASELINE_BAZEL_BIN [DOCS] [RUNS]
#
# BASELINE_BAZEL_BIN: another checkout's bazel-bin holding service/cnp-server and
# client/cli/cnp (e.g. a worktree of main: bazel build //service:cnp-server //client/cli:cnp).
# This build's are ./bazel-bin (build them first, the same way).
set -euo pipefail
cd "$(dirname "$0")/../.."
baseline_bin=${1:?usage: $0 BASELINE_BAZEL_BIN [DOCS] [RUNS]}
docs=${2:-20000}
runs=${3:-3}
work=$(mktemp -d /tmp/cnp-raising-bench.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

cat > "$work/benchmod.py" <<'PY'
def raises(doc):
    return doc["missing"]


def emits(doc):
    yield doc["_id"], doc["n"]
PY
python3 -c "
import json, sys
json.dump([{'_id': 'doc-%06d' % i, 'n': i} for i in range($docs)], open('$work/docs.json', 'w'))"

start_server() {  # bazel-bin name
  "$1/service/cnp-server" --listen="unix:$work/$2.sock" --python-path="$work" --workers=1 \
      >"$work/$2.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do grep -q " ready" "$work/$2.log" && return; sleep 0.05; done
  echo "$2 server did not start" >&2; cat "$work/$2.log" >&2; exit 1
}
start_server "$baseline_bin" base
start_server bazel-bin new

time_map() {  # bazel-bin name function -> seconds
  local t0 t1
  t0=$(date +%s.%N)
  CNP_TARGET="unix:$work/$2.sock" "$1/client/cli/cnp" map "$3" "$work/docs.json" >/dev/null || true
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A samples
for _ in $(seq "$runs"); do
  for fn in raises emits; do
    samples[base-$fn]+="$(time_map "$baseline_bin" base benchmod.$fn) "
    samples[new-$fn]+="$(time_map bazel-bin new benchmod.$fn) "
  done
done
for fn in raises emits; do
  b=$(echo ${samples[base-$fn]} | tr ' ' '\n' | median)
  n=$(echo ${samples[new-$fn]} | tr ' ' '\n' | median)
  printf '%-7s %d docs: baseline %.3fs (%.2f us/doc), this build %.3fs (%.2f us/doc): %.2fx\n' \
      "$fn" "$docs" "$b" "$(echo "$b * 1000000 / $docs" | bc -l)" "$n" \
      "$(echo "$n * 1000000 / $docs" | bc -l)" "$(echo "$n / $b" | bc -l)"
done
