"""Studies: a validated TOML that sweeps run configurations, computes forecast and actual for every
sweep cell, and combines the cells into one result with the sweep dims.

A study file holds the run sections of repkernel.config ([environment], [network], [curriculum],
[probes], [run]; a [network] kind "file.py:function" names a builder in a file next to the study)
plus:
  [study]     name, claim (the published or new claim it tests), figure (what it reproduces),
              compute = any of "kernel", "train", "forecast", "compare", "evaluate",
              "dimensionality" (participation ratio of actual and forecast over training)
  [sweep]     "section.key" = [values, ...]: the grid (cartesian product), e.g.
              "network.init_scale" = [0.1, 1.0], "network.seed" = [0, 1, 2]
  [forecast]  time, relinearize (segments per stage or "auto"), tolerance, readout (arguments
              of repkernel.forecast)
  [compare]   metrics (names of repkernel.similarity.METRICS); item_means: a probe label whose
              per-label mean representations (e.g. class means) are compared too
              (group compare_means)
  [evaluate]  k, stimuli (arguments of repkernel.evaluate_multitask); for a data set with a
              test set and cross-entropy stages: the test accuracy of the trained network and
              of the network at the forecast weights (group classification)
  [kernel]    what, target, stage, on, n_eigenvectors, clusters (k-means groups of the leading
              eigenvectors, 0: none), method, max_gb (arguments of
              repkernel.kernel_results.kernel_result)
  [plots]     kinds (figures the runner renders from the combined result), times,
              heatmaps_at (sweep values the heatmap kinds show, e.g. { seed = 0 }: one seed's
              matrices; the curve kinds average over every seed), formats (file types of
              each figure: png, pdf, svg; default png and pdf)
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
import functools
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
from repkernel import cpu_threads, forecasting, plot, results
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
from repkernel.multitask import classification_accuracy, evaluate_multitask
from repkernel.networks import check_device
from repkernel.plot import FIGURES
from repkernel.results import package_version
from repkernel.similarity import DEFAULT_METRICS, METRICS, compare, participation_ratio
from repkernel.wrapped import is_source, resolve_source

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
        "item_means": ("", lambda v: isinstance(v, str),
                       "a probe label (e.g. 'class') whose per-label mean representations are "
                       "compared too, or '' for none"),
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
        "formats": choices(["png", "pdf"], [suffix[1:] for suffix in plot.SUFFIXES]),
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
    e.g. {"run.device": "cuda"}) are applied last; an override of a swept key is refused (its
    sweep values would win). Every problem is reported at once in a ConfigError with its
    location.
    """
    if source is None:
        raw = configuration.tomllib.loads(
            resources.files("repkernel").joinpath("default_study.toml").read_text())
    elif isinstance(source, Mapping):
        raw = copy.deepcopy(dict(source))
    else:
        raw = configuration.load_toml(source)
        network = raw.get("network")
        if isinstance(network, dict) and is_source(network.get("kind")):
            try:  # a user's network builder lives next to the study file
                network["kind"] = resolve_source(network["kind"], Path(source).parent)
            except ValueError as error:
                raise ConfigError([f"[network].kind: {error}"]) from None
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
    problems += [f"[sweep].{key}: swept, so a single value would be ignored: set its values "
                 f"instead, e.g. --set 'sweep.{key}=[{_label(value)}]'"
                 for key, value in (overrides or {}).items() if key in sweep_raw]
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
    setup = build_cell(study.cells()[0])  # impossible combinations fail now, not mid-sweep
    if ("evaluate" in resolved["study"]["compute"] and setup.environment is None
            and not _classifies(setup)):
        raise ConfigError([f"[study].compute: 'evaluate' scores multitasking, or the test "
                           f"accuracy of a data set trained with cross-entropy, and environment "
                           f"kind {resolved['environment']['kind']!r} has neither: remove "
                           f"'evaluate' or use kind = 'multitask'"])
    return study


def _classifies(setup: configuration.Setup) -> bool:
    """Whether 'evaluate' has a test accuracy to measure: a test set and cross-entropy stages."""
    return setup.test_set is not None and all(stage.loss == "cross_entropy"
                                              for stage in setup.curriculum.stages)


def build_cell(cell: Cell) -> configuration.Setup:
    run_sections = {k: v for k, v in cell.config.items() if k in SCHEMA}
    return configuration.build(run_sections)


def run_cell(cell: Cell, progress: Callable[[str, int, int], None] | None = None
             ) -> xr.DataTree:
    """Compute one cell: the study's ``compute`` list, as a DataTree of result groups.

    Groups: ``actual`` (repkernel.train), ``forecast`` (repkernel.forecast), ``compare`` (forecast
    versus actual per readout), ``multitask`` (scores of actual and forecast along ``source``),
    ``kernel`` (the t = 0 eigen-analysis: eigenvectors, components by input feature, k-means
    kernel groups and, with training or forecast, ``group_agreement(source, time)``: adjusted
    Rand index of the kernel groups vs k-means of the hidden representation of the same
    patterns), ``dimensionality`` (participation_ratio and components of the hidden
    representation on the probes along ``source``, repkernel.similarity.participation_ratio).
    A pure function of the cell (but for its ``cpu_seconds`` attrs: the CPU time of training
    and forecast), so it runs anywhere, on [run].threads CPU threads.
    ``progress(what, done, total)`` reports each part as it goes: what is "kernel", "training"
    and "forecast" (done and total in steps), "compare" or "evaluate".
    """
    setup = build_cell(cell)
    with cpu_threads.threads(setup.threads):
        groups, cpu_seconds = _cell_groups(cell, setup, progress)
    attrs = {"study": cell.config["study"]["name"], "cell": cell.name,
             "cell_coords": json.dumps(cell.coords), "version": package_version(),
             "config": json.dumps(cell.config, sort_keys=True, default=str),
             "cpu_seconds": json.dumps(cpu_seconds)}
    return xr.DataTree.from_dict({"/": xr.Dataset(attrs=attrs), **{f"/{k}": v
                                                                    for k, v in groups.items()}})


def _cell_groups(cell: Cell, setup: configuration.Setup,
                 progress: Callable[[str, int, int], None] | None
                 ) -> tuple[dict[str, xr.Dataset], dict[str, float]]:
    """The cell's result groups, and the CPU seconds of its training and forecast."""
    from repkernel import training

    def report(what: str, total: int) -> Callable[[int], None]:
        def done(count: int) -> None:
            if progress is not None:
                progress(what, count, total)

        done(0)
        return done

    compute = cell.config["study"]["compute"]
    run = dict(checkpoints=setup.checkpoints, device=setup.device, dtype=setup.dtype,
               threads=setup.threads)
    groups: dict[str, xr.Dataset] = {}
    cpu_seconds: dict[str, float] = {}
    kernel = cell.config["kernel"]  # published: the square train x train M_o of phase 1
    kernel_patterns = (setup.curriculum.stages[kernel["stage"]].patterns
                       if kernel["on"] == "train" else setup.probes)
    steps = setup.curriculum.total_steps
    if "kernel" in compute:
        finished = report("kernel", 1)
        groups["kernel"] = kernel_result(setup, **kernel)
        finished(1)
    if {"train", "evaluate", "compare"} & set(compute):
        started = time.process_time()
        groups["actual"] = training.train(setup.network, setup.curriculum, setup.probes,
                                          progress=report("training", steps), **run)
        cpu_seconds["train"] = time.process_time() - started
    if {"forecast", "compare"} & set(compute):
        options = cell.config["forecast"]
        started = time.process_time()
        groups["forecast"] = forecasting.forecast(
            setup.network, setup.curriculum, setup.probes, time=options["time"],
            readout=tuple(options["readout"]), relinearize=options["relinearize"],
            tolerance=options["tolerance"], progress=report("forecast", steps), **run)
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
        finished = report("compare", 1)
        options = cell.config["compare"]
        groups["compare"] = compare(groups["forecast"], groups["actual"],
                                    metrics=options["metrics"])
        if options["item_means"]:
            label = options["item_means"]
            groups["compare_means"] = compare(
                _item_means(groups["forecast"], label), _item_means(groups["actual"], label),
                metrics=options["metrics"], item_dim=label)
        finished(1)
    if "evaluate" in compute and _classifies(setup):
        sources = [source for source in ("actual", "forecast") if source in groups]
        accuracy = [classification_accuracy(groups[source], setup.test_set,
                                            network=setup.network) for source in sources]
        groups["classification"] = xr.concat(
            accuracy, dim=xr.DataArray(sources, dims="source", name="source")).to_dataset()
    if "evaluate" in compute and setup.environment is not None:
        options = cell.config["evaluate"]
        sources = [source for source in ("actual", "forecast") if source in groups]
        finished, scores = report("evaluate", len(sources)), []
        for source in sources:
            scores.append(evaluate_multitask(groups[source], setup.environment,
                                             k=tuple(options["k"]), stimuli=options["stimuli"],
                                             network=setup.network))
            finished(len(scores))
        groups["multitask"] = xr.concat(scores, dim=xr.DataArray(sources, dims="source",
                                                                 name="source"),
                                        coords="minimal",
                                        compat="override", combine_attrs="drop_conflicts")
    if "dimensionality" in compute:
        groups["dimensionality"] = _dimensionality(groups)
    if cell.config["curriculum"]["epochs"] is not None:
        groups = {name: _in_epochs(ds, setup.curriculum) for name, ds in groups.items()}
    return groups, cpu_seconds


def _item_means(result: xr.Dataset, label: str) -> xr.Dataset:
    """hidden and output averaged over the items of each value of probe label ``label``
    (dim ``label``), e.g. class-mean representations."""
    if label not in result.coords:
        raise ValueError(f"[compare].item_means: the probes have no label {label!r} (labels: "
                         f"{[str(c) for c in result.coords if result[c].dims == ('item',)]})")
    means = result[["hidden", "output"]].groupby(label).mean("item")
    return means.assign_coords(time=result["time"])


def _padding(ds: xr.Dataset) -> dict[str, Any]:
    """Fill values of a padded segment log: -1 for whole numbers (a NaN cast to an integer
    would be garbage in the file), NaN for the rest."""
    return {name: -1 if ds[name].dtype.kind in "iu" else np.nan for name in ds.data_vars
            if "segment" in ds[name].dims}


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


def _compute_and_save(cell: Cell, out: Path,
                      progress: Callable[[Cell, str, int, int], None] | None = None) -> str:
    report = None if progress is None else functools.partial(progress, cell)
    save_tree(run_cell(cell, report), cell_path(out, cell))
    return cell.name


# What a finished cell may differ in and still be reused: texts, figures, where and on how many
# threads it ran.
PRESENTATION = {"study": ("name", "claim", "figure"), "plots": None,
                "run": ("device", "threads")}


def _computation(config: Mapping[str, Any]) -> dict[str, Any]:
    """A cell's configuration without what only names, draws or places it (PRESENTATION)."""
    out = {}
    for section, values in config.items():
        keys = PRESENTATION.get(section, ())
        if keys is None:
            continue
        out[section] = {k: v for k, v in values.items() if k not in keys}
    return out


def _check_same_computation(cell: Cell, stored: Mapping[str, Any], path: Path) -> None:
    """A finished cell file is reused only if it was computed with this cell's configuration
    (``stored``, the file's config attribute)."""
    stored = copy.deepcopy(dict(stored))
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


def _finished(cell: Cell, path: Path) -> bool:
    """Whether ``path`` holds this cell's finished result: False if it is missing or
    unreadable (a file truncated by a crash: it is computed again); ValueError if it was
    computed with a different configuration."""
    if not path.exists():
        return False
    try:
        with xr.open_datatree(path) as tree:
            tree.load()  # every group readable, not only the header
            stored = json.loads(tree.attrs.get("config", "{}"))
    except (OSError, ValueError, RuntimeError, KeyError):
        return False
    _check_same_computation(cell, stored, path)
    return True


def connect(scheduler: str, timeout: float = 5.0):
    """A dask.distributed Client of the scheduler at ``scheduler``; ValueError if none answers
    within ``timeout`` seconds (checked before any work)."""
    from dask.distributed import Client

    try:
        return Client(scheduler, timeout=timeout)
    except Exception as error:  # refused, timed out, or a service that is not Dask's
        raise ValueError(f"no Dask scheduler answered at {scheduler!r} within {timeout:g} s "
                         f"({type(error).__name__}): start one (`dask scheduler`), fix the "
                         f"address, or drop --scheduler") from None


def run_study(
    study: Study,
    out: str | os.PathLike,
    workers: int = 0,
    scheduler: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    cell_progress: Callable[[Cell, str, int, int], None] | None = None,
) -> xr.DataTree:
    """Run every unfinished cell of ``study`` into ``out`` and return the combined result.

    ``workers=0`` runs serially in this process; ``workers=N`` starts a local Dask cluster of N
    single-threaded workers; ``scheduler`` submits to an existing Dask distributed cluster
    (workers need this package and a file system shared with ``out``; it must answer within 5
    s). ``progress(done, total)`` is called as cells finish; ``cell_progress(cell, what, done,
    total)`` within a serial cell (run_cell). Finished cells are reused after checking their
    configuration, unreadable ones computed again; ``study.json`` is written once that check
    passed. The combined DataTree (``combined.nc``) has the sweep dims.
    """
    out = results.check_writable(out, folder=True)
    if not scheduler:  # a scheduler's workers may have devices this machine lacks
        check_device(study.config["run"]["device"])
    client = connect(scheduler) if scheduler else None
    try:
        cells = study.cells()
        todo = [cell for cell in cells if not _finished(cell, cell_path(out, cell))]
        (out / "cells").mkdir(parents=True, exist_ok=True)
        for folder in (out, out / "cells"):
            results.remove_stale_temporaries(folder)
        results.write_atomic(out / "study.json", lambda tmp: Path(tmp).write_text(json.dumps(
            {"config": study.config, "sweep": study.sweep}, indent=2, default=str)))
        done = len(cells) - len(todo)
        if progress:
            progress(done, len(cells))
        if todo and (workers or client):
            from dask.distributed import LocalCluster, as_completed

            if client is None:
                from dask.distributed import Client

                client = Client(LocalCluster(n_workers=workers, threads_per_worker=1,
                                             processes=True, dashboard_address=None))
            futures = client.map(_compute_and_save, todo, out=out, pure=False)
            for future in as_completed(futures):
                future.result()
                done += 1
                if progress:
                    progress(done, len(cells))
        else:
            for cell in todo:
                _compute_and_save(cell, out, cell_progress)
                done += 1
                if progress:
                    progress(done, len(cells))
    finally:
        if client is not None:
            cluster = None if scheduler else client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
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
        datasets = [ds.reindex(segment=np.arange(longest), fill_value=_padding(ds))
                    if "segment" in ds.dims else ds for ds in datasets]
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
                   formats: Sequence[str] | None = None,
                   progress: Callable[[str, int, int], None] | None = None) -> list[Path]:
    """Render the study's [plots] kinds from its combined result into ``folder`` (one file per
    kind and format, written atomically; formats default to [plots] formats); returns the
    paths. ``progress(kind, done, total)``
    is called before each figure and once at the end."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    formats = study.config["plots"]["formats"] if formats is None else formats
    times = study.config["plots"]["times"] or None
    paths = []
    kinds = study.config["plots"]["kinds"]
    for done, kind in enumerate(kinds):
        if progress:
            progress(kind, done, len(kinds))
        select = study.config["plots"]["heatmaps_at"] if FIGURES[kind].heatmap else None
        with plot.paper_style():
            figure = plot.render(kind, combined, times=times, select=select)
        try:
            for suffix in formats:
                paths.append(plot.save_figure(figure, folder / f"{kind}.{suffix}"))
                figure.set_layout_engine("none")  # laid out once: later formats reuse it
        finally:
            plt.close(figure)
    if progress and kinds:
        progress(kinds[-1], len(kinds), len(kinds))
    return paths
