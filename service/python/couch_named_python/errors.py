"""Exceptions a function raises to give CouchDB a particular answer."""


class Forbidden(Exception):
    """Raised by validate_doc_update to refuse a write, or by any design function to refuse a
    request: HTTP 403 with this message (in validate_doc_update one value that is not a str,
    Forbidden({"field": "title"}), goes to CouchDB as JSON, as couchjs sends a thrown object)."""


class Unauthorized(Exception):
    """Raised by validate_doc_update or any design function when the user must log in: HTTP 401
    with this message."""


class NotFound(Exception):
    """Raised by a show, list or any other design function, validate_doc_update included:
    HTTP 404, "document not found" if no message."""


class Redirect(Exception):
    """Raised (or returned) by a show or update function, or raised by a list function before
    its first row, to redirect the client."""

    def __init__(self, url, permanent=False):
        super().__init__(url)
        self.url = url
        self.permanent = permanent

    def response(self):
        """The CouchDB response object for this redirect."""
        return {"code": 301 if self.permanent else 302, "headers": {"Location": self.url}}


# The names couch-named-python 0.2 defined; existing modules import them.
ForbiddenError = Forbidden
UnauthorizedError = Unauthorized
NotFoundError = NotFound
