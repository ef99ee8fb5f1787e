"""The example functions of couch-named-python's README, unchanged, plus a reduce.

Run them with `scripts/run.sh`, or point cnp-server at this directory:
    cnp-server --python-path=examples --allow-module=myviews
"""
from couch_named_python import Unauthorized, Forbidden, version


@version(123)
def townmap(doc):
    yield doc["town"]


@version(21)
def validate(new, old, userctx, secobj):
    if userctx["name"] != "daniel":
        raise Unauthorized("No")
    elif "town" not in new:
        raise Forbidden("No town in doc")


@version(1)
def count_towns(keys, values, rereduce):
    """Counts documents per town; on rereduce, adds up the partial counts."""
    if rereduce:
        return sum(values)
    return len(values)
