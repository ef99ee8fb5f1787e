#!/usr/bin/env bash
# Installs what the tests need and runs every test: unit tests, the worker against real
# Python, cnp-server end to end, the CouchDB transcripts replayed through cnp-adapter, and the
# upload tests against pouchdb-server. Ends with one line "tests: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
tests/upload/install_pouchdb_server.sh || exit 1

layering=0
scripts/check_layering.sh || layering=1

log=$(mktemp)
bazel test --disk_cache="$HOME/.cache/cnp-bazel-disk" --jobs=2 --local_test_jobs=1 //proto/... //common/... //service/... //adapter/... //client/... //tests/... "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
bazel shutdown >/dev/null 2>&1

passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log")
failed=$(( $(grep -cE '^//[^ ]+ +(FAILED|TIMEOUT|NO STATUS|FAILED TO BUILD)' "$log") + layering ))
rm -f "$log"
echo "tests: $passed passed, $failed failed"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "bazel test failed before running the tests (exit $status)" >&2
fi
[ "$layering" -ne 0 ] && echo "scripts/check_layering.sh failed (above)" >&2 && status=1
exit "$status"
