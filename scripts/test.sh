#!/usr/bin/env bash
# Installs what the tests need and runs every test: unit tests, the worker against real
# Python, cnp-server end to end, the CouchDB transcripts replayed through cnp-adapter, and the
# upload tests against pouchdb-server, then clang's thread-safety analysis
# (scripts/thread_safety_check.sh). Ends with one line "tests: N passed, M failed", after the
# test cases that skipped themselves inside passing targets, if any (scripts/skipped_tests.py).
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
tests/upload/install_pouchdb_server.sh || exit 1

layering=0
scripts/check_layering.sh || layering=1
# ...and that it refuses a client or adapter that reaches into the service (a probe package
# added for the moment it runs).
scripts/check_layering.sh --self-test >/dev/null || layering=1

log=$(mktemp)
bazel test --disk_cache="$HOME/.cache/cnp-bazel-disk" --jobs=2 --local_test_jobs=1 //proto/... //common/... //service/... //adapter/... //client/... //tests/... "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
bazel shutdown >/dev/null 2>&1

passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log")
failed=$(( $(grep -cE '^//[^ ]+ +(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD)' "$log") + layering ))
# A test case that skips itself (GTEST_SKIP, unittest's skip: one that needs root or another
# uid, say) leaves its target PASSED: name them, so that a run that skipped checks says so.
skipped=$(grep -oE '^//[^ ]+ +(\(cached\) )?PASSED' "$log" | awk '{print $1}' | scripts/skipped_tests.py)
rm -f "$log"
bazel_status=$status bazel_failed=$failed

# Clang's thread-safety analysis of all our C++ counts as one more test.
if scripts/thread_safety_check.sh; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  [ "$status" -ne 0 ] || status=1
fi
[ -n "$skipped" ] && echo "$skipped"
echo "tests: $passed passed, $failed failed"
if [ "$bazel_status" -ne 0 ] && [ "$bazel_failed" -eq 0 ]; then
  echo "bazel test failed before running the tests (exit $bazel_status)" >&2
fi
[ "$layering" -ne 0 ] && echo "scripts/check_layering.sh failed (above)" >&2 && status=1
exit "$status"
