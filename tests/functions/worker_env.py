"""Reports the worker's Python environment, for the isolation tests."""

import sys


def sys_path(doc):
    yield "sys.path", sys.path


def stdout_is_stderr(doc):
    yield "stdout", sys.stdout.fileno() == sys.stderr.fileno() == 2
