"""A module whose top-level code raises: importing it fails, whatever is asked of it."""

RATE = 1 / 0


def f(doc):
    yield doc["_id"], RATE
