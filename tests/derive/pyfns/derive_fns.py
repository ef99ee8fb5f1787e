"""Handlers for the cnp derive tests, built with couch_named_python.mr's helpers."""

import os
import time

from couch_named_python.mr import count, handler, item, join, value

town = item("town")
per_town = handler(count)
org_key = item("_id")
report_org = item("org")
company = join({"orgs": {"_id": "org_id", "name": None}, "reports": {"_id": "report_id", "title": None}})
amount = value("n")


def lone_surrogate(doc):
    """The town, or on a document marked "lone" a key holding a lone surrogate: a str Python
    allows and JSON text cannot carry as UTF-8."""
    yield ("\ud800" if doc.get("lone") else doc["town"]), None


def town_upper(doc):
    yield doc["town"].upper(), {"size": doc.get("n", 0)}


def whole(doc):
    yield doc["town"], doc


def fragile(doc):
    if doc.get("bad"):
        raise ValueError("bad document " + doc["_id"])
    yield doc["town"], doc.get("n")


def crash(doc):
    """Kills its own worker on a document that asks for it, as a segfault would."""
    if doc.get("crash"):
        os.kill(os.getpid(), 9)
    yield doc["town"], None


def slow_town(doc):
    """The town, after doc["sleep"] seconds: a Map call that outlasts a short lease timeout."""
    time.sleep(doc.get("sleep", 0))
    yield doc["town"], None


def announced_slow_town(doc):
    """slow_town, after writing a byte to the FIFO doc["fifo"]: its reader then knows that the
    Map call has started."""
    with open(doc["fifo"], "w") as fifo:
        fifo.write("x")
    return slow_town(doc)


def total(keys, rows, rereduce=False):
    return sum(amount(row) or 0 for row in rows)


def heavy(doc):
    """The town's row, and `wide` rows of 20,000 bytes each: a few such documents' rows together
    pass a cnp-server started with a small --max-call-bytes, and a very wide one's alone."""
    yield doc["town"], None
    for n in range(doc.get("wide", 0)):
        yield [doc["town"], n], "x" * 20000


def count_or_pad(keys, rows, rereduce=False):
    """The rows of a key, except for the key "Huge", whose result is 200,000 bytes long."""
    if keys and keys[0][0] == "Huge":
        return "x" * 200000
    return len(rows)


def town_pad(doc):
    """The town, with the document's "pad" (if any) as the value."""
    yield doc["town"], doc.get("pad")


def given_rows(doc):
    """The document's own "rows" ([key, value] pairs); raises on a document marked "bad"."""
    if doc.get("bad"):
        raise ValueError("bad document " + doc["_id"])
    for key, val in doc.get("rows", []):
        yield key, val


# The document's "n" as the key and as the value: an int of any size, exactly.
number_both = item("n", "n")
mr_value = value()


def value_total(keys, rows, rereduce=False):
    """The sum of the rows' values (ints of any size stay exact)."""
    return sum(mr_value(row) for row in rows)


async def async_towns(doc):
    """Written async def by mistake: calling it runs none of its body."""
    return [(doc["town"], 1)]


def reserved_fields(doc):
    """A value with fields a derived document cannot hold (mr_total, _secret) beside one it can."""
    yield doc["town"], {"mr_total": 5, "_secret": 1, "kept": 2}


def reserved_result(keys, rows, rereduce=False):
    """A reduce result with a field a derived document cannot hold (mr_count) beside one it can."""
    return {"mr_count": len(rows), "count": len(rows)}


def logged_slow_town(doc):
    """slow_town, after appending the document's id to the file doc["log"]: its reader learns
    which documents a Map call was started on."""
    with open(doc["log"], "a") as log:
        log.write(doc["_id"] + "\n")
    return slow_town(doc)


def padded_rows(doc):
    """doc["rows"] rows keyed [town, i], each with doc["pad"] bytes of value: one document's
    rows that together pass a small answer limit."""
    for i in range(doc["rows"]):
        yield [doc["town"], i], "x" * doc["pad"]


def count_or_sleep(keys, rows, rereduce=False):
    """The number of rows of a key, after 30 seconds for the key "Slow": a Reduce call that
    outlasts a short --timeout."""
    if keys and keys[0][0] == "Slow":
        time.sleep(30)
    return len(rows)
