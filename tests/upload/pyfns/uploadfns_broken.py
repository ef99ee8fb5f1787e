"""A module that cannot be imported: the upload must say so at the YAML line naming it."""

raise RuntimeError("this module is broken on purpose")
