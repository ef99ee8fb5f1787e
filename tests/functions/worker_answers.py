"""Functions whose answers grow far past what they are given: for the answer limit
(Task.max_answer_bytes) tests."""

from couch_named_python import emit, log


def echo(doc):
    yield doc["_id"], doc


def keeps_emitting(doc):
    """Catches what emit() raises once the answer is full, and goes on: a bounded number of
    times, so that on a worker with no limit it still ends."""
    refused = 0
    for i in range(2000):
        try:
            emit(i, doc)
        except RuntimeError:
            refused += 1
    yield "refused", refused


def logs_the_doc(doc):
    for _ in range(50):
        log(doc["blob"])
    yield doc["_id"], None


def same_value_many_times(keys, values, rereduce):
    """A small Python value whose JSON is large: one 100 kB string, 200 times."""
    return ["x" * 100_000] * 200


def show_fills_the_answer(doc, req):
    """log() lines until no more fit, then a response that cannot fit either."""
    size = 1 << 19
    while size >= 1:
        try:
            log("x" * size)
        except RuntimeError:
            size //= 2
    return {"body": "y" * 1000}
