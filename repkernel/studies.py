"""Studies: a validated TOML that sweeps run configurations, computes forecast and actual for every
sweep cell, and combines the cells into one result with the sweep dims.

A study file holds the run sections of repkernel.config ([environment], [network], [curriculum],
[probes], [run]) plus:
  [study]     name, claim (the published or new claim it tests), figure (what it reproduces),
              compute = any of "kernel", "train", "forecast", "compare", "evaluate",
              "dimensionality" (participation ratio of actual and forecast over training)
  [sweep]     "section.key" = [values, ...]: the grid (cartesian product), e.g.
              "network.init_scale" = [0.1, 1.0], "network.seed" = [0, 1, 2]
  [forecast]  time, relinearize (segments per stage or "auto"), tolerance, readout (arguments
              of repkernel.forecast)
  [compare]   metrics (names of repkernel.similarity.METRICS)
  [evaluate]  k, stimuli (arguments of repkernel.evaluate_multitask)
  [kernel]    what, target, stage, on, n_eigenvectors, clusters (k-means groups of the leading
              eigenvectors, 0: none), method, max_gb (arguments of
              repkernel.kernel_results.kernel_result)
  [plots]     kinds (figures the runner renders from the combined result), times,
              heatmaps_at (sweep values the heatmap kinds show, e.g. { seed = 0 }: one seed's
              matrices; the curve kinds average over every seed)
  [smoke]     "section.key" = value overrides for a reduced size (``smoke=True``), including
              "sweep.<section.key>" to shrink the grid

Each cell's result is an xarray DataTree (groups actual, forecast, compare, multitask, kernel,
dimensionality) written atomically to ``cells/<cell name>.nc``; finished cells are skipped on
re-runs, so a crashed or interrupted sweep resumes without recomputing anything. A curriculum
given in ``epochs`` puts every group's ``time`` in epochs (Curriculum.epochs_at), so that cells
of different batch sizes share one time axis. Each cell's root attrs ``cpu_seconds`` record the
CPU time of its training and its forecast (the combined result collects them per cell).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from repkernel import config as configuration
from repkernel import forecasting, plot, results
from repkernel.config import (
    SCHEMA,
    ConfigError,
    Spec,
    choice,
    choices,
    defaults_of,
    non_negative_int,
    positive_int,
    positive_number,
)
from repkernel.kernel_results import KERNELS, ON, kernel_result
from repkernel.kernels import METHODS, TARGETS
from repkernel.multitask import evaluate_multitask
from repkernel.plot import FIGURES
from repkernel.results import package_version
from repkernel.similarity import DEFAULT_METRICS, METRICS, compare, participation_ratio

COMPUTE = ("kernel", "train", "forecast", "compare", "evaluate", "dimensionality")


_FORECAST = defaults_of(forecasting.forecast)
_EVALUATE = defaults_of(evaluate_multitask)
_KERNEL = defaults_of(kernel_result)
STUDY_SCHEMA: dict[str, Spec] = {
    "study": {
        "name": ("study", lambda v: isinstance(v, str) and v != "", "a non-empty string"),
        "claim": ("", lambda v: isinstance(v, str), "a string"),
        "figure": ("", lambda v: isinstance(v, str), "a string"),
        "compute": choices(["train", "forecast", "compare", "evaluate"], COMPUTE),
    },
    "forecast": {
        "time": choice(_FORECAST["time"], forecasting.TIMES),
        "relinearize": (_FORECAST["relinearize"], lambda v: v == "auto" or positive_int(v),
                        "a positive integer or 'auto'"),
        "tolerance": (_FORECAST["tolerance"],
                      lambda v: positive_number(v) and math.isfinite(v),
                      "a positive finite number (relinearize = 'auto')"),
        "readout": choices(list(_FORECAST["readout"]), forecasting.READOUTS),
    },
    "compare": {
        "metrics": choices(list(DEFAULT_METRICS), METRICS),
    },
    "evaluate": {
        "k": (list(_EVALUATE["k"]),
              lambda v: isinstance(v, list) and v and all(map(positive_int, v)),
              "a list of positive integers"),
        "stimuli": (_EVALUATE["stimuli"], lambda v: v == "all" or positive_int(v),
                    "'all' or a positive integer"),
    },
    "kernel": {  # arguments of repkernel.kernel_results.kernel_result
        "what": choice(_KERNEL["what"], KERNELS),
        "target": choice(_KERNEL["target"], TARGETS),
        "stage": (_KERNEL["stage"], non_negative_int, "a curriculum stage index"),
        "on": choice(_KERNEL["on"], ON),
        "n_eigenvectors": (_KERNEL["n_eigenvectors"], positive_int, "a positive integer"),
        "clusters": (_KERNEL["clusters"], non_negative_int, "a count of k-means groups (0: none)"),
        "method": choice(_KERNEL["method"], METHODS),
        "max_gb": (_KERNEL["max_gb"], positive_number, "a positive number of GB"),
    },
    "plots": {
        "kinds": choices(["loss", "fidelity", "task-similarity", "multitask"], FIGURES),
        "times": ([], lambda v: isinstance(v, list) and all(map(non_negative_int, v)),
                  "a list of steps (empty: first, middle and last checkpoint)"),
        "heatmaps_at": ({}, lambda v: isinstance(v, dict) and all(
            isinstance(x, (int, float, str)) and not isinstance(x, bool) for x in v.values()),
                        "a table of sweep dim = value, e.g. { seed = 0 }"),
    },
}
FULL_SCHEMA = {**SCHEMA, **STUDY_SCHEMA}


@dataclass(frozen=True)
class Cell:
    """One point of the sweep grid: its coordinates and its complete run configuration."""

    name: str
    coords: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class Study:
    """A validated study: the resolved configuration and its sweep grid."""

    config: dict[str, dict[str, Any]]
    sweep: dict[str, list]

    @property
    def name(self) -> str:
        return self.config["study"]["name"]

    def cells(self) -> list[Cell]:
        keys = list(self.sweep)
        # a dim of mixed types ("full", 32, "online") is labelled by text
        mixed = {k for k in keys if len({type(_coordinate(v)) for v in self.sweep[k]}) > 1}
        cells = []
        for values in itertools.product(*(self.sweep[k] for k in keys)):
            coords = {_dim(k): _label(v) if k in mixed else _coordinate(v)
                      for k, v in zip(keys, values)}
            cell_config = copy.deepcopy(self.config)
            for key, value in zip(keys, values):
                section, name = key.split(".")
                cell_config[section][name] = value
            label = ",".join(f"{_dim(k)}={_label(v)}" for k, v in zip(keys, values)) or "single"
            cells.append(Cell(label, coords, cell_config))
        return cells


# Names the results already use (variables and dims): a sweep key named like one becomes the
# dim "section_key" ("network.hidden" -> "network_hidden").
TAKEN = ("hidden", "output", "target", "loss", "probe_loss", "batch_loss", "weights", "time",
         "item", "unit", "readout", "source", "k", "step", "parameter", "layer")


def _dim(key: str) -> str:
    name = key.split(".", 1)[1]
    return key.replace(".", "_") if name in TAKEN else name


def _coordinate(value):
    """Sweep values become coordinates: scalars as they are, lists and tables as JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _label(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _dotted(table: Mapping[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """Check "section.key" entries against the run schema; return those that are valid."""
    valid = {}
    for key, value in table.items():
        parts = key.split(".")
        if len(parts) != 2 or parts[0] not in FULL_SCHEMA or parts[1] not in FULL_SCHEMA[parts[0]]:
            problems.append(f"[{where}].{key}: not a 'section.key' of the configuration")
            continue
        valid[key] = value
    return valid


def load_study(source: str | os.PathLike | Mapping[str, Any] | None = None,
               smoke: bool = False, overrides: Mapping[str, Any] | None = None) -> Study:
    """Validate a study (a TOML path, a dict, or None for the embedded default study).

    ``smoke=True`` applies the study's [smoke] overrides; ``overrides`` ("section.key" -> value,
    e.g. {"run.device": "cuda"}) are applied last. Every problem is reported at once in a
    ConfigError with its location.
    """
    if source is None:
        raw = configuration.tomllib.loads(
            resources.files("repkernel").joinpath("default_study.toml").read_text())
    elif isinstance(source, Mapping):
        raw = copy.deepcopy(dict(source))
    else:
        raw = configuration.load_toml(source)
    problems: list[str] = []
    sweep_raw = raw.pop("sweep", {})
    smoke_raw = raw.pop("smoke", {})
    if not isinstance(sweep_raw, Mapping) or not isinstance(smoke_raw, Mapping):
        raise ConfigError(["[sweep] and [smoke] must be tables"])
    for key, value in [*(smoke_raw.items() if smoke else ()), *(overrides or {}).items()]:
        if key.startswith("sweep."):
            sweep_raw = {**sweep_raw, key[len("sweep."):]: value}
        else:
            section, _, name = key.partition(".")
            raw.setdefault(section, {})[name] = value
    sweep = _dotted(sweep_raw, "sweep", problems)
    _dotted({k: v for k, v in smoke_raw.items() if not k.startswith("sweep.")}, "smoke",
            problems)
    try:
        resolved = configuration.validate(raw, FULL_SCHEMA)
    except ConfigError as error:
        problems = error.problems + problems
        resolved = None
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            problems.append(f"[sweep].{key}: must be a non-empty list of values")
            continue
        section, name = key.split(".")
        _, check, what = FULL_SCHEMA[section][name]
        for i, value in enumerate(values):
            if not check(value):
                problems.append(f"[sweep].{key}[{i}]: must be {what}, got {value!r}")
    if problems:
        raise ConfigError(problems)
    study = Study(resolved, {k: list(v) for k, v in sweep.items()})
    build_cell(study.cells()[0])  # impossible combinations fail now, not mid-sweep
    return study


def build_cell(cell: Cell) -> configuration.Setup:
    run_sections = {k: v for k, v in cell.config.items() if k in SCHEMA}
    return configuration.build(run_sections)


def run_cell(cell: Cell, progress: Callable[[int], None] | None = None) -> xr.DataTree:
    """Compute one cell: the study's ``compute`` list, as a DataTree of result groups.

    Groups: ``actual`` (repkernel.train), ``forecast`` (repkernel.forecast), ``compare`` (forecast
    versus actual per readout), ``multitask`` (scores of actual and forecast along ``source``),
    ``kernel`` (the t = 0 eigen-analysis: eigenvectors, components by input feature, k-means
    kernel groups and, with training or forecast, ``group_agreement(source, time)``: adjusted
    Rand index of the kernel groups vs k-means of the hidden representation of the same
    patterns), ``dimensionality`` (participation_ratio and components of the hidden
    representation on the probes along ``source``, repkernel.similarity.participation_ratio).
    A pure function of the cell (but for its ``cpu_seconds`` attrs), so it runs anywhere.
    """
    from repkernel import training

    setup = build_cell(cell)
    compute = cell.config["study"]["compute"]
    run = dict(checkpoints=setup.checkpoints, device=setup.device, dtype=setup.dtype)
    groups: dict[str, xr.Dataset] = {}
    kernel = cell.config["kernel"]  # published: the square train x train M_o of phase 1
    kernel_patterns = (setup.curriculum.stages[kernel["stage"]].patterns
                       if kernel["on"] == "train" else setup.probes)
    if "kernel" in compute:
        groups["kernel"] = kernel_result(setup, **kernel)
    cpu_seconds = {}
    if {"train", "evaluate", "compare"} & set(compute):
        started = time.process_time()
        groups["actual"] = training.train(setup.network, setup.curriculum, setup.probes,
                                          progress=progress, **run)
        cpu_seconds["train"] = time.process_time() - started
    if {"forecast", "compare"} & set(compute):
        options = cell.config["forecast"]
        started = time.process_time()
        groups["forecast"] = forecasting.forecast(
            setup.network, setup.curriculum, setup.probes, time=options["time"],
            readout=tuple(options["readout"]), relinearize=options["relinearize"],
            tolerance=options["tolerance"], **run)
        cpu_seconds["forecast"] = time.process_time() - started
    if "kernel_group" in groups.get("kernel", {}):  # published: kernel vs hidden groupings
        from repkernel.eigen import group_agreement_over_training

        sources = [s for s in ("actual", "forecast") if s in groups and "weights" in groups[s]]
        if sources:
            agreement = [group_agreement_over_training(
                setup.network, groups[s], kernel_patterns, groups["kernel"]["kernel_group"])
                for s in sources]
            groups["kernel"]["group_agreement"] = xr.concat(
                agreement, dim=xr.DataArray(sources, dims="source", name="source"))
    if "compare" in compute:
        groups["compare"] = compare(groups["forecast"], groups["actual"],
                                    metrics=cell.config["compare"]["metrics"])
    if "evaluate" in compute and setup.environment is not None:
        options = cell.config["evaluate"]
        sources = [source for source in ("actual", "forecast") if source in groups]
        scores = [evaluate_multitask(groups[source], setup.environment, k=tuple(options["k"]),
                                     stimuli=options["stimuli"], network=setup.network)
                  for source in sources]
        groups["multitask"] = xr.concat(scores, dim=xr.DataArray(sources, dims="source",
                                                                 name="source"),
                                        coords="minimal",
                                        compat="override", combine_attrs="drop_conflicts")
    if "dimensionality" in compute:
        groups["dimensionality"] = _dimensionality(groups)
    if cell.config["curriculum"]["epochs"] is not None:
        groups = {name: _in_epochs(ds, setup.curriculum) for name, ds in groups.items()}
    attrs = {"study": cell.config["study"]["name"], "cell": cell.name,
             "cell_coords": json.dumps(cell.coords), "version": package_version(),
             "config": json.dumps(cell.config, sort_keys=True, default=str),
             "cpu_seconds": json.dumps(cpu_seconds)}
    return xr.DataTree.from_dict({"/": xr.Dataset(attrs=attrs), **{f"/{k}": v
                                                                    for k, v in groups.items()}})


def _dimensionality(groups: Mapping[str, xr.Dataset]) -> xr.Dataset:
    """participation_ratio and components (90 %) of the hidden representation along source."""
    sources = [s for s in ("actual", "forecast") if s in groups]
    if not sources:
        raise ValueError("[study].compute: 'dimensionality' needs 'train' or 'forecast'")
    parts = [participation_ratio(groups[s]["hidden"]) for s in sources]
    ds = xr.concat(parts, dim=xr.DataArray(sources, dims="source", name="source"))
    ds["participation_ratio"].attrs["long_name"] = "participation ratio of the hidden layer"
    ds["components"].attrs["long_name"] = "components for 90 % of the hidden variance"
    return ds


def _in_epochs(ds: xr.Dataset, curriculum) -> xr.Dataset:
    """``time`` in epochs (whole numbers as integers) instead of steps."""
    if "time" not in ds.dims:
        return ds
    epochs = curriculum.epochs_at(ds["time"].values)
    if np.allclose(epochs, np.round(epochs)):
        epochs = np.round(epochs).astype(np.int64)
    return ds.assign_coords(time=("time", epochs, {"units": "epochs"}))


def save_tree(tree: xr.DataTree, path: str | os.PathLike) -> Path:
    """Write a DataTree as netCDF atomically (repkernel.results.save)."""
    return results.save(tree, path)


def load_tree(path: str | os.PathLike) -> xr.DataTree:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no result file at {path}")
    with xr.open_datatree(path) as tree:
        return tree.load()


def cell_path(out: Path, cell: Cell) -> Path:
    safe = cell.name.replace("/", "_").replace(" ", "")
    return out / "cells" / f"{safe}.nc"


def _compute_and_save(cell: Cell, out: Path) -> str:
    save_tree(run_cell(cell), cell_path(out, cell))
    return cell.name


# What a finished cell may differ in and still be reused: texts, figures, the device it ran on.
PRESENTATION = {"study": ("name", "claim", "figure"), "plots": None, "run": ("device",)}


def _computation(config: Mapping[str, Any]) -> dict[str, Any]:
    """A cell's configuration without what only names, draws or places it (PRESENTATION)."""
    out = {}
    for section, values in config.items():
        keys = PRESENTATION.get(section, ())
        if keys is None:
            continue
        out[section] = {k: v for k, v in values.items() if k not in keys}
    return out


def _check_same_computation(cell: Cell, path: Path) -> None:
    """A finished cell file is reused only if it was computed with this cell's configuration."""
    with xr.open_datatree(path) as tree:
        stored = json.loads(tree.attrs.get("config", "{}"))
    for section, spec in FULL_SCHEMA.items():  # keys added since: their default is what ran
        for key, (default, _, _) in spec.items():
            if section != "network":
                stored.setdefault(section, {}).setdefault(key, default)
    stored["network"] = configuration.network_as_run(stored.get("network", {}))
    now = json.loads(json.dumps(cell.config, sort_keys=True, default=str))
    old, new = _computation(stored), _computation(now)
    if old != new:
        differing = sorted(f"[{s}].{k}" for s in set(old) | set(new)
                           for k in set(old.get(s, {})) | set(new.get(s, {}))
                           if old.get(s, {}).get(k) != new.get(s, {}).get(k))
        raise ValueError(f"{path} was computed with a different configuration "
                         f"({', '.join(differing[:3]) or 'sections differ'}): run into a new "
                         f"--out folder, or delete {path.parent} to recompute")


def run_study(
    study: Study,
    out: str | os.PathLike,
    workers: int = 0,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> xr.DataTree:
    """Run every unfinished cell of ``study`` into ``out`` and return the combined result.

    ``workers=0`` runs serially in this process; ``workers=N`` starts a local Dask cluster of N
    single-threaded workers; ``scheduler`` submits to an existing Dask distributed cluster
    (workers need this package and a file system shared with ``out``). ``progress(done, total)``
    is called as cells finish. The combined DataTree (``combined.nc``) has the sweep dims.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(
        {"config": study.config, "sweep": study.sweep}, indent=2, default=str))
    cells = study.cells()
    todo = [cell for cell in cells if not cell_path(out, cell).exists()]
    for cell in cells:
        if cell not in todo:
            _check_same_computation(cell, cell_path(out, cell))
    done = len(cells) - len(todo)
    if progress:
        progress(done, len(cells))
    if todo and (workers or scheduler):
        from dask.distributed import Client, LocalCluster, as_completed

        cluster = None if scheduler else LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        with Client(scheduler or cluster) as client:
            futures = client.map(_compute_and_save, todo, out=out, pure=False)
            for future in as_completed(futures):
                future.result()
                done += 1
                if progress:
                    progress(done, len(cells))
        if cluster is not None:
            cluster.close()
    else:
        for cell in todo:
            _compute_and_save(cell, out)
            done += 1
            if progress:
                progress(done, len(cells))
    combined = combine(study, out)
    save_tree(combined, out / "combined.nc")
    return combined


def combine(study: Study, out: str | os.PathLike) -> xr.DataTree:
    """Stack every cell's groups along the sweep dims (one new dim per swept key)."""
    out = Path(out)
    cells = study.cells()
    trees = [load_tree(cell_path(out, cell)) for cell in cells]
    dims = [_dim(k) for k in study.sweep]
    groups = {}
    for group in trees[0].children:
        plain = [tree[group].to_dataset() for tree in trees]
        # a non-index coordinate that differs between cells (parameter_group when the width
        # is swept) is stacked along the sweep dims like a variable: xarray would otherwise
        # broadcast every variable over its dims
        differing = [str(c) for c in plain[0].coords if c not in plain[0].indexes and any(
            c not in ds.coords or not ds[c].equals(plain[0][c]) for ds in plain[1:])]
        datasets = [ds.reset_coords([c for c in differing if c in ds.coords]).expand_dims(
            {d: [cell.coords[d]] for d in dims}) for cell, ds in zip(cells, plain)]
        # adaptive forecasts re-linearize a different number of times per cell: pad the
        # segment log, so that cells stack along the sweep dims only
        longest = max(ds.sizes.get("segment", 0) for ds in datasets)
        datasets = [ds.reindex(segment=np.arange(longest)) if "segment" in ds.dims else ds
                    for ds in datasets]
        groups[f"/{group}"] = (xr.combine_by_coords(
            datasets, data_vars="minimal", coords="different", compat="no_conflicts", join="outer",
            combine_attrs="drop_conflicts")
                               if dims else datasets[0]).set_coords(
                                   [c for c in differing if c not in datasets[0].coords])
    attrs = {"study": study.name, "sweep": json.dumps(study.sweep),
             "config": json.dumps(study.config, sort_keys=True, default=str),
             "version": package_version(),
             "cpu_seconds": json.dumps({cell.name: json.loads(tree.attrs.get("cpu_seconds", "{}"))
                                        for cell, tree in zip(cells, trees)})}
    return xr.DataTree.from_dict({"/": xr.Dataset(attrs=attrs), **groups})


def render_figures(study: Study, combined: xr.DataTree, folder: str | os.PathLike,
                   formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Render the study's [plots] kinds from its combined result into ``folder`` (one file per
    kind and format, written atomically); returns the paths."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    times = study.config["plots"]["times"] or None
    paths = []
    for kind in study.config["plots"]["kinds"]:
        select = study.config["plots"]["heatmaps_at"] if FIGURES[kind].heatmap else None
        with plot.paper_style():
            figure = plot.render(kind, combined, times=times, select=select)
        try:
            paths += [plot.save_figure(figure, folder / f"{kind}.{suffix}") for suffix in formats]
        finally:
            plt.close(figure)
    return paths
