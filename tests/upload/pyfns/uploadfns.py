"""Functions for the upload tests with the real worker: the seed README's myviews, plus the
cases the upload must tell apart (undecorated, missing)."""

from couch_named_python import Forbidden, Unauthorized, version


@version(123)
def townmap(doc):
    yield doc["town"]


@version(21)
def validate(new, old, userctx, secobj):
    if userctx["name"] != "daniel":
        raise Unauthorized("No")
    elif "town" not in new:
        raise Forbidden("No town in doc")


def plain_map(doc):
    yield doc["_id"], None


@version(4)
def count_towns(keys, values, rereduce):
    return len(values)


not_a_function = 42


# Functions whose call returns before running their body: a generator is fine as a map or a
# list, never as a filter or a reduce; nothing written async def is fine anywhere.
def generator_filter(doc, req):
    yield doc.get("town") == "Oslo"


async def async_map(doc):
    return [(doc["_id"], None)]


async def async_list(head, req):
    return "nothing"


def generator_list(head, req, rows):
    for row in rows:
        yield row["key"]


def generator_reduce(keys, values, rereduce):
    yield len(values)


# Parameters that take, or cannot take, what each kind of function is passed.
def no_parameters():
    return []


def needs_keyword(doc, *, town):
    return [(town, None)]


def map_with_default(doc, extra=None):
    return [(doc["_id"], extra)]


def takes_anything(*args, **kwargs):
    return [(args[0]["_id"], None)]


def two_value_reduce(keys, values):
    return len(values)


def one_parameter(doc):
    return []
