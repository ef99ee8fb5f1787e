#!/usr/bin/env bash
# The docstring examples of couch_named_python.mr, run outside cnp-worker with Debian's Python.
set -euo pipefail
cd "${TEST_SRCDIR}/${TEST_WORKSPACE}"
PYTHONPATH=service/python /usr/bin/python3.11 -m doctest -v service/python/couch_named_python/mr.py | tail -3
