#!/usr/bin/env bash
# Installs every Debian package cnp needs to build, run and test. Idempotent: a second run only
# checks that the packages are there. Both README commands call it.
set -euo pipefail

packages=(
  bazel-bootstrap bazel-bootstrap-source      # Bazel 4.2.3 and its offline rule repositories
  g++ pkg-config
  clang                # clang 14: the thread-safety analysis of scripts/thread_safety_check.sh
  libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev  # RPC and API
  libabsl-dev          # Status, flags, strings, time, synchronization
  libasio-dev          # the event loop and coroutines of the service's control plane
  libyaml-cpp-dev      # config files and design-document YAML
  rapidjson-dev        # JSON parsing and writing on the hot path
  python3.11-dev       # the CPython embedded in every worker
  libcurl4-openssl-dev # HTTP(S) to CouchDB for uploads and cnp derive
  libmicrohttpd-dev    # the HTTP server of --metrics-listen (/metrics)
  libssl-dev           # libcrypto: SHA-256 for the ids of cnp derive's documents
  libsystemd-dev       # sd_listen_fds: the sockets systemd passes (socket activation)
  libgtest-dev libgmock-dev  # tests
  openssl              # test certificates, made at test time
  python3-grpcio       # a second-language gRPC client in tests
  python3-h2           # raw HTTP/2 in tests: streams that hold back part of a gRPC message
  nginx                # the load balancer of the scale-out test and load benchmark (grpc_pass)
  nodejs               # node: pouchdb-server, the CouchDB stand-in of the upload, sync and derive tests
  curl                 # the demo's (scripts/run.sh) and the README examples' HTTP calls
)
# npm comes with the machine's Node.js build; Debian's own nodejs needs its npm package.
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
