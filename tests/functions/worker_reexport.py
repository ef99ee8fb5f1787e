"""Re-exports a standard-library function: the module policy must still refuse it."""

from os import system  # noqa: F401
