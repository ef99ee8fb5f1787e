#!/bin/sh
# Runs a Python test with Debian's interpreter (the one the workers embed), with the shared
# Python test helpers (tests/support/cnp_testing.py) importable.
export PYTHONPATH="${TEST_SRCDIR:-${RUNFILES_DIR:-.}}/cnp/tests/support${PYTHONPATH:+:$PYTHONPATH}"
exec /usr/bin/python3.11 "$@"
