#!/usr/bin/env bash
# Checks the packages' layering, which Bazel's visibility alone cannot say:
#   - the service never depends on its clients (client/, adapter/);
#   - the clients (client/) never depend on the service: what both sides need lives in common/
#     (common/couchdb: CouchDB's HTTP API, used by the Upload RPC and by cnp upload/sync/derive);
#   - cnp-adapter depends on the service only through the contracts the two of them speak,
#     listed in ADAPTER_MAY_USE below, and on nothing those contracts do not need;
#   - common/ depends on neither side;
#   - cnp sync does not depend on cnp upload (which uses sync's registry removal), and
#     client/couch on no command.
# Prints each offending dependency path and exits 1; run by scripts/test.sh.
#
# `scripts/check_layering.sh --self-test` shows that the check fails on a violation: it adds, for
# as long as it runs, a client package that depends on the service and an adapter package that
# depends on a part of the service outside ADAPTER_MAY_USE, expects the check to refuse each,
# and removes them again.
set -uo pipefail
cd "$(dirname "$0")/.."
bazel=(bazel query --noshow_progress --keep_going)

# The adapter's contracts with the service. They stay in service/, which owns them and is their
# main user, instead of moving to common/: the direct-session socket's wire format (the frames
# and session.proto) and where that socket sits, the launch settings an adapter-started server is compared by, and
# CouchDB's query-server protocol (commands and JSON text), the one protocol library issue 9
# asks the server, its workers and the adapter to share. Each is free of the pool, the worker,
# gRPC and the RPC layer; the check below makes sure they stay so. (absl_view, a header that
# hands a string view between std and Debian's abseil, is a helper the protocol code uses.)
ADAPTER_MAY_USE=(
  //service/common:absl_view
  //service/common:framing
  //service/couchdb:json_text
  //service/couchdb:protocol
  //service/session:direct_socket_path
  //service/session:launch_settings
  //service/session:session_proto
  //service/session:session_cc_gen
)

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

# Every rule of the service the adapter reaches must be one of ADAPTER_MAY_USE: a contract that
# starts to pull in more of the service fails here as well as a new direct dependency.
check_adapter() {
  local allowed offending target
  allowed=$(printf ' + %s' "${ADAPTER_MAY_USE[@]}")
  allowed=${allowed# + }
  offending=$("${bazel[@]}" \
    "kind(rule, deps(//adapter/...) intersect //service/...) except ($allowed)" 2>/dev/null)
  for target in $offending; do
    check '//adapter/...' "$target" \
      "the adapter uses the service only through its contracts (ADAPTER_MAY_USE in $0), not $target"
  done
}

run_checks() {
  check '//service/...' '//client/... + //adapter/...' "the service must not depend on its clients"
  check '//client/...' '//service/...' \
    "the clients must not depend on the service (what both need belongs in common/)"
  check_adapter
  check '//common/...' '//service/... + //client/... + //adapter/...' \
    "common/ is shared by the service and its clients, so it depends on neither"
  # Among the commands: upload uses sync's registry removal, so sync must not use upload; what
  # both need is in client/cli (arguments, streams, printing) or client/couch (reaching CouchDB).
  check '//client/sync/...' '//client/upload/...' \
    "cnp sync must not depend on cnp upload (upload uses sync's registry removal)"
  check '//client/couch/...' '//client/cli/... + //client/upload/... + //client/sync/... + //client/derive/...' \
    "client/couch serves the commands, so it depends on none of them"
}

if [ "${1:-}" != "--self-test" ]; then
  run_checks
  exit $status
fi

probes=(client/layering_self_test adapter/layering_self_test)
trap 'rm -rf "${probes[@]}"' EXIT
for probe in "${probes[@]}"; do
  [ -e "$probe" ] && { echo "layering self-test: $probe exists already" >&2; exit 2; }
done
mkdir -p "${probes[@]}"
echo 'cc_library(name = "probe", deps = ["//service/upload:uploader"])' \
  >client/layering_self_test/BUILD.bazel
echo 'cc_library(name = "probe", deps = ["//service/couchdb:query_session"])' \
  >adapter/layering_self_test/BUILD.bazel

failed=0
expect_refused() {
  local what=$1 out
  out=$(mktemp)
  status=0
  "$2" 2>"$out"  # in this shell, so that it sets $status
  if [ "$status" -eq 0 ] || ! grep -q "$3" "$out"; then
    echo "layering self-test: $what was not refused" >&2
    failed=1
  else
    echo "layering self-test: $what refused, as it must be"
  fi
  rm -f "$out"
}
check_client() {
  check '//client/...' '//service/...' "the clients must not depend on the service"
}
expect_refused "a client depending on //service/upload:uploader" check_client \
  '//client/layering_self_test:probe'
expect_refused "the adapter depending on //service/couchdb:query_session" check_adapter \
  '//service/couchdb:query_session'
exit $failed
