"""Experiments: one module per design, each registering its experiments by name at import.

The registry finds them by package discovery (:func:`~uqkd.experiments.base.experiment_modules`: every module here
whose name does not start with ``_``), so a new experiment is a new module and nothing else.
"""

from .base import EXPERIMENTS, Experiment, experiment_modules, get_experiment, list_experiments, register

__all__ = ["EXPERIMENTS", "Experiment", "experiment_modules", "get_experiment", "list_experiments", "register"]
