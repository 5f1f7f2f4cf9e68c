"""Paper-ready figures of repkernel results: seaborn heatmaps and line plots.

Every function takes the Dataset or DataArray it draws (the layout of repkernel.results) and
returns a matplotlib Figure; nothing is shown or printed. Labels, tick labels and colorbar names
come from the data's coordinates and attributes (``long_name``, ``units``), never from side tables.
Side-by-side figures (forecast | actual) share one colour scale.

Several results are given as a mapping ``{"forecast": ds_f, "actual": ds_a}``, a sequence of
Datasets (named by their ``source`` attribute), a Dataset with a ``source`` dim, or a study's
DataTree (groups actual, forecast, compare, multitask, kernel). A forecast's ``readout`` dim and any
sweep dim (init_scale, ...) become separate panels or line colours.

``render(kind, data)`` picks the function and the part of a result for each of ``KINDS`` (used by
``repkernel plot`` and the study runner); ``save_figure`` writes pdf/png/svg atomically.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from repkernel.results import write_atomic

KINDS = ("rsm", "task-similarity", "kernel-eigenvectors", "pseudo-kernel", "fidelity",
         "multitask", "loss", "grouping")
SUFFIXES = (".pdf", ".png", ".svg")

# One place for the look of every figure: readable 8-10 pt fonts, text kept as text in vector
# files (TrueType in pdf, live text in svg), 300 dpi for png and for rasterized heatmap cells.
STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "savefig.dpi": 300,
    "figure.dpi": 100,
}
CORRELATION_CMAP = "RdBu_r"  # diverging, centered at 0: correlations and signed kernels
MAGNITUDE_CMAP = "viridis"  # sequential: magnitudes such as |eigenvector components|
PANEL = (2.5, 2.3)  # inches per heatmap panel (width, height)
LINE_PANEL = (3.2, 2.4)  # inches per line-plot panel
MAX_PANELS = 48
MAX_COLUMNS = 9  # heatmap columns before a sweep is laid out as blocks of rows
RASTER_CELLS = 4096  # heatmaps with more cells are rasterized inside vector files (file size)
MAX_TICKS = 30  # more items than this on an axis: label groups (tasks), not items
MAX_LABELS = 14  # evenly spaced tick labels that fit along one heatmap axis at 8 pt
AXIS_POINTS = 118  # length of a PANEL's heatmap axis in points (minus margins), for labels
PSEUDO_KERNEL_PANEL = (3.0, 2.8)
FACET_DIMS = ("rank",)  # never a heatmap axis by default: each eigenvector rank gets panels
REPLICATE_DIMS = ("seed",)  # averaged in line plots (mean with a +-1 sd band), never a colour
LOSS_LABELS = {"loss": "training loss", "probe_loss": "probe loss",
               "batch_loss": "batch loss (per update)"}
SEGMENT = "_stage"  # line-plot column: draw one line per stage (training loss: its set changes)

Data = Union[xr.Dataset, xr.DataArray, "xr.DataTree", Mapping[str, Any], Sequence[Any]]


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """The shared figure style (seaborn "ticks" plus STYLE) as a context manager."""
    with sns.axes_style("ticks"), mpl.rc_context(STYLE):
        yield


def _styled(function):
    """Draw the whole figure inside paper_style (fonts are fixed when text is created)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with paper_style():
            return function(*args, **kwargs)
    return wrapper


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` (.pdf, .png or .svg, chosen by suffix) atomically: a temporary
    file in the same folder, then a rename, so no half-written figure ever exists at ``path``."""
    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in SUFFIXES:
        raise ValueError(f"cannot save a figure as {path.name!r}: use a file name ending in "
                         f"{', '.join(SUFFIXES)}")
    fonts = logging.getLogger("fontTools")  # font subsetting warns about harmless timestamps
    level = fonts.level
    try:
        fonts.setLevel(logging.ERROR)
        with mpl.rc_context(STYLE):
            return write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt[1:]))
    finally:
        fonts.setLevel(level)


# -- naming data ------------------------------------------------------------------------------

def _named(data: Data) -> list[tuple[str, xr.Dataset]]:
    """Split ``data`` into named Datasets (see the module docstring for the accepted forms)."""
    if isinstance(data, xr.DataTree):
        if not data.children:
            return _named(data.to_dataset())
        parts = [(str(name), child.to_dataset()) for name, child in data.children.items()]
        rank = {"forecast": 0, "actual": 1}
        return sorted(parts, key=lambda part: rank.get(part[0], 2))
    if isinstance(data, xr.DataArray):
        name = data.name if data.name is not None else "value"
        return [(str(name), data.to_dataset(name=name))]
    if isinstance(data, xr.Dataset):
        if "source" in data.dims:
            return [(str(s), _drop_empty(data.sel(source=s, drop=True)))
                    for s in data["source"].values]
        return [(str(data.attrs.get("source", "result")), data)]
    if isinstance(data, Mapping):
        parts = []
        for key, value in data.items():
            inner = _named(value)
            parts += [(str(key) if len(inner) == 1 else f"{key} {name}", ds) for name, ds in inner]
        return _unique(parts)
    if isinstance(data, Sequence) and not isinstance(data, str):
        return _unique([part for item in data for part in _named(item)])
    raise TypeError(f"cannot plot a {type(data).__name__}: give an xarray Dataset, DataArray, "
                    f"DataTree, or a dict or list of them")


def _unique(parts: list[tuple[str, xr.Dataset]]) -> list[tuple[str, xr.Dataset]]:
    seen: dict[str, int] = {}
    out = []
    for name, ds in parts:
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name} {seen[name]}", ds))
    return out


def _group(data: Data, name: str) -> xr.Dataset | None:
    """A study group (``compare``, ``multitask``, ``kernel``) of a DataTree or mapping, if any."""
    if isinstance(data, (xr.DataTree, Mapping)) and name in data:
        group = data[name]
        return group.to_dataset() if isinstance(group, xr.DataTree) else group
    return None


def _drop_empty(ds: xr.Dataset) -> xr.Dataset:
    """After splitting a combined Dataset by source: drop variables that are all NaN there, and
    the ``readout`` dim of variables that concatenation merely copied along it (actual)."""
    keep = [v for v in ds.data_vars
            if not (ds[v].dtype.kind == "f" and bool(ds[v].isnull().all()))]
    ds = ds[keep]
    for name in keep:
        da = ds[name]
        if "readout" in da.dims and da.sizes["readout"] > 1:
            first = da.isel(readout=0, drop=True)
            if all(np.array_equal(first.values, da.isel(readout=r, drop=True).values,
                                  equal_nan=da.dtype.kind == "f")
                   for r in range(1, da.sizes["readout"])):
                ds[name] = first
    if "readout" in ds.dims and not any("readout" in ds[v].dims for v in ds.data_vars):
        ds = ds.drop_dims("readout")
    return ds


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    if isinstance(value, (np.bool_, bool)):
        return str(bool(value)).lower()
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _panel_name(source: str, coords: Mapping[str, Any]) -> str:
    """'forecast (linear, init_scale=0.1)' from a source name and the panel's coordinates."""
    ordered = sorted(coords.items(), key=lambda item: item[0] != "readout")
    parts = [_fmt(v) if d == "readout" else f"{d}={_fmt(v)}" for d, v in ordered]
    if not source:
        return ", ".join(parts)
    return source + (f" ({', '.join(parts)})" if parts else "")


def _pretty(da: xr.DataArray | None, name: str | None = None) -> str:
    """Axis or colorbar label: attrs long_name (else the name with spaces) and units."""
    attrs = {} if da is None else da.attrs
    name = name if name is not None else (da.name if da is not None else "value")
    text = str(attrs.get("long_name", str(name).replace("_", " ")))
    units = attrs.get("units")
    return f"{text} ({units})" if units else text


def _time_label(da: xr.DataArray) -> str:
    coord = da.coords.get("time") if "time" in da.dims else da.coords.get("step")
    if coord is not None and ("long_name" in coord.attrs or "units" in coord.attrs):
        return _pretty(coord)
    return "training step"


def _panels(da: xr.DataArray, keep: Sequence[str]) -> list[tuple[dict[str, Any], xr.DataArray]]:
    """One (coords, sub-array) per combination of the dims of ``da`` not in ``keep``."""
    extra = [d for d in da.dims if d not in keep]
    out = []
    for index in itertools.product(*(range(da.sizes[d]) for d in extra)):
        sub = da.isel(dict(zip(extra, index)))
        coords = {d: (sub[d].values.item() if d in sub.coords else i)
                  for d, i in zip(extra, index)}
        if sub.dtype.kind == "f" and bool(sub.isnull().all()):
            continue
        out.append((coords, sub))
    return out


def _check_panels(n: int, what: str, dims: Sequence[str] = ()) -> None:
    """Refuse unreadable figures; ``dims`` are the ones whose values make the panels."""
    if n > MAX_PANELS:
        dim = next((d for d in dims if d in REPLICATE_DIMS), next(iter(dims), "init_scale"))
        raise ValueError(f"{what} would need {n} panels (at most {MAX_PANELS}): select fewer "
                         f"values{' of ' + ', '.join(dims) if dims else ''} first, e.g. "
                         f"data.sel({dim}=...) or `repkernel plot --select {dim}=...`")
    if n == 0:
        raise ValueError(f"{what}: nothing to draw (every value is missing)")


def _steps_summary(steps: Sequence[int]) -> str:
    steps = [int(s) for s in steps]
    shown = steps if len(steps) <= 6 else steps[:3] + ["..."] + steps[-2:]
    return f"{', '.join(map(str, shown))} ({len(steps)} checkpoints)"


def _choose_times(arrays: Sequence[xr.DataArray], times: Sequence[int] | None) -> list[int] | None:
    """Checkpoints shown: ``times`` (each must be a checkpoint of every result) or, by default,
    the first, middle and last common checkpoint. None when the data have no time dim."""
    timed = [da for da in arrays if "time" in da.dims]
    if not timed:
        return None
    common = sorted(set.intersection(*(set(da["time"].values.tolist()) for da in timed)))
    if not common:
        raise ValueError("the results share no checkpoint: record them at the same steps")
    if times is None or len(times) == 0:
        return sorted({common[0], common[len(common) // 2], common[-1]})
    missing = [int(t) for t in times if int(t) not in common]
    if missing:
        raise ValueError(f"step {missing[0]} is not a checkpoint of every result; choose from "
                         f"{_steps_summary(common)}")
    return [int(t) for t in times]


# -- figure scaffolding -----------------------------------------------------------------------

def _figure(n_rows: int, n_cols: int, panel: tuple[float, float], extra_width: float = 0.9,
            **subplots: Any) -> tuple[Figure, np.ndarray]:
    with paper_style():
        fig = Figure(figsize=(n_cols * panel[0] + extra_width, n_rows * panel[1] + 0.3),
                     layout="constrained")
        axes = fig.subplots(n_rows, n_cols, squeeze=False, **subplots)
    return fig, axes


def _wrap(n: int, max_cols: int | None = None) -> tuple[int, int]:
    cols = max_cols or (n if n <= 4 else math.ceil(math.sqrt(n)))
    cols = max(1, min(cols, n))
    return math.ceil(n / cols), cols


@dataclass
class _Axis:
    """How one heatmap axis is ordered and labelled."""

    label: str
    order: np.ndarray
    ticks: list[float] = field(default_factory=list)
    ticklabels: list[str] = field(default_factory=list)
    boundaries: list[float] = field(default_factory=list)
    fontsize: float | None = None


def _coord_on(da: xr.DataArray | xr.Dataset, dim: str, name: str) -> np.ndarray | None:
    """Values of coordinate ``name`` (or ``{dim}_{name}``, ``train_{name}``) along ``dim``."""
    for candidate in (name, f"{dim}_{name}", f"train_{name}" if dim.startswith("train") else ""):
        if candidate in da.coords and da[candidate].dims == (dim,):
            return np.asarray(da[candidate].values)
    return None


def _task_names(da: xr.DataArray | xr.Dataset, dim: str, tasks: np.ndarray) -> list[str]:
    """'3 (1→0)': task index with its input -> output dim when the coordinates carry them."""
    keys = _coord_on(da, dim, "task")
    inputs, outputs = _coord_on(da, dim, "input_dim"), _coord_on(da, dim, "output_dim")
    if keys is None or inputs is None or outputs is None:
        return [_fmt(t) for t in tasks]
    lookup = {t: (a, b) for t, a, b in zip(keys.tolist(), inputs.tolist(), outputs.tolist())
              if a >= 0}
    return [f"{_fmt(t)} ({lookup[t][0]}→{lookup[t][1]})" if t in lookup else _fmt(t)
            for t in np.asarray(tasks).tolist()]


def _set_key(value: Any) -> tuple:
    """Natural order of task-set labels like '3+7' (by size, then task indices)."""
    parts = str(value).split("+")
    try:
        return (len(parts), tuple(int(p) for p in parts))
    except ValueError:
        return (len(parts), tuple(parts))


def _item_axis(da: xr.DataArray | xr.Dataset, dim: str, group_by: str | None = "auto",
               axis_points: float = AXIS_POINTS) -> _Axis:
    """Order items by task set (then stimulus) and label groups of items, not single items,
    when there are many (``group_by``: a coordinate on ``dim``, "auto" or None)."""
    n = da.sizes[dim]
    task, task_set = _coord_on(da, dim, "task"), _coord_on(da, dim, "task_set")
    k, stimulus = _coord_on(da, dim, "k"), _coord_on(da, dim, "stimulus")
    if group_by == "auto":
        group_by = None
        if task is not None and (task >= 0).all():
            group_by = "task"
        elif task_set is not None and len(set(task_set.tolist())) <= MAX_TICKS:
            group_by = "task_set"
        elif k is not None:
            group_by = "k"
    keys: list[np.ndarray] = [np.arange(n)]
    if stimulus is not None:
        keys.insert(0, stimulus)
    if task_set is not None:
        rank = {v: i for i, v in enumerate(sorted(set(task_set.tolist()), key=_set_key))}
        keys.insert(0, np.array([rank[v] for v in task_set.tolist()]))
    if group_by is not None:
        values = _coord_on(da, dim, group_by)
        if values is None:
            raise ValueError(f"cannot group {dim!r} by {group_by!r}: no such coordinate on it; "
                             f"use one of {_coords_of(da, dim)} or None")
        if values.dtype.kind in "iufb":
            keys.insert(0, values)
        else:
            rank = {v: i for i, v in enumerate(sorted(set(values.tolist()), key=_set_key))}
            keys.insert(0, np.array([rank[v] for v in values.tolist()]))
    order = np.lexsort(keys[::-1])
    label = dim.replace("_", " ")
    if group_by is None:
        step = max(1, math.ceil(n / MAX_LABELS))
        labels = da[dim].values if dim in da.coords else np.arange(n)
        ticks = list(range(0, n, step))
        return _Axis(label, order, [t + 0.5 for t in ticks],
                     [_fmt(labels[order[t]]) for t in ticks])
    values = _coord_on(da, dim, group_by)[order]
    starts = [0] + [i for i in range(1, n) if values[i] != values[i - 1]] + [n]
    if group_by == "task":
        names = _task_names(da, dim, np.array([values[s] for s in starts[:-1]]))
    else:
        prefix = "k=" if group_by == "k" else ""
        names = [prefix + _fmt(values[s]) for s in starts[:-1]]
    if group_by == "task" and names and "→" in names[0]:
        group_label = "task (input→output dim)"
    else:
        group_label = group_by.replace("_", " ")
    ticks, names, size = _thin([(a + b) / 2 for a, b in zip(starts[:-1], starts[1:])], names,
                               n, axis_points)
    return _Axis(f"{label}s by {group_label}", order, ticks, names,
                 [float(s) for s in starts[1:-1]], size)


def _thin(ticks: list[float], names: list[str], n: int, axis_points: float
          ) -> tuple[list[float], list[str], float]:
    """Group labels that do not overlap: smaller type (down to 6 pt) where groups are small,
    then every label closer than that to the previous one dropped. Returns the font size too."""
    points = [t / n * axis_points for t in ticks]
    kept = [0]
    for i in range(1, len(ticks)):
        if points[i] - points[kept[-1]] >= 6.5:
            kept.append(i)
    spacing = min((points[b] - points[a] for a, b in zip(kept, kept[1:])), default=10.0)
    size = float(np.clip(spacing / 1.1, 6, STYLE["ytick.labelsize"]))
    return [ticks[i] for i in kept], [names[i] for i in kept], size


def _coords_of(da: xr.DataArray | xr.Dataset, dim: str) -> list[str]:
    return [str(c) for c in da.coords if da[c].dims == (dim,)]


def _value_axis(da: xr.DataArray, dim: str) -> _Axis:
    """An axis that labels every value of ``dim``: tasks as "index (input→output dim)", other
    dims by their extra coordinates when they have some ("0/2" for input dim 0, feature 2)."""
    n = da.sizes[dim]
    values = da[dim].values if dim in da.coords else np.arange(n)
    label = dim.replace("_", " ")
    extra = [c for c in _coords_of(da, dim) if c != dim and da[c].dtype.kind in "iubUO"]
    if dim.split("_")[0] == "task":
        names = _task_names(da, dim, values)
        if names and "→" in "".join(names):
            label += " (input→output dim)"
    elif extra:
        names = ["/".join(_fmt(da[c].values[i]) for c in extra) for i in range(n)]
        label += f" ({'/'.join(c.replace('_', ' ') for c in extra)})"
    else:
        names = [_fmt(v) for v in values]
    if dim in da.coords and da[dim].attrs:
        label = _pretty(da[dim], label)
    step = max(1, math.ceil(n / MAX_LABELS))
    return _Axis(label, np.arange(n), [i + 0.5 for i in range(0, n, step)], names[::step])


def _limits(arrays: Sequence[np.ndarray], symmetric: bool, vmin: float | None = None,
            vmax: float | None = None) -> tuple[float, float]:
    """One colour scale for every panel: symmetric around 0 (signed values) or the data's
    range (magnitudes, so that structure within them stays visible)."""
    values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("nothing to draw: every value is missing (NaN)")
    if symmetric:
        top = float(np.abs(values).max()) or 1.0
        low, high = -top, top
    else:
        low, high = float(values.min()), float(values.max())
        high = high if high > low else low + 1.0
    return (low if vmin is None else vmin), (high if vmax is None else vmax)


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


# -- representation heatmaps ------------------------------------------------------------------

def _representations(data: Data, variable: str, what: str) -> list[tuple[str, xr.Dataset]]:
    parts = [(n, ds) for n, ds in _named(data) if variable in ds.data_vars]
    if not parts:
        found = sorted({str(v) for _, ds in _named(data) for v in ds.data_vars})
        raise ValueError(f"{what} needs a result with {variable!r} (a training, forecast or "
                         f"study result); this data has {found or 'no variables'}")
    return parts


def _science(module: str):
    """repkernel.<module>, imported only when a figure needs it (plotting imports without it)."""
    import importlib

    try:
        return importlib.import_module(f"repkernel.{module}")
    except ImportError as error:
        raise ValueError(f"this figure needs repkernel.{module}, which cannot be imported "
                         f"({error}); pass precomputed matrices instead") from None


def _rsm(hidden: xr.DataArray) -> xr.DataArray:
    """(…, item, item_b) Pearson RSMs of hidden (…, item, unit) (repkernel.similarity.rsm)."""
    matrix = _science("similarity").rsm(hidden)
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
        axes[i, j].set_title("\n".join(x for x in (name, "" if t is None else f"step {t}") if x))
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


def _has(data: Data, variable: str) -> bool:
    return any(variable in ds.data_vars for _, ds in _named(data))


def _task_similarity(hidden: xr.DataArray) -> xr.DataArray:
    """(…, task, task_b) matrix of hidden (…, item, unit) (repkernel.similarity
    .task_similarity), with each task's input and output dim as coordinates."""
    if _coord_on(hidden, "item", "task") is None:
        raise ValueError("task similarity needs a 'task' coordinate on the probe items "
                         "(probes made by a MultitaskEnvironment)")
    matrix = _science("similarity").task_similarity(hidden)
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


# -- kernel heatmaps --------------------------------------------------------------------------

def _scalars(da: xr.DataArray) -> dict[str, Any]:
    """Scalar coordinates that name a selection (output_unit=2), not values such as an
    eigenvalue."""
    return {str(c): da[c].values.item() for c in da.coords
            if da[c].ndim == 0 and not str(c).startswith("eigenvalue")}


def _facet_title(coords: Mapping[str, Any], scalars: Mapping[str, Any]) -> str:
    """'output unit 3, rank 0': the facet's coordinates plus the block's selected ones."""
    named = {**coords, **{k: v for k, v in scalars.items() if k not in coords}}
    return ", ".join(f"{d.replace('_', ' ')} {_fmt(v)}" for d, v in named.items())


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
            da, name = _science("eigen").components_by(da, "task"), "by task"
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


# -- curves -----------------------------------------------------------------------------------

def _frame(da: xr.DataArray, source: str | None = None) -> pd.DataFrame:
    """Long table of ``da`` with one column per dim (and per 1-d coordinate)."""
    name = str(da.name or "value")
    frame = da.to_dataframe(name=name).reset_index()
    if source is not None:
        frame.insert(0, "source", source)
    return frame.dropna(subset=[name])


def _series_label(frame: pd.DataFrame, dims: Sequence[str]) -> pd.Series:
    """One label per row from its ``source`` and other ``dims``: 'forecast (network)'."""
    def one(row):
        source = str(row["source"]) if "source" in dims else ""
        coords = {d: row[d] for d in dims if d != "source" and pd.notna(row[d])}
        return _panel_name(source, coords).strip()
    return frame.apply(one, axis=1) if len(frame) else pd.Series(dtype=str)


def _hue_style(frame: pd.DataFrame, dims: list[str], hue: str | None, style: str | None):
    """Pick colour and dash dims: the caller's, else the first and second non-replicate dim.
    Returns (hue column, style column, hue_norm, palette)."""
    free = [d for d in dims if d not in REPLICATE_DIMS and frame[d].nunique() > 1]
    for chosen in (hue, style):
        if chosen is not None and chosen not in frame.columns:
            raise ValueError(f"no dim {chosen!r} to colour by: choose from {free}")
    if hue is None and free:
        hue = free[0]
    if style is None:
        rest = [d for d in free if d != hue]
        style = rest[0] if rest else None
        if len(rest) > 1:
            raise ValueError(f"too many dims to tell lines apart ({free}): select values of "
                             f"{rest[1:]} first, e.g. dataset.sel({rest[1]}=...) or "
                             f"`repkernel plot --select {rest[1]}=...`")
    norm, palette = None, None
    if hue is not None and frame[hue].dtype.kind == "O":
        values = list(dict.fromkeys(frame[hue]))
        if any(str(v).startswith("actual") for v in values):  # actual in black, forecasts coloured
            colours = iter(sns.color_palette())
            palette = {v: "0.1" if str(v).startswith("actual") else next(colours) for v in values}
    if hue is not None and frame[hue].dtype.kind in "iuf":
        values = np.unique(frame[hue].to_numpy())
        palette = "flare"
        if values.min() > 0 and values.max() / values.min() >= 10:
            norm = LogNorm(values.min(), values.max())
    return hue, style, norm, palette


def _plain_log(axis, low: float | None = None, high: float | None = None) -> None:
    """Log-axis tick labels as plain numbers (0.3, not 3 x 10^-1); within two decades the
    2x and 5x minor ticks are labelled too."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if low is not None and high is not None and high / low < 100:
        def minor(v, _):
            digit = round(v / 10 ** math.floor(math.log10(v)), 6)
            return f"{v:g}" if digit in (2, 5) else ""
        axis.set_minor_formatter(FuncFormatter(minor))


def _stage_lines(ax, da: xr.DataArray) -> None:
    """Dotted vertical lines where the curriculum moves to its next stage."""
    if "stage" not in da.coords or "time" not in da.dims:
        return
    stage, time = da["stage"].values, da["time"].values
    for i in np.flatnonzero(np.diff(stage) != 0):
        ax.axvline(time[i], color="0.6", linestyle=":", linewidth=0.8)


def _line_panels(frames: list[tuple[str, pd.DataFrame, str, str, xr.DataArray]],
                 hue: str | None, style: str | None, log_y: bool, what: str,
                 col_wrap: int | None = None, zero_line: bool = False) -> Figure:
    """One panel per (y label, long table, x column, y column, DataArray for time labels and
    stage lines); every other column of a table may tell lines apart; one legend."""
    _check_panels(len(frames), what)
    rows, cols = _wrap(len(frames), col_wrap or 3)
    fig, axes = _figure(rows, cols, LINE_PANEL, extra_width=1.6)
    for index, (ylabel, frame, x, y, template) in enumerate(frames):
        ax = axes[divmod(index, cols)]
        dims = [c for c in frame.columns if c not in (x, y, SEGMENT)]
        h, s, norm, palette = _hue_style(frame, dims, hue, style)
        replicate = any(d in frame.columns and frame[d].nunique() > 1 for d in REPLICATE_DIMS)
        if h is not None and frame[h].dtype.kind in "iuf":
            norm = norm or mpl.colors.Normalize(frame[h].min(), frame[h].max())
        elif h is not None:
            levels = list(dict.fromkeys(frame[h]))
            palette = palette or dict(zip(levels, sns.color_palette(n_colors=len(levels))))
        few = frame[x].nunique() <= 12  # mark the checkpoints when there are few
        options = dict(x=x, y=y, hue=h, style=s, hue_norm=norm, palette=palette, ax=ax,
                       errorbar="sd" if replicate else None, linewidth=1.3,
                       marker="o" if few else None, markersize=3,
                       hue_order=None if h is None or norm else list(dict.fromkeys(frame[h])),
                       style_order=None if s is None else list(dict.fromkeys(frame[s])))
        # one line per curriculum stage where the quantity changes meaning with the stage
        parts = ([frame] if SEGMENT not in frame.columns else
                 [part for _, part in frame.groupby(SEGMENT, sort=True)])
        for i, part in enumerate(parts):
            sns.lineplot(data=part, legend="full" if i == 0 else False, **options)
        positive = frame[y][frame[y] > 0]
        if log_y and len(positive) == len(frame) and positive.max() >= 10 * positive.min():
            ax.set_yscale("log")
            _plain_log(ax.yaxis, positive.min(), positive.max())
        if zero_line:
            ax.axhline(0, color="0.7", linewidth=0.6, zorder=0)
        _stage_lines(ax, template)
        ax.set_xlabel(_time_label(template) if x in ("time", "step") else x.replace("_", " "))
        ax.set_ylabel(ylabel)
        legend = ax.get_legend()
        if legend is not None:
            for text in legend.texts:  # seaborn titles hue/style groups with column names
                if text.get_text() in dims:
                    text.set_text(text.get_text().replace("_", " "))
            if legend.get_title().get_text() in dims:
                legend.set_title(legend.get_title().get_text().replace("_", " "))
            if index == len(frames) - 1:
                sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
            else:
                legend.remove()
    for index in range(len(frames), rows * cols):
        axes[divmod(index, cols)].remove()
    return fig


def _curve_table(da: xr.DataArray, x: str) -> pd.DataFrame:
    """Long table of ``da`` with only its dims as columns (no 1-d coordinates such as stage)."""
    name = str(da.name)
    frame = da.reset_coords(drop=True).to_dataframe(name=name).reset_index()
    return frame[[x, *[str(d) for d in da.dims if d != x], name]].dropna(subset=[name])


@_styled
def loss_curves(data: Data, variables: Sequence[str] = ("loss", "probe_loss"),
                hue: str | None = None, style: str | None = None, log_y: bool = True) -> Figure:
    """Training loss and probe loss over training steps (one panel per variable; forecast and
    actual, readouts and sweep values as line colours / dashes; seeds as a +-1 sd band).

    data: one or several results (see the module docstring). ``variables``: any curves over
    ``time`` or ``step``, e.g. add "batch_loss" (per update). Dotted lines mark stages.
    """
    parts = _named(data)
    frames = []
    for variable in variables:
        found = [(n, ds[variable]) for n, ds in parts if variable in ds.data_vars]
        if not found:
            continue
        template = found[0][1]
        x = next((d for d in ("time", "step") if d in template.dims), None)
        if x is None:
            raise ValueError(f"{variable!r} has no time or step dim: it is not a curve")
        tables = []
        for source, da in found:
            for coords, sub in _panels(da.rename(variable), [d for d in da.dims
                                                             if d != "readout"]):
                table = _curve_table(sub, x)
                table.insert(0, "result", _panel_name(source, coords))
                tables.append(table)
        table = pd.concat(tables, ignore_index=True)
        if table["result"].nunique() == 1:
            table = table.drop(columns="result")
        if variable == "loss" and x == "time" and "stage" in template.coords and len(
                np.unique(template["stage"].values)) > 1:  # each stage's own training set
            stage_of = dict(zip(template["time"].values.tolist(),
                                template["stage"].values.tolist()))
            table[SEGMENT] = table["time"].map(stage_of)
        frames.append((_pretty(template, LOSS_LABELS.get(variable, variable)), table, x,
                       variable, template))
    if not frames:
        available = sorted({str(v) for _, ds in parts for v in ds.data_vars})
        raise ValueError(f"a loss figure needs one of {list(variables)}; this data has "
                         f"{available or 'no variables'}")
    return _line_panels(frames, hue, style, log_y, "the loss figure")


def _metrics(ds: xr.Dataset, metrics: Sequence[str] | None) -> list[str]:
    timed = [str(v) for v in ds.data_vars if "time" in ds[v].dims and ds[v].dtype.kind in "iuf"]
    if metrics is None:
        return timed
    missing = [m for m in metrics if m not in ds.data_vars]
    if missing:
        raise ValueError(f"no metric {missing[0]!r} in this comparison: choose from {timed}")
    return list(metrics)


@_styled
def fidelity_curves(data: xr.Dataset | Data, metrics: Sequence[str] | None = None,
                    hue: str | None = None, style: str | None = None,
                    col_wrap: int | None = None) -> Figure:
    """Forecast fidelity over training: one panel per metric (repkernel.similarity.compare,
    e.g. ``hidden_change_correlation``), x = training step; any sweep dim (readout,
    init_scale, relinearize, ...) is a line colour (``hue``) or dash (``style``), seeds a +-1 sd
    band. A numeric colour dim spanning decades gets a log colour scale.

    data: the comparison Dataset, or a forecast and an actual result (compared here with
    repkernel.similarity.compare).
    """
    ds = _comparison(data)
    names = _metrics(ds, metrics)
    if not names:
        raise ValueError("a fidelity figure needs metrics over time (a repkernel.similarity."
                         f"compare result); this data has {sorted(map(str, ds.data_vars))}")
    frames = [(_pretty(ds[m], m), _curve_table(ds[m].rename(m), "time"), "time", m, ds[m])
              for m in names]
    return _line_panels(frames, hue, style, log_y=False, what="the fidelity figure",
                        col_wrap=col_wrap, zero_line=True)


def grouping_curves(kernel: xr.Dataset) -> Figure:
    """The published grouping analysis over training: adjusted Rand index of the t = 0 kernel
    groups vs k-means groups of the hidden representation (``group_agreement(source, time)``
    of a study's kernel group, repkernel.eigen.group_agreement_over_training); the network at
    actual weights solid, at forecast weights dashed, sweep dims as colours, seeds a band."""
    if "group_agreement" not in kernel.data_vars:
        raise ValueError("a grouping figure needs group_agreement(time): a study with compute "
                         "= ['kernel', 'train'] and [kernel] clusters > 0")
    da = kernel["group_agreement"].assign_attrs(long_name="kernel vs hidden groups (ARI)")
    if "source" in da.dims:  # "source" would split the panel; here it is a line style
        da = da.rename(source="weights")
    ds = da.to_dataset().drop_vars([c for c in da.coords if c not in da.dims])
    return fidelity_curves(ds, metrics=["group_agreement"],
                           style="weights" if "weights" in ds.dims else None)


def _comparison(data: Data) -> xr.Dataset:
    """The metric Dataset: ``data`` itself, a study's ``compare`` group, or a comparison of a
    forecast with an actual result."""
    group = _group(data, "compare")
    if group is not None:
        return group
    parts = _named(data)
    with_hidden = [(n, ds) for n, ds in parts if "hidden" in ds.data_vars]
    if not with_hidden:
        if len(parts) != 1:
            raise ValueError("give one comparison Dataset, or a forecast and an actual result")
        return parts[0][1]
    sources = {str(ds.attrs.get("source", n)): ds for n, ds in with_hidden}
    if len(with_hidden) != 2 or set(sources) != {"forecast", "actual"}:
        raise ValueError("a fidelity figure compares a forecast with an actual result: give "
                         "both (e.g. forecast.nc actual.nc) or a comparison Dataset from "
                         "repkernel.similarity.compare")
    return _science("similarity").compare(sources["forecast"], sources["actual"])


# -- multitask scores -------------------------------------------------------------------------

SCORE_PREFERENCE = ("luce", "p_correct", "accuracy", "score")
GROUP_DIMS = ("k", "congruent", "congruency")


@_styled
def multitask_scores(data: xr.Dataset | Data, score: str | None = None, x: str | None = None,
                     at_step: int | Sequence[int] | None = None, col: str | None = "auto"
                     ) -> Figure:
    """Multitask scores (repkernel.multitask.evaluate_multitask) against a sweep dim.

    ``score``: the variable (default: the first whose name mentions luce, p_correct or
    accuracy). The last checkpoint is used unless ``at_step`` names one or several (one set of
    panels each, e.g. the ends of a curriculum's phases). x: ``x`` (default the
    first sweep dim such as init_scale, else k); colour: k and congruency (dims or item
    coordinates); columns: source (forecast | actual, with readout) when present, one shared y
    scale; seeds and items are averaged (+-1 sd band over seeds).
    """
    ds = _multitask_part(data)
    name = score or next((str(v) for p in SCORE_PREFERENCE for v in ds.data_vars
                          if p in str(v).lower()), None)
    if name is None or name not in ds.data_vars:
        raise ValueError(f"no score {score!r} in this data: choose one of "
                         f"{sorted(map(str, ds.data_vars))}" if score else
                         "a multitask figure needs scores from repkernel.multitask."
                         f"evaluate_multitask; this data has {sorted(map(str, ds.data_vars))}")
    da = ds[name]
    chosen: list = [None]
    if "time" in da.dims:
        steps = da["time"].values.tolist()
        chosen = [steps[-1]] if at_step is None else list(np.atleast_1d(at_step))
        for step in chosen:
            if step not in steps:
                raise ValueError(f"step {step} is not a checkpoint; choose from "
                                 f"{_steps_summary(steps)}")
    frames = []
    for row, step in enumerate(chosen):
        at = da if step is None else da.sel(time=step)
        if "source" in at.dims:  # per source, so an actual copied along readout is shown once
            parts = [(str(v), _drop_empty(at.sel(source=v).to_dataset(name=name)))
                     for v in at["source"].values]
            frame = pd.concat([_frame(part[name]).assign(source=v) for v, part in parts
                               if name in part], ignore_index=True)
        else:
            frame = _frame(at.rename(name))
        frames.append(frame.drop(columns=["time"], errors="ignore").assign(row=row))
    frame = pd.concat(frames, ignore_index=True)
    da = da if chosen == [None] else da.sel(time=chosen[-1])
    group = [g for g in GROUP_DIMS if g in frame.columns]
    sweep = [str(d) for d in da.dims if d not in (*GROUP_DIMS, *REPLICATE_DIMS, "source",
                                                   "readout", "time")
             and da.sizes[d] > 1 and d in da.coords and da[d].dtype.kind in "iuf"
             and _coords_of(da, d) == [d]]  # a sweep dim, not items with labels
    x = x or (sweep[0] if sweep else ("k" if "k" in frame.columns else None))
    if x is None or x not in frame.columns:
        raise ValueError(f"no dim {x!r} for the x axis of the multitask figure; choose from "
                         f"{[str(d) for d in da.dims]}")
    frame["condition"] = _conditions(frame, [g for g in group if g != x])
    panel_dims = [d for d in ("source", "readout") if d in frame.columns] if col == "auto" else (
        [col] if col else [])
    frame["panel"] = _series_label(frame, panel_dims) if panel_dims else ""
    columns = list(dict.fromkeys(frame["panel"]))
    fig, axes = _figure(len(chosen), len(columns), LINE_PANEL, extra_width=1.6, sharey=True)
    panels = [(i, j, step, column) for i, step in enumerate(chosen)
              for j, column in enumerate(columns)]
    numeric_x = frame[x].dtype.kind in "iuf" and x not in GROUP_DIMS
    replicate = any(d in frame.columns and frame[d].nunique() > 1 for d in REPLICATE_DIMS)
    hue = "condition" if frame["condition"].nunique() > 1 else None
    for i, j, step, panel in panels:
        ax = axes[i, j]
        sub = frame[(frame["panel"] == panel) & (frame["row"] == i)]
        if numeric_x:
            sns.lineplot(data=sub, x=x, y=name, hue=hue, marker="o", ax=ax, legend="full",
                         errorbar="sd" if replicate else None,
                         hue_order=list(dict.fromkeys(frame["condition"])) if hue else None)
            values = frame[x].to_numpy()
            if values.min() > 0 and values.max() / values.min() >= 10:
                ax.set_xscale("log")
                _plain_log(ax.xaxis)
        else:
            sns.pointplot(data=sub, x=x, y=name, hue=hue, ax=ax, errorbar="sd" if replicate
                          else None, dodge=0.3 if hue else False, linestyles="none",
                          hue_order=list(dict.fromkeys(frame["condition"])) if hue else None)
        ax.set_title(panel if len(chosen) == 1 else f"{panel}, step {_fmt(step)}".lstrip(", "))
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(_pretty(ds[name], name) if j == 0 else "")
        legend = ax.get_legend()
        if legend is not None:
            if (i, j) == (0, len(columns) - 1):
                sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False,
                                title="task set")
            else:
                legend.remove()
    return fig


def _conditions(frame: pd.DataFrame, group: list[str]) -> pd.Series:
    """'k=2, incongruent' labels from the k and congruency columns."""
    def one(row):
        parts = []
        for g in group:
            value = row[g]
            if g == "k" and value == 1:
                return "single task"
            if g == "k":
                parts.append(f"k={_fmt(value)}")
            elif g == "congruent":
                if not ("k" in row.index and row["k"] == 1):
                    parts.append("congruent" if bool(value) else "incongruent")
            else:
                parts.append(_fmt(value))
        return ", ".join(parts) or "all"
    return frame.apply(one, axis=1) if len(frame) else pd.Series(dtype=str)


def _multitask_part(data: Data) -> xr.Dataset:
    """The scores: ``data`` itself, a study's ``multitask`` group, or several score Datasets
    stacked along ``source``."""
    if isinstance(data, xr.Dataset) and "hidden" not in data.data_vars:
        return data
    group = _group(data, "multitask")
    if group is not None:
        return group
    parts = _named(data)
    scored = [(n, ds) for n, ds in parts if "hidden" not in ds.data_vars]
    if not scored:
        raise ValueError("a multitask figure needs scores from repkernel.multitask."
                         "evaluate_multitask (e.g. `repkernel evaluate RESULT.nc`), not "
                         "training or forecast results")
    if len(scored) == 1:
        return scored[0][1]
    return xr.concat([ds for _, ds in scored], dim=pd.Index([n for n, _ in scored], name="source"),
                     coords="minimal", compat="override")


# -- one entry point per kind -----------------------------------------------------------------

def _kernel_part(data: Data, variable_hint: str, what: str) -> xr.Dataset:
    group = _group(data, "kernel")
    if group is not None:
        return group
    parts = _named(data)
    plain = [ds for _, ds in parts if "hidden" not in ds.data_vars]
    if len(plain) == 1:
        return plain[0]
    raise ValueError(f"{what} needs a kernel result ({variable_hint}), e.g. from "
                     "`repkernel kernel` or a study with compute = ['kernel']; a training or "
                     "forecast result does not hold one")


def render(kind: str, data: Data, times: Sequence[int] | None = None,
           select: Mapping[str, Any] | None = None) -> Figure:
    """The figure of ``kind`` (one of KINDS) for ``data``: a result, several results, or a
    study's DataTree, from which the part the kind needs is taken (kernel, compare,
    multitask groups; forecast and actual for the rest). ``select`` (dim -> value) narrows
    every part that has the dim first; ``times`` are the checkpoints of the rsm,
    task-similarity and multitask kinds (the other kinds show every checkpoint and ignore it)."""
    if kind not in KINDS:
        raise ValueError(f"unknown figure kind {kind!r}: choose one of {', '.join(KINDS)}")
    parts = dict(_select(_named(data), select or {}))
    if kind == "rsm":
        return rsm_heatmaps(_sources(parts), times=times)
    if kind == "task-similarity":
        return task_similarity_heatmaps(_sources(parts), times=times)
    if kind == "loss":
        return loss_curves(_sources(parts))
    if kind == "fidelity":
        return fidelity_curves(parts)
    if kind == "multitask":
        return multitask_scores(parts, at_step=times)
    if kind == "grouping":
        if isinstance(data, xr.Dataset) and "group_agreement" in data.data_vars:
            return grouping_curves(data.sel({d: v for d, v in (select or {}).items()
                                             if d in data.dims}))
        return grouping_curves(_kernel_part(parts, "group_agreement over training",
                                            "the grouping figure"))
    if kind == "kernel-eigenvectors":
        return kernel_eigenvector_heatmaps(
            _kernel_part(parts, "eigenvector components by task and input",
                         "the kernel-eigenvectors figure"))
    return pseudo_kernel_heatmap(_kernel_part(parts, "a pseudo_kernel variable",
                                              "the pseudo-kernel figure"))


def _sources(parts: dict[str, xr.Dataset]) -> dict[str, xr.Dataset]:
    """The results with representations or losses among ``parts`` (forecast, actual)."""
    with_data = {n: ds for n, ds in parts.items() if {"hidden", "loss"} & set(ds.data_vars)}
    return with_data or parts


def _select(parts: list[tuple[str, xr.Dataset]], select: Mapping[str, Any]
            ) -> list[tuple[str, xr.Dataset]]:
    for dim in select:
        if not any(dim in ds.dims for _, ds in parts):
            dims = sorted({str(d) for _, ds in parts for d in ds.dims})
            raise ValueError(f"cannot select {dim!r}: no such dim; the data has {dims}")
    out = []
    for name, ds in parts:
        here = {d: _typed(ds, d, v) for d, v in select.items() if d in ds.dims}
        positions = {}
        for dim, value in list(here.items()):
            if dim not in ds.coords:  # a dim without coordinate values: select by position
                size = ds.sizes[dim]
                if not (str(value).isdigit() and int(value) < size):
                    raise ValueError(f"{dim} has no coordinate values in {name}: select a "
                                     f"position 0..{size - 1}, got {value!r}")
                positions[dim] = int(value)
                del here[dim]
            elif value not in ds[dim].values.tolist():
                choices = ", ".join(_fmt(v) for v in ds[dim].values)
                raise ValueError(f"{dim}={_fmt(value)} is not in {name}: {dim} takes {choices}")
        out.append((name, ds.isel(positions).sel(here)))
    return out


def _typed(ds: xr.Dataset, dim: str, value: Any) -> Any:
    """A value given as text ('0.1') in the dtype of the coordinate."""
    if not isinstance(value, str) or dim not in ds.coords:
        return value
    kind = ds[dim].dtype.kind
    try:
        if kind == "f":
            return float(value)
        if kind in "iu":
            return int(value)
        if kind == "b":
            return value.lower() in ("1", "true", "yes")
    except ValueError:
        raise ValueError(f"{dim}={value!r}: {dim} takes numbers") from None
    return value
