"""Handlers for the cnp derive tests, built with couch_named_python.mr's helpers."""

from couch_named_python.mr import count, handler, item, join, value

town = item("town")
per_town = handler(count)
org_key = item("_id")
report_org = item("org")
company = join({"orgs": {"_id": "org_id", "name": None}, "reports": {"_id": "report_id", "title": None}})
amount = value("n")


def town_upper(doc):
    yield doc["town"].upper(), {"size": doc.get("n", 0)}


def whole(doc):
    yield doc["town"], doc


def fragile(doc):
    if doc.get("bad"):
        raise ValueError("bad document " + doc["_id"])
    yield doc["town"], doc.get("n")


def total(keys, rows, rereduce=False):
    return sum(amount(row) or 0 for row in rows)
