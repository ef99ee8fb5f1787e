"""Filters, shows, updates, rewrites and lists for the cnp-worker tests."""

from couch_named_python import (Forbidden, NotFound, Redirect, Unauthorized, get_row, log, send,
                                start)


def by_town(doc, req):
    return doc.get("town") == req["query"]["town"]


def filter_crashes(doc, req):
    return doc["town"] == "x"


def hello(doc, req):
    name = doc["town"] if doc else "nobody"
    return {"body": f"Hello {name} x={req['query']['x']}", "headers": {"Content-Type": "text/plain"}}


def plain_string(doc, req):
    return "just a string for " + (doc["_id"] if doc else "null")


def missing(doc, req):
    raise NotFound("custom missing")


def missing_default(doc, req):
    raise NotFound()


def go_away(doc, req):
    raise Redirect("/elsewhere", permanent=True)


def show_crashes(doc, req):
    return doc["nope"]


class _ReprExits(Exception):
    """An exception whose repr() raises SystemExit."""

    def __repr__(self):
        raise SystemExit("from repr")


def show_raises_repr_exits(doc, req):
    raise _ReprExits("no repr")


def bump(doc, req):
    if doc is None:
        return None, "nothing to bump"
    doc["n"] = doc.get("n", 0) + 1
    return doc, {"json": {"n": doc["n"]}}


def answers_a_number(doc, req):
    return doc, 5


def rewrite(req):
    if req["path"][-1] == "none":
        return None
    return {"path": "/db/_design/x/_view/v", "query": req["query"]}


def rows(head, req):
    start({"headers": {"Content-Type": "text/plain"}})
    send(f"total_rows={head['total_rows']} offset={head['offset']}\n")
    while (row := get_row()) is not None:
        send(f"{row['id']} {row['key']} {row['value']}\n")
    return "END\n"


def generator_rows(head, req, rows):
    yield {"headers": {"Content-Type": "text/csv"}}
    yield "id,key\n"
    for row in rows:
        log("row " + row["id"])
        yield f"{row['id']},{row['key']}\n"


def no_rows(head, req):
    send("head only")
    return "tail"


def first_only(head, req):
    row = get_row()
    send("first=" + row["id"])
    return "stop"


def list_crashes(head, req):
    get_row()
    raise KeyError("boom")


def exits(doc, req):
    raise SystemExit(3)


def late_start(head, req):
    get_row()
    start({"code": 201, "headers": {"X-Late": "yes"}})
    send("after start")
    get_row()
    return "done"


def needs_doc(doc, req):
    """A show written for an existing document, as couchjs shows often are."""
    return {"body": doc["town"]}


def show_forbidden(doc, req):
    raise Forbidden("members only")


def show_unauthorized(doc, req):
    raise Unauthorized("log in first")


def update_forbidden(doc, req):
    raise Forbidden("no updates here")


def filter_forbidden(doc, req):
    raise Forbidden("no changes for you")


def list_forbidden(head, req):
    get_row()
    raise Unauthorized("log in to list")


def rewrite_forbidden(req):
    raise Forbidden("no way through")


def surrogate_body(doc, req):
    return {"body": "half a pair: \udc80"}


def show_not_json(doc, req):
    """A response that json cannot hold: a set."""
    return {"json": {"when": {1}}}


def update_not_json(doc, req):
    return doc, {"s": {1}}


def rewrite_not_json(req):
    return {"path": {1}}


def number_is(doc, req):
    return doc["v"] == int(req["query"]["v"])


def filter_yields(doc, req):
    """An access-control filter with a yield in it, as for filtered replication."""
    if doc.get("owner") == req["userCtx"]["name"]:
        yield True


async def filter_async(doc, req):
    return False


async def show_async(doc, req):
    return "never rendered"


async def update_async(doc, req):
    return doc, "never updated"


def rewrite_yields(req):
    yield {"path": "x"}


async def list_async(head, req):
    return "never listed"


def start_then_return(doc, req):
    """couch-named-python merged what start() was given into the show's answer."""
    start({"code": 404, "headers": {"Content-Type": "text/plain"}})
    return "not here"


def start_send_and_return(doc, req):
    start({"headers": {"X-Start": "1", "X-Both": "start"}, "code": 201})
    send("a")
    send("b")
    return {"body": "c", "headers": {"X-Ret": "2", "X-Both": "returned"}}


def start_then_redirect(doc, req):
    start({"code": 200, "headers": {"X-Start": "1"}})
    send("lost")
    raise Redirect("/elsewhere")


def list_redirects(head, req):
    send("before")
    raise Redirect("/z")


def list_redirects_after_a_row(head, req):
    get_row()
    raise Redirect("/z")


def rewrite_to_a_string(req):
    return "some/path"


def rewrite_false(req):
    return False


class _Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text today")


class _NotAnException(BaseException):
    """Raised by a function, it is still its error (couchjs catches anything thrown)."""


def show_unprintable(doc, req):
    raise _Unprintable()


def show_base_exception(doc, req):
    raise _NotAnException("beyond Exception")


def list_catches_a_refused_log(head, req):
    """Logs a line longer than its answer may be, catches the refusal, and goes on."""
    try:
        log("x" * 200000)
    except RuntimeError:
        pass
    while (row := get_row()) is not None:
        send(row["id"])
    return "end"
