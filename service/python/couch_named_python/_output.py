"""What functions print, as events of the worker's log under --log-format=json.

cnp-worker sends sys.stdout to stderr, the log both it and cnp-server write (CouchDB's pipe
must carry nothing but the protocol). In text format printed lines pass through as they are;
in JSON format a raw line among the JSON lines is one a collector cannot read, so cnp-worker
installs these writers instead (interpreter.cc): each line printed, by print(), a write to
sys.stderr or warnings.warn, becomes one event attributed to the function running.
"""

import io
import sys

import _cnp

# A line that grows past this without a newline is written as it stands (the log would cut it
# there anyway), so that a function printing without newlines cannot hold memory without end.
_LONGEST_LINE = 16 << 10


class LogLines(io.TextIOBase):
    """A text stream whose lines go to the worker's log, each as one event."""

    def __init__(self, stream):
        super().__init__()
        self._stream = stream
        self._pending = []
        self._pending_size = 0

    @property
    def name(self):
        return "<%s>" % self._stream

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        start = 0
        while True:
            end = text.find("\n", start)
            if end < 0:
                break
            self._pending.append(text[start:end])
            self._emit()
            start = end + 1
        if start < len(text):
            self._pending.append(text[start:])
            self._pending_size += len(text) - start
            if self._pending_size >= _LONGEST_LINE:
                self._emit()
        return len(text)

    def flush(self):
        if self._pending:
            self._emit()

    def _emit(self):
        line = "".join(self._pending)
        self._pending = []
        self._pending_size = 0
        _cnp.output_line(self._stream, line)


def install():
    sys.stdout = LogLines("stdout")
    sys.stderr = LogLines("stderr")
