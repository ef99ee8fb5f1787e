#!/usr/bin/env bash
# Installs pouchdb-server (pinned in package-lock.json) into tests/upload/node_modules for the
# upload integration tests. Idempotent: does nothing when the locked version is already there.
# Install scripts are skipped on purpose: they only build leveldown's native code, and the
# tests run pouchdb-server --in-memory, which does not use it.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f node_modules/pouchdb-server/package.json ] &&
   [ node_modules/.package-lock.json -nt package-lock.json ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "install_pouchdb_server: npm is missing; run scripts/setup.sh" >&2; exit 1; }
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
