"""Design functions (filters, view filters, shows, updates, rewrites, lists) for cnp-worker.

cnp-worker calls run_design() and run_interactive_list() with the function already resolved
and checked, and the arguments CouchDB sent already turned into Python objects. Each returns
(reply, error): the reply CouchDB expects, and for a function that raised, the error as
(type name, message, doc id, exception) next to a CouchDB error reply. The message ends with
where the operator's code raised it, " (views/town.py:8 in townmap)", when that is known.

A function that raises is answered as couchjs (CouchDB's share/server) answers it, but for one
deliberate difference:
- Forbidden and Unauthorized are answered ["error", "forbidden"|"unauthorized", msg], which
  CouchDB turns into HTTP 403 / 401. couchjs has no such answer outside validate_doc_update: a
  thrown {forbidden: msg} object is a render_error (500) in a show, update, list or rewrite, and
  an unnamed_error in a filter. A Python function that raises Forbidden means the 403;
- NotFound is a thrown ["error", "not_found", msg] (HTTP 404);
- a show that raises on a missing document (doc null, a request path naming one) is
  ["error", "not_found", "document not found"], whatever it raised (render.js runShow);
- any other exception in a show, update, list or rewrite is render.js's renderError: a
  ["log", "function raised error: ..."] line, then ["error", "render_error", ...];
- any other exception in a filter or a view filter is not caught by filter.js: the main loop
  answers ["error", <the exception's class name>, <its message>], as it does for a JavaScript
  Error (["error", e.name, e]).

A function is given as many of CouchDB's arguments as it declares, by _cnp.call (the rule is
in service/worker/accepted_arguments.h): a show written f(doc) gets the document.
"""

from couch_named_python import _render
from couch_named_python._traceback import user_traceback
from couch_named_python._unrun import ran
from couch_named_python.errors import Forbidden, NotFound, Redirect, Unauthorized
from couch_named_python.helpers import log

try:
    import _cnp
except ImportError:  # only the worker calls this module
    _cnp = None

FILTER, VIEW_FILTER, SHOW, UPDATE, REWRITE, LIST = 1, 2, 3, 4, 5, 6

# How many arguments CouchDB sends for each kind; later ones are ignored.
ARGUMENT_COUNTS = {FILTER: 2, VIEW_FILTER: 1, SHOW: 2, UPDATE: 2, REWRITE: 1, LIST: 3}


class _Raised(Exception):
    """A user function raised on a particular document."""

    def __init__(self, cause, doc):
        super().__init__()
        self.cause = cause
        self.doc = doc


def _doc_id(doc):
    if isinstance(doc, dict) and isinstance(doc.get("_id"), str):
        return doc["_id"]
    return ""


def _as_response(value, kind):
    if isinstance(value, Redirect):
        return value.response()
    if isinstance(value, str):
        return {"body": value}
    if isinstance(value, dict):
        return value
    article = "an" if kind[:1] in "aeiou" else "a"
    raise TypeError(
        f"{article} {kind} function must return a dict or a str, not {type(value).__name__}")


def _filter(function, docs, req):
    call = _cnp.call
    results = []
    for doc in docs:
        try:
            # bool() of a generator is True: a filter with a yield in it let everything through.
            passes = ran(call(function, doc, req), function, "filtered nothing",
                         "a filter function returns True to let a document through and False "
                         "to hold it back")
            results.append(bool(passes))
        except BaseException as exc:  # noqa: BLE001 - anything raised is the function's error
            raise _Raised(exc, doc) from exc
    return [True, results]


def _view_filter(function, docs):
    # Unlike a view, a view filter does not skip a document whose map function raises: couchjs
    # (filter.js) lets the exception out, and CouchDB fails the _changes request.
    results = []
    for doc in docs:
        try:
            results.append(_cnp.map_emits(function, doc))
        except BaseException as exc:  # noqa: BLE001 - anything raised is the function's error
            raise _Raised(exc, doc) from exc
    return [True, results]


def _is_doc_request_path(req):
    """render.js isDocRequestPath: /db/_design/d/_show/name/docid names a document."""
    path = req.get("path") if isinstance(req, dict) else None
    return isinstance(path, list) and len(path) > 5


def _show(function, doc, req):
    try:
        return _render_show(function, doc, req)
    except BaseException as exc:  # noqa: BLE001 - anything raised is the function's error
        cause = exc.cause if isinstance(exc, _Raised) else exc
        # The function could not cope with a missing document: couchjs answers 404. A
        # MemoryError stays what it is: the worker must be replaced.
        if doc is None and _is_doc_request_path(req) and not isinstance(cause, MemoryError):
            return ["error", "not_found", "document not found"]
        raise


def _render_show(function, doc, req):
    rendering = _render.Rendering()
    with rendering:
        try:
            response = ran(_cnp.call(function, doc, req), function, "rendered nothing",
                           "a show function returns its response, a dict or a str")
        except Redirect as redirect:
            response = redirect
        except NotFound:
            raise
        except BaseException as exc:  # noqa: BLE001 - anything raised is the function's error
            raise _Raised(exc, doc) from exc
    if isinstance(response, Redirect):
        # Answered as itself, as couch-named-python answered it: a code start() was given
        # must not turn the 302 back into a 200.
        return ["resp", response.response()]
    response = {} if response is None else _as_response(response, "show")
    return ["resp", _with_start(response, rendering)]


def _with_start(response, rendering):
    """couch-named-python's show answer: the chunks send() was given before the body, then
    whatever start() was given over the returned response, its headers over the returned ones.

    couchjs (render.js runShow) keeps start() only when send() was used too, and then copies
    start()'s keys (code, headers) into the response's headers; old modules must run unchanged,
    so a show's start({"code": 404, ...}) is its 404, with or without send().
    """
    start = rendering.start_response
    if not rendering.chunks and not start:
        return response
    response = dict(response)
    if rendering.chunks:
        response["body"] = "".join(rendering.chunks) + response.get("body", "")
    for key, value in start.items():
        if key == "headers" and isinstance(value, dict) and isinstance(response.get(key), dict):
            response[key] = {**response[key], **value}
        else:
            response[key] = value
    return response


def _update(function, doc, req):
    if isinstance(req, dict) and req.get("method") == "GET":
        return ["error", "method_not_allowed", "Update functions do not allow GET"]
    try:
        result = ran(_cnp.call(function, doc, req), function, "updated nothing",
                     "an update function returns (doc, response)")
    except Redirect as redirect:
        return ["up", None, redirect.response()]
    except NotFound:
        raise
    except BaseException as exc:  # noqa: BLE001 - anything raised is the function's error
        raise _Raised(exc, doc) from exc
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(
            f"an update function must return (doc, response), not {type(result).__name__}")
    new_doc, response = result
    return ["up", new_doc, _as_response(response, "update")]


def _rewrite(function, req):
    result = ran(function(req), function, "rewrote nothing",
                 "a rewrite function returns where the request goes, or None for no rule")
    # couchjs (render.js runRewrite): a false result is no rule, and a string is the path to
    # go to (CouchDB's own rewrite_js tests return 'foo.txt'); CouchDB keeps the request's
    # method when the answer names none. Anything else goes to CouchDB, which checks it.
    if result is None or result is False or (isinstance(result, str) and not result):
        return ["no_dispatch_rule"]
    if isinstance(result, str):
        return ["ok", {"path": result}]
    return ["ok", result]


def _list(function, head, req, rows):
    """The whole-list form: every row is given at once and all chunks come back together."""
    chunks = []
    response = {}
    remaining = iter(rows)

    def exchange(step):
        nonlocal response
        chunks.extend(step[1])
        if len(step) > 2:
            response = step[2]
        return next(remaining, None)

    end = _render.Rendering(exchange).run_list(function, head, req)
    chunks.extend(end[1])
    if len(end) > 2:
        response = end[2]
    return ["end", chunks, response]


_RUNNERS = {
    FILTER: _filter,
    VIEW_FILTER: _view_filter,
    SHOW: _show,
    UPDATE: _update,
    REWRITE: _rewrite,
    LIST: _list,
}


# The kinds whose exceptions go through render.js's renderError; the others (filters) reach
# couchjs's main loop as they are.
_RENDERED = {SHOW, UPDATE, REWRITE, LIST}


def _where_raised(exc):
    return _cnp.where_raised(exc) if _cnp is not None else ""


def _text(exc):
    """str(exc), or what the worker's C++ says of an exception whose str() raises: an error
    that cannot be printed is still the function's error, not the worker's."""
    try:
        return str(exc)
    except BaseException:  # noqa: BLE001
        return "<exception str() failed>"


def _error_reply(exc, kind, doc=None):
    name = type(exc).__name__
    message = _text(exc)
    where = _where_raised(exc)
    if where:
        message = f"{message} ({where})" if message else f"({where})"
    raised = (name, message, _doc_id(doc), exc)
    if kind not in _RENDERED:
        return ["error", name, message or name], raised
    try:
        log(f"function raised error: {exc!r} \nstacktrace: {user_traceback(exc)}")
    except BaseException:  # noqa: BLE001 - a repr() that raises (even SystemExit) must not hide the error itself
        log(f"function raised error: {name} \nstacktrace: {user_traceback(exc)}")
    text = f"{name}: {message}" if message else name
    return ["error", "render_error", text], raised


def _guarded(run, kind):
    try:
        return run(), None
    except NotFound as exc:
        return ["error", "not_found", _text(exc) or "document not found"], None
    except _Raised as raised:
        return _answer_to(raised.cause, kind, raised.doc)
    except BaseException as exc:  # noqa: BLE001 - sys.exit() in a show must not end the worker
        return _answer_to(exc, kind)


def _answer_to(exc, kind, doc=None):
    # HTTP 403 or 401: the function's deliberate answer, not its error (couchjs would answer a
    # thrown {forbidden: msg} with a 500; see the module's docstring).
    if isinstance(exc, Forbidden):
        return ["error", "forbidden", _text(exc)], None
    if isinstance(exc, Unauthorized):
        return ["error", "unauthorized", _text(exc)], None
    if isinstance(exc, NotFound):
        return ["error", "not_found", _text(exc) or "document not found"], None
    return _error_reply(exc, kind, doc)


def run_design(kind, function, args):
    """Runs one design function call; `args` is the argument array CouchDB sent."""
    runner = _RUNNERS[kind]
    return _guarded(lambda: runner(function, *args[: ARGUMENT_COUNTS[kind]]), kind)


def run_interactive_list(function, head, req):
    """Runs a list function whose rows arrive one step at a time through _cnp.list_step."""
    return _guarded(lambda: _render.Rendering(_cnp.list_step).run_list(function, head, req), LIST)
