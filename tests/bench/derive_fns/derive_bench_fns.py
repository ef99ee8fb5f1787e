"""The map handler of tests/bench/derive_bench: one row per document, keyed by its town."""

from couch_named_python.mr import item

town = item("town")
