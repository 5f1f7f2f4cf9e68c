"""Results as xarray Datasets (DESIGN.md section 7): the shared layout, provenance, netCDF I/O.

Layout shared by the trainer and the forecaster, so any comparison is symmetric:
  hidden(time, item, unit)         hidden representation; a ``layer`` dim (first) when the network
                                   has several hidden layers (narrower layers padded with NaN)
  output(time, item, output_unit)  network output on the probes
  target(item, output_unit)        probe targets
  loss(time)                       mean per-pattern loss on the current stage's training set
  probe_loss(time)                 mean per-pattern loss on the probes
  weights(time, parameter)         trainable weights theta (optional)
Coordinates: ``time`` (global step) with ``stage``; ``item`` with the probe labels; ``unit``,
``output_unit``; ``parameter`` with ``parameter_group``. (DESIGN.md calls the output dim
``output``; xarray forbids a dimension named like the ``output`` variable, hence
``output_unit``.) Attributes: ``config`` (JSON), ``version``, ``device``, ``dtype``, ``source``
("actual" or "forecast").
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from repkernel.patterns import PatternSet
from repkernel.version import __version__


def package_version() -> str:
    return __version__


def checkpoint_steps(checkpoints: int | Sequence[int], total_steps: int) -> np.ndarray:
    """Global steps at which to record: a count spread over [0, total_steps] (always including
    step 0 and the last step) or explicit steps. Returns sorted unique int64 steps."""
    whole = (int, np.integer)
    if isinstance(checkpoints, bool) or not (isinstance(checkpoints, whole) or (
            isinstance(checkpoints, Sequence | np.ndarray) and not isinstance(checkpoints, str)
            and all(isinstance(s, whole) and not isinstance(s, bool) for s in checkpoints))):
        raise ValueError(f"checkpoints must be a whole number of checkpoints or a list of whole "
                         f"steps, got {checkpoints!r}: e.g. checkpoints=101 or [0, 500, 1000]")
    if isinstance(checkpoints, whole):
        if checkpoints < 1:
            raise ValueError(f"checkpoints must be a positive count or a list of steps, "
                             f"got {checkpoints}")
        if checkpoints == 1:
            return np.array([total_steps], dtype=np.int64)
        steps = np.round(np.linspace(0, total_steps, int(checkpoints))).astype(np.int64)
        return np.unique(steps)
    steps = np.unique(np.asarray(list(checkpoints), dtype=np.int64))
    if steps.size == 0 or steps[0] < 0 or steps[-1] > total_steps:
        raise ValueError(f"checkpoint steps must lie in 0..{total_steps} (the curriculum's "
                         f"total steps), got {list(checkpoints)}")
    return steps


def stack_hidden(hidden: Sequence[torch.Tensor], unit_axis: int = -1) -> np.ndarray:
    """Per-layer tensors (..., H_l, ...) -> (layer, ..., max H, ...) array, the unit axis
    ``unit_axis`` of narrower layers NaN-padded."""
    if len(hidden) == 1:  # nothing to pad: no copy
        return hidden[0].detach().cpu().numpy()[None]
    width = max(h.shape[unit_axis] for h in hidden)
    arrays = []
    for h in hidden:
        a = h.detach().cpu().numpy()
        pad = [(0, 0)] * a.ndim
        pad[unit_axis] = (0, width - a.shape[unit_axis])
        arrays.append(np.pad(a, pad, constant_values=np.nan))
    return np.stack(arrays)


def representation_dataset(
    hidden: Sequence[torch.Tensor],
    output: torch.Tensor,
    steps: np.ndarray,
    probes: PatternSet,
    leading_dims: tuple[str, ...] = ("time",),
    leading_coords: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Dataset with hidden(time, ..., item, unit) and output(time, ..., item, output_unit).

    hidden: one (T, ..., n, H_l) tensor per hidden layer; output (T, ..., n, O). Extra leading
    dims (e.g. ``readout``) follow ``time`` and are named in ``leading_dims``.
    """
    dims = (*leading_dims, "item")
    stacked = stack_hidden(hidden)
    if stacked.shape[0] == 1:
        hidden_var = xr.Variable((*dims, "unit"), stacked[0])
    else:
        hidden_var = xr.Variable(("layer", *dims, "unit"), stacked)
    coords = {
        "time": ("time", np.asarray(steps, dtype=np.int64)),
        "unit": ("unit", np.arange(stacked.shape[-1])),
        "output_unit": ("output_unit", np.arange(output.shape[-1])),
        **probes.coords(),
        **(leading_coords or {}),
    }
    if stacked.shape[0] > 1:
        coords["layer"] = ("layer", np.arange(stacked.shape[0]))
    return xr.Dataset(
        {
            "hidden": hidden_var,
            "output": ((*dims, "output_unit"), output.detach().cpu().numpy()),
            "target": (("item", "output_unit"), probes.y.numpy()),
        },
        coords=coords,
    )


def seed_labels(networks: Sequence) -> list[int]:
    """The ``seed`` coordinate of runs of several networks: each network's config["seed"], or
    0..S-1 when those are missing or repeat."""
    seeds = [net.config.get("seed") for net in networks]
    if len(set(map(str, seeds))) != len(seeds) or not all(isinstance(s, int) for s in seeds):
        return list(range(len(seeds)))
    return seeds


def stack_runs(runs: Sequence[xr.Dataset], seeds: Sequence[int], dim: str = "seed"
               ) -> xr.Dataset:
    """Results of one run per seed stacked on a new ``dim`` (coords = the seeds); the first
    run's attributes, with ``seeds`` added. Dims whose length differs between runs (a
    forecast's ``segment`` log) are NaN-padded."""
    stacked = xr.concat(runs, dim=xr.DataArray(list(seeds), dims=dim, name=dim),
                        combine_attrs="override", coords="minimal", compat="override",
                        join="outer")
    stacked.attrs = {**runs[0].attrs, "seeds": ",".join(map(str, seeds))}
    return stacked


def finish_run(ds: xr.Dataset, network, curriculum, probes: PatternSet, steps: np.ndarray,
               weights: torch.Tensor | None, source: str, device: torch.device | str,
               dtype: torch.dtype, **extra_config: Any) -> xr.Dataset:
    """What every run result gets once its representations are in: the ``stage`` of each
    checkpoint, ``weights(time, parameter)`` with ``parameter_group`` (when given, a (T, P)
    tensor), and provenance whose config names network, trainable groups, curriculum, probes,
    checkpoints and ``extra_config`` (e.g. the forecast's options); every variable and
    coordinate described (``describe``: long_name, units, what -1 labels mean)."""
    ds = ds.assign_coords(stage=("time", curriculum.stage_of(steps)))
    if weights is not None:
        ds["weights"] = (("time", "parameter"), weights.detach().cpu().numpy())
        ds = ds.assign_coords(parameter=("parameter", np.arange(network.n_parameters)),
                              parameter_group=("parameter", network.parameter_groups()))
    config = {
        "network": network.config, "trainable": network.trainable_names(),
        "curriculum": curriculum.config(), "probes": probes.summary(),
        "checkpoints": np.asarray(steps).tolist(), "record_weights": weights is not None,
        **extra_config,
    }
    ds.attrs.update(provenance(config, device, dtype, source))
    return describe(ds)


# Attributes of every variable and coordinate a run result may hold (CF style): long_name; units
# where the quantity has them (steps; activations and losses are dimensionless, so none: xarray
# would print "[1]" in every axis label); description where the name is not enough. Labels of
# items come from the probes (repkernel.environments).
_SINGLE_TASK_ONLY = "-1 for items with several active tasks (k > 1), which have no single one"
DESCRIPTIONS: dict[str, dict[str, str]] = {
    "time": {"long_name": "training step", "units": "steps",
             "description": "global gradient step of the checkpoint (0 = initial weights); "
                            "gradient-flow time is lr x steps"},
    "step": {"long_name": "training step", "units": "steps",
             "description": "global gradient step whose update batch_loss precedes"},
    "stage": {"long_name": "curriculum stage", "description": "index of the stage (config "
              "curriculum.stages) the checkpoint's last update belongs to"},
    "item": {"long_name": "probe pattern", "description": "index of the probe pattern"},
    "unit": {"long_name": "hidden unit"},
    "output_unit": {"long_name": "output unit"},
    "layer": {"long_name": "hidden layer", "description": "0 = closest to the input; narrower "
              "layers are padded with NaN units"},
    "parameter": {"long_name": "trainable weight", "description": "index into the flat vector "
                  "of trainable weights, in the network's registration order"},
    "parameter_group": {"long_name": "weight group of the parameter"},
    "readout": {"long_name": "forecast readout", "description": "linear: h_0 + J_h (theta - "
                "theta_0), the linearized network; network: the network run at the forecast "
                "weights"},
    "segment": {"long_name": "forecast segment", "description": "index of a stretch of steps "
                "forecast by one linear model (one per stage when the kernel is frozen)"},
    "segment_start": {"long_name": "global step at which the linear model was (re)centered",
                      "units": "steps"},
    "segment_steps": {"long_name": "steps forecast by the segment's linear model",
                      "units": "steps"},
    "segment_stage": {"long_name": "curriculum stage of the segment"},
    "segment_error": {"long_name": "relative deviation of the network from the segment's linear "
                      "model at its end"},
    "hidden": {"long_name": "hidden representation",
               "description": "hidden-layer activations on each probe pattern"},
    "output": {"long_name": "network output"},
    "target": {"long_name": "probe target"},
    "loss": {"long_name": "training loss",
             "description": "mean per-pattern loss on the training patterns of the stage the "
                            "checkpoint belongs to"},
    "probe_loss": {"long_name": "probe loss",
                   "description": "mean per-pattern loss on the probe patterns"},
    "batch_loss": {"long_name": "batch loss",
                   "description": "mean per-pattern loss of the batch each update used, before "
                                  "the update"},
    "weights": {"long_name": "trainable weights theta"},
    "task": {"long_name": "task of the item", "description": f"task index; {_SINGLE_TASK_ONLY}"},
    "task_set": {"long_name": "active tasks", "description": "the item's active tasks, joined "
                 "by '+'"},
    "k": {"long_name": "number of active tasks"},
    "input_dim": {"long_name": "input dimension of the item's task",
                  "description": f"input dimension the task reads; {_SINGLE_TASK_ONLY}"},
    "output_dim": {"long_name": "output dimension of the item's task",
                   "description": f"output dimension the task writes; {_SINGLE_TASK_ONLY}"},
    "stimulus": {"long_name": "stimulus index"},
    "congruent": {"long_name": "congruent task set", "description": "1 if every active task "
                  "asks for the same feature index (response), 0 if they conflict; -1 for single "
                  "tasks (k = 1), where congruency is not defined"},
    "x": {"long_name": "input value"},
}


def describe(dataset: xr.Dataset) -> xr.Dataset:
    """Give every variable and coordinate listed in DESCRIPTIONS its attributes (in place)."""
    for name, attrs in DESCRIPTIONS.items():
        if name in dataset.variables:
            dataset[name].attrs.update(attrs)
    return dataset


def provenance(config: dict[str, Any], device: torch.device | str, dtype: torch.dtype,
               source: str) -> dict[str, str]:
    """Attributes that trace a result to its run: configuration JSON, version, device, dtype."""
    return {
        "config": json.dumps(config, default=_json_default, sort_keys=True),
        "version": package_version(),
        "device": str(device),
        "dtype": str(dtype).replace("torch.", ""),
        "source": source,
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def config_of(dataset: xr.Dataset) -> dict[str, Any]:
    """The configuration a result was made with (parsed from its ``config`` attribute)."""
    return json.loads(dataset.attrs.get("config", "{}"))


TEMPORARY = ".tmp-"  # write_atomic writes <name>.tmp-<pid> next to <name>, then renames it


def check_writable(path: str | os.PathLike, folder: bool = False) -> Path:
    """Raise ValueError, before any work, if ``path`` cannot become a file (``folder=True``: a
    folder): it is an existing folder (file), or a path above it is a file."""
    path = Path(path)
    if not folder and path.is_dir():
        raise ValueError(f"{path} is a folder: give a file name, e.g. {path / 'result.nc'}")
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file: give a folder (a new or an existing one)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"cannot write {path}: {parent} is a file, not a folder")
            break
    return path


def remove_stale_temporaries(folder: str | os.PathLike, name: str = "*") -> list[Path]:
    """Delete the temporary files ``<name>.tmp-<pid>`` in ``folder`` whose writing process is
    gone (killed during a write); returns them. Temporaries of live processes are kept."""
    stale = []
    for tmp in Path(folder).glob(f"{name}{TEMPORARY}*"):
        pid = tmp.name.rpartition(TEMPORARY)[2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            stale.append(tmp)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def write_atomic(path: str | os.PathLike, write: Callable[[str], Any], mode: int = 0o644
                 ) -> Path:
    """Call write(temporary path) on ``<path>.tmp-<pid>`` in ``path``'s folder, then rename it
    to ``path``: no half-written file ever exists at ``path`` (the temporary file is removed if
    writing fails, and by the next write to ``path`` if the process was killed). The file gets
    permissions ``mode``; returns ``path``."""
    path = check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, glob.escape(path.name))
    tmp = path.with_name(f"{path.name}{TEMPORARY}{os.getpid()}")
    try:
        write(str(tmp))
        os.chmod(tmp, mode)  # a result to share, not a private temporary file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save(dataset: xr.Dataset | xr.DataTree, path: str | os.PathLike) -> Path:
    """Write a result (a Dataset, or a DataTree of them) as netCDF atomically (write_atomic).
    A DataTree's root names its groups (attribute ``groups``, and ``open_with``), because
    xarray.open_dataset of such a file shows only the empty root."""
    if isinstance(dataset, xr.DataTree):
        tree = dataset.map_over_datasets(_netcdf_ready)
        if tree.children:
            groups = " ".join(tree.children)
            tree.attrs = {**tree.attrs, "groups": groups, "open_with": (
                f"xarray.open_datatree(path), or xarray.open_dataset(path, group=name) for a "
                f"group name in: {groups}")}
        return write_atomic(path, tree.to_netcdf)
    return write_atomic(path, _netcdf_ready(dataset).to_netcdf)


def _netcdf_ready(dataset: xr.Dataset) -> xr.Dataset:
    """netCDF attributes cannot hold booleans or None: store them as strings/ints."""
    def clean(attrs):
        return {k: (int(v) if isinstance(v, bool) else "None" if v is None else v)
                for k, v in attrs.items()}

    out = dataset.copy()
    out.attrs = clean(out.attrs)
    for name in out.variables:
        out[name].attrs = clean(out[name].attrs)
    return out


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read a result file fully into memory (the file is closed afterwards)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no result file at {path}")
    try:
        return xr.load_dataset(path)
    except (ValueError, OSError):
        raise ValueError(f"{path} is not a netCDF file xarray can read (truncated, or another "
                         f"format): give a result file written by repkernel.save or the "
                         f"repkernel CLI") from None
