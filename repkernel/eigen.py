"""The published t = 0 eigen-analysis of the loss-weighted kernel (DESIGN.md section 3, last
bullet; REFERENCE.md C, analyses).

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
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score

from repkernel.curriculum import Stage
from repkernel.kernels import (
    _attrs,
    _item_coords,
    _network,
    _resolve_method,
    weighted_kernel_matrix,
)
from repkernel.losses import check_loss, loss_gradient
from repkernel.networks import RepresentationNetwork
from repkernel.patterns import PatternSet

DECOMPOSITIONS = ("auto", "eig", "svd")


def loss_kernel_matrices(network: RepresentationNetwork, probes: PatternSet,
                         train: PatternSet | None = None, loss: str = "mse",
                         method: str = "auto", device=None, dtype=None) -> torch.Tensor:
    """M[o, i, j] = <grad_theta l_j, grad_theta f_o(x_i)>, (O, n_p, n_t); train=None: probes."""
    check_loss(loss, "mean")
    train = probes if train is None else train
    net = _network(network, device, dtype)
    with torch.no_grad():
        _, f = net.represent(train)
    if f.shape[-1] != train.n_outputs:
        raise ValueError(f"training patterns have {train.n_outputs} targets but the network has "
                         f"{f.shape[-1]} outputs: use patterns made for this network")
    g = loss_gradient(f, train.to(f.device, f.dtype)[2], loss)
    return weighted_kernel_matrix(net, probes, train, g, method=method).permute(1, 0, 2)


def kernel_eigenvectors(network: RepresentationNetwork, probes: PatternSet,
                        train: PatternSet | None = None, n_vectors: int = 3,
                        stage: Stage | None = None, loss: str | None = None,
                        decomposition: str = "auto", method: str = "auto", device=None,
                        dtype=None) -> xr.Dataset:
    """Leading eigenvectors of M_o per output unit o (module docstring).

    ``train`` (or ``stage.patterns``; default: the probes themselves, the published analysis)
    are the patterns whose loss gradients weight the kernel; ``stage`` also gives the loss.
    decomposition "eig": eigenvectors of the square M_o (needs train = probes), ordered by
    |eigenvalue|; "svd": left singular vectors (probe side) by singular value, for probes that
    differ from the training patterns; "auto" picks "eig" exactly when train is probes.

    Returns a Dataset with
      component(output_unit, rank, item)  unit-norm vector, phase fixed so that its largest
                                          entry is real positive (real part kept)
      magnitude(output_unit, rank, item)  |component| (phase-free, what the heatmaps show)
      eigenvalue(output_unit, rank)       eigenvalue (real part) or singular value
      eigenvalue_imag(output_unit, rank)  imaginary part (0 for "svd" and real pairs)
    and the probes' labels as item coordinates.
    """
    _check_decomposition(decomposition)
    if train is None and stage is not None:
        train = stage.patterns
    square = train is None or train is probes or (
        len(train) == len(probes) and train.fingerprint() == probes.fingerprint())
    if decomposition == "auto":
        decomposition = "eig" if square else "svd"
    if decomposition == "eig" and not square:
        raise ValueError("decomposition='eig' needs the training patterns as probes (a square "
                         "M_o): pass train=None, or use decomposition='svd'")
    if not (isinstance(n_vectors, (int, np.integer)) and 1 <= n_vectors <= len(probes)):
        raise ValueError(f"n_vectors must be an integer in 1..{len(probes)} (the number of "
                         f"probes), got {n_vectors!r}")
    loss = loss or (stage.loss if stage is not None else "mse")
    net = _network(network, device, dtype)
    matrices = loss_kernel_matrices(net, probes, train, loss, method).cpu().numpy()
    n_out = matrices.shape[0]
    vectors = np.empty((n_out, n_vectors, len(probes)), dtype=complex)
    values = np.empty((n_out, n_vectors), dtype=complex)
    for o, matrix in enumerate(matrices):
        if decomposition == "eig":
            w, v = np.linalg.eig(matrix)
            order = np.argsort(-np.abs(w), kind="stable")[:n_vectors]
            values[o], vectors[o] = w[order], v[:, order].T
        else:
            u, s, _ = np.linalg.svd(matrix, full_matrices=False)
            values[o], vectors[o] = s[:n_vectors], u[:, :n_vectors].T
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    largest = np.take_along_axis(vectors, np.abs(vectors).argmax(-1)[..., None], axis=-1)
    vectors *= np.conj(largest) / np.abs(largest)  # largest entry real positive
    coords = {**_item_coords(probes, "item"), "output_unit": np.arange(n_out),
              "rank": np.arange(n_vectors)}
    dims = ("output_unit", "rank", "item")
    attrs = _attrs(net, _resolve_method(net, method), decomposition=decomposition, loss=loss,
                   equation="M_o[i,j] = <grad_theta l_j, grad_theta f_o(x_i)> "
                            "= sum_q Theta[i,o,j,q] g[j,q]")
    return xr.Dataset({
        "component": (dims, vectors.real),
        "magnitude": (dims, np.abs(vectors)),
        "eigenvalue": (dims[:2], values.real),
        "eigenvalue_imag": (dims[:2], values.imag),
    }, coords=coords, attrs=attrs)


def _check_decomposition(decomposition: str) -> None:
    if decomposition not in DECOMPOSITIONS:
        raise ValueError(f"decomposition must be one of {list(DECOMPOSITIONS)}, got "
                         f"{decomposition!r}")


def _magnitude(eigen: xr.Dataset | xr.DataArray) -> xr.DataArray:
    da = eigen["magnitude"] if isinstance(eigen, xr.Dataset) else abs(eigen)
    if "item" not in da.dims:
        raise ValueError(f"eigenvector components need an item dim (from kernel_eigenvectors), "
                         f"got dims {list(da.dims)}")
    return da


def components_by(eigen: xr.Dataset | xr.DataArray, by: str | Sequence[str] = "task"
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


def components_by_input_feature(eigen: xr.Dataset | xr.DataArray, probes: PatternSet,
                                by: str | None = "task") -> xr.DataArray:
    """Mean |component| over the items whose stimulus has each input feature active (weights
    x_i[f], so any stimulus coding works): (output_unit, rank, [by,] input_feature); with
    ``by="task"`` a task x input-feature heatmap per output unit. Coordinates ``input_dim`` and
    ``feature`` of each input feature when the probes come from a MultitaskEnvironment."""
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
        out = out.assign_coords(input_dim=("input_feature", np.arange(probes.n_stimulus) // f),
                                feature=("input_feature", np.arange(probes.n_stimulus) % f))
    dims = [d for d in ("output_unit", "rank") if d in out.dims]
    return out.transpose(*dims, ..., "input_feature").rename("magnitude")


class KernelGroups(NamedTuple):
    """k-means groups of the items from their leading-eigenvector |components|."""

    labels: xr.DataArray  # (item,) group index per item
    silhouette: float  # mean silhouette coefficient of those groups, in [-1, 1]


def kernel_groups(eigen: xr.Dataset | xr.DataArray, n_clusters: int = 12, n_vectors: int = 1,
                  seed: int = 0) -> KernelGroups:
    """k-means (sklearn, 10 restarts) on each item's |components| in the leading ``n_vectors``
    eigenvectors of every output unit (features: output_unit x rank), and its silhouette."""
    da = _magnitude(eigen)
    if "rank" in da.dims:
        if not 1 <= n_vectors <= da.sizes["rank"]:
            raise ValueError(f"n_vectors must be in 1..{da.sizes['rank']} (the eigenvectors "
                             f"computed), got {n_vectors}")
        da = da.isel(rank=slice(0, n_vectors))
    features = da.transpose("item", ...).values.reshape(da.sizes["item"], -1)
    n_items = features.shape[0]
    if not (isinstance(n_clusters, (int, np.integer)) and 2 <= n_clusters < n_items):
        raise ValueError(f"n_clusters must be an integer in 2..{n_items - 1} (fewer than the "
                         f"{n_items} items), got {n_clusters!r}")
    distinct = len(np.unique(features.round(12), axis=0))
    if distinct < n_clusters:
        raise ValueError(f"only {distinct} distinct items for {n_clusters} clusters: lower "
                         f"n_clusters to at most {distinct}")
    labels = KMeans(n_clusters=int(n_clusters), n_init=10, random_state=seed).fit_predict(features)
    score = float(silhouette_score(features, labels)) if len(np.unique(labels)) > 1 else 0.0
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
    k = int(n_clusters or len(np.unique(labels)))
    values = hidden.transpose("item", "unit").values
    hidden_labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(values)
    return float(adjusted_rand_score(labels, hidden_labels))
