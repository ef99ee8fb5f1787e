"""Handlers made by couch_named_python's factories (``mr.item("town")`` and the like).

cnp-server calls only functions defined in the operator's files, never the package's own. A
factory's product is the one exception: its code lives here, but the operator chose to bind it
to a name in one of their modules. The worker allows such a function only when its code object is
one registered below (a factory's inner function, never an arbitrary package function) and the
module it was found in is an allowed operator module that it now belongs to.
"""

import sys

# The code objects of the factories' inner functions. A closure shares its code object with
# every other closure made by the same factory, so this set holds one entry per factory.
PRODUCT_CODES = set()


def owned_by_caller(function, name, depth=1):
    """Makes ``function`` belong to the module that called the factory ``depth`` frames up."""
    module = sys._getframe(depth + 1).f_globals.get("__name__", "__main__")
    PRODUCT_CODES.add(function.__code__)
    function.__module__ = module
    function.__name__ = name
    function.__qualname__ = name
    return function
