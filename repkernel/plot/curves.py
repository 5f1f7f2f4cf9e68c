"""Line plots over training: losses, forecast fidelity, kernel-group agreement, and the
multitask scores against a sweep dim."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from repkernel.plot.axes import (
    REPLICATE_DIMS,
    _check_panels,
    _coords_of,
    _figure,
    _fmt,
    _panel_name,
    _panels,
    _pretty,
    _steps_summary,
    _time_label,
    _wrap,
)
from repkernel.plot.data import (
    Data,
    _comparison,
    _drop_empty,
    _group,
    _multitask_part,
    _named,
)
from repkernel.plot.style import LINE_PANEL, QUALITATIVE, SEQUENTIAL, _styled

LOSS_LABELS = {"loss": "training loss", "probe_loss": "probe loss",
               "batch_loss": "batch loss (per update)"}


SEGMENT = "_stage"  # line-plot column: draw one line per stage (training loss: its set changes)


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
            colours = iter(QUALITATIVE)
            palette = {v: "0.1" if str(v).startswith("actual") else next(colours) for v in values}
    if hue is not None and frame[hue].dtype.kind in "iuf":
        values = np.unique(frame[hue].to_numpy())
        palette = SEQUENTIAL
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
    """Dotted vertical lines where the curriculum moves to its next stage, labelled with the
    stage that starts there."""
    if "stage" not in da.coords or "time" not in da.dims:
        return
    stage, time = da["stage"].values, da["time"].values
    for i in np.flatnonzero(np.diff(stage) != 0):
        ax.axvline(time[i], color="0.6", linestyle=":", linewidth=0.8)
        if stage.ndim == 1:  # one curriculum (a swept curriculum has stages per cell)
            ax.text(time[i], 1.0, f"stage {int(stage[i + 1])} \u2192", ha="center",
                    va="bottom", transform=ax.get_xaxis_transform(), fontsize=7, color="0.4")


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
            palette = palette or dict(zip(levels, (QUALITATIVE * len(levels))[:len(levels)]))
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
                else:  # numbers as everywhere else: 1, not 1.0
                    text.set_text(_number_label(text.get_text()))
            if legend.get_title().get_text() in dims:
                legend.set_title(legend.get_title().get_text().replace("_", " "))
            if index == len(frames) - 1:
                sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
            else:
                legend.remove()
    for index in range(len(frames), rows * cols):
        axes[divmod(index, cols)].remove()
    return fig


def _number_label(text: str) -> str:
    try:
        return _fmt(float(text))
    except ValueError:
        return text


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


def direction(metric: str) -> str:
    """'higher' or 'lower': which way a comparison metric improves (repkernel.similarity's
    naming: *_distance and *_error are lower-is-closer, every other metric higher)."""
    return "lower" if metric.endswith(("_distance", "_error")) else "higher"


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
    frames = [(f"{_pretty(ds[m], m)}\n({direction(m)} is better)",
               _curve_table(ds[m].rename(m), "time"), "time", m, ds[m]) for m in names]
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
    return _by_weights(kernel["group_agreement"].assign_attrs(
        long_name="kernel vs hidden groups (ARI)"))


def _by_weights(da: xr.DataArray) -> Figure:
    """One metric over training with its ``source`` (the weights it was measured at: actual
    or forecast) as the line style, not as panels; sweep dims as colours."""
    if "source" in da.dims:
        da = da.rename(source="weights")
    ds = da.to_dataset().drop_vars([c for c in da.coords if c not in da.dims])
    return fidelity_curves(ds, metrics=[da.name],
                           style="weights" if "weights" in ds.dims else None)


def accuracy_curves(data: xr.Dataset | Data) -> Figure:
    """Test accuracy over training of the trained network (solid) and of the network at the
    forecast weights (dashed): a study's ``classification`` group or a Dataset with
    ``accuracy(source, time)`` (repkernel.multitask.classification_accuracy); sweep dims as
    colours."""
    ds = data if isinstance(data, xr.Dataset) else _group(data, "classification")
    if ds is None or "accuracy" not in ds.data_vars:
        raise ValueError("an accuracy figure needs accuracy(source, time): a study of a data "
                         "set with cross-entropy stages and compute = [..., 'evaluate']")
    return _by_weights(ds["accuracy"].assign_attrs(long_name="test accuracy"))


def dimensionality_curves(data: Data) -> Figure:
    """Participation ratio of the hidden representation over training (DESIGN.md section 9):
    a study's ``dimensionality`` group, or computed here from results with ``hidden``; actual
    solid, forecast dashed (readouts as further dashes), sweep dims as colours, seeds a band."""
    from repkernel.similarity import participation_ratio

    parts = dict(_named(data))
    if "dimensionality" in parts:
        ds = parts["dimensionality"][["participation_ratio"]]
    else:
        results = {name: part for name, part in parts.items() if "hidden" in part.data_vars}
        if not results:
            raise ValueError("a dimensionality figure needs a study with compute = "
                             "['dimensionality', ...] or results with hidden(time, item, unit)")
        ds = xr.concat([participation_ratio(part["hidden"])[["participation_ratio"]]
                        for part in results.values()],
                       dim=pd.Index(list(results), name="source"))
    if "source" in ds.dims:  # "source" would split the panel; here it is a line style
        ds = ds.rename(source="result")
    if "readout" in ds.dims and ds.sizes["readout"] == 1:
        ds = ds.isel(readout=0, drop=True)
    elif "readout" in ds.dims and "result" in ds.dims:
        ds = ds.stack(run=("result", "readout"))
        labels = [r if r == "actual" else f"{r} {o}" for r, o in ds.indexes["run"]]
        ds = ds.drop_vars(["run", "result", "readout"]).assign_coords(run=labels)
        ds = ds.drop_duplicates("run")
    ds["participation_ratio"].attrs["long_name"] = "participation ratio (hidden)"
    style = next((d for d in ("run", "result") if d in ds.dims), None)
    hue = next((str(d) for d in ds.dims if d not in ("time", style, *REPLICATE_DIMS)
                and ds.sizes[d] > 1), None)
    ds = ds.drop_vars([c for c in ds.coords if c not in ds.dims])
    return fidelity_curves(ds, metrics=["participation_ratio"], hue=hue, style=style)


SCORE_PREFERENCE = ("luce", "p_correct", "accuracy", "score")


GROUP_DIMS = ("k", "congruent", "congruency")


# Sweep values on the multitask x axis up to this many are categories (standard vs large init):
# points with bars, not a line; a longer sweep (0.01 ... 3) is a line on a log axis.
MAX_CATEGORIES = 2


# what the multitask scores of a forecast read: the network run at the forecast weights
MULTITASK_PANELS = {"forecast": "forecast (network readout)"}


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
    # a handful of sweep values (init scales 0.1 and 1) are categories: points with +-1 sd
    # bars over seeds, never a line joining them across a log axis
    numeric_x = (frame[x].dtype.kind in "iuf" and x not in GROUP_DIMS
                 and frame[x].nunique() > MAX_CATEGORIES)
    if not numeric_x and frame[x].dtype.kind in "iuf":
        order = [_fmt(v) for v in sorted(frame[x].unique())]
        frame[x] = frame[x].map(_fmt)
    else:
        order = None
    chance = ds[name].attrs.get("chance")
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
                          order=order, palette=QUALITATIVE[:frame["condition"].nunique()]
                          if hue else None, markersize=4, capsize=0.1 if replicate else 0,
                          hue_order=list(dict.fromkeys(frame["condition"])) if hue else None)
        if chance is not None:
            ax.axhline(chance, color="0.5", linestyle="--", linewidth=0.8, zorder=0)
            ax.text(1.0, chance, "chance", transform=ax.get_yaxis_transform(), ha="right",
                    va="bottom", fontsize=7, color="0.4")
        panel = MULTITASK_PANELS.get(panel, panel)
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


KERNEL_PATH_CURVES = ("kernel_distance", "kernel_norm", "kernel_alignment")
PREDICTIONS = {"forecast_correlation": "forecast", "frozen_correlation": "frozen kernel, actual "
               "residuals", "path_correlation": "kernel along the path"}


@_styled
def kernel_path_curves(data: xr.Dataset, col_wrap: int | None = 4) -> Figure:
    """The kernel along actual training (repkernel.kernel_path) next to how well the change is
    predicted: panels kernel distance to t = 0, kernel norm and kernel-target alignment over
    training, and the change correlation with the actual hidden change of the forecast (per
    readout, when the result holds one), of the frozen kernel along the actual residuals and
    of the path-integrated kernel. Sweep dims (e.g. init_scale) are line colours."""
    if not isinstance(data, xr.Dataset) or "kernel_distance" not in data.data_vars:
        raise ValueError("the kernel-path figure needs a result of repkernel.kernel_path (a "
                         "Dataset with kernel_distance)")
    frames = [(_pretty(data[v], v), _curve_table(data[v].rename(v), "time"), "time", v, data[v])
              for v in KERNEL_PATH_CURVES]
    tables = []
    for name, label in PREDICTIONS.items():
        if name not in data.data_vars:
            continue
        da = data[name].rename("change correlation")
        for coords, sub in _panels(da, [d for d in da.dims if d != "readout"]):
            table = _curve_table(sub, "time")
            table.insert(0, "prediction", _panel_name(label, coords))
            tables.append(table)
    frames.append(("hidden change correlation\n(prediction vs actual)",
                   pd.concat(tables, ignore_index=True), "time", "change correlation",
                   data["kernel_distance"]))
    sweep = [d for d in data["kernel_distance"].dims if d != "time"]
    # one colour per sweep value in every panel; the predictions are the dashes
    return _line_panels(frames, sweep[0] if len(sweep) == 1 else None, None, log_y=False,
                        what="the kernel-path figure", col_wrap=col_wrap)
