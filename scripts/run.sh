#!/usr/bin/env bash
# The main job: installs what cnp needs, builds it, starts cnp-server on a socket of its own
# (in a temporary directory, so that it runs beside a server already on the default socket, e.g.
# one an adapter started) with the example functions of couch-named-python's README (examples/myviews.py), and shows
# them answering real calls: through `cnp`, through cnp-adapter speaking CouchDB's query-server
# protocol, and through `cnp upload` writing the design document to a CouchDB-compatible server
# (pouchdb-server on loopback).
#
#   scripts/run.sh           run the demonstration, then stop everything it started
#   scripts/run.sh --serve   afterwards keep cnp-server running in the foreground (Ctrl-C stops)
set -euo pipefail
cd "$(dirname "$0")/.."
serve=false
[ "${1:-}" = "--serve" ] && serve=true

scripts/setup.sh
echo "== building (the first build takes a few minutes)"
# Bazel's server would stay behind for hours (as in scripts/test.sh, it is shut down once the
# build is done, whether or not it succeeded).
status=0
bazel build --disk_cache="$HOME/.cache/cnp-bazel-disk" \
  //service:cnp-server //client/cli:cnp //adapter:cnp-adapter || status=$?
bin=$(bazel info bazel-bin 2>/dev/null) || status=1
bazel shutdown >/dev/null 2>&1
[ "$status" -eq 0 ] || exit "$status"
cnp="$bin/client/cli/cnp"

work=$(mktemp -d /tmp/cnp-run-XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

target="unix:$work/cnp.sock"
# Every cnp command below finds the server through CNP_TARGET; cnp-adapter is given --target.
export CNP_TARGET="$target"
echo "== starting cnp-server at $target (log: $work/cnp-server.log)"
mkfifo "$work/ready"
"$bin/service/cnp-server" --listen="$target" --python-path=examples --allow-module=myviews \
  --ready-fd=3 3>"$work/ready" 2>"$work/cnp-server.log" &
pids+=($!)
if ! read -r _ <"$work/ready"; then
  echo "cnp-server did not start:" >&2
  cat "$work/cnp-server.log" >&2
  exit 1
fi

# Runs a command after printing it as it can be pasted into a shell: the binaries' long Bazel
# paths shortened, an argument with a character the shell would read single-quoted.
show() {
  local line="\$" arg
  for arg in "$@"; do
    arg=${arg//$bin\/client\/cli\//}
    if [[ $arg =~ [^A-Za-z0-9_./=:,@%+-] ]]; then arg="'${arg//\'/\'\\\'\'}'"; fi
    line+=" $arg"
  done
  echo; echo "$line"; "$@"
}

echo; echo "== the functions, resolved where they run (note the |version suffixes)"
show "$cnp" resolve myviews.townmap myviews.validate myviews.count_towns os.system || true

echo; echo "== map: the README's townmap on examples/docs.json (doc-4 has no town: a per-document error)"
show "$cnp" map 'myviews.townmap|123' examples/docs.json || [ $? -eq 3 ]  # 3: a function raised

echo; echo "== reduce and rereduce"
echo '[[["Oslo","doc-1"],null],[["Kyoto","doc-2"],null],[["Oslo","doc-3"],null]]' > "$work/kvs.json"
show "$cnp" reduce 'myviews.count_towns|1' "$work/kvs.json"
echo '[3, 4, 5]' > "$work/partials.json"
show "$cnp" reduce --rereduce 'myviews.count_towns|1' "$work/partials.json"

echo; echo "== validate_doc_update as daniel, then as bob, then a document without a town"
echo '{"_id":"doc-5","town":"Lima"}' > "$work/new.json"
echo '{"_id":"doc-6"}' > "$work/notown.json"
show "$cnp" validate 'myviews.validate|21' "$work/new.json" --user='{"db":"demo","name":"daniel","roles":[]}' || true
show "$cnp" validate 'myviews.validate|21' "$work/new.json" --user='{"db":"demo","name":"bob","roles":[]}' || true
show "$cnp" validate 'myviews.validate|21' "$work/notown.json" --user='{"db":"demo","name":"daniel","roles":[]}' || true

echo; echo "== a version mismatch is refused, with couch-named-python's message"
show "$cnp" map 'myviews.townmap|122' examples/docs.json || true

echo; echo "== cnp-adapter speaking CouchDB's query-server protocol (what CouchDB would send)"
cat > "$work/couchdb.txt" <<'LINES'
["reset",{"reduce_limit":true,"timeout":5000}]
["add_fun","myviews.townmap|123"]
["map_doc",{"_id":"doc-1","_rev":"1-a","town":"Oslo"}]
["map_doc",{"_id":"doc-4","_rev":"1-d"}]
["reduce",["myviews.count_towns|1"],[[["Oslo","doc-1"],null],[["Oslo","doc-3"],null]]]
["rereduce",["myviews.count_towns|1"],[2,3]]
["ddoc","new","_design/location",{"_id":"_design/location","_rev":"1-x","language":"python","validate_doc_update":"myviews.validate|21"}]
["ddoc","_design/location",["validate_doc_update"],[{"_id":"doc-5","town":"Lima"},null,{"db":"demo","name":"bob","roles":[]},{}]]
["add_fun","myviews.townmap|1"]
LINES
echo "CouchDB writes:"; sed 's/^/  > /' "$work/couchdb.txt"
echo "cnp-adapter --target=$target answers:"
"$bin/adapter/cnp-adapter" --target="$target" <"$work/couchdb.txt" | sed 's/^/  < /'

echo; echo "== cnp check, then cnp upload to a CouchDB-compatible server (pouchdb-server on loopback)"
show "$cnp" check examples/design.yml
if tests/upload/install_pouchdb_server.sh >/dev/null 2>&1; then
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  (cd "$work" && exec "$OLDPWD/tests/upload/node_modules/.bin/pouchdb-server" --in-memory -o 127.0.0.1 -p "$port" >"$work/pouchdb.log" 2>&1) &
  pids+=($!)
  couch="http://127.0.0.1:$port"
  curl -sf --retry 50 --retry-connrefused --retry-max-time 30 "$couch/" >/dev/null
  curl -sf -X PUT "$couch/demo" >/dev/null
  show "$cnp" upload "$couch" demo examples/design.yml
  echo; echo "(uploading the same YAML again writes nothing)"
  show "$cnp" upload "$couch" demo examples/design.yml
  echo; echo "\$ curl $couch/demo/_design/location"
  curl -s "$couch/demo/_design/location"; echo
else
  echo "(pouchdb-server could not be installed from npm: upload not shown)"
fi

echo
if $serve; then
  echo "== cnp-server keeps serving at $target; point CouchDB at it with"
  echo "   COUCHDB_QUERY_SERVER_PYTHON=\"$bin/adapter/cnp-adapter --target=$target\""
  echo "   Ctrl-C stops it."
  wait "${pids[0]}"
else
  echo "== done; stopping cnp-server (scripts/run.sh --serve keeps it running)"
fi
