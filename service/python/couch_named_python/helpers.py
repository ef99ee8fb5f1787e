"""log, emit and the list helpers start, send and get_row.

log and emit are implemented in C inside cnp-worker (module _cnp). Outside the worker this
package still imports, so that modules of functions can be imported and unit-tested: emit and
the list helpers then raise with an explanation, and log writes to stderr.
"""

import json
import sys

from couch_named_python import _render

try:
    import _cnp
except ImportError:  # not inside cnp-worker
    _cnp = None

_OUTSIDE = "{}() only works while cnp-worker runs a {} function"

if _cnp is not None:
    emit = _cnp.emit
    log = _cnp.log
else:

    def emit(key, value=None, /):
        """Adds the row [key, value] to the view (map functions only); emit(key) is [key, null]."""
        raise RuntimeError(_OUTSIDE.format("emit", "map"))

    def log(message):
        """Sends a log line to CouchDB with this call's reply (not a str: as JSON text)."""
        if not isinstance(message, str):
            try:
                message = json.dumps(message, separators=(",", ":"))
            except (TypeError, ValueError):
                message = str(message)
        print(message, file=sys.stderr)


def start(response=None):
    """Sets the response (code, headers) of a list or show function before its first row."""
    _render.current("start").start(response)


def send(chunk):
    """Sends a chunk of the body from a list or show function."""
    _render.current("send").send(chunk)


def get_row():
    """The next view row in a list function, or None after the last one."""
    return _render.current("get_row").get_row()
