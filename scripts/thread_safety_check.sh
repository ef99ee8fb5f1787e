#!/usr/bin/env bash
# Clang's thread-safety analysis over every C++ target of common/, service/, adapter/, client/, tests/
# (--config=thread-safety in .bazelrc: Debian's clang, -Wthread-safety, -Werror on our sources).
# It compiles only (nothing is linked or run). First it builds tests/thread_safety, a file that
# breaks the locking rules on purpose, and requires clang to refuse it for those reasons: a check
# that lost its flags would pass everything. scripts/test.sh runs it; extra arguments go to
# `bazel build` (e.g. a narrower target pattern: //service/pool/...).
#
# It runs in an output base of its own: switching the compiler re-runs Bazel's C++ toolchain
# configuration, which would throw away the gcc build's analysis cache at every switch. The
# shared disk cache keeps both compilers' objects (their actions differ), so a second run with
# unchanged sources takes seconds.
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v clang >/dev/null 2>&1; then
  echo "thread_safety_check: clang is missing; run scripts/setup.sh" >&2
  exit 1
fi

output_base="${XDG_CACHE_HOME:-$HOME/.cache}/cnp-thread-safety/$(pwd -P | md5sum | cut -c1-32)"
bazel_clang() {
  bazel --output_base="$output_base" "$1" --config=thread-safety \
    --disk_cache="$HOME/.cache/cnp-bazel-disk" --jobs=2 "${@:2}"
}
log=$(mktemp)
trap 'rm -f "$log"; bazel --output_base="$output_base" shutdown >/dev/null 2>&1' EXIT

# The teeth: each rule broken in unguarded_access.cc must be reported as an error.
if bazel_clang build //tests/thread_safety:unguarded_access >"$log" 2>&1; then
  echo "thread_safety_check: tests/thread_safety/unguarded_access.cc compiled, but it breaks the" \
    "locking rules on purpose: --config=thread-safety has lost -Wthread-safety or -Werror" >&2
  exit 1
fi
expected=(
  "writing variable 'count_' requires holding mutex 'mu_' exclusively [-Werror,-Wthread-safety-analysis]"
  "reading variable 'count_' requires holding mutex 'mu_' [-Werror,-Wthread-safety-analysis]"
  "calling function 'ResetLocked' requires holding mutex 'mu_' exclusively [-Werror,-Wthread-safety-analysis]"
)
for message in "${expected[@]}"; do
  if ! grep -qF -- "$message" "$log"; then
    echo "thread_safety_check: tests/thread_safety/unguarded_access.cc failed to build, but not" \
      "with \"$message\"; the build said:" >&2
    cat "$log" >&2
    exit 1
  fi
done

# Our code, every target; --keep_going so that one run lists every finding.
if [ "$#" -eq 0 ]; then
  set -- //common/... //service/... //adapter/... //client/... //tests/...
fi
if ! bazel_clang build --keep_going "$@"; then
  echo "thread_safety_check: FAILED: clang's errors above (the analysis' own end in" \
    "[-Werror,-Wthread-safety-...]); see README, \"Thread-safety analysis\"" >&2
  exit 1
fi
echo "thread_safety_check: passed"
