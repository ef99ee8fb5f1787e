"""A module that takes ten minutes to import: a worker resolving its functions (an Upload's
check) is busy with it until the call that asked is cancelled and the worker replaced."""
import sys
import time

# The test waits for this line in the server's log (the workers write to its stderr).
sys.stderr.write("slow_import_fns: importing\n")
sys.stderr.flush()
time.sleep(600)


def by_town(doc):
    yield doc.get("town"), 1
