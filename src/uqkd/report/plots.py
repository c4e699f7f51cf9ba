"""Moved to :mod:`uqkd.plotting` (below the experiments, which draw with it); re-exported for old imports."""

from ..plotting import parallel_figures, plot_sweep, save_figure

__all__ = ["parallel_figures", "plot_sweep", "save_figure"]
