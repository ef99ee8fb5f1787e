"""Replays every real CouchDB 3.4.3 transcript (testdata/couchdb-3.4.3-js) through cnp-adapter
and cnp-server, with each JavaScript function replaced by its Python equivalent in
tests/functions/fixture_fns.py, and checks every reply against the one couchjs gave.

Replies are compared as JSON values. Where the text is JavaScript's own (an exception's
description, a JS error class as the error id), the shape is compared instead."""

import json
import os
import sys
import unittest

import harness

# A unique piece of each JavaScript source in the transcripts → the Python function's name.
JS_TO_PYTHON = [
    ("if (doc.town) emit(doc.town, doc.n);", "fixture_fns.town_n|1"),
    ("throw({boom: doc._id})", "fixture_fns.map_error"),
    ("emit([doc.town, doc.n % 3], doc.n)", "fixture_fns.town_mod3"),
    ("return {count: values.length, total: sum(values)}", "fixture_fns.count_total|2"),
    ("function(doc){ emit(doc.town, doc.n); }", "fixture_fns.town_n_always"),
    ("return doc.town === req.query.town;", "fixture_fns.by_town"),
    ("if (doc.town === 'Oslo') emit(doc._id, null);", "fixture_fns.oslo"),
    ("body: 'Hello ' + (doc ? doc.town : 'nobody')", "fixture_fns.hello"),
    ("json: {id: doc && doc._id, method: req.method, q: req.query}, code: 202",
     "fixture_fns.show_json"),
    ("return 'just a string for '", "fixture_fns.show_str"),
    ("throw(['error', 'not_found', 'custom missing'])", "fixture_fns.show_err"),
    ("send('total_rows=' + head.total_rows", "fixture_fns.list_rows"),
    ("provides('json'", "fixture_fns.list_json"),
    ("town: 'New', n: 0, created: true", "fixture_fns.bump"),
    ("'nothing to do for '", "fixture_fns.noop"),
    ("has forbid flag", "fixture_fns.validate|3"),
]


def python_name(source):
    names = [name for piece, name in JS_TO_PYTHON if piece in source]
    if len(names) != 1:
        raise AssertionError(f"no single Python equivalent for {source!r}: {names}")
    return names[0]


def rewrite_functions(value):
    """Replaces every JavaScript function source inside a design document."""
    if isinstance(value, str) and value.lstrip().startswith("function"):
        return python_name(value)
    if isinstance(value, dict):
        return {key: rewrite_functions(item) for key, item in value.items()}
    return value


def rewrite_command(command):
    """A CouchDB command with its function sources (not its documents) made Python names."""
    name = command[0]
    if name == "add_fun":
        return [name, python_name(command[1])] + command[2:]
    if name in ("reduce", "rereduce"):
        return [name, [python_name(source) for source in command[1]]] + command[2:]
    if name == "ddoc" and command[1] == "new":
        return command[:3] + [rewrite_functions(command[3])] + command[4:]
    return command


def sections(path):
    """Each query-server process's exchanges: [(command line, [reply lines])]."""
    result, current = [], None
    with open(path, encoding="utf-8") as transcript:
        for raw in transcript:
            line = raw.rstrip("\n")
            if line.startswith("# ===="):
                current = []
                result.append((line, current))
            elif line.startswith("> "):
                current.append((line[2:], []))
            elif line.startswith("< "):
                current[-1][1].append(line[2:])
    return [(title, exchanges) for title, exchanges in result if exchanges]


# Where couchjs answered with a JavaScript error class as the error id, the exception class the
# Python equivalent in fixture_fns raises there. validate.txt crash1: `null.boom()` is a
# TypeError in JavaScript, `None.boom()` an AttributeError in Python.
PYTHON_ERROR_FOR = {"TypeError": "AttributeError"}


def javascript_specific(expected, actual):
    """Whether a difference is only JavaScript's own wording."""
    if (isinstance(expected, list) and isinstance(actual, list) and expected[:1] == ["log"]
            and actual[:1] == ["log"] and expected[1].startswith("function raised exception (")):
        # couchjs: "function raised exception (<JS value>) with doc._id <id>"
        suffix = expected[1][expected[1].rindex(") with doc._id "):]
        return actual[1].startswith("function raised exception (") and actual[1].endswith(suffix)
    if (isinstance(expected, list) and len(expected) == 3 and expected[0] == "error"
            and expected[1] in PYTHON_ERROR_FOR):
        # couchjs: ["error", e.name, e] (the Error object, {} in JSON); cnp: the Python
        # exception's class name and its message. Any other id (internal_error, say) is wrong.
        return (isinstance(actual, list) and len(actual) == 3
                and actual[:2] == ["error", PYTHON_ERROR_FOR[expected[1]]]
                and isinstance(actual[2], str) and actual[2] != "")
    return False


class ReplayTranscriptsTest(harness.ServerTestCase):
    socket_prefix = "cnp-replay-"

    def replay(self, name):
        path = os.path.join(self.binaries.testdata, name)
        compared = 0
        for title, exchanges in sections(path):
            adapter = self.adapter()
            try:
                for command_line, expected_lines in exchanges:
                    command = rewrite_command(json.loads(command_line))
                    actual_lines = adapter.call(command)
                    where = f"{name} {title}\n> {command_line[:300]}"
                    self.assertEqual(len(actual_lines), len(expected_lines),
                                     f"{where}\nexpected {expected_lines}\nactual {actual_lines}"
                                     f"\n{adapter.diagnostics()}")
                    for expected_line, actual_line in zip(expected_lines, actual_lines):
                        expected, actual = json.loads(expected_line), json.loads(actual_line)
                        if expected != actual and not javascript_specific(expected, actual):
                            self.fail(f"{where}\nexpected {expected_line}\nactual   {actual_line}")
                        compared += 1
            finally:
                status = adapter.close()
            self.assertEqual(status, 0, adapter.diagnostics())
        self.assertGreater(compared, 0)


# The CouchDB 3.4.3 transcripts in testdata/couchdb-3.4.3-js, one test each.
TRANSCRIPTS = ("map", "map_error", "reduce", "reduce_builtin", "validate", "filter", "filter_view",
               "show", "list", "update")


def add_transcript_tests(test_class, transcript_dir):
    """Gives `test_class` a test_<name> per transcript, each calling its replay("<name>.txt"),
    and a test that no transcript in transcript_dir(self) is left out. The direct-session test
    of the worker (tests/worker/direct_session_test.py) replays them the same way."""
    for name in TRANSCRIPTS:
        setattr(test_class, f"test_{name}", lambda self, name=name: self.replay(f"{name}.txt"))

    def test_every_transcript_is_replayed(self):
        present = {name for name in os.listdir(transcript_dir(self)) if name.endswith(".txt")}
        self.assertTrue(present)
        self.assertLessEqual(present, {f"{name}.txt" for name in TRANSCRIPTS})

    test_class.test_every_transcript_is_replayed = test_every_transcript_is_replayed


add_transcript_tests(ReplayTranscriptsTest, lambda self: self.binaries.testdata)
harness.through_each_path(ReplayTranscriptsTest, globals())

if __name__ == "__main__":
    harness.ServerTestCase.binaries, rest = harness.parse_binaries(sys.argv[1:])
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
