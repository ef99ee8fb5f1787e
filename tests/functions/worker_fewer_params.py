"""Validate and design functions that declare fewer parameters than CouchDB passes, as modules
written for older servers do; each says what it was given (service/worker/accepted_arguments.h
has the rule)."""

import functools

from couch_named_python import Forbidden, Unauthorized, get_row, send, start, version


def forwarding(function):
    """A decorator as authors write them: the wrapper takes *args and calls on."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(len(args), *args[:1])

    return wrapper


# ---- validate_doc_update: CouchDB passes (new, old, userctx, secobj) --------------------------

def validate_three(new, old, userctx):
    """secobj came later: couch-named-python's validators declared three."""
    raise Forbidden(f"three: new={new['_id']} old={old!r} user={userctx['name']}")


def validate_two(new, old):
    raise Unauthorized(f"two: new={new['_id']} old={old and old['_id']}")


def validate_one(new):
    if "town" not in new:
        raise Forbidden(f"one: {new['_id']} has no town")


def validate_with_defaults(new, old, userctx=None, secobj="unset", *, strict="unset"):
    """Parameters with defaults count; keyword-only ones are never given."""
    raise Forbidden(f"defaults: user={userctx['name']} secobj={secobj!r} strict={strict}")


def validate_star(*args):
    raise Forbidden(f"star: {len(args)} arguments, secobj={args[3]!r}")


def validate_none():
    return None


@forwarding
def validate_wrapped(count, new):
    """The wrapper is called, with everything: not what __wrapped__ declares."""
    raise Forbidden(f"wrapped: the wrapper got {count} arguments, new={new['_id']}")


# ---- filters, shows, updates: CouchDB passes (doc, req) ------------------------------------------

def filter_doc(doc):
    return doc["town"] == "Oslo"


def filter_keyword_req(doc, *, req=None):
    return req is None and doc["town"] == "Lima"


@version(3)
def show_doc(doc):
    return f"show of {doc['_id'] if doc else None}"


def show_star(*args):
    return f"{len(args)} arguments, query x={args[1]['query']['x']}"


def show_none():
    return "never"


@forwarding
def show_wrapped(count, doc):
    return f"the wrapper got {count} arguments for {doc['_id']}"


def update_doc(doc):
    doc["seen"] = True
    return doc, "updated without req"


# ---- lists: CouchDB passes (head, req), a generator list (head, req, rows) ---------------------

def list_head(head):
    start({"headers": {"Content-Type": "text/plain"}})
    send(f"total_rows={head['total_rows']}\n")
    while (row := get_row()) is not None:
        send(f"{row['id']}\n")
    return "END\n"


def generator_head_req(head, req):
    """A generator that asks for its rows with get_row()."""
    yield f"limit={req['query']['limit']}\n"
    while (row := get_row()) is not None:
        yield f"{row['id']}\n"
