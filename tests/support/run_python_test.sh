#!/bin/sh
# Runs a Python test with Debian's interpreter (the one the workers embed).
exec /usr/bin/python3.11 "$@"
