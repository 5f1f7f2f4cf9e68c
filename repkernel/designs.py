"""Ranking designs by forecast: which architecture or schedule to train, answered from the
forecasts of a sweep instead of training every cell (issue 13, deliverable 2).

A design is one cell of a study's sweep without its repetition dims (``seed``): the init scale,
width, activation, curriculum, ... Each design gets a generalization score per source, the
network at the actual weights (``actual``) and at the forecast weights (``forecast``, its
``network`` readout), averaged over the repetitions:
  probe_loss  the mean per-pattern loss on the probes at the last checkpoint (lower is better)
  accuracy    multitask argmax accuracy, the mean over set sizes k of accuracy_by_k at the last
              checkpoint (higher is better; needs the study's ``evaluate`` group)
The forecast ranks the designs as training does when the Spearman correlation of the two scores
over designs is 1; ``top1_agreement`` says whether the forecast's best design is training's
best, ``forecast_top_actual_rank`` where training ranks it (1 = best). The cost saved is the
forecasts' CPU time over the training runs' (the cells' ``cpu_seconds``, repkernel.studies).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from repkernel.results import package_version

MEASURES = {"probe_loss": "lower", "accuracy": "higher"}  # measure -> which way is better


def _groups(result) -> dict[str, xr.Dataset]:
    if isinstance(result, xr.DataTree):
        return {str(name): child.to_dataset() for name, child in result.children.items()}
    if isinstance(result, Mapping) and not isinstance(result, xr.Dataset):
        return dict(result)
    raise ValueError(f"rank_designs needs a study result (a DataTree with groups actual, "
                     f"forecast, multitask), got {type(result).__name__}")


def _last(da: xr.DataArray) -> xr.DataArray:
    return da.isel(time=-1, drop=True) if "time" in da.dims else da


def _score(groups: Mapping[str, xr.Dataset], measure: str, source: str) -> xr.DataArray:
    """The measure per sweep cell for one source (dims: the sweep dims)."""
    if measure == "probe_loss":
        da = _last(groups[source]["probe_loss"])
        if "readout" in da.dims:  # the network at the forecast weights
            da = da.sel(readout="network" if "network" in da["readout"].values
                        else da["readout"].values[0], drop=True)
        return da
    scores = groups["multitask"]["accuracy_by_k"].sel(source=source, drop=True)
    return _last(scores).mean("k")


def rank_designs(result, measures: Sequence[str] = tuple(MEASURES),
                 over: Sequence[str] = ("seed",)) -> xr.Dataset:
    """Rank a sweep's designs by forecast and by actual generalization, and compare the two.

    result: a combined study result (repkernel.studies.run_study) with groups ``actual`` and
    ``forecast`` (``multitask`` too for the accuracy). over: sweep dims averaged away (the
    repetitions; those absent from the result are skipped). Returns a Dataset with
      score(measure, source, design), rank(measure, source, design) (1 = best)
      spearman(measure)                 Spearman r of forecast vs actual scores over designs
      top1_agreement(measure)           whether both pick the same best design
      forecast_top_actual_rank(measure) training's rank of the forecast's best design
    ``design`` holds labels such as "init_scale=0.1,activation=relu", with one coordinate per
    design dim; attrs cost_ratio = forecast CPU seconds / training CPU seconds over the cells
    (NaN when the result has no cpu_seconds) and both totals.
    """
    groups = _groups(result)
    missing = [g for g in ("actual", "forecast") if g not in groups]
    if missing:
        raise ValueError(f"the result has no {missing[0]!r} group: rank designs from a study "
                         f"with compute = ['train', 'forecast', 'evaluate']")
    unknown = [m for m in measures if m not in MEASURES]
    if unknown or not measures:
        raise ValueError(f"unknown measure {unknown[0] if unknown else None!r}: choose from "
                         f"{', '.join(MEASURES)}")
    if "accuracy" in measures and "multitask" not in groups:
        raise ValueError("the accuracy measure needs the study's multitask group: add "
                         "'evaluate' to [study] compute, or rank by measures=['probe_loss']")
    parts = {}
    for measure in measures:
        per_source = [_score(groups, measure, s) for s in ("forecast", "actual")]
        parts[measure] = xr.concat(per_source, dim=xr.DataArray(["forecast", "actual"],
                                                                dims="source", name="source"))
    score = xr.concat(list(parts.values()), dim=xr.DataArray(list(parts), dims="measure",
                                                              name="measure"))
    score = score.mean([d for d in over if d in score.dims])
    design_dims = [d for d in score.dims if d not in ("measure", "source")]
    if not design_dims or np.prod([score.sizes[d] for d in design_dims]) < 2:
        raise ValueError(f"ranking needs at least two designs: the sweep has dims "
                         f"{design_dims or 'none'} besides the repetitions {list(over)}")
    score = score.stack(design=design_dims).transpose("measure", "source", "design")
    labels = [",".join(f"{d}={v}" for d, v in zip(design_dims, values))
              for values in score.indexes["design"]]
    coords = {d: ("design", score[d].values) for d in design_dims}
    score = score.drop_vars(["design", *design_dims]).assign_coords(design=labels, **coords)
    values = score.values  # (measure, source, design)
    sign = np.array([1.0 if MEASURES[m] == "lower" else -1.0 for m in parts])[:, None, None]
    import scipy.stats  # deferred: ~1 s to import

    ranks = scipy.stats.rankdata(sign * values, axis=-1)
    forecast, actual = ranks[:, 0], ranks[:, 1]
    spearman = np.array([scipy.stats.spearmanr(f, a).statistic for f, a in zip(forecast, actual)])
    best_forecast = forecast.argmin(-1)
    top_rank = actual[np.arange(len(parts)), best_forecast]
    ds = xr.Dataset({
        "score": score.assign_attrs(long_name="generalization score (mean over repetitions)"),
        "rank": (score.dims, ranks, {"long_name": "rank over designs (1 = best)"}),
        "spearman": ("measure", spearman, {"long_name": "Spearman r, forecast vs actual"}),
        "top1_agreement": ("measure", top_rank == 1, {
            "long_name": "forecast's best design is training's best"}),
        "forecast_top_actual_rank": ("measure", top_rank, {
            "long_name": "training's rank of the forecast's best design"}),
    }, coords=score.coords)
    seconds = _cpu_seconds(result)
    ds.attrs.update(
        measures=", ".join(f"{m} ({MEASURES[m]} is better)" for m in parts),
        averaged_over=", ".join(d for d in over if d in groups["actual"].dims),
        forecast_cpu_seconds=seconds["forecast"], train_cpu_seconds=seconds["train"],
        cost_ratio=seconds["forecast"] / seconds["train"] if seconds["train"] else np.nan,
        version=package_version())
    return ds


def _cpu_seconds(result) -> dict[str, float]:
    """Total CPU seconds of training and of forecasting over a study's cells."""
    per_cell = json.loads(getattr(result, "attrs", {}).get("cpu_seconds", "{}"))
    return {kind: float(sum(cell.get(kind, 0.0) for cell in per_cell.values()))
            for kind in ("train", "forecast")}
