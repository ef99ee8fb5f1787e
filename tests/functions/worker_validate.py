"""validate_doc_update functions for the cnp-worker tests (the seed README's example)."""

from couch_named_python import Forbidden, Unauthorized, version
from couch_named_python import ForbiddenError, UnauthorizedError


@version(21)
def validate(new, old, userctx, secobj):
    if userctx["name"] != "daniel":
        raise Unauthorized("No")
    elif "town" not in new:
        raise Forbidden("No town in doc")


def legacy(new, old, userctx, secobj):
    # couch-named-python 0.2 only defined the *Error names.
    if userctx is None:
        raise UnauthorizedError("log in first")
    if old is not None and old.get("locked"):
        raise ForbiddenError("locked")
    if secobj != {}:
        raise ValueError(f"unexpected security object {secobj!r}")


def crashes(new, old, userctx, secobj):
    return new["no such field"]


def tells_number(new, old, userctx, secobj):
    # Refuses every document, saying what its "v" is: the test reads what Python was given.
    raise Forbidden(f"{type(new['v']).__name__} {new['v']}")


def yields(new, old, userctx, secobj):
    # A map function's yield left in a validator: its body never runs when it is called.
    if "town" not in new:
        raise Forbidden("No town in doc")
    yield new["town"], 1


def rejects_with(new, old, userctx, secobj):
    # Raises what the document names: a rejection with a value that is not a str, or NotFound.
    from couch_named_python import NotFound
    kind = {"forbidden": Forbidden, "unauthorized": Unauthorized, "not_found": NotFound}
    raise kind[new["raise"]](*new.get("args", []))


class _ClassLookupRaises(Exception):
    """An exception whose __class__ raises when looked up: isinstance() fails on it with an
    exception of its own."""

    @property
    def __class__(self):
        raise ValueError("no class today")


def raises_odd(new, old, userctx, secobj):
    raise _ClassLookupRaises("odd")
