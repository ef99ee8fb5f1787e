"""What a function with a yield in it, or written async def, gives when called: no answer.

Calling such a function returns a generator (a coroutine, an async generator) without running
a line of its body. The object is truthy and is not a response, so taking it for the function's
answer would let every document through a filter, or send its repr as a list's tail: it is a
TypeError saying why instead, as for validate_doc_update (service/worker/validate_task.cc).
"""

import types

_UNRUN = (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)


def _name(function):
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    if module and name:
        return f"{module}.{name}"
    return name or repr(function)


def ran(result, function, outcome, rule):
    """`result`, unless `function` returned without running its body.

    Then the generator or coroutine is closed (a coroutine never awaited warns on the worker's
    stderr otherwise) and TypeError says that the function "returned a coroutine without
    running its body, so it <outcome>: <rule> (take out its yield or async)".
    """
    if not isinstance(result, _UNRUN):
        return result
    kind = type(result).__name__
    close = getattr(result, "close", None)  # an async generator has only aclose(), awaitable
    if close is not None:
        close()
    raise TypeError(
        f"{_name(function)} returned a {kind} without running its body, so it {outcome}: "
        f"{rule} (take out its yield or async)")
