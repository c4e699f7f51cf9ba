"""Imports the modules that register the built-in experiments.

``llm`` imports transformers/torch lazily inside its cells, so listing works without the llm extra.
"""

from . import adaptive, linear, llm, llm_budget, mlp  # noqa: F401
