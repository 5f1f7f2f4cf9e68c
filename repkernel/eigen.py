"""Grouping helpers for the published t = 0 eigen-analysis of the loss-weighted kernel
(DESIGN.md section 3, last bullet; REFERENCE.md C, analyses); the eigenvectors themselves come
from repkernel.kernels.kernel_eigenvectors.

For each output unit o, the probe x train matrix
    M_o[i, j] = <grad_theta l_j, grad_theta f_o(x_i)> = sum_q Theta[i, o, j, q] g[j, q],
g_j = grad_f l(f(x_j), y_j) (the loss-weighted kernel without its -rho factor, which changes no
eigenvector). Its leading eigenvectors (largest |eigenvalue|) say which patterns the hidden layer
will group together; their |components| grouped by task and by input feature are the published
heatmaps, and k-means on them (with its silhouette) gives the predicted groups, to compare with
k-means groups of the trained hidden layer by adjusted Rand index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import xarray as xr

from repkernel.networks import represent_at
from repkernel.patterns import PatternSet
from repkernel.similarity import adjusted_rand_index, kmeans_groups, silhouette


def _magnitude(eigen: xr.DataArray) -> xr.DataArray:
    """|components| of kernel_eigenvectors' result (also accepted as a Dataset holding it)."""
    if isinstance(eigen, xr.Dataset):
        if "eigenvector" not in eigen:
            raise ValueError("the Dataset holds no 'eigenvector' variable: pass the result of "
                             "kernel_eigenvectors")
        eigen = eigen["eigenvector"]
    da = abs(eigen)
    if "item" not in da.dims:
        raise ValueError(f"eigenvector components need an item dim (from kernel_eigenvectors), "
                         f"got dims {list(da.dims)}")
    return da


def components_by(eigen: xr.DataArray, by: str | Sequence[str] = "task"
                  ) -> xr.DataArray:
    """Mean |component| over the items sharing each value of the item label(s) ``by``:
    (output_unit, rank, *by), e.g. by="task" or by=("task", "stimulus") for a task x stimulus
    heatmap (NaN where no item has that combination)."""
    da = _magnitude(eigen)
    names = [by] if isinstance(by, str) else list(by)
    missing = [name for name in names if name not in da.coords or da[name].dims != ("item",)]
    if missing or not names:
        labels = [str(c) for c in da.coords if da[c].dims == ("item",) and c != "item"]
        raise ValueError(f"cannot group by {missing or by!r}: the item labels are {labels}")
    grouped = da.groupby(names[0] if len(names) == 1 else names).mean()
    rest = [d for d in da.dims if d != "item"]
    return grouped.transpose(*rest, *names).rename("magnitude")


def components_by_input_feature(eigen: xr.DataArray, probes: PatternSet,
                                by: str | None = "task") -> xr.DataArray:
    """Mean |component| over the items whose stimulus has each input feature active (weights
    x_i[f], so any stimulus coding works): (output_unit, rank, [by,] input_feature); with
    ``by="task"`` a task x input-feature heatmap per output unit. Coordinates ``dimension`` (the
    input dimension) and ``feature`` of each input feature when the probes come from a
    MultitaskEnvironment (named so as not to clash with the items' ``input_dim`` label)."""
    da = _magnitude(eigen)
    if da.sizes["item"] != len(probes):
        raise ValueError(f"the eigenvectors have {da.sizes['item']} items but probes has "
                         f"{len(probes)} patterns: pass the probes of kernel_eigenvectors")
    x = xr.DataArray(probes.x.numpy(), dims=("item", "input_feature"))
    if by is None:
        groups = [(None, np.ones(len(probes), dtype=bool))]
    else:
        if by not in da.coords:
            raise ValueError(f"cannot group by {by!r}: it is not an item label of the "
                             f"eigenvectors")
        values = np.asarray(da[by].values)
        groups = [(v, values == v) for v in np.unique(values)]
    pieces = []
    for _, mask in groups:
        weights = x.isel(item=np.flatnonzero(mask))
        total = weights.sum("item")
        part = da.isel(item=np.flatnonzero(mask)).drop_vars(
            [c for c in da.coords if da[c].dims == ("item",)])
        pieces.append(xr.dot(part, weights, dim="item") / total.where(total > 0))
    out = pieces[0] if by is None else xr.concat(pieces, dim=by).assign_coords(
        {by: [v for v, _ in groups]})
    out = out.assign_coords(input_feature=np.arange(probes.n_stimulus))
    environment = dict(probes.description).get("environment") or {}
    if "n_features" in environment:
        f = environment["n_features"]
        out = out.assign_coords(dimension=("input_feature", np.arange(probes.n_stimulus) // f),
                                feature=("input_feature", np.arange(probes.n_stimulus) % f))
    dims = [d for d in ("output_unit", "rank") if d in out.dims]
    return out.transpose(*dims, ..., "input_feature").rename("magnitude")


class KernelGroups(NamedTuple):
    """k-means groups of the items from their leading-eigenvector |components|."""

    labels: xr.DataArray  # (item,) group index per item
    silhouette: float  # mean silhouette coefficient of those groups, in [-1, 1]


def kernel_groups(eigen: xr.DataArray, n_clusters: int = 12, n_eigenvectors: int = 1,
                  seed: int = 0) -> KernelGroups:
    """k-means (repkernel.similarity.kmeans_groups, 10 restarts) on each item's |components| in
    the leading ``n_eigenvectors`` of every output unit (features: output_unit x rank), and its
    silhouette."""
    da = _magnitude(eigen)
    if "rank" in da.dims:
        if not 1 <= n_eigenvectors <= da.sizes["rank"]:
            raise ValueError(f"n_eigenvectors must be in 1..{da.sizes['rank']} (the "
                             f"eigenvectors computed), got {n_eigenvectors}")
        da = da.isel(rank=slice(0, n_eigenvectors))
    features = da.transpose("item", ...).values.reshape(da.sizes["item"], -1)
    n_items = features.shape[0]
    if not (isinstance(n_clusters, (int, np.integer)) and 2 <= n_clusters < n_items):
        raise ValueError(f"n_clusters must be an integer in 2..{n_items - 1} (fewer than the "
                         f"{n_items} items), got {n_clusters!r}")
    distinct = len(np.unique(features.round(12), axis=0))
    if distinct < n_clusters:
        raise ValueError(f"only {distinct} distinct items for {n_clusters} clusters: lower "
                         f"n_clusters to at most {distinct}")
    labels = kmeans_groups(features, int(n_clusters), seed=seed)
    score = float(silhouette(features, labels)) if len(np.unique(labels)) > 1 else 0.0
    coords = {c: da[c] for c in da.coords if da[c].dims == ("item",)}
    return KernelGroups(xr.DataArray(labels, dims="item", coords=coords, name="kernel_group",
                                     attrs={"silhouette": score, "n_clusters": int(n_clusters)}),
                        score)


def group_agreement(kernel_labels: xr.DataArray | np.ndarray, hidden: xr.DataArray,
                    n_clusters: int | None = None, seed: int = 0) -> float:
    """Adjusted Rand index between kernel-predicted groups and k-means groups of a hidden
    representation ``hidden`` (item, unit) with as many clusters as the kernel groups."""
    labels = np.asarray(kernel_labels)
    if hidden.dims[-1] != "unit" or "item" not in hidden.dims or hidden.ndim != 2:
        raise ValueError(f"hidden must be a DataArray (item, unit); got dims {list(hidden.dims)}:"
                         f" select one time (and layer/readout) first")
    if hidden.sizes["item"] != labels.shape[0]:
        raise ValueError(f"{labels.shape[0]} kernel labels for {hidden.sizes['item']} hidden "
                         f"items: use the same probes")
    return float(_agreement(labels, hidden.transpose("item", "unit").values, n_clusters, seed))


def _agreement(labels: np.ndarray, hidden: np.ndarray, n_clusters: int | None,
               seed: int) -> np.ndarray:
    """ARI of ``labels`` (n,) vs k-means groups of hidden (..., n, H), as many groups as the
    labels have unless ``n_clusters``: (...)."""
    k = int(n_clusters or len(np.unique(labels)))
    groups = kmeans_groups(hidden, k, seed=seed)
    return adjusted_rand_index(np.broadcast_to(labels, groups.shape), groups)


def eigen_analysis(network, probes: PatternSet, stage, n_eigenvectors: int = 3,
                   clusters: int = 12, method: str = "auto", device=None,
                   dtype=None) -> xr.Dataset:
    """The published t = 0 eigen-analysis as one Dataset: ``eigenvector`` (output_unit, rank,
    item) of repkernel.kernels.kernel_eigenvectors (``stage``'s patterns as the training side),
    ``by_input_feature`` (output_unit, rank, input_feature) mean |component| per input feature,
    and with ``clusters`` > 0 the k-means ``kernel_group`` (item,) of the leading eigenvectors,
    its silhouette in the attributes."""
    from repkernel.kernels import kernel_eigenvectors

    vectors = kernel_eigenvectors(network, probes, stage, n_eigenvectors, method=method,
                                  device=device, dtype=dtype)
    ds = vectors.to_dataset()  # the plots group raw components by task themselves
    ds["by_input_feature"] = components_by_input_feature(vectors, probes, by=None)
    if clusters:
        groups = kernel_groups(vectors, n_clusters=clusters)
        ds["kernel_group"] = groups.labels.drop_vars(
            [c for c in groups.labels.coords if c != "item"])
        ds.attrs["silhouette"] = groups.silhouette
    return ds


def group_agreement_over_training(network, result: xr.Dataset, patterns: PatternSet,
                                  kernel_labels: xr.DataArray | np.ndarray,
                                  n_clusters: int | None = None, seed: int = 0,
                                  layer: int = -1) -> xr.DataArray:
    """Adjusted Rand index between kernel-predicted groups of ``patterns`` (e.g. kernel_group
    of eigen_analysis) and k-means groups of the network's hidden representation of the same
    patterns at every checkpoint of ``result`` (its recorded weights(time, parameter), actual or
    forecast): (time,). ``layer``: which hidden layer (default the last)."""
    if "weights" not in result:
        raise ValueError("the result has no weights(time, parameter): record weights "
                         "(record_weights=True) to compare groupings over training")
    labels = np.asarray(kernel_labels)
    if labels.shape != (len(patterns),):
        raise ValueError(f"{labels.shape[0]} kernel labels for {len(patterns)} patterns: "
                         "use the patterns the kernel groups were computed on")
    weight = next(iter(network.parameters()))
    thetas = torch.as_tensor(result["weights"].values, device=weight.device, dtype=weight.dtype)
    x, c, _ = patterns.to(weight.device, weight.dtype)
    hidden = represent_at(network, thetas, x, c)[0][layer].cpu().numpy()  # (time, n, H)
    return xr.DataArray(_agreement(labels, hidden, n_clusters, seed), dims="time",
                        coords={"time": result["time"].values}, name="group_agreement",
                        attrs={"long_name": "adjusted Rand index, kernel vs hidden k-means groups"})

