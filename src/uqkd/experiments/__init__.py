"""Experiments: one module per paper section, registered by name."""

from .base import EXPERIMENTS, Experiment, get_experiment, list_experiments, register

__all__ = ["EXPERIMENTS", "Experiment", "get_experiment", "list_experiments", "register"]
