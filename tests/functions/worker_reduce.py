"""Reduce functions for the cnp-worker tests."""

from couch_named_python import log


def total(keys, values, rereduce):
    log(f"rereduce={rereduce} keys={keys!r}")
    return sum(values)


def total_two_args(keys, values):
    return sum(values)


def describe(keys, values, rereduce):
    return {"keys": keys, "values": values, "rereduce": rereduce}


def fails(keys, values, rereduce):
    raise ZeroDivisionError("no reduction today")


def returns_set(keys, values, rereduce):
    return {1, 2}


def yields(keys, values, rereduce):
    yield sum(values)


async def reduces_async(keys, values, rereduce):
    return sum(values)
