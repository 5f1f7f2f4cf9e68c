"""Paper-ready figures of repkernel results: seaborn heatmaps and line plots.

Every function takes the Dataset or DataArray it draws (the layout of repkernel.results) and
returns a matplotlib Figure; nothing is shown or printed. Labels, tick labels and colorbar names
come from the data's coordinates and attributes (``long_name``, ``units``), never from side tables.
Side-by-side figures (forecast | actual) share one colour scale.

Several results are given as a mapping ``{"forecast": ds_f, "actual": ds_a}``, a sequence of
Datasets (named by their ``source`` attribute), a Dataset with a ``source`` dim, or a study's
DataTree (groups actual, forecast, compare, multitask, kernel). A forecast's ``readout`` dim and any
sweep dim (init_scale, ...) become separate panels or line colours.

Modules, as seaborn splits its own: ``style`` (the look, saving), ``data`` (which part of the
data a figure draws), ``axes`` (layout, labels, ticks), ``heatmaps``, ``curves``, and
``figures``: the FIGURES registry from which ``render(kind, data)``, the plot command and a
study's ``[plots] kinds`` all derive; ``save_figure`` writes pdf/png/svg atomically.
"""

from repkernel.plot.curves import (
    dimensionality_curves,
    fidelity_curves,
    grouping_curves,
    kernel_path_curves,
    loss_curves,
    multitask_scores,
)
from repkernel.plot.figures import FIGURES, FigureKind, render
from repkernel.plot.heatmaps import (
    influence_heatmaps,
    kernel_eigenvector_heatmaps,
    pseudo_kernel_heatmap,
    rsm_heatmaps,
    task_similarity_heatmaps,
)
from repkernel.plot.style import STYLE, SUFFIXES, paper_style, save_figure

KINDS = FIGURES  # the figure kinds by name (the registry itself, so later rows count)

__all__ = [
    "FIGURES",
    "KINDS",
    "STYLE",
    "SUFFIXES",
    "FigureKind",
    "dimensionality_curves",
    "fidelity_curves",
    "grouping_curves",
    "influence_heatmaps",
    "kernel_eigenvector_heatmaps",
    "kernel_path_curves",
    "loss_curves",
    "multitask_scores",
    "paper_style",
    "pseudo_kernel_heatmap",
    "render",
    "rsm_heatmaps",
    "save_figure",
    "task_similarity_heatmaps",
]
