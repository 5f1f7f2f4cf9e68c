"""Figure scaffolding shared by heatmaps and curves: panel layout and limits, axis labels
and ticks from coordinates, names of panels, checkpoints and sweep values."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from repkernel.plot.style import AXIS_POINTS, MAX_LABELS, MAX_PANELS, MAX_TICKS, STYLE, paper_style

FACET_DIMS = ("rank",)  # never a heatmap axis by default: each eigenvector rank gets panels


REPLICATE_DIMS = ("seed",)  # averaged in line plots (mean with a +-1 sd band), never a colour


def _fmt(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    if isinstance(value, (np.bool_, bool)):
        return str(bool(value)).lower()
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _panel_name(source: str, coords: Mapping[str, Any]) -> str:
    """'forecast (linear, init scale 0.1)' from a source name and the panel's coordinates."""
    ordered = sorted(coords.items(), key=lambda item: item[0] != "readout")
    parts = [_fmt(v) if d == "readout" else f"{d.replace('_', ' ')} {_fmt(v)}"
             for d, v in ordered]
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


def _scalars(da: xr.DataArray) -> dict[str, Any]:
    """Scalar coordinates that name a selection (output_unit=2), not values such as an
    eigenvalue."""
    return {str(c): da[c].values.item() for c in da.coords
            if da[c].ndim == 0 and not str(c).startswith("eigenvalue")}


def _facet_title(coords: Mapping[str, Any], scalars: Mapping[str, Any]) -> str:
    """'output unit 3, rank 0': the facet's coordinates plus the block's selected ones."""
    named = {**coords, **{k: v for k, v in scalars.items() if k not in coords}}
    return ", ".join(f"{d.replace('_', ' ')} {_fmt(v)}" for d, v in named.items())
