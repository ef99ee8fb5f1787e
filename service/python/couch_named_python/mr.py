"""Map/reduce handlers for ``cnp derive``: the helpers ``item``, ``value``, ``count``, ``join``.

``cnp derive`` (the idea of qvarn-mr) keeps derived databases: it follows source databases'
``_changes``, runs map handlers on the changed documents through cnp-server, writes the rows as
ordinary documents to a target database, and re-reduces the changed keys of a reduce target.
Handlers are named functions in a module on the service's --python-path::

    from couch_named_python.mr import count, handler, item, join

    org_key = item("_id")            # map: one row per org, keyed by its id
    report_org = item("org")         # map: one row per report, keyed by its org
    reports_per_org = handler(count) # reduce: the number of rows of a key
    company_report = join({"orgs": {"_id": "org_id", "name": None},
                           "reports": {"_id": "report_id"}})

and a declaration file names them (see ``cnp derive --help``).

A map handler receives one source document and yields ``(key, value)`` pairs (or returns a
list of them). A reduce handler is called as CouchDB calls one, ``f(keys, rows, rereduce)``,
with every row of one key of the map target: ``keys`` is ``[[key, row_id], ...]`` and each row is
the map target's document (``mr_key``, ``mr_value``, ``mr_source_id``, ``mr_source_type`` and the
fields of a dict value; with ``sources: true`` in the declaration also ``mr_source``, the source
document itself). ``cnp derive`` never asks for a rereduce.

The service refuses to call anything that belongs to this package, so a helper is made a
handler of *your* module: the factories (``item``, ``join``, ``handler``) return functions that
belong to the module that called them.
"""

from couch_named_python._factory import owned_by_caller

__all__ = ["count", "handler", "item", "join", "value"]


def handler(function):
    """Makes ``function`` (e.g. ``count``) a handler that belongs to the calling module."""
    def call(*args):
        return function(*args)

    return owned_by_caller(call, getattr(function, "__name__", "handler"))


def item(key, value=None):
    """A map handler: the row ``(doc[key], doc[value])``, or ``(doc[key], None)``.

    >>> item("town")({"town": "Oslo", "n": 2})
    [('Oslo', None)]
    >>> item("town", "n")({"town": "Oslo", "n": 2})
    [('Oslo', 2)]

    A document without ``key`` yields no row (``value`` missing gives ``None``).
    """
    def map_item(doc):
        if key not in doc:
            return []
        return [(doc[key], doc.get(value) if value is not None else None)]

    return owned_by_caller(map_item, "item_{}".format(key))


def value(field=None):
    """A getter for reduce handlers: a row's ``mr_value``, or its field ``field``.

    >>> value()({"mr_value": 1, "foo": 42})
    1
    >>> value("foo")({"mr_value": 1, "foo": 42})
    42
    """

    def get(row):
        return row.get("mr_value") if field is None else row.get(field)

    return get


def count(keys, rows=None, rereduce=False):
    """The number of rows of a key. As a reduce handler (``handler(count)``) it counts the rows;
    on a rereduce it sums the counts. Given one iterable (qvarn-mr's form) it counts its items.

    >>> count(iter([1, 2, 3]))
    3
    >>> count([["k", "a"], ["k", "b"]], [{}, {}])
    2
    """
    if rows is None:
        return sum(1 for _ in keys)
    if rereduce:
        return sum(rows)
    return len(rows)


def join(mapping):
    """A reduce handler that merges the source documents of a key's rows into one document.

    ``mapping`` names, per source database, the fields to take from its documents and the name
    each gets in the result (``None``: the same name)::

        join({"orgs": {"_id": "org_id", "name": None}, "reports": {"_id": "report_id"}})

    gives ``{"org_id": ..., "name": ..., "report_id": ...}``; rows of sources the mapping does
    not name are ignored, and of several rows of one source the last (in row id order) wins.
    It needs the source documents: declare the reduce handler with ``sources: true``.
    """
    fields = {source: dict(names) for source, names in mapping.items()}

    def join_rows(keys, rows, rereduce=False):
        if rereduce:
            raise ValueError("join cannot rereduce")
        result = {}
        for row in rows:
            names = fields.get(row.get("mr_source_type"))
            if names is None:
                continue
            if "mr_source" not in row:
                raise ValueError(
                    "join needs the source documents: declare this reduce handler with "
                    "'sources: true'")
            source = row["mr_source"] or {}
            for field, alias in names.items():
                if field in source:
                    result[alias or field] = source[field]
        return result

    return owned_by_caller(join_rows, "join")
