"""Map functions for the cnp-worker tests: every form couch-named-python users write."""

from couch_named_python import emit, log, version


def town(doc):
    yield doc["town"], 1


def bare_town(doc):
    # The seed README's form: a single item is the key, the value is null.
    yield doc["town"]


def town_list(doc):
    return [(doc["town"], doc["n"]), [doc["n"], None]]


def town_emit(doc):
    emit(doc["town"], doc["n"])
    emit([doc["town"], doc["n"]], {"id": doc["_id"]})


def emit_key_only(doc):
    """JavaScript's emit(doc.town): a key with no value is a row with a null value."""
    emit(doc["town"])


def emit_three(doc):
    emit(doc["town"], doc["n"], "extra")


def oslo_only(doc):
    if doc.get("town") == "Oslo":
        emit(doc["_id"], None)


def raises_quietly(doc):
    raise ValueError("quiet")


def raises_without_a_message(doc):
    raise KeyboardInterrupt


def emit_and_yield(doc):
    emit("first", 1)
    yield "second", 2
    emit("third", 3)


def chatty(doc):
    log("mapping " + doc["_id"])
    log({"n": doc["n"]})
    yield doc["_id"], None


def logs_values(doc):
    log({"n": doc["n"], "town": doc["town"]})
    log([1, 2.5, None, True])
    log({doc["_id"]})  # a set: JSON cannot carry it
    log(ValueError("not a str"))
    yield doc["_id"], None


def needs_missing(doc):
    yield doc["missing"], 1


def emits_then_raises(doc):
    emit("lost", 1)
    raise ValueError("broken after emitting")


def emits_a_set(doc):
    yield doc["_id"], {1, 2}


def catches_bad_emit(doc):
    try:
        emit("bad", object())
    except TypeError:
        pass
    emit("good", 1)


def key_kinds(doc):
    yield {2: "int", 1.5: "float", True: "bool", None: "none", "s": "str"}, None


def tuple_key(doc):
    yield {(1, 2): "tuple"}, None


def echo(doc):
    yield doc, None


def strips(doc):
    """Changes its document, as a view that drops what it does not index might."""
    doc.pop("town")
    doc["n"] = -1
    doc.setdefault("added", True)
    _spoil(doc)
    yield doc["n"], None


def _spoil(value):
    """Changes every list and dict inside `value`, however deep."""
    if isinstance(value, list):
        for item in value:
            _spoil(item)
        value.append("appended")
    elif isinstance(value, dict):
        for item in value.values():
            _spoil(item)
        value["spoilt"] = True


def numbers(doc):
    yield [2**70, -(2**80), 0.1, 1e300, -0.0, float("nan"), float("inf"), 1.0], None


def returns_str(doc):
    return "not rows"


def prints(doc):
    print("hello from a map function")
    yield "printed", True


def prints_its_id(doc):
    print(doc["_id"])
    return []


def size(doc):
    yield doc["_id"], len(doc["blob"])


def blow_memory(doc):
    hog = bytearray(8 << 30)
    yield "never", len(hog)


_held = []


def fills_memory_then_emits(doc):
    """Takes all the memory its cap allows, gives back doc["free_mb"] (room for Python's string,
    not for the worker's buffer holding its row as well), then emits a string of doc["mb"]."""
    _held.clear()
    try:
        while True:
            _held.append(bytearray(4 << 20))
    except MemoryError:
        pass
    for _ in range(doc["free_mb"] // 4):
        _held.pop()
    text = "a" * (doc["mb"] << 20)
    try:
        yield "big", text
    finally:
        _held.clear()


@version(556)
def versioned(doc):
    yield doc["_id"], 556


def unversioned(doc):
    yield doc["_id"], None


def surrogate_error(doc):
    log("half a pair: \ud800")
    raise ValueError("bad \udc80 text")


def lone_surrogates(doc):
    """Text holding halves of surrogate pairs, as a broken decode or surrogateescape leaves it."""
    yield "s", "\ud800"
    yield {"k\udc80": ["a\"\ud83d\n\x01", "\ud83d\ude00"]}, "caf\u00e9"


def int_enum_key(doc):
    import enum

    class Color(enum.IntEnum):
        RED = 1

    yield {Color.RED: "red"}, Color.RED


def yields_a_triple(doc):
    """`yield key, value, extra`: a tuple of three where a pair is meant."""
    yield doc["town"], 1
    yield doc["town"], doc["n"], "extra"


def yields_a_list_key(doc):
    """A yielded list is a key alone, whatever its length."""
    yield [doc["town"], doc["n"], 3]


def returns_one_pair(doc):
    """A single pair returned where a list of them is meant."""
    return ("a", 1)


def returns_pairs_and_a_key(doc):
    return [(doc["town"], 1), doc["n"]]


def returns_pairs(doc):
    return ((doc["town"], 1), ["n", doc["n"]], [[], None])


def number_and_type(doc):
    # Every digit of doc["v"], as the function sees it, and what type it has.
    yield str(doc["v"]), type(doc["v"]).__name__
    yield "value", doc["v"]


# couch-named-python ignored what a map function returned: these are the forms its users wrote.
def emit_then_true(doc):
    emit(doc["_id"], 1)
    return True


def emit_then_doc(doc):
    emit(doc["_id"], 1)
    return doc


def emit_then_pairs(doc):
    """The returned pairs were never rows: only the emitted one is."""
    emit(doc["_id"], 1)
    return [("returned", 2)]


def early_false(doc):
    if doc.get("type") != "x":
        return False
    emit(doc["_id"], 1)


def returns_true(doc):
    return True


def emits_a_set_value(doc):
    emit(doc["_id"], {1, 2})


async def async_map(doc):
    return [(doc["_id"], 1)]
