"""The FIGURES registry: every figure kind, the function that draws it, the part of the data it
needs, and whether it takes checkpoint times or is a heatmap. ``render``, the plot command's
help and choices and a study's ``[plots] kinds`` all read it; a new figure is one function plus
one row here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import xarray as xr
from matplotlib.figure import Figure

from repkernel.plot.curves import (
    accuracy_curves,
    dimensionality_curves,
    fidelity_curves,
    grouping_curves,
    kernel_path_curves,
    loss_curves,
    multitask_scores,
)
from repkernel.plot.data import Data, _kernel_part, _named, _select, _sources
from repkernel.plot.heatmaps import (
    influence_heatmaps,
    kernel_eigenvector_heatmaps,
    pseudo_kernel_heatmap,
    rsm_heatmaps,
    task_similarity_heatmaps,
)
from repkernel.plot.style import letter_panels


@dataclass(frozen=True)
class FigureKind:
    """One row of FIGURES.

    function(part, [times keyword]) -> Figure draws the part of the data named by ``data``:
      "results"  the results with representations or losses (forecast, actual), as a dict
      "all"      every result given (the figure picks, e.g. a comparison or its sources)
      "kernel"   a kernel result (a study's kernel group, or the one result without hidden)
    times: the keyword through which it takes checkpoint steps (None: it shows every
    checkpoint). heatmap: a study draws it at one sweep value ([plots] heatmaps_at).
    description: what it shows, for help texts and errors. variable: a Dataset holding this
    variable is drawn as it is (narrowed by the selection on its own dims).
    """

    function: Callable[..., Figure]
    description: str
    data: str = "results"
    times: str | None = None
    heatmap: bool = False
    variable: str | None = None


FIGURES: dict[str, FigureKind] = {
    "rsm": FigureKind(rsm_heatmaps, "item x item RSMs over checkpoints", times="times",
                      heatmap=True),
    "task-similarity": FigureKind(task_similarity_heatmaps, "task x task similarity over "
                                  "checkpoints", times="times", heatmap=True),
    "kernel-eigenvectors": FigureKind(kernel_eigenvector_heatmaps, "eigenvector components "
                                      "by task and input", data="kernel", heatmap=True),
    "pseudo-kernel": FigureKind(pseudo_kernel_heatmap, "a pseudo_kernel variable",
                                data="kernel", heatmap=True),
    "fidelity": FigureKind(fidelity_curves, "forecast-vs-actual metrics over training",
                           data="all"),
    "multitask": FigureKind(multitask_scores, "multitask scores", data="all", times="at_step"),
    "loss": FigureKind(loss_curves, "training and probe loss over training"),
    "dimensionality": FigureKind(dimensionality_curves, "participation ratio of the hidden "
                                 "layer over training", data="all"),
    "grouping": FigureKind(grouping_curves, "group_agreement over training", data="kernel",
                           variable="group_agreement"),
    "influence": FigureKind(influence_heatmaps, "training source x probe task influence on "
                            "the hidden representation", data="kernel", times="times",
                            heatmap=True, variable="influence"),
    "kernel-path": FigureKind(kernel_path_curves, "eNTK distance along actual training next to "
                              "the forecast's change correlation", data="kernel",
                              variable="kernel_distance"),
    "accuracy": FigureKind(accuracy_curves, "test accuracy over training",
                           data="all", variable="accuracy"),
}


def render(kind: str, data: Data, times: Sequence[int] | None = None,
           select: Mapping[str, Any] | None = None) -> Figure:
    """The figure of ``kind`` (a name of FIGURES) for ``data``: a result, several results, or a
    study's DataTree, from which the part the kind needs is taken (FigureKind.data).
    ``select`` (dim -> value) narrows every part that has the dim first; ``times`` are the
    checkpoints of the kinds that take them (the others show every checkpoint and ignore it)."""
    if kind not in FIGURES:
        raise ValueError(f"unknown figure kind {kind!r}: choose one of {', '.join(FIGURES)}")
    figure = FIGURES[kind]
    parts = dict(_select(_named(data), select or {}))
    if isinstance(data, xr.Dataset) and figure.variable in data.data_vars:
        part = data.sel({d: v for d, v in (select or {}).items() if d in data.dims})
    elif figure.data == "results":
        part = _sources(parts)
    elif figure.data == "kernel":
        part = _kernel_part(parts, figure.description, f"the {kind} figure")
    else:
        part = parts
    return letter_panels(figure.function(part, **({figure.times: times} if figure.times
                                                   else {})))
