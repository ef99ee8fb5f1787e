#!/usr/bin/env bash
# Checks the packages' layering, which Bazel's visibility alone cannot say: the service never
# depends on the clients, and common/ (what both sides share) depends on neither. Prints each
# offending dependency path and exits 1; run by scripts/test.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
bazel=(bazel query --noshow_progress --keep_going)

status=0
check() {
  local from=$1 to=$2 why=$3 path
  path=$("${bazel[@]}" "somepath($from, $to)" 2>/dev/null)
  if [ -n "$path" ]; then
    echo "layering: $why; this path breaks it:" >&2
    echo "$path" | sed 's/^/  /' >&2
    status=1
  fi
}
check '//service/...' '//client/... + //adapter/...' "the service must not depend on its clients"
check '//common/...' '//service/... + //client/... + //adapter/...' \
  "common/ is shared by the service and its clients, so it depends on neither"
exit $status
