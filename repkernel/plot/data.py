"""Which part of the data a figure draws: naming several results, study groups, selection
by sweep values, the forecast/actual sources, kernel, comparison and score parts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
import pandas as pd
import xarray as xr

from repkernel import similarity
from repkernel.plot.axes import _fmt

Data = Union[xr.Dataset, xr.DataArray, "xr.DataTree", Mapping[str, Any], Sequence[Any]]


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


def _representations(data: Data, variable: str, what: str) -> list[tuple[str, xr.Dataset]]:
    parts = [(n, ds) for n, ds in _named(data) if variable in ds.data_vars]
    if not parts:
        found = sorted({str(v) for _, ds in _named(data) for v in ds.data_vars})
        raise ValueError(f"{what} needs a result with {variable!r} (a training, forecast or "
                         f"study result); this data has {found or 'no variables'}")
    return parts


def _has(data: Data, variable: str) -> bool:
    return any(variable in ds.data_vars for _, ds in _named(data))


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
    return similarity.compare(sources["forecast"], sources["actual"])


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
