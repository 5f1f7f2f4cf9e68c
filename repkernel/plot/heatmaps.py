"""Heatmaps: item x item RSMs, task x task similarity, kernel eigenvector components and the
pseudo-kernel, forecast | actual side by side on one colour scale."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.figure import Figure

from repkernel import eigen, similarity
from repkernel.plot.axes import (
    FACET_DIMS,
    _Axis,
    _check_panels,
    _choose_times,
    _coord_on,
    _coords_of,
    _facet_title,
    _figure,
    _item_axis,
    _limits,
    _panel_name,
    _panels,
    _pretty,
    _scalars,
    _value_axis,
    _wrap,
)
from repkernel.plot.data import Data, _has, _named, _representations
from repkernel.plot.style import (
    AXIS_POINTS,
    CORRELATION_CMAP,
    MAGNITUDE_CMAP,
    MAX_COLUMNS,
    PANEL,
    PSEUDO_KERNEL_PANEL,
    RASTER_CELLS,
    STYLE,
    _styled,
)


def _heatmap(ax, matrix: np.ndarray, rows: _Axis, cols: _Axis, cmap: str, limits: tuple,
             show_y: bool = True, show_x: bool = True, square: bool = False,
             axis_labels: bool = True):
    """Draw one heatmap panel with grouped tick labels; return the mesh for the colorbar."""
    matrix = np.asarray(matrix, dtype=float)[np.ix_(rows.order, cols.order)]
    sns.heatmap(matrix, ax=ax, cmap=cmap, vmin=limits[0], vmax=limits[1], cbar=False,
                xticklabels=False, yticklabels=False, square=square,
                rasterized=matrix.size > RASTER_CELLS)
    ax.set_yticks(rows.ticks, rows.ticklabels if show_y else [], fontsize=rows.fontsize)
    ax.set_xticks(cols.ticks, cols.ticklabels if show_x else [], fontsize=cols.fontsize)
    ax.tick_params(axis="x", labelrotation=90)
    ax.tick_params(axis="y", labelrotation=0)
    ax.set_ylabel(rows.label if show_y and axis_labels else "")
    ax.set_xlabel(cols.label if show_x and axis_labels else "")
    for b in rows.boundaries:
        ax.axhline(b, color="white", linewidth=0.6)
    for b in cols.boundaries:
        ax.axvline(b, color="white", linewidth=0.6)
    return ax.collections[0]


def _colorbar(fig: Figure, mesh, axes, label: str) -> None:
    bar = fig.colorbar(mesh, ax=list(np.ravel(axes)), label=label, shrink=0.85, aspect=30)
    bar.outline.set_visible(False)


def _rsm(hidden: xr.DataArray) -> xr.DataArray:
    """(…, item, item_b) Pearson RSMs of hidden (…, item, unit) (repkernel.similarity.rsm)."""
    matrix = similarity.rsm(hidden)
    if not isinstance(matrix, xr.DataArray):
        lead = [d for d in hidden.dims if d not in ("item", "unit")]
        matrix = xr.DataArray(np.asarray(matrix), dims=(*lead, "item", "item_b"),
                              coords={d: hidden[d] for d in lead if d in hidden.coords})
    *_, a, b = matrix.dims
    if (a, b) != ("item", "item_b"):
        matrix = matrix.rename({a: "item", b: "item_b"})
    return matrix.assign_coords({c: hidden[c] for c in _coords_of(hidden, "item")})


def _at_times(named: list[tuple[str, xr.DataArray]], times: Sequence[int] | None,
              what: str, matrix_dims: Sequence[str] | None = None
              ) -> tuple[list[tuple[str, xr.DataArray]], list[int] | None]:
    """Select the checkpoints to draw and check the panel count, before any matrix is
    computed. ``matrix_dims``: the dims that make one matrix (default: the last two)."""
    steps = _choose_times([da for _, da in named], times)
    extra = [[str(d) for d in da.dims
              if d != "time" and d not in (matrix_dims or da.dims[-2:])] for _, da in named]
    count = sum(math.prod(da.sizes[d] for d in dims) for (_, da), dims in zip(named, extra))
    _check_panels(count * (len(steps) if steps else 1), what,
                  list(dict.fromkeys(d for dims in extra for d in dims if d != "readout")))
    if steps is None:
        return named, None
    return [(n, da.sel(time=steps) if "time" in da.dims else da) for n, da in named], steps


def _matrix_heatmaps(named: list[tuple[str, xr.DataArray]], steps: list[int] | None,
                     axes_of, cmap: str, cbar_label: str, what: str, square: bool,
                     limits: tuple[float | None, float | None]) -> Figure:
    """Columns: sources x extra dims (forecast | actual); rows: checkpoints (a block of rows per
    sweep value when the columns would be too many). One colour scale."""
    keyed = []
    for source, da in named:
        keep = [d for d in da.dims if d in ("time",)] + list(da.dims[-2:])
        for coords, sub in _panels(da, keep):
            sweep = tuple((d, v) for d, v in coords.items() if d != "readout")
            keyed.append((sweep, _panel_name(source, coords), sub))
    # forecast and actual of the same sweep value next to each other; when that makes more
    # than MAX_COLUMNS columns, each sweep value gets its own block of rows instead
    keyed.sort(key=lambda column: column[0])
    blocks: dict = {}
    for sweep, name, sub in keyed:
        blocks.setdefault(sweep, []).append((name, sub))
    if len(keyed) <= MAX_COLUMNS or len(blocks) == 1:
        blocks = {(): [(name, sub) for _, name, sub in keyed]}
    times_ = steps or [None]
    width = max(len(b) for b in blocks.values())
    per_row = max(1, MAX_COLUMNS // width) if len(blocks) > 1 else 1
    n_rows = math.ceil(len(blocks) / per_row) * len(times_)
    n_cols = min(len(blocks), per_row) * width
    _check_panels(len(keyed) * len(times_), what)
    placed = [((b // per_row) * len(times_) + i, (b % per_row) * width + j, name, sub, t)
              for b, block in enumerate(blocks.values()) for j, (name, sub) in enumerate(block)
              for i, t in enumerate(times_)]
    cells = [sub.sel(time=t).values if t is not None and "time" in sub.dims else sub.values
             for *_, sub, t in placed]
    lims = _limits(cells, symmetric=cmap == CORRELATION_CMAP, vmin=limits[0], vmax=limits[1])
    fig, axes = _figure(n_rows, n_cols, PANEL)
    filled = {(i, j) for i, j, *_ in placed}
    for i in range(n_rows):
        for j in range(n_cols):
            if (i, j) not in filled:
                axes[i, j].set_visible(False)
    mesh = None
    for i, j, name, sub, t in placed:
        rows_axis, cols_axis = axes_of(sub)
        panel = sub.sel(time=t) if t is not None and "time" in sub.dims else sub
        mesh = _heatmap(axes[i, j], panel.values, rows_axis, cols_axis, cmap, lims,
                        show_y=j % width == 0, show_x=(i + 1, j) not in filled,
                        square=square,
                        axis_labels=axes.size == 1)
        # the source on a block's first row only: titles of lower rows stay one line, clear of
        # the row above
        first = (i % len(times_)) == 0
        axes[i, j].set_title("\n".join(x for x in (name if first else "",
                                                    "" if t is None else f"step {t}") if x))
        if (i + 1, j) in filled:
            axes[i, j].tick_params(bottom=False)
        if (i, j) == (0, 0) and axes.size > 1:  # one label per figure axis: panels share items
            fig.supylabel(rows_axis.label, fontsize=STYLE["axes.labelsize"])
            fig.supxlabel(cols_axis.label, fontsize=STYLE["axes.labelsize"])
    _colorbar(fig, mesh, axes, cbar_label)
    return fig


def _matrices(data, variable: str, what: str, times, from_hidden: Callable,
              given: Callable | None = None) -> tuple[list, list | None]:
    """(name, matrix) panels of a heatmap figure at the chosen checkpoints: a DataArray or a
    result's stored ``variable`` as they are (through ``given``), else computed from the
    result's hidden representations by ``from_hidden``."""
    if isinstance(data, xr.DataArray):
        named, compute = [(str(data.attrs.get("source", "")), data)], given
    elif _has(data, variable):
        named = [(n, ds[variable]) for n, ds in _named(data) if variable in ds.data_vars]
        compute = given
    else:
        named = [(n, ds["hidden"]) for n, ds in
                 _representations(data, "hidden", f"a {what} figure")]
        compute = from_hidden
    named, steps = _at_times(named, times, f"the {what} figure",
                             ("item", "unit") if compute is from_hidden else None)
    if compute is not None:
        named = [(n, compute(da)) for n, da in named]
    return named, steps


@_styled
def rsm_heatmaps(data: Data, times: Sequence[int] | None = None, group_by: str | None = "auto",
                 vmin: float | None = None, vmax: float | None = None) -> Figure:
    """Item x item representational similarity matrices (Pearson r of hidden vectors).

    data: a result with ``hidden`` (…, item, unit), or ``rsm`` (…, item, item_b), or several
    (forecast | actual side by side, one column each; a forecast's readouts and any sweep dim
    get columns too). Rows: checkpoints ``times`` (steps; default first, middle, last). Items
    are ordered by task set and stimulus and labelled by ``group_by`` (a coordinate on item;
    "auto": task, else task set, else k). Colour scale: diverging around 0, shared by panels.
    """
    named, steps = _matrices(data, "rsm", "RSM", times, from_hidden=_rsm)

    def axes_of(da):
        axis = _item_axis(da, da.dims[-2], group_by)
        return axis, axis

    return _matrix_heatmaps(named, steps, axes_of, CORRELATION_CMAP,
                            "representational similarity\n(Pearson r)", "the RSM figure", True,
                            (vmin, vmax))


def _task_similarity(hidden: xr.DataArray) -> xr.DataArray:
    """(…, task, task_b) matrix of hidden (…, item, unit) (repkernel.similarity
    .task_similarity), with each task's input and output dim as coordinates."""
    if _coord_on(hidden, "item", "task") is None:
        raise ValueError("task similarity needs a 'task' coordinate on the probe items "
                         "(probes made by a MultitaskEnvironment)")
    matrix = similarity.task_similarity(hidden)
    if isinstance(matrix, tuple):
        matrix = matrix[0]
    if isinstance(matrix, xr.Dataset):
        matrix = matrix["task_similarity"]
    matrix = _task_matrix(matrix)
    if _coord_on(matrix, "task", "input_dim") is None:
        matrix = matrix.assign_coords(_task_dims(hidden, matrix["task"].values))
    return matrix


def _task_matrix(matrix: xr.DataArray) -> xr.DataArray:
    *_, a, b = matrix.dims
    return matrix if (a, b) == ("task", "task_b") else matrix.rename({a: "task", b: "task_b"})


def _task_dims(hidden: xr.DataArray, tasks: np.ndarray) -> dict[str, tuple]:
    """input_dim / output_dim per task, read from the single-task items' coordinates."""
    task = _coord_on(hidden, "item", "task")
    out = {}
    for name in ("input_dim", "output_dim"):
        values = _coord_on(hidden, "item", name)
        if values is None or task is None:
            return {}
        lookup = dict(zip(task.tolist(), values.tolist()))
        if not all(t in lookup for t in tasks.tolist()):
            return {}
        out[name] = ("task", [lookup[t] for t in tasks.tolist()])
    return out


@_styled
def task_similarity_heatmaps(data: Data, times: Sequence[int] | None = None,
                             vmin: float | None = None, vmax: float | None = None) -> Figure:
    """Task x task similarity (stimulus-averaged, z-scored hidden vectors, Pearson r;
    repkernel.similarity.task_similarity) over checkpoints, forecast | actual side by side.

    data: a result with ``hidden`` and item coordinate ``task``, a ``task_similarity``
    (…, task, task_b) matrix, or several of either (as in rsm_heatmaps). Tasks are labelled
    "index (input→output dim)". Diverging colour scale around 0, shared by all panels.
    """
    named, steps = _matrices(data, "task_similarity", "task-similarity", times,
                             from_hidden=_task_similarity, given=_task_matrix)

    def axes_of(da):
        axis = _value_axis(da, "task")  # square: task_b runs over the same tasks
        return axis, axis

    return _matrix_heatmaps(named, steps, axes_of, CORRELATION_CMAP, "task similarity (Pearson r)",
                            "the task-similarity figure", True, (vmin, vmax))


def _facet_heatmaps(blocks: list[tuple[str, xr.DataArray, str]], y: str | None, x: str | None,
                    signed: bool, what: str, col_wrap: int | None, axes_of=None,
                    panel: tuple[float, float] = PANEL) -> Figure:
    """One block of wrapped facets per (name, DataArray, colorbar label): two dims are the
    heatmap axes (``y``, ``x``; default the last two), every other dim a facet; one colour scale
    and colorbar per block. ``axes_of(da, y, x)`` makes the two _Axis (default: every value)."""
    axes_of = axes_of or (lambda da, ys, xs: (_value_axis(da, ys), _value_axis(da, xs)))
    layouts = []
    for name, da, label in blocks:
        candidates = [d for d in da.dims if d not in FACET_DIMS] or list(da.dims)
        if len(candidates) < 2:
            candidates = list(da.dims)
        ys, xs = y or candidates[-2], x or candidates[-1]
        for dim in (ys, xs):
            if dim not in da.dims:
                raise ValueError(f"{name!r} has no dim {dim!r}: its dims are {list(da.dims)}")
        da = da.transpose(..., ys, xs)
        facet_dims = [str(d) for d in da.dims if d not in (ys, xs)]
        _check_panels(math.prod(da.sizes[d] for d in facet_dims), what, facet_dims)
        facets = _panels(da, (ys, xs))
        if col_wrap is None and len(facet_dims) == 2:  # a grid: one facet dim per row
            shape = (math.ceil(len(facets) / da.sizes[facet_dims[1]]), da.sizes[facet_dims[1]])
        else:
            shape = _wrap(len(facets), col_wrap)
        layouts.append((da, ys, xs, label, facets, shape))
    n_rows = sum(rows for *_, (rows, _) in layouts)
    n_cols = max(cols for *_, (_, cols) in layouts)
    _check_panels(n_rows * n_cols, what)
    fig, axes = _figure(n_rows, n_cols, panel, extra_width=1.0)
    shared = len(layouts) == 1 and len(layouts[0][4]) > 1  # one axis label for the figure
    row = 0
    for da, ys, xs, label, facets, (rows, cols) in layouts:
        block = axes[row:row + rows, :]
        lims = _limits([sub.values for _, sub in facets], symmetric=signed)
        rows_axis, cols_axis = axes_of(da, ys, xs)
        mesh = None
        for index, (coords, sub) in enumerate(facets):
            i, j = divmod(index, cols)
            mesh = _heatmap(block[i, j], sub.values, rows_axis, cols_axis,
                            CORRELATION_CMAP if signed else MAGNITUDE_CMAP, lims,
                            show_y=j == 0, show_x=index + cols >= len(facets),
                            axis_labels=not shared)
            block[i, j].set_title(_facet_title(coords, _scalars(da)))
        for i, j in itertools.product(range(rows), range(n_cols)):
            if j >= cols or i * cols + j >= len(facets):
                block[i, j].remove()
        if shared:
            fig.supylabel(rows_axis.label, fontsize=STYLE["axes.labelsize"])
            fig.supxlabel(cols_axis.label, fontsize=STYLE["axes.labelsize"])
        used = [block[divmod(index, cols)] for index in range(len(facets))]
        _colorbar(fig, mesh, used, label)
        row += rows
    return fig


EIGEN_LABELS = {"eigenvector": "|eigenvector component|",
                "magnitude": "mean |eigenvector component|"}


def _arrays(data: xr.Dataset | xr.DataArray, what: str, min_dims: int = 2
            ) -> list[tuple[str, xr.DataArray]]:
    if isinstance(data, xr.DataArray):
        return [(str(data.name or "value"), data)]
    if not isinstance(data, xr.Dataset):
        raise TypeError(f"{what} takes an xarray DataArray or Dataset, got "
                        f"{type(data).__name__}")
    arrays = [(str(n), v) for n, v in data.data_vars.items()  # integers are labels (groups)
              if v.ndim >= min_dims and v.dtype.kind == "f"]
    if not arrays:
        raise ValueError(f"{what}: no variable with at least {min_dims} dims in "
                         f"{sorted(map(str, data.data_vars))}")
    return arrays


@_styled
def kernel_eigenvector_heatmaps(data: xr.DataArray | xr.Dataset, y: str | None = None,
                                x: str | None = None, col_wrap: int | None = None) -> Figure:
    """|Components| of the t = 0 kernel's leading eigenvectors (repkernel.kernels
    .kernel_eigenvectors), grouped e.g. by task and by input feature.

    data: grouped magnitudes such as repkernel.eigen.components_by (output_unit, rank, task) or
    components_by_input_feature (output_unit, rank, task, input_feature); any DataArray like
    (output_unit, task, input_dim); a Dataset of several (one block of panels each); or the raw
    ``eigenvector`` (output_unit, rank, item), shown by task. Two dims are the heatmap axes
    (``y``, ``x``; default the last two that are not ``rank``), every other dim becomes facets
    (a grid for two of them, else wrapped ``col_wrap`` per row). Sequential colour scale from 0,
    shared within each block.
    """
    arrays = [(name, da) for name, da in _arrays(data, "kernel_eigenvector_heatmaps")
              if "time" not in da.dims]  # e.g. group_agreement over training: not components
    for name, da in arrays:
        if "train_item" in da.dims:
            raise ValueError(f"{name!r} is a kernel over (item, train_item), not eigenvector "
                             "components: draw it with pseudo_kernel_heatmap (--kind "
                             "pseudo-kernel)")
    labelled = next((da for _, da in arrays if "item" in da.dims), None)
    blocks = []
    for name, da in arrays:
        if "item" in da.dims:  # raw components (kernel_eigenvectors): mean |.| per task
            da, name = eigen.components_by(da, "task"), "by task"
        if labelled is not None and "task" in da.dims and "input_dim" not in da.coords:
            da = da.assign_coords(_task_dims(labelled, da["task"].values))  # "3 (1→0)" labels
        label = EIGEN_LABELS.get(str(da.name)) or da.attrs.get("long_name") or (
            "mean |eigenvector component|")
        if len(arrays) > 1:
            label += f"\n{name.replace('_', ' ')}"
        blocks.append((name, abs(da), label))
    return _facet_heatmaps(blocks, y, x, signed=False, what="the kernel eigenvector figure",
                           col_wrap=col_wrap)


@_styled
def pseudo_kernel_heatmap(data: xr.DataArray | xr.Dataset, reduce: str | None = "auto",
                          group_by: str | None = "auto", col_wrap: int | None = None) -> Figure:
    """The pseudo-kernel Pi(x, x') = J_h(x) J_f(x')^T as a probe item x training item heatmap.

    data: a DataArray with dims (item, unit, train_item, output_unit) (+ layer / sweep dims) from
    repkernel.kernels.pseudo_kernel, or another kernel over (item, train_item) such as
    loss_weighted_kernel, or a Dataset holding one. ``reduce="norm"`` shows the Frobenius norm of
    each block over unit and output_unit, e.g. ||Pi(x, x')||_F, on a sequential scale;
    ``reduce=None`` shows signed entries (any dim left becomes facets) on a diverging scale
    around 0; "auto": the norm while unit or output_unit remain, else signed (so
    ``pk.sel(unit=0, output_unit=3)`` shows one signed slice). Items are grouped by task.
    """
    if reduce not in ("auto", "norm", None):
        raise ValueError(f"reduce must be 'auto', 'norm' or None, got {reduce!r}")
    arrays = _arrays(data, "pseudo_kernel_heatmap")
    candidates = [(n, da) for n, da in arrays if {"item", "train_item"} <= set(da.dims)]
    if not candidates:
        raise ValueError("pseudo_kernel_heatmap needs dims (item, train_item) as made by "
                         "repkernel.kernels.pseudo_kernel; got "
                         f"{ {n: list(da.dims) for n, da in arrays} }")
    name, da = next(((n, d) for n, d in candidates if n == "pseudo_kernel"), candidates[0])
    block = [d for d in ("unit", "output_unit") if d in da.dims]
    if reduce == "auto":
        reduce = "norm" if block else None
    if reduce == "norm":
        if not block:
            raise ValueError(f"{name!r} has no unit or output_unit dim to take the norm over: "
                             f"use reduce=None")
        da = np.sqrt((da ** 2).sum(block))
        label = (r"block norm $\|\Pi(x, x')\|_F$" if name == "pseudo_kernel" else
                 f"norm of {_pretty(data[name] if isinstance(data, xr.Dataset) else data, name)}"
                 f"\nover {', '.join(d.replace('_', ' ') for d in block)}")
    else:
        label = _pretty(da, name)

    def axes_of(da, ys, xs):
        length = AXIS_POINTS + (PSEUDO_KERNEL_PANEL[1] - PANEL[1]) * 72
        rows_axis = _item_axis(da, ys, group_by, length)
        cols_axis = _item_axis(da, xs, group_by, length)
        cols_axis.label = cols_axis.label.replace("train items", "training items", 1)
        return rows_axis, cols_axis

    return _facet_heatmaps([(name, da, label)], "item", "train_item", signed=reduce is None,
                           what="the pseudo-kernel figure", col_wrap=col_wrap, axes_of=axes_of,
                           panel=PSEUDO_KERNEL_PANEL)


def _influence_matrix(influence: xr.DataArray, group: str) -> xr.DataArray:
    """(time, source, probe_<group>): root-mean-square influence of each source over the probe
    items of each ``group`` value and the hidden units."""
    if group not in influence.coords or influence[group].dims != ("item",):
        labels = [str(c) for c in influence.coords if influence[c].dims == ("item",)]
        raise ValueError(f"unknown probe label {group!r}: the probes have {labels}")
    units = [d for d in ("layer", "unit") if d in influence.dims]
    matrix = np.sqrt((influence**2).mean(units).groupby(group).mean())
    return matrix.rename({group: f"probe_{group}"}).transpose("time", "source", f"probe_{group}")


@_styled
def influence_heatmaps(data: xr.Dataset | Mapping[str, xr.Dataset],
                       times: Sequence[int] | None = None, group: str = "task",
                       scale: str = "panel", vmin: float | None = None,
                       vmax: float | None = None) -> Figure:
    """Which training source moves which probe group's representation: source x probe-group
    matrices of the root-mean-square influence (repkernel.influence; rows: the sources, e.g.
    training tasks with by="task"; columns: the probes grouped by their label ``group``) over
    checkpoints ``times`` (default first, middle, last). data: an influence result, or several
    by name (e.g. the forecast's and the leave-out retraining's, side by side). scale "panel":
    each matrix divided by its largest entry (the pattern at every checkpoint, whatever its
    size); "shared": absolute values on one colour scale.
    """
    if scale not in ("panel", "shared"):
        raise ValueError(f"scale must be 'panel' or 'shared', got {scale!r}")
    single = isinstance(data, xr.Dataset)  # a Dataset is a Mapping too
    results = [("forecast", data)] if single or not isinstance(data, Mapping) else data.items()
    named = []
    for name, ds in results:
        if not isinstance(ds, xr.Dataset) or "influence" not in ds.data_vars:
            raise ValueError("the influence figure needs a result of repkernel.influence (a "
                             "Dataset with an 'influence' variable), or several by name")
        matrix = _influence_matrix(ds["influence"], group)
        if scale == "panel":
            largest = matrix.max(("source", f"probe_{group}"))
            matrix = matrix / largest.where(largest > 0, 1)
        named.append((str(name), matrix))
    named, steps = _at_times(named, times, "the influence figure")

    def axes_of(da):
        return _value_axis(da, "source"), _value_axis(da, da.dims[-1])

    label = "influence on the hidden representation (RMS" + (
        ", / largest in panel)" if scale == "panel" else ")")
    return _matrix_heatmaps(named, steps, axes_of, MAGNITUDE_CMAP, label,
                            "the influence figure", False, (vmin or 0.0, vmax))
