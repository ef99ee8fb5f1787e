#!/usr/bin/env bash
# Installs cnp from a Bazel build: `bazel run //:install -- --prefix=/usr/local`.
#
#   <prefix>/bin/{cnp-server,cnp-worker,cnp-adapter,cnp}
#   <prefix>/share/cnp/python/couch_named_python   (cnp-worker looks in <exe dir>/../share/cnp/python)
#   <prefix>/share/doc/cnp/*.txt                   (each program's --help, man-style)
#   <prefix>/share/cnp/systemd/cnp-server.{socket,service}, <prefix>/share/cnp/cnp-server.yaml
#   <prefix>/share/cnp/grafana/cnp.json, <prefix>/share/cnp/nginx/cnp.conf   (examples)
#
# cnp-server finds cnp-worker next to itself and cnp-adapter finds cnp-server next to itself,
# so the binaries stay together in bin/. With --systemd the units also go where systemd looks
# for them: /usr/lib/systemd/system for --prefix=/usr (a package's), /usr/local/lib/systemd/system
# for /usr/local (the administrator's); both are the installer's and replaced by each install,
# and an operator's changes go in drop-ins (`systemctl edit cnp-server.socket` writes
# /etc/systemd/system/cnp-server.socket.d/override.conf), which no install touches. For any
# other prefix they go to /etc/systemd/system, where a unit changed since the last install is
# kept, not replaced (the new one stays in <prefix>/share/cnp/systemd, and the installer says
# so). The example config goes to /etc/cnp/cnp-server.yaml (never over an existing one), and
# the `cnp` system user is created. For a package build set DESTDIR: every file goes under it
# while the units still name <prefix>, and no user is created (the package's own scripts do).
set -euo pipefail

prefix=/usr/local
systemd=0
for arg in "$@"; do
  case "$arg" in
    --prefix=*) prefix=${arg#--prefix=} ;;
    --systemd) systemd=1 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install: unknown argument '$arg' (use --prefix=DIR and --systemd)" >&2; exit 2 ;;
  esac
done
# `bazel run` starts us in the runfiles tree: a relative prefix means the caller's directory.
if [[ "$prefix" != /* ]]; then prefix="${BUILD_WORKING_DIRECTORY:-$PWD}/$prefix"; fi
while [[ "$prefix" == */ && "$prefix" != / ]]; do prefix=${prefix%/}; done
# The units name the prefix in ExecStart= and Documentation=, where systemd splits words at
# spaces and reads quotes, backslashes, "%" and "$" itself: such a prefix installed units that
# run something else, or nothing (an operator's trial; systemd-analyze: "not executable").
if [[ "$prefix" =~ [[:space:]\"\'\\%\$\;] ]]; then
  echo "install: --prefix=$prefix holds a space or one of \" ' \\ % \$ ;, which systemd's unit" \
       "lines would read as syntax; choose a prefix without them" >&2
  exit 2
fi

# The files come from our runfiles: beside us under `bazel run`, or the test's tree when a test
# runs us.
runfiles=""
for candidate in "$0.runfiles/cnp" "${RUNFILES_DIR:-/nonexistent}/cnp" "${TEST_SRCDIR:-/nonexistent}/cnp"; do
  if [ -x "$candidate/service/cnp-server" ]; then runfiles=$candidate; break; fi
done
if [ -z "$runfiles" ]; then
  echo "install: cannot find the built binaries; run it as: bazel run //:install -- --prefix=DIR" >&2
  exit 1
fi

destdir=${DESTDIR:-}
if [ -n "$destdir" ] && [[ "$destdir" != /* ]]; then destdir="${BUILD_WORKING_DIRECTORY:-$PWD}/$destdir"; fi
root="$destdir$prefix"
bin="$root/bin"
python_dir="$root/share/cnp/python"
doc="$root/share/doc/cnp"
install -d "$bin" "$python_dir" "$doc" "$root/share/cnp/systemd" "$root/share/cnp/grafana" \
  "$root/share/cnp/nginx"
install -m 0755 "$runfiles/service/cnp-server" "$runfiles/service/worker/cnp-worker" \
  "$runfiles/adapter/cnp-adapter" "$runfiles/client/cli/cnp" "$bin/"
# A fresh copy: a module removed since the last install must not linger.
rm -rf "$python_dir/couch_named_python"
(cd "$runfiles/service/python" && find couch_named_python -name '*.py' -print0 |
  while IFS= read -r -d '' file; do install -D -m 0644 "$file" "$python_dir/$file"; done)

# Each program's --help, from the installed binaries themselves.
"$bin/cnp-server" --help > "$doc/cnp-server.txt" 2>&1 || true
"$bin/cnp-adapter" --help > "$doc/cnp-adapter.txt" 2>&1 || true
{
    "$bin/cnp" --help
    for command in map reduce validate resolve upload check derive sync; do
        printf '\n\n'
        "$bin/cnp" "$command" --help
    done
} > "$doc/cnp.txt" 2>&1 || true

# The units name the installed cnp-server and its help text (where it runs from: <prefix>).
# Made aside first: with --systemd the copies of the last install, still in share/cnp/systemd,
# tell whether the operator changed a unit in /etc since.
units="$(mktemp -d)"
trap 'rm -rf "$units"' EXIT
# The prefix as sed's replacement text: its "&", "|" and backslashes stand for themselves (a
# prefix with "&" wrote the matched text in its place).
replacement="$(printf '%s/' "$prefix" | sed 's/[&|\\]/\\&/g')"
for unit in cnp-server.socket cnp-server.service; do
  sed "s|/usr/local/|$replacement|g" "$runfiles/packaging/systemd/$unit" > "$units/$unit"
done
install -m 0644 "$runfiles/packaging/cnp-server.yaml" "$root/share/cnp/cnp-server.yaml"
install -m 0644 "$runfiles/packaging/grafana/cnp.json" "$root/share/cnp/grafana/cnp.json"
install -m 0644 "$runfiles/packaging/nginx/cnp.conf" "$root/share/cnp/nginx/cnp.conf"

if ((systemd)); then
  if [ -z "$destdir" ] && ! getent passwd cnp >/dev/null; then
    useradd --system --user-group --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin --comment "cnp named Python functions" cnp
  fi
  etc_units="$destdir/etc/systemd/system"
  case "$prefix" in
    /usr) unitdir="$destdir/usr/lib/systemd/system" ;;
    /usr/local) unitdir="$destdir/usr/local/lib/systemd/system" ;;
    *) unitdir="$etc_units" ;;  # systemd looks nowhere under other prefixes
  esac
  install -d -m 0755 "$unitdir"
  # Created, never changed: an operator who closed it (chmod 0750, for a token and keys) keeps
  # it closed across reinstalls (install -d -m chmods a directory that exists).
  [ -d "$destdir/etc/cnp" ] || install -d -m 0755 "$destdir/etc/cnp"
  for unit in cnp-server.socket cnp-server.service; do
    last="$root/share/cnp/systemd/$unit"  # what the last install shipped, if any
    if [ "$unitdir" != "$etc_units" ]; then
      install -m 0644 "$units/$unit" "$unitdir/$unit"
      # A unit in /etc hides ours for good. One an older installer put there and nobody
      # changed goes; a changed one stays, and the operator is told to make it a drop-in.
      if [ -f "$etc_units/$unit" ]; then
        if [ -f "$last" ] && cmp -s "$etc_units/$unit" "$last"; then
          rm -f "$etc_units/$unit"
        else
          echo "install: $etc_units/$unit overrides the new $unitdir/$unit; put its changes" \
            "in a drop-in (systemctl edit $unit) and remove it" >&2
        fi
      fi
    elif [ ! -e "$etc_units/$unit" ] || cmp -s "$etc_units/$unit" "$units/$unit" ||
         { [ -f "$last" ] && cmp -s "$etc_units/$unit" "$last"; }; then
      install -m 0644 "$units/$unit" "$etc_units/$unit"
    else
      echo "install: kept $etc_units/$unit, changed since it was installed; the new unit is" \
        "$root/share/cnp/systemd/$unit (put local changes in a drop-in: systemctl edit $unit)" >&2
    fi
  done
  [ -e "$destdir/etc/cnp/cnp-server.yaml" ] ||
    install -m 0644 "$root/share/cnp/cnp-server.yaml" "$destdir/etc/cnp/"
  if [ -z "$destdir" ]; then
    echo "install: units in $unitdir; now: systemctl daemon-reload &&" \
      "systemctl enable --now cnp-server.socket" >&2
  else
    echo "install: units in $unitdir; the package must create the system user cnp" >&2
  fi
fi
for unit in cnp-server.socket cnp-server.service; do
  install -m 0644 "$units/$unit" "$root/share/cnp/systemd/$unit"
done
echo "install: cnp installed in $root${destdir:+ (to run from $prefix)}" >&2
