"""Imports the modules that register the built-in experiments."""

from . import linear  # noqa: F401
