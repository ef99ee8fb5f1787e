"""The baseline for adapter_lockstep_bench: the simplest pure-Python CouchDB query server for
map and reduce views (a `for line in stdin` loop: json.loads, call the named function,
json.dumps), run by /usr/bin/python3.11 and driven exactly like cnp-adapter."""

import functools
import importlib
import json
import sys


@functools.lru_cache(maxsize=None)
def load(name):
    path = name.split("|", 1)[0]
    module, _, function = path.rpartition(".")
    return getattr(importlib.import_module(module), function)


def main():
    functions = []
    out = sys.stdout
    for line in sys.stdin:
        command = json.loads(line)
        if command[0] == "map_doc":
            doc = command[1]
            reply = [list(function(doc)) for function in functions]
        elif command[0] == "reduce":
            rows = command[2]
            keys = [row[0] for row in rows]
            values = [row[1] for row in rows]
            reply = [True, [load(name)(keys, values, False) for name in command[1]]]
        elif command[0] == "reset":
            functions = []
            reply = True
        elif command[0] == "add_fun":
            functions.append(load(command[1]))
            reply = True
        else:
            reply = ["error", "unknown_command", command[0]]
        out.write(json.dumps(reply))
        out.write("\n")
        out.flush()


if __name__ == "__main__":
    main()
