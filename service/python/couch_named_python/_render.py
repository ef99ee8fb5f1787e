"""The state behind start(), send() and get_row(), with couchjs's rules for list steps.

These rules are those of CouchDB's share/server/render.js, which CouchDB 3.4.3 is built
around:
- the first get_row() sends ["start", chunks, response]; the response always has "headers";
- each later get_row() sends ["chunks", chunks] (with the response if start() was called
  again since);
- after the last row (list_end) get_row() returns None without sending anything;
- when the function returns, the tail it returned is added to the chunks and
  ["end", chunks] is sent; a function that never called get_row() sends its start first.
"""

import _thread
import inspect

from couch_named_python._unrun import ran
from couch_named_python.errors import Redirect

try:
    # Calls a function with as many arguments as it declares (service/worker/accepted_arguments.h).
    from _cnp import call as _call
except ImportError:  # helpers.py imports this module outside cnp-worker too, where no list runs
    _call = None

_current = None


def current(helper):
    if _current is None:
        raise RuntimeError(f"{helper}() only works while cnp-worker runs a list or show function")
    # A thread the function started is not part of its call: what it sent would go into the
    # answer of whatever call runs then, maybe another session's.
    if _current.thread != _thread.get_ident():
        raise RuntimeError(f"{helper}() called from another thread than the function's: only "
                           "the thread cnp-worker called the function on may use it")
    return _current


class Rendering:
    """One list or show call. `exchange(step)` sends a step and returns the next row or None."""

    def __init__(self, exchange=None):
        self._exchange = exchange
        self.chunks = []
        self.start_response = {}
        self.new_header = False
        self.got_row = False
        self.last_row = False

    def __enter__(self):
        global _current
        self.thread = _thread.get_ident()
        self._saved, _current = _current, self
        return self

    def __exit__(self, *exc_info):
        global _current
        _current = self._saved
        return False

    def start(self, response=None):
        self.start_response = response or {}
        self.new_header = True

    def send(self, chunk):
        self.chunks.append(chunk if isinstance(chunk, str) else str(chunk))

    def take_chunks(self):
        chunks, self.chunks = self.chunks, []
        return chunks

    def get_row(self):
        if self._exchange is None:
            raise RuntimeError("get_row() only works in list functions")
        if self.last_row:
            return None
        if not self.got_row:
            self.got_row = True
            response = self.start_response
            response.setdefault("headers", {})
            step = ["start", self.take_chunks(), response]
            self.start_response = {}
            self.new_header = False
        else:
            step = self.step("chunks")
        row = self._exchange(step)
        if row is None:
            self.last_row = True
        return row

    def step(self, label):
        """A ["chunks"|"end", chunks] step, with the response if start() was called late."""
        if self.new_header:
            self.new_header = False
            return [label, self.take_chunks(), self.start_response]
        return [label, self.take_chunks()]

    def run_list(self, function, head, req):
        """Runs a list function to its end and returns the final ["end", chunks] step.

        Two forms work: f(head, req) calling get_row()/send()/start() and maybe returning a
        tail, and a generator f(head, req, rows) yielding dicts (for start) and strings. Either
        may declare fewer parameters, f(head) say, and is given those.
        """
        with self:
            try:
                tail = self._run(function, head, req)
            except Redirect as redirect:
                # couch-named-python answered it with start({"code": 302 (301), "headers":
                # {"Location": url}}), the chunks sent before it going with the start. Once the
                # start has gone out its code cannot change: then it stays an error.
                if self.got_row:
                    raise
                self.start(redirect.response())
                tail = None
            if not self.got_row:
                self.get_row()
            if tail is not None:
                self.send(tail)
            return self.step("end")

    def _run(self, function, head, req):
        """Calls the list function; returns its tail (None for the generator form)."""
        if inspect.isgeneratorfunction(function):
            for item in _call(function, head, req, iter(self.get_row, None)):
                if isinstance(item, dict):
                    self.start(item)
                else:
                    self.send(item)
            return None
        # An async def list, or one returning a generator (not one itself: it was not given
        # the rows), ran none of its body; its repr must not become the tail.
        return ran(_call(function, head, req), function, "listed nothing",
                   "a list function calls send() and get_row() and returns its tail, or is a "
                   "generator f(head, req, rows) yielding its chunks")
