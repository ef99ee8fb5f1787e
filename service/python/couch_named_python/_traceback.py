"""Tracebacks of users' functions as their authors want to read them: their own frames only.

A user function is called by cnp-worker, often through this package (the design-function
runtime, a list's rendering, a helper factory), and may call back into it (get_row(), send()).
Those frames say nothing about the user's code, so every frame whose file lies in this package
is left out, wherever it is in the stack.
"""

import os
import traceback

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _is_ours(filename):
    return os.path.abspath(filename).startswith(_PACKAGE_DIR)


def user_frames(tb):
    """The frames of traceback `tb` outside this package, as a traceback.StackSummary."""
    frames = traceback.extract_tb(tb)
    return traceback.StackSummary.from_list(f for f in frames if not _is_ours(f.filename))


def user_traceback(exc):
    """The exception's frames, from the user's function down, formatted."""
    return "".join(user_frames(exc.__traceback__).format())


def format_user_traceback(exc):
    """The whole traceback as Python prints it, with this package's frames left out."""
    frames = user_frames(exc.__traceback__).format()
    lines = ["Traceback (most recent call last):\n", *frames] if frames else []
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines)
