"""What functions print, as events of the worker's log.

Printed text goes to stderr, the log both cnp-worker and cnp-server write (CouchDB's pipe must
carry nothing but the protocol), never raw: in JSON format a raw line among the JSON lines is
one a collector cannot read, and in either a printed newline could forge a line of the server's
own, and a function printing what its documents hold could fill the log as fast as it runs. So
cnp-worker installs these writers (interpreter.cc): each line printed, by print(), a write to
sys.stderr or sys.stderr.buffer or warnings.warn, becomes one event attributed to the function
running, escaped and held to a number of lines and bytes a second (builtin_module.cc).

Code written for the interpreter's own stderr (sys.stderr.buffer.write, fileno() for
faulthandler or a child's stderr) must work the same way, so these writers answer as it does,
but for their encoding: the log's, UTF-8, whatever the locale. Bytes written to the descriptor
itself bypass the events, as they bypass Python's buffers.
"""

import codecs
import io
import sys

import _cnp

# A line that grows past this without a newline is written as it stands (the log would cut it
# there anyway), so that a function printing without newlines cannot hold memory without end.
_LONGEST_LINE = 16 << 10


class LogBytes(io.BufferedIOBase):
    """The binary side of a LogLines (its .buffer): bytes are decoded as UTF-8, the log's
    encoding, what does not decode becoming U+FFFD, into the same lines. A character split
    across two writes is decoded whole."""

    def __init__(self, lines):
        super().__init__()
        self._lines = lines
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @property
    def name(self):
        return self._lines.name

    @property
    def mode(self):
        return "wb"

    def writable(self):
        return True

    def isatty(self):
        return self._lines.isatty()

    def fileno(self):
        return self._lines.fileno()

    def write(self, data):
        if isinstance(data, str):
            raise TypeError("a bytes-like object is required, not 'str'")
        data = memoryview(data).cast("B")
        self._lines.write(self._decoder.decode(bytes(data)))
        return len(data)

    def flush(self):
        self._lines.flush()


class LogLines(io.TextIOBase):
    """A text stream whose lines go to the worker's log, each as one event. `like` is the
    stream printed text would otherwise go to (the interpreter's stderr): its descriptor and
    errors are this one's. Its encoding is the log's, UTF-8, whatever the locale would have made
    the interpreter's (under the C locale, ASCII: every byte above 0x7f written to .buffer was
    replaced, UTF-8 or not)."""

    def __init__(self, stream, like=None):
        super().__init__()
        self._stream = stream
        self._like = like
        self._pending = []
        self._pending_size = 0
        self._buffer = LogBytes(self)

    @property
    def name(self):
        return "<%s>" % self._stream

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return getattr(self._like, "errors", None) or "backslashreplace"

    @property
    def buffer(self):
        return self._buffer

    @property
    def mode(self):
        return "w"

    @property
    def line_buffering(self):
        return True

    def writable(self):
        return True

    def isatty(self):
        return self._like is not None and self._like.isatty()

    def fileno(self):
        if self._like is None:
            raise io.UnsupportedOperation("fileno")
        return self._like.fileno()

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
    # The interpreter's stdout is this same stderr (interpreter.cc).
    like = sys.stderr
    sys.stdout = LogLines("stdout", like)
    sys.stderr = LogLines("stderr", like)
