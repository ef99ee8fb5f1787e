"""Named Python functions for CouchDB, run by cnp-worker.

Design documents name functions by their import path, e.g. ``"myviews.townmap|123"``. The
modules that hold them import their helpers from here, exactly as with couch-named-python::

    from couch_named_python import Unauthorized, Forbidden, version

    @version(123)
    def townmap(doc):
        yield doc["town"], 1
"""

from couch_named_python.errors import (
    Forbidden,
    ForbiddenError,
    NotFound,
    NotFoundError,
    Redirect,
    Unauthorized,
    UnauthorizedError,
)
from couch_named_python.helpers import emit, get_row, log, send, start
from couch_named_python.versioning import version

__all__ = [
    "Forbidden",
    "ForbiddenError",
    "NotFound",
    "NotFoundError",
    "Redirect",
    "Unauthorized",
    "UnauthorizedError",
    "emit",
    "get_row",
    "log",
    "send",
    "start",
    "version",
]
