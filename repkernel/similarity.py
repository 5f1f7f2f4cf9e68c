"""Representational similarity metrics and the forecast-versus-actual comparison (DESIGN.md
section 5).

One function per metric. Representations are (..., items, units): the last two axes are items x
units and any leading dims (time, seed, readout, ...) are vectorized, following numpy
broadcasting (so a forecast with a ``readout`` dim compares with an actual without one). Large
batches run in cache-sized blocks of matrices, each block one vectorized call.
Names say which way they point: ``*_similarity`` is higher when more alike (identity value 1),
``*_distance`` lower (identity value 0).

Inputs are numpy arrays, torch tensors (detached and copied to CPU numpy) or xarray DataArrays.
Arrays give ndarrays; DataArrays give DataArrays that keep the leading dims and coordinates, with
the item and unit dims named by ``item_dim`` / ``unit_dim`` (their order in the array does not
matter). Two DataArray inputs must agree exactly on shared coordinates (items, checkpoints);
their unit dims may differ, since units are not matched across networks. Computation is float64.

``compare(a, b)`` computes a named set of metrics (one dispatcher over the ``METRICS`` registry,
as in rsatoolbox's ``compare``) between two results of repkernel.results' layout, per checkpoint.
A new metric is one function plus one ``Metric`` row in METRICS; compare, the compare command
and a study's ``[compare] metrics`` offer it from there.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import xarray as xr

from repkernel.results import package_version

Array = np.ndarray | torch.Tensor | xr.DataArray

# Elements per input in one block of matrices (128 kB of float64): a metric's several passes
# over a block then run in cache instead of streaming the whole batch from memory each time.
_BLOCK_ELEMENTS = 2**14


# -- the one place that handles arrays versus DataArrays --------------------------------------

def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _blockwise(function: Callable, arrays: Sequence[np.ndarray], core_ndims: Sequence[int]
               ) -> Any:
    """function(*arrays), computed over blocks of the broadcast leading dims of about
    _BLOCK_ELEMENTS elements per input; the same result as one call (every metric treats each
    leading entry on its own)."""
    if any(a.ndim < k for a, k in zip(arrays, core_ndims)):
        return function(*arrays)  # it raises the shape error
    leads = [a.shape[:a.ndim - k] for a, k in zip(arrays, core_ndims)]
    lead = np.broadcast_shapes(*leads)
    per_entry = max(math.prod(a.shape[a.ndim - k:]) for a, k in zip(arrays, core_ndims))
    per_block = max(1, _BLOCK_ELEMENTS // max(per_entry, 1))
    if math.prod(lead) <= per_block:
        return function(*arrays)
    arrays = [a.reshape((1,) * (len(lead) - len(shape)) + a.shape)
              for a, shape in zip(arrays, leads)]
    split = next(k for k in range(len(lead)) if math.prod(lead[k + 1:]) <= per_block)
    step = max(1, per_block // math.prod(lead[split + 1:]))
    outputs: list[np.ndarray] | None = None
    for outer in np.ndindex(*lead[:split]):
        for start in range(0, lead[split], step):
            block = (*outer, slice(start, start + step))
            parts = [a[tuple(i if a.shape[d] > 1 else (0 if isinstance(i, int) else slice(1))
                             for d, i in enumerate(block))] for a in arrays]
            result = function(*parts)
            results = result if isinstance(result, tuple) else (result,)
            if outputs is None:
                outputs = [np.empty(lead + r.shape[len(lead) - split:], dtype=r.dtype)
                           for r in results]
            for out, r in zip(outputs, results):
                out[block] = r
    return tuple(outputs) if isinstance(result, tuple) else outputs[0]


def _apply(function: Callable, inputs: Sequence[Any], core_dims: Sequence[Sequence[str]],
           output_core_dims: Sequence[Sequence[str]], names: Sequence[str],
           exclude: Sequence[str] = ()) -> Any:
    """function(*numpy arrays with the core dims last) -> array or tuple of arrays.

    Arrays in: the result of function as is. Any DataArray in: every input becomes a DataArray
    (a plain array must then have exactly the core dims), the inputs must share coordinates
    exactly (except along ``exclude``), and xarray.apply_ufunc maps function over the other dims,
    broadcasting them; DataArray(s) out.
    """
    ndims = [len(d) for d in core_dims]

    def blocked(*arrays):
        return _blockwise(function, arrays, ndims)

    if not any(isinstance(x, xr.DataArray) for x in inputs):
        return blocked(*(_numpy(x) for x in inputs))
    labelled = []
    for x, dims, name in zip(inputs, core_dims, names):
        if not isinstance(x, xr.DataArray):
            values = _numpy(x)
            if values.ndim != len(dims):
                raise ValueError(f"{name} is a plain array of shape {values.shape} next to "
                                 f"DataArrays: give it as a DataArray, or with only the dims "
                                 f"{tuple(dims)}")
            x = xr.DataArray(values, dims=tuple(dims))
        missing = [d for d in dims if d not in x.dims]
        if missing:
            raise ValueError(f"{name} has dims {tuple(map(str, x.dims))} but no {missing[0]!r}: "
                             f"name its dims with item_dim=... and unit_dim=...")
        labelled.append(x)
    if core_dims[0]:  # the first core dim is the items: measured data may list them reordered
        labelled = [labelled[0], *(_match_items(labelled[0], x, core_dims[0][0])
                                   for x in labelled[1:])]
    try:
        xr.align(*labelled, join="exact", exclude=set(exclude), copy=False)
    except ValueError as error:
        message = str(error).splitlines()[0]
        raise ValueError(f"{', '.join(names)} have different coordinates ({message}): select "
                         f"the same items and checkpoints in each") from None
    return xr.apply_ufunc(blocked, *labelled, input_core_dims=[list(d) for d in core_dims],
                          output_core_dims=[list(d) for d in output_core_dims],
                          exclude_dims=set(exclude), keep_attrs=False)


def _match_items(a: xr.DataArray, b: xr.DataArray, item_dim: str) -> xr.DataArray:
    """b with its items in a's order where the two share an item coordinate (other than the item
    index) holding the same labels in another order (measured data, e.g.); b as it is
    otherwise."""
    if item_dim not in a.dims or item_dim not in b.dims:
        return b
    for name in _item_coordinates(a, item_dim):
        if name in b.coords and b[name].dims == (item_dim,) and not np.array_equal(
                a[name].values, b[name].values):
            return align_items(a, b, name, item_dim=item_dim)[1]
    return b


def _item_coordinates(x: xr.DataArray, item_dim: str) -> list[str]:
    return [str(c) for c in x.coords if x[c].dims == (item_dim,) and c != item_dim]


def align_items(a: xr.DataArray, b: xr.DataArray, by: str, *, item_dim: str = "item"
                ) -> tuple[xr.DataArray, xr.DataArray]:
    """(a, b) with b's items put in a's order by the labels of coordinate ``by``, and b given a's
    item coordinates: e.g. a model's hidden(item, unit) whose items carry ``stimulus`` labels
    and measured responses with the same stimuli in another order, on dim ``item_dim`` or on a
    dim named ``by``. ValueError (one line) when the labels are not the same set, each once."""
    if not isinstance(a, xr.DataArray) or not isinstance(b, xr.DataArray):
        raise ValueError("align_items needs two DataArrays")
    if by in b.dims and item_dim not in b.dims:  # measured items on a dim named by the labels
        b = b.rename({by: item_dim}).assign_coords({by: (item_dim, b[by].values)})
    for name, x in (("a", a), ("b", b)):
        if by not in x.coords or x[by].dims != (item_dim,):
            raise ValueError(f"{name} has no item coordinate {by!r} along {item_dim!r} (it has "
                             f"{_item_coordinates(x, item_dim) or 'none'}): label the items of "
                             f"both with the same coordinate")
    labels_a, labels_b = (np.asarray(x[by].values) for x in (a, b))
    for name, labels in (("a", labels_a), ("b", labels_b)):
        unique, counts = np.unique(labels, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"{name}'s {by!r} labels repeat ({unique[counts > 1][:3].tolist()}):"
                             f" align by a coordinate that names each item once")
    only_a = np.setdiff1d(labels_a, labels_b)[:3].tolist()
    only_b = np.setdiff1d(labels_b, labels_a)[:3].tolist()
    if only_a or only_b:
        raise ValueError(f"the items of a and b differ by {by!r} (only in a: {only_a}, only in "
                         f"b: {only_b}): select the same items in both")
    position = {label: i for i, label in enumerate(labels_b.tolist())}
    order = np.array([position[label] for label in labels_a.tolist()])
    b = b.isel({item_dim: order}).drop_vars(_item_coordinates(b, item_dim) + [
        c for c in [item_dim] if c in b.coords])
    return a, b.assign_coords({c: a[c] for c in a.coords if a[c].dims == (item_dim,)})


def _named(result: Any, name: str) -> Any:
    return result.rename(name) if isinstance(result, xr.DataArray) else result


def _outputs(result: tuple, names: Sequence[str]) -> dict[str, np.ndarray] | xr.Dataset:
    """Several results: a dict of arrays, or a Dataset for DataArray results."""
    if isinstance(result[0], xr.DataArray):
        return xr.Dataset({name: r for name, r in zip(names, result)})
    return dict(zip(names, result))


def _warn_undefined(result: Any, name: str, why: str) -> None:
    """A RuntimeWarning, pointing at the caller's caller, when a similarity came out nan."""
    undefined = np.isnan(np.asarray(result, dtype=np.float64))
    if undefined.any():
        warnings.warn(f"{name} is nan for {int(undefined.sum())} of {undefined.size} "
                      f"comparison(s), where it is undefined: {why}", RuntimeWarning,
                      stacklevel=3)


def _second(dim: str) -> str:
    return f"{dim}_b"


def _mirror_items(matrix: Any, source: Any, item_dim: str) -> Any:
    """Put the item labels of ``source`` on the second item axis too (``item_b``, ``task_b``)."""
    if not isinstance(matrix, xr.DataArray):
        return matrix
    coords = {_second(str(c)): (_second(item_dim), source[c].values)
              for c in source.coords if source[c].dims == (item_dim,)}
    return matrix.assign_coords(coords)


# -- numpy building blocks (all batched over leading axes) ------------------------------------

def _floats(x: np.ndarray, name: str, ndim: int = 2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < ndim:
        raise ValueError(f"{name} must have shape (..., items, units), got shape {x.shape}")
    return x


def _same_items(a: np.ndarray, b: np.ndarray, names: str = "a and b") -> None:
    if a.shape[-2] != b.shape[-2]:
        first, second = names.split(" and ")
        raise ValueError(f"{first} has {a.shape[-2]} items and {second} {b.shape[-2]}: compare "
                         f"representations of the same items (rows)")


def _choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")
    return value


def _transpose(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


def _center(x: np.ndarray) -> np.ndarray:
    """Subtract the mean over items (axis -2)."""
    return x - x.mean(axis=-2, keepdims=True)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator with 0/0 -> nan and x/0 -> inf, silently (documented cases)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / denominator


def _pearson(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis; nan where either side is constant."""
    u = u - u.mean(axis=-1, keepdims=True)
    v = v - v.mean(axis=-1, keepdims=True)
    r = _divide((u * v).sum(-1), np.sqrt((u * u).sum(-1) * (v * v).sum(-1)))
    return np.clip(r, -1.0, 1.0)


def _squared_distances(x: np.ndarray) -> np.ndarray:
    """(..., m, m) squared Euclidean distances between items, exactly 0 on the diagonal.

    |x_i|^2 + |x_j|^2 - 2 x_i . x_j of the items centred first: distances do not change, and
    items far from the origin no longer lose their differences to cancellation.
    """
    x = _center(x)
    gram = x @ _transpose(x)
    norms = np.diagonal(gram, axis1=-2, axis2=-1)
    d2 = np.maximum(norms[..., :, None] + norms[..., None, :] - 2.0 * gram, 0.0)
    idx = np.arange(x.shape[-2])
    d2[..., idx, idx] = 0.0
    return d2


def _upper_triangle(matrix: np.ndarray) -> np.ndarray:
    """(..., m, m) -> (..., m (m - 1) / 2) entries above the diagonal."""
    rows, cols = np.triu_indices(matrix.shape[-1], k=1)
    return matrix[..., rows, cols]


def _shape_normalized(x: np.ndarray) -> np.ndarray:
    """Centred over items and scaled to unit Frobenius norm; at most ``items`` columns.

    With more units than items, x is replaced by R^T from x^T = Q R (x x^T = R^T R), which
    changes no shape metric (they depend on x only up to an orthogonal map of the units).
    """
    x = _center(x)
    x = _divide(x, np.linalg.norm(x, axis=(-2, -1), keepdims=True))
    if x.shape[-1] > x.shape[-2]:
        x = _transpose(np.linalg.qr(_transpose(x), mode="r"))
    return x


def _nuclear_cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a^T b||_* of the shape-normalized a, b: the cosine of the angular shape distance."""
    a, b = _shape_normalized(a), _shape_normalized(b)
    return np.linalg.svd(_transpose(a) @ b, compute_uv=False).sum(-1)


# -- RSM, RDM and RSA -------------------------------------------------------------------------

RSM_METHODS = ("pearson", "cosine")
RDM_METHODS = ("correlation", "euclidean")
RSA_METHODS = ("pearson", "spearman", "kendall_tau_a")


def _rsm(x: np.ndarray, method: str) -> np.ndarray:
    x = _floats(x, "x")
    if method == "pearson":
        x = x - x.mean(axis=-1, keepdims=True)
    x = _divide(x, np.linalg.norm(x, axis=-1, keepdims=True))
    return np.clip(x @ _transpose(x), -1.0, 1.0)


def rsm(x: Array, method: str = "pearson", *, item_dim: str = "item",
        unit_dim: str = "unit") -> Array:
    """Representational similarity matrix: (..., items, units) -> (..., items, items).

    pearson: R[i, j] = corr(x_i, x_j) over units; cosine: x_i . x_j / (|x_i| |x_j|).
    An item whose representation is constant (pearson) or zero (cosine) gives a nan row.
    DataArray result dims (..., item, item_b); the item labels are repeated on ``item_b``.
    """
    _choice(method, RSM_METHODS, "rsm method")
    result = _apply(lambda v: _rsm(v, method), [x], [(item_dim, unit_dim)],
                    [(item_dim, _second(item_dim))], ["x"])
    return _named(_mirror_items(result, x, item_dim), "rsm")


def _rdm(x: np.ndarray, method: str) -> np.ndarray:
    if method == "correlation":
        return 1.0 - _rsm(x, "pearson")
    return np.sqrt(_squared_distances(_floats(x, "x")))


def rdm(x: Array, method: str = "correlation", *, item_dim: str = "item",
        unit_dim: str = "unit") -> Array:
    """Representational dissimilarity matrix: (..., items, units) -> (..., items, items).

    correlation: D = 1 - pearson RSM, in [0, 2]; euclidean: D[i, j] = ||x_i - x_j|| (not squared,
    not divided by the number of units). DataArray result dims (..., item, item_b).
    """
    _choice(method, RDM_METHODS, "rdm method")
    result = _apply(lambda v: _rdm(v, method), [x], [(item_dim, unit_dim)],
                    [(item_dim, _second(item_dim))], ["x"])
    return _named(_mirror_items(result, x, item_dim), "rdm")


def _tied_pairs(equal: np.ndarray) -> np.ndarray:
    """(n, T - 1) True where a sorted row's entry equals the one before -> (n,) number of tied
    pairs, sum over runs of k equal entries of k (k - 1) / 2."""
    position = np.arange(equal.shape[-1] + 1)
    starts = np.concatenate([np.ones_like(equal[:, :1]), ~equal], axis=-1)
    run_start = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    return (position - run_start).sum(-1)


def _inversions(ranks: np.ndarray) -> np.ndarray:
    """#{i < j : r_i > r_j} per row of (n, T) integer ranks in [0, T), by bottom-up merge sort:
    at width w each right half counts the larger entries of its sorted left half, with one
    searchsorted over all blocks at once (offset so that their concatenation is sorted)."""
    n, count = ranks.shape
    width = 1 << (count - 1).bit_length()
    merged = np.full((n, width), count, dtype=np.int64)  # padding, above every rank: no inversion
    merged[:, :count] = ranks
    total = np.zeros(n, dtype=np.int64)
    w = 1
    while w < width:
        blocks = merged.reshape(-1, 2, w)
        offset = np.arange(len(blocks))[:, None] * (count + 1)
        left = (blocks[:, 0] + offset).ravel()
        not_greater = np.searchsorted(left, (blocks[:, 1] + offset).ravel(), side="right")
        greater = w - (not_greater.reshape(-1, w) - np.arange(len(blocks))[:, None] * w)
        total += greater.reshape(n, -1).sum(-1)
        merged = np.sort(merged.reshape(-1, 2 * w), axis=-1).reshape(n, width)
        w *= 2
    return total


def _kendall_tau_a(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """tau_a = sum_{i != j} sign(u_i - u_j) sign(v_i - v_j) / (T (T - 1)) along the last axis.

    O(T log^2 T) (Knight 1966): with the entries sorted by (u, v), the discordant pairs are the
    inversions of v, so with P = T (T - 1) / 2 pairs, of which P_u are tied in u, P_v in v and
    P_uv in both, sum_{i<j} sign(u_i - u_j) sign(v_i - v_j) = P - P_u - P_v + P_uv - 2 inversions.
    nan where u or v holds a nan.
    """
    shape = np.broadcast_shapes(u.shape, v.shape)
    count = shape[-1]
    u = np.broadcast_to(u, shape).reshape(-1, count)
    v = np.broadcast_to(v, shape).reshape(-1, count)
    order = np.lexsort((v, u), axis=-1)
    u, v = np.take_along_axis(u, order, -1), np.take_along_axis(v, order, -1)
    u_equal = u[:, 1:] == u[:, :-1]
    by_v = np.argsort(v, axis=-1, kind="stable")
    v_sorted = np.take_along_axis(v, by_v, -1)
    v_equal = v_sorted[:, 1:] == v_sorted[:, :-1]
    ranks = np.empty_like(by_v)
    np.put_along_axis(ranks, by_v, np.concatenate(
        [np.zeros_like(by_v[:, :1]), np.cumsum(~v_equal, axis=-1)], axis=-1), axis=-1)
    pairs = count * (count - 1) // 2
    concordant_minus_discordant = (
        pairs - _tied_pairs(u_equal) - _tied_pairs(v_equal)
        + _tied_pairs(u_equal & (v[:, 1:] == v[:, :-1])) - 2 * _inversions(ranks))
    tau = concordant_minus_discordant / pairs
    tau[np.isnan(u).any(-1) | np.isnan(v).any(-1)] = np.nan
    return tau.reshape(shape[:-1])


def _rsa(a: np.ndarray, b: np.ndarray, method: str, rsm_method: str,
         precomputed: bool) -> np.ndarray:
    a, b = _floats(a, "a"), _floats(b, "b")
    _same_items(a, b)
    if precomputed:
        for name, m in (("a", a), ("b", b)):
            if m.shape[-1] != m.shape[-2]:
                raise ValueError(f"precomputed {name} must be square (..., items, items), got "
                                 f"shape {m.shape}: pass representations with "
                                 f"precomputed=False")
    else:
        a, b = _rsm(a, rsm_method), _rsm(b, rsm_method)
    if a.shape[-1] < 3:
        raise ValueError(f"RSA needs at least 3 items (2 matrix entries above the diagonal), "
                         f"got {a.shape[-1]}")
    return _agreement(_upper_triangle(a), _upper_triangle(b), method)


def _agreement(u: np.ndarray, v: np.ndarray, method: str) -> np.ndarray:
    """rsa's agreement of matrix entries u, v (..., T) along the last axis."""
    if method == "spearman":
        from scipy.stats import rankdata  # deferred: scipy.stats takes ~1 s to import

        return _pearson(rankdata(u, axis=-1), rankdata(v, axis=-1))
    if method == "kendall_tau_a":
        return _kendall_tau_a(u, v)
    return _pearson(u, v)


def _rsa_interval(a: np.ndarray, b: np.ndarray, method: str, rsm_method: str,
                  precomputed: bool, samples: int, confidence: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rsa, low, high): rsa and the percentile interval of rsa over ``samples`` bootstrap draws
    of the items (m drawn with replacement from m; the RSMs restricted to the drawn items, pairs
    of two copies of one item left out, since an item always matches itself)."""
    value = _rsa(a, b, method, rsm_method, precomputed)
    if not precomputed:
        a, b = _rsm(_floats(a, "a"), rsm_method), _rsm(_floats(b, "b"), rsm_method)
    m = a.shape[-1]
    rows, columns = np.triu_indices(m, 1)
    generator = np.random.default_rng(seed)
    draws = []
    for _ in range(samples):
        items = generator.integers(0, m, m)
        i, j = items[rows], items[columns]
        keep = i != j
        draws.append(_agreement(a[..., i[keep], j[keep]], b[..., i[keep], j[keep]], method))
    tail = (1 - confidence) / 2
    with warnings.catch_warnings():  # a draw of nearly one item has no defined agreement
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(np.stack(draws, -1), [tail, 1 - tail], axis=-1)
    return value, low, high


def rsa(a: Array, b: Array, method: str = "pearson", rsm_method: str = "pearson",
        precomputed: bool = False, *, item_dim: str = "item", unit_dim: str = "unit",
        bootstrap: int | None = None, confidence: float = 0.95, seed: int = 0) -> Array:
    """Representational similarity analysis: agreement of the RSMs of a and b (higher = closer).

    a, b: representations (..., items, units_a), (..., items, units_b), whose RSMs (``rsm`` with
    ``rsm_method``) are compared; or, with ``precomputed=True``, square (..., items, items)
    matrices (RSMs or RDMs, both of the same kind), whose DataArray dims are then
    (item_dim, item_dim + "_b") as ``rsm`` returns them. Only the strict upper triangle is used
    (the T = m (m - 1) / 2 entries u, v). method:
      pearson        corr(u, v)
      spearman       corr(rank(u), rank(v)), ties get their average rank
      kendall_tau_a  sum_{i<j} sign(u_i - u_j) sign(v_i - v_j) / (T (T - 1) / 2); ties count 0.
                     Cost O(T log^2 T) per matrix pair (sorting and merge-sort inversions).
    Returns (...) in [-1, 1]; nan, with a RuntimeWarning, where an RSM is constant over the
    triangle (e.g. every item has the same representation) or holds a nan (Pearson RSMs of
    items with a single unit). Square, symmetric, zero-diagonal a or b without
    ``precomputed=True`` (RDMs compared as if they were representations: a second-order RSA)
    give a UserWarning.
    DataArrays whose items share a coordinate (e.g. ``stimulus``) holding the same labels in
    another order (a model's items and measured responses) are compared item by item
    (align_items); labels that differ raise ValueError.
    bootstrap=N: also the ``confidence`` percentile interval over N bootstrap draws of the items
    (seeded by ``seed``): {"rsa", "rsa_low", "rsa_high"} (a Dataset for DataArrays).
    """
    if bootstrap is not None:
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or (
                bootstrap < 1):
            raise ValueError(f"bootstrap must be a number of draws >= 1, got {bootstrap!r}: "
                             f"e.g. bootstrap=1000")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence!r}: e.g. 0.95")
    _choice(method, RSA_METHODS, "rsa method")
    _choice(rsm_method, RSM_METHODS, "rsm_method")
    second = _second(item_dim) if precomputed else unit_dim
    if not precomputed:
        for name, x in (("a", a), ("b", b)):
            if _looks_like_rdm(x, item_dim, unit_dim):
                warnings.warn(f"{name} is square, symmetric and zero on the diagonal, like an "
                              f"RDM: pass precomputed=True to compare the matrices themselves "
                              f"(without it rsa compares the RSMs of their rows)", stacklevel=2)
    exclude = () if precomputed else (unit_dim,)
    if bootstrap is not None:
        result = _apply(lambda u, v: _rsa_interval(u, v, method, rsm_method, precomputed,
                                                   bootstrap, confidence, seed), [a, b],
                        [(item_dim, second)] * 2, [(), (), ()], ["a", "b"], exclude=exclude)
        _warn_undefined(result[0], "rsa", "an RSM there is constant over item pairs")
        result = _outputs(result, ("rsa", "rsa_low", "rsa_high"))
        if isinstance(result, xr.Dataset):
            result.attrs.update(bootstrap=int(bootstrap), confidence=float(confidence))
        return result
    result = _apply(lambda u, v: _rsa(u, v, method, rsm_method, precomputed), [a, b],
                    [(item_dim, second)] * 2, [()], ["a", "b"], exclude=exclude)
    _warn_undefined(result, "rsa", "an RSM there is constant over item pairs (e.g. all items "
                    "alike) or not defined (a Pearson RSM of items with one unit, or with all "
                    "units equal), or an input holds a nan")
    return _named(result, "rsa")


def _looks_like_rdm(x: Array, item_dim: str, unit_dim: str) -> bool:
    """Whether representations x (..., items, units) are square, symmetric, zero-diagonal."""
    if isinstance(x, xr.DataArray):
        if item_dim not in x.dims or unit_dim not in x.dims:
            return False
        x = x.transpose(..., item_dim, unit_dim).values
    x = _numpy(x)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2] or x.shape[-1] < 2:
        return False
    tolerance = 1e-10 * np.abs(x).max(initial=0.0)
    return bool(tolerance > 0 and np.all(np.abs(np.diagonal(x, axis1=-2, axis2=-1)) <= tolerance)
                and np.allclose(x, _transpose(x), rtol=0.0, atol=tolerance))


# -- CKA --------------------------------------------------------------------------------------

CKA_KINDS = ("linear", "rbf")


def _gram(x: np.ndarray, kind: str, bandwidth: float) -> np.ndarray:
    x = _center(x)  # changes no CKA (HSIC is translation invariant); keeps the linear Gram exact
    if kind == "linear":
        return x @ _transpose(x)
    d2 = _squared_distances(x)
    sigma = bandwidth * np.median(np.sqrt(_upper_triangle(d2)), axis=-1)
    return np.exp(_divide(-d2, 2.0 * sigma[..., None, None] ** 2))


def _hsic(k: np.ndarray, g: np.ndarray, debiased: bool) -> np.ndarray:
    """HSIC of Gram matrices K = k, L = g, up to a factor common to all three terms of CKA.

    biased: tr(K H L H) = <HKH, HLH>_F, H = I - 11^T / m.
    debiased (Song et al. 2012): with K~, L~ the Gram matrices with zero diagonal,
      [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((m-1)(m-2)) - 2 / (m-2) 1^T K~ L~ 1] / (m (m-3)).
    """
    if not debiased:
        return (k * g).sum(axis=(-2, -1))
    m = k.shape[-1]
    idx = np.arange(m)
    k, g = k.copy(), g.copy()
    k[..., idx, idx] = 0.0
    g[..., idx, idx] = 0.0
    k_rows, g_rows = k.sum(-1), g.sum(-1)
    return ((k * g).sum(axis=(-2, -1))
            + k_rows.sum(-1) * g_rows.sum(-1) / ((m - 1) * (m - 2))
            - 2.0 * (k_rows * g_rows).sum(-1) / (m - 2)) / (m * (m - 3))


def _double_center(k: np.ndarray) -> np.ndarray:
    k = k - k.mean(axis=-1, keepdims=True)
    return k - k.mean(axis=-2, keepdims=True)


def _cka(a: np.ndarray, b: np.ndarray, kind: str, debiased: bool, bandwidth: float
         ) -> np.ndarray:
    a, b = _floats(a, "a"), _floats(b, "b")
    _same_items(a, b)
    if debiased and a.shape[-2] < 4:
        raise ValueError(f"debiased CKA needs at least 4 items, got {a.shape[-2]}")
    gram_a, gram_b = _gram(a, kind, bandwidth), _gram(b, kind, bandwidth)
    if kind == "rbf" and not debiased:
        gram_a, gram_b = _double_center(gram_a), _double_center(gram_b)
    hsic_ab = _hsic(gram_a, gram_b, debiased)
    hsic_aa, hsic_bb = _hsic(gram_a, gram_a, debiased), _hsic(gram_b, gram_b, debiased)
    return _divide(hsic_ab, np.sqrt(hsic_aa * hsic_bb))


def cka_similarity(a: Array, b: Array, kind: str = "linear", debiased: bool = False,
                   bandwidth: float = 1.0, *, item_dim: str = "item",
                   unit_dim: str = "unit") -> Array:
    """Centered kernel alignment: (..., items, units_a), (..., items, units_b) -> (...).

    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for item x item Gram matrices K of a, L of b.
    kind="linear": K = a_c a_c^T (a_c centred over items); kind="rbf": K_ij = exp(-||a_i -
    a_j||^2 / (2 sigma^2)), sigma = ``bandwidth`` x the median pairwise distance between items
    (per matrix, so the bandwidth follows the scale of the data).
    HSIC: biased tr(K H L H) (Kornblith et al. 2019), in [0, 1]; ``debiased=True``: the unbiased
    estimator of Song et al. 2012 (as in Nguyen et al. 2021), needs >= 4 items, is ~0 on
    independent data and may be slightly negative; nan, with a RuntimeWarning, where HSIC(K, K)
    or HSIC(L, L) <= 0 (a representation constant over items) or an input holds a nan.
    Linear CKA is invariant to orthogonal maps and isotropic scaling of the units, and to
    translation; units of a and b may differ in number.
    """
    _choice(kind, CKA_KINDS, "cka kind")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive (a factor of the median distance), got "
                         f"{bandwidth}")
    result = _apply(lambda u, v: _cka(u, v, kind, debiased, bandwidth), [a, b],
                    [(item_dim, unit_dim)] * 2, [()], ["a", "b"], exclude=(unit_dim,))
    _warn_undefined(result, "cka_similarity", "a representation there is constant over items "
                    "(zero variance) or holds a nan")
    return _named(result, "cka_similarity")


# -- shape metrics ----------------------------------------------------------------------------

def _procrustes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = _floats(a, "a"), _floats(b, "b")
    _same_items(a, b)
    return np.sqrt(np.maximum(2.0 - 2.0 * _nuclear_cross(a, b), 0.0))


def procrustes_distance(a: Array, b: Array, *, item_dim: str = "item",
                        unit_dim: str = "unit") -> Array:
    """Orthogonal Procrustes distance: (..., items, units_a), (..., items, units_b) -> (...).

    a, b centred over items and scaled to ||a||_F = ||b||_F = 1, then
      d = min_{Q orthogonal} ||a - b Q||_F = sqrt(2 - 2 ||a^T b||_*)  in [0, sqrt(2)],
    with the narrower one zero-padded so the unit counts may differ. A metric invariant to
    translation, isotropic scaling and orthogonal maps (rotations, reflections) of either side.
    Accurate to about 1e-8 near 0 (a square root of a difference of nuclear norms); nan where a
    representation is constant over items.
    """
    result = _apply(_procrustes, [a, b], [(item_dim, unit_dim)] * 2, [()], ["a", "b"],
                    exclude=(unit_dim,))
    return _named(result, "procrustes_distance")


def _angular(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = _floats(a, "a"), _floats(b, "b")
    _same_items(a, b)
    return np.arccos(np.clip(_nuclear_cross(a, b), -1.0, 1.0))


def angular_shape_distance(a: Array, b: Array, *, item_dim: str = "item",
                           unit_dim: str = "unit") -> Array:
    """Angular shape distance (Williams et al. 2021, "Generalized shape metrics on neural
    representations"): (..., items, units_a), (..., items, units_b) -> (...).

    a, b centred over items and scaled to unit Frobenius norm; d = arccos ||a^T b||_* in
    [0, pi/2] (the angle between a and the best orthogonal map of b). Same invariances as
    procrustes_distance; a metric (triangle inequality) on shapes.
    """
    result = _apply(_angular, [a, b], [(item_dim, unit_dim)] * 2, [()], ["a", "b"],
                    exclude=(unit_dim,))
    return _named(result, "angular_shape_distance")


# -- CCA and SVCCA ----------------------------------------------------------------------------

def _cca_basis(x: np.ndarray, keep: float | None, ridge: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Whitened basis of the centred x: (..., m, r) columns u_k s_k / sqrt(s_k^2 + lambda) of the
    SVD x_c = U S V^T, zeroed beyond the numerical rank or beyond the leading components that
    explain ``keep`` of the variance; and the number of columns kept (...)."""
    x = _center(x)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    power = s**2
    kept = s > s[..., :1] * max(x.shape[-2:]) * np.finfo(np.float64).eps
    if keep is not None:
        explained = _divide(np.cumsum(power, axis=-1), power.sum(-1, keepdims=True))
        needed = (explained < keep - 1e-12).sum(-1, keepdims=True) + 1
        kept &= np.arange(s.shape[-1]) < needed
    ridge_scale = ridge * power.sum(-1, keepdims=True) / x.shape[-1]
    weight = np.where(kept, _divide(s, np.sqrt(power + ridge_scale)), 0.0)
    return u * weight[..., None, :], kept.sum(-1)


def _cca(a: np.ndarray, b: np.ndarray, keep: float | None, ridge: float,
         what: str) -> np.ndarray:
    a, b = _floats(a, "a"), _floats(b, "b")
    _same_items(a, b)
    basis_a, rank_a = _cca_basis(a, keep, ridge)
    basis_b, rank_b = _cca_basis(b, keep, ridge)
    free = a.shape[-2] - 1  # dimension of the centred item space
    if ridge == 0 and np.any(rank_a + rank_b > free):
        worst = int(np.max(rank_a + rank_b))
        raise ValueError(f"{what}: the two representations span {worst} dimensions together "
                         f"in a {free}-dimensional centred item space, so at least {worst - free} "
                         f"canonical correlation(s) equal 1 whatever the data; use more items, "
                         f"a ridge > 0, or fewer components")
    correlations = np.linalg.svd(_transpose(basis_a) @ basis_b, compute_uv=False)
    count = np.minimum(rank_a, rank_b)
    first = np.arange(correlations.shape[-1]) < count[..., None]
    return _divide(np.where(first, correlations, 0.0).sum(-1), count)


def cca_similarity(a: Array, b: Array, ridge: float = 0.0, *, item_dim: str = "item",
                   unit_dim: str = "unit") -> Array:
    """Mean canonical correlation: (..., items, units_a), (..., items, units_b) -> (...), [0, 1].

    Centred a, b with SVDs U_a S_a V_a^T, U_b S_b V_b^T; the canonical correlations are the
    singular values of W_a^T W_b, W = U diag(s / sqrt(s^2 + lambda)), averaged over the first
    min(rank a, rank b). ridge = 0: plain CCA on the numerically non-null directions (W = U), so
    a rank-deficient side is reduced to its rank. ridge > 0: regularized CCA with
    Sigma_aa + lambda I, lambda = ridge * tr(Sigma_aa) / units (scale invariant); it shrinks
    weak directions (CCA of x with itself is then below 1).
    Plain CCA needs rank a + rank b <= items - 1, else some correlations are 1 for any data and
    ValueError says so (typical when units are not far fewer than items). Invariant to
    invertible linear maps and translation of either side (ridge = 0).
    """
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    result = _apply(lambda u, v: _cca(u, v, None, ridge, "cca_similarity"), [a, b],
                    [(item_dim, unit_dim)] * 2, [()], ["a", "b"], exclude=(unit_dim,))
    return _named(result, "cca_similarity")


def svcca_similarity(a: Array, b: Array, keep: float = 0.99, ridge: float = 0.0, *,
                     item_dim: str = "item", unit_dim: str = "unit") -> Array:
    """SVCCA (Raghu et al. 2017): (..., items, units_a), (..., items, units_b) -> (...), [0, 1].

    Each side is reduced to its leading principal components (SVD of the centred data) that
    together explain at least ``keep`` of its variance, then cca_similarity of the reductions
    (same ``ridge``, same rank condition).
    """
    if not 0 < keep <= 1:
        raise ValueError(f"keep is the fraction of variance to keep, in (0, 1]; got {keep}")
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    result = _apply(lambda u, v: _cca(u, v, keep, ridge, "svcca_similarity"), [a, b],
                    [(item_dim, unit_dim)] * 2, [()], ["a", "b"], exclude=(unit_dim,))
    return _named(result, "svcca_similarity")


# -- change alignment -------------------------------------------------------------------------

CHANGE_ALIGNMENT = ("correlation", "cosine", "relative_error")


def _change_alignment(forecast: np.ndarray, actual: np.ndarray, initial: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    forecast, actual = _floats(forecast, "forecast"), _floats(actual, "actual")
    initial = _floats(initial, "initial")
    shapes = {x.shape[-2:] for x in (forecast, actual, initial)}
    if len(shapes) > 1:
        raise ValueError(f"forecast, actual and initial must share (items, units), got "
                         f"{forecast.shape[-2:]}, {actual.shape[-2:]}, {initial.shape[-2:]}")
    change_f, change_a = np.broadcast_arrays(forecast - initial, actual - initial)
    change_f = change_f.reshape(*change_f.shape[:-2], -1)
    change_a = change_a.reshape(*change_a.shape[:-2], -1)
    norm_f, norm_a = np.linalg.norm(change_f, axis=-1), np.linalg.norm(change_a, axis=-1)
    cosine = np.clip(_divide((change_f * change_a).sum(-1), norm_f * norm_a), -1.0, 1.0)
    error = _divide(np.linalg.norm(change_f - change_a, axis=-1), norm_a)
    return _pearson(change_f, change_a), cosine, error


def change_alignment(forecast: Array, actual: Array, initial: Array, *, item_dim: str = "item",
                     unit_dim: str = "unit") -> dict[str, np.ndarray] | xr.Dataset:
    """How well the forecast change matches the actual change (DESIGN.md section 5).

    forecast, actual, initial: (..., items, units), broadcast over leading dims (initial usually
    has no time dim). With dh_f = forecast - initial and dh_a = actual - initial flattened over
    items x units:
      correlation     corr(dh_f, dh_a)                    in [-1, 1]
      cosine          dh_f . dh_a / (|dh_f| |dh_a|)       in [-1, 1]
      relative_error  ||dh_f - dh_a|| / ||dh_a||          >= 0 (0 is perfect)
    Where dh_a is exactly 0 (e.g. at time 0) correlation and cosine are nan and relative_error
    is inf (nan if dh_f is 0 too), without warnings. Returns a dict of (...) arrays, or a
    Dataset with variables correlation, cosine, relative_error for DataArray input.
    """
    result = _apply(_change_alignment, [forecast, actual, initial],
                    [(item_dim, unit_dim)] * 3, [(), (), ()], ["forecast", "actual", "initial"])
    return _outputs(result, CHANGE_ALIGNMENT)


# -- task similarity --------------------------------------------------------------------------

def _item_labels(x: Any, given: Any, coord: str, item_dim: str, required: bool
                 ) -> np.ndarray | None:
    """Per-item labels: ``given``, else the DataArray's coordinate ``coord`` on the item dim."""
    if given is None and isinstance(x, xr.DataArray) and coord in x.coords:
        if x[coord].dims != (item_dim,):
            raise ValueError(f"coordinate {coord!r} has dims {x[coord].dims}, not "
                             f"({item_dim!r},): give the labels per item explicitly")
        given = x[coord].values
    if given is None:
        if required:
            raise ValueError(f"no {coord} labels: pass {coord}=... (one int per item, -1 for "
                             f"items that are not a single task pattern)")
        return None
    labels = _numpy(given.values if isinstance(given, xr.DataArray) else given)
    if labels.ndim != 1:
        raise ValueError(f"{coord} labels must be one per item (1-D), got shape {labels.shape}")
    return labels


def _task_means(hidden: np.ndarray, task: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    hidden = _floats(hidden, "hidden")
    if hidden.shape[-2] != task.shape[0]:
        raise ValueError(f"hidden has {hidden.shape[-2]} items but {task.shape[0]} task labels: "
                         f"give one label per item")
    onehot = (task[None, :] == tasks[:, None]).astype(np.float64)
    return (onehot / onehot.sum(-1, keepdims=True)) @ hidden


def _task_similarity(hidden: np.ndarray, task: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    means = _task_means(hidden, task, tasks)
    mean, sd = means.mean(-1, keepdims=True), means.std(-1, keepdims=True)
    return _rsm(_divide(means - mean, sd), "pearson")


def _per_task(labels: np.ndarray | None, task: np.ndarray, tasks: np.ndarray, name: str
              ) -> np.ndarray | None:
    """The one value of an item label within each task (input_dim of task t, ...)."""
    if labels is None:
        return None
    if labels.shape != task.shape:
        raise ValueError(f"{name} has {labels.shape[0]} labels for {task.shape[0]} items")
    values = []
    for t in tasks:
        found = np.unique(labels[task == t])
        if found.size != 1:
            raise ValueError(f"task {t} has items with {name} {found.tolist()}: a task has "
                             f"one {name}")
        values.append(found[0])
    return np.asarray(values)


def task_similarity(hidden: Array, task: Any = None, input_dim: Any = None,
                    output_dim: Any = None, *, item_dim: str = "item",
                    unit_dim: str = "unit") -> Array:
    """Task x task similarity of hidden representations (the published measure):
    (..., items, units) -> (..., tasks, tasks).

    For each task t (labels >= 0; -1 marks items that are not a single task pattern and are
    ignored) the mean hidden vector over its items, z-scored across units; then the Pearson
    correlation between tasks: S[s, t] = corr(z_s, z_t). Tasks are in ascending label order.
    task: one int label per item; for a DataArray, default its item coordinate ``task``.
    input_dim, output_dim: per-item labels (DataArray default: the item coordinates of those
    names), which become per-task coordinates ``input_dim``, ``output_dim`` (and ``*_b``) of the
    DataArray result, ready for task_similarity_summary; array input returns the bare matrix, so
    these must then be None (give per-task dims to task_similarity_summary instead).
    DataArray result: dims (..., task, task_b), coordinates task, task_b, name task_similarity.
    """
    if isinstance(hidden, xr.Dataset):
        raise ValueError("task_similarity takes the hidden representations, not a whole result: "
                         "pass result.hidden (or result.hidden.sel(time=...))")
    labels = _item_labels(hidden, task, "task", item_dim, required=True)
    labels = labels.astype(np.int64)
    tasks = np.unique(labels[labels >= 0])
    if tasks.size < 2:
        raise ValueError(f"task similarity needs items of at least 2 tasks (labels >= 0), got "
                         f"tasks {tasks.tolist()}")
    if not isinstance(hidden, xr.DataArray):
        if input_dim is not None or output_dim is not None:
            raise ValueError("input_dim and output_dim label a DataArray result; with array "
                             "input give per-task dims to task_similarity_summary instead")
        return _task_similarity(_numpy(hidden), labels, tasks)
    result = _apply(lambda h: _task_similarity(h, labels, tasks), [hidden],
                    [(item_dim, unit_dim)], [("task", "task_b")], ["hidden"])
    coords: dict[str, Any] = {"task": ("task", tasks), "task_b": ("task_b", tasks)}
    for name, given in (("input_dim", input_dim), ("output_dim", output_dim)):
        per_task = _per_task(_item_labels(hidden, given, name, item_dim, required=False),
                             labels, tasks, name)
        if per_task is not None:
            coords[name] = ("task", per_task)
            coords[_second(name)] = ("task_b", per_task)
    return result.assign_coords(coords).rename("task_similarity")


TASK_PAIRS = ("shared_input", "shared_output", "shared_neither")


def _pair_means(matrix: np.ndarray, inputs: np.ndarray, outputs: np.ndarray
                ) -> tuple[np.ndarray, ...]:
    matrix = _floats(matrix, "matrix")
    n = matrix.shape[-1]
    if matrix.shape[-2] != n or inputs.shape != (n,) or outputs.shape != (n,):
        raise ValueError(f"matrix must be (..., tasks, tasks) with one input and output dim per "
                         f"task, got shape {matrix.shape}, {inputs.shape[0]} input and "
                         f"{outputs.shape[0]} output dims")
    same_in = inputs[:, None] == inputs[None, :]
    same_out = outputs[:, None] == outputs[None, :]
    off = ~np.eye(n, dtype=bool)
    masks = (same_in & ~same_out & off, same_out & ~same_in & off, ~same_in & ~same_out & off)
    return tuple(_divide((matrix * mask).sum(axis=(-2, -1)), mask.sum()) for mask in masks)


def task_similarity_summary(matrix: Array, input_dim_of_task: Any = None,
                            output_dim_of_task: Any = None
                            ) -> dict[str, np.ndarray] | xr.Dataset:
    """Mean off-diagonal task similarity by how the two tasks relate: (..., tasks, tasks) -> (...).

      shared_input    pairs with the same input dim and different output dims
      shared_output   pairs with the same output dim and different input dims
      shared_neither  pairs that differ in both
    nan where no pair falls in a group. input_dim_of_task, output_dim_of_task: one value per
    task; for a task_similarity DataArray (dims (..., task, task_b)) default its coordinates
    ``input_dim``, ``output_dim``. Returns a dict of arrays, or a Dataset for DataArray input.
    """
    dims = ("task", "task_b")
    if isinstance(matrix, xr.DataArray):
        if input_dim_of_task is None and "input_dim" in matrix.coords:
            input_dim_of_task = matrix["input_dim"].values
        if output_dim_of_task is None and "output_dim" in matrix.coords:
            output_dim_of_task = matrix["output_dim"].values
        dims = matrix.dims[-2:] if "task" not in matrix.dims else dims
    if input_dim_of_task is None or output_dim_of_task is None:
        raise ValueError("give input_dim_of_task and output_dim_of_task (one value per task), "
                         "or a task_similarity DataArray with input_dim/output_dim coordinates")
    inputs, outputs = _numpy(input_dim_of_task), _numpy(output_dim_of_task)
    result = _apply(lambda m: _pair_means(m, inputs, outputs), [matrix], [dims],
                    [(), (), ()], ["matrix"])
    return _outputs(result, TASK_PAIRS)


# -- dimensionality ---------------------------------------------------------------------------

DIMENSIONALITY = ("participation_ratio", "components")


def _dimensionality(x: np.ndarray, variance: float) -> tuple[np.ndarray, np.ndarray]:
    x = _floats(x, "x")
    x = np.where(np.isnan(x).all(-2, keepdims=True), 0.0, x)  # padding units: constant
    undefined = np.isnan(x).any((-2, -1))
    x = _center(np.where(undefined[..., None, None], 0.0, x))
    lam = np.linalg.svd(x, compute_uv=False) ** 2  # covariance eigenvalues x (items - 1), sorted
    total = np.where(undefined, 0.0, lam.sum(-1))
    ratio = _divide(total**2, (lam**2).sum(-1))
    reached = np.cumsum(lam, -1) >= (variance - 1e-9) * total[..., None]
    components = np.where(total > 0, reached.argmax(-1) + 1.0, np.nan)
    return np.where(total > 0, ratio, np.nan), components


def participation_ratio(x: Array, variance: float = 0.9, *, item_dim: str = "item",
                        unit_dim: str = "unit") -> dict[str, np.ndarray] | xr.Dataset:
    """Dimensionality of representations (..., items, units) -> (...), DESIGN.md section 9.

    From the eigenvalues lam_i of the covariance over items (units x units):
      participation_ratio  (sum_i lam_i)^2 / sum_i lam_i^2, in [1, min(items - 1, units)]
                           (= r for r equal nonzero eigenvalues, 1 for rank one)
      components           the fewest leading eigenvalues holding ``variance`` of the total
    Invariant to translation, scaling and orthogonal maps of the units; nan where every item
    is the same or a value is nan, except units nan for every item (the padding of narrower
    layers, repkernel.results), which count as absent. Returns a dict of (...) arrays, or a
    Dataset for DataArray input.
    """
    if not (isinstance(variance, (int, float)) and 0 < variance <= 1):
        raise ValueError(f"variance must be a fraction in (0, 1], e.g. 0.9, got {variance!r}")
    result = _apply(lambda v: _dimensionality(v, float(variance)), [x], [(item_dim, unit_dim)],
                    [(), ()], ["x"])
    return _outputs(result, DIMENSIONALITY)


def _dimensionality_ratio(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    (ratio_a, components_a), (ratio_b, components_b) = (_dimensionality(x, 0.9) for x in (a, b))
    return _divide(ratio_a, ratio_b), components_a - components_b


def dimensionality_ratio(a: Array, b: Array, *, item_dim: str = "item", unit_dim: str = "unit"
                         ) -> dict[str, np.ndarray] | xr.Dataset:
    """How the dimensionality of a compares with b's (participation_ratio of each):
    (..., items, units_a), (..., items, units_b) -> (...) participation_ratio_ratio = PR(a) /
    PR(b) (1 when equal) and components_difference = components(a) - components(b) (90 % of
    the variance; 0 when equal)."""
    result = _apply(_dimensionality_ratio, [a, b], [(item_dim, unit_dim), (item_dim, unit_dim)],
                    [(), ()], ["a", "b"], exclude=[unit_dim])
    return _outputs(result, ("participation_ratio_ratio", "components_difference"))


# -- grouping ---------------------------------------------------------------------------------

def _kmeans(x: np.ndarray, n_groups: int, seed: int, n_init: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    x = _floats(x, "x")
    if not 1 <= n_groups <= x.shape[-2]:
        raise ValueError(f"n_groups must be between 1 and the {x.shape[-2]} items, got "
                         f"{n_groups}")
    flat = x.reshape(-1, *x.shape[-2:])
    labels = [KMeans(n_clusters=n_groups, n_init=n_init, random_state=seed).fit_predict(one)
              for one in flat]
    return np.stack(labels).reshape(x.shape[:-1]).astype(np.int64)


def kmeans_groups(x: Array, n_groups: int, seed: int = 0, n_init: int = 10, *,
                  item_dim: str = "item", unit_dim: str = "unit") -> Array:
    """k-means groups of items (sklearn KMeans): (..., items, units) -> (..., items) int labels.

    Labels are 0..n_groups-1 in arbitrary order (compare groupings with adjusted_rand_index).
    sklearn is not batched, so this loops over the leading dims in Python: one fit per matrix.
    """
    result = _apply(lambda v: _kmeans(v, int(n_groups), seed, n_init), [x],
                    [(item_dim, unit_dim)], [(item_dim,)], ["x"])
    return _named(result, "group")


def _onehot(labels: np.ndarray) -> np.ndarray:
    """(..., m) labels -> (..., m, C) indicators of the C distinct labels (over all entries)."""
    _, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(labels.shape)
    return (codes[..., None] == np.arange(codes.max() + 1)).astype(np.float64)


def _silhouette(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    x = _floats(x, "x")
    labels = np.asarray(labels)
    if labels.shape[-1:] != x.shape[-2:-1]:
        raise ValueError(f"labels must be (..., items) with {x.shape[-2]} items, got shape "
                         f"{labels.shape}")
    distance = np.sqrt(_squared_distances(x))
    member = _onehot(labels)  # (..., m, C)
    size = member.sum(-2)  # (..., C)
    groups = (size > 0).sum(-1)
    m = x.shape[-2]
    if np.any(groups < 2) or np.any(groups > m - 1):
        raise ValueError(f"silhouette needs between 2 and {m - 1} groups among {m} items, got "
                         f"{np.unique(groups).tolist()}")
    total = distance @ member  # (..., m, C): summed distance of item i to group c
    own_size = (member * size[..., None, :]).sum(-1)
    own = (total * member).sum(-1)
    within = _divide(own, own_size - 1)
    to_other = np.where(member > 0, np.inf, _divide(total, size[..., None, :]))
    between = np.where(size[..., None, :] > 0, to_other, np.inf).min(-1)
    score = _divide(between - within, np.maximum(within, between))
    score = np.where(own_size > 1, np.nan_to_num(score), 0.0)  # singletons score 0 (sklearn)
    return score.mean(-1)


def silhouette(x: Array, labels: Array, *, item_dim: str = "item",
               unit_dim: str = "unit") -> Array:
    """Mean silhouette coefficient (Euclidean): x (..., items, units), labels (..., items) -> (...).

    s_i = (b_i - a_i) / max(a_i, b_i), a_i the mean distance to the other items of i's group,
    b_i the smallest mean distance to another group; s_i = 0 for a group of one item (as
    sklearn.metrics.silhouette_score). Vectorized over leading dims; needs 2..items-1 groups.
    """
    result = _apply(_silhouette, [x, labels], [(item_dim, unit_dim), (item_dim,)], [()],
                    ["x", "labels"])
    return _named(result, "silhouette")


def _adjusted_rand(labels_a: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
    labels_a, labels_b = np.asarray(labels_a), np.asarray(labels_b)
    if labels_a.shape[-1] != labels_b.shape[-1]:
        raise ValueError(f"labels_a has {labels_a.shape[-1]} items and labels_b "
                         f"{labels_b.shape[-1]}: label the same items")
    table = _transpose(_onehot(labels_a)) @ _onehot(labels_b)  # (..., C_a, C_b) contingency

    def pairs(n):
        return n * (n - 1) / 2.0

    m = labels_a.shape[-1]
    index = pairs(table).sum(axis=(-2, -1))
    rows, cols = pairs(table.sum(-1)).sum(-1), pairs(table.sum(-2)).sum(-1)
    expected = rows * cols / pairs(m)
    best = (rows + cols) / 2.0
    return np.where(best == expected, 1.0, _divide(index - expected, best - expected))


def adjusted_rand_index(labels_a: Array, labels_b: Array, *, item_dim: str = "item") -> Array:
    """Adjusted Rand index of two groupings of the same items: (..., items) x 2 -> (...).

    From the contingency table n_ij: ARI = (sum_ij C(n_ij, 2) - E) / ((A + B) / 2 - E),
    A = sum_i C(a_i, 2), B = sum_j C(b_j, 2), E = A B / C(n, 2); 1 for identical groupings
    (up to relabelling, including both trivial), ~0 for independent ones. Vectorized over
    leading dims.
    """
    result = _apply(_adjusted_rand, [labels_a, labels_b], [(item_dim,), (item_dim,)], [()],
                    ["labels_a", "labels_b"])
    return _named(result, "adjusted_rand_index")


# -- compare: forecast versus actual results --------------------------------------------------

class Variable(NamedTuple):
    """One result variable of a metric: its long name and its value when a and b are equal."""

    long_name: str
    identity: float


@dataclass(frozen=True)
class Metric:
    """One row of METRICS: a metric ``compare`` offers.

    function(a, b, **options, item_dim=..., unit_dim=...) -> (...) DataArray, or a Dataset of
    several (...) results in the order of ``variables``; with ``initial=True`` it is called as
    function(a, b, initial, ...), initial being b at time 0. variables: the suffix of each
    result variable ({variable}_{suffix}) -> Variable(long name, identity value).
    """

    function: Callable[..., Any]
    variables: Mapping[str, Variable]
    options: Mapping[str, Any] = field(default_factory=dict)
    initial: bool = False

    def __call__(self, a: xr.DataArray, b: xr.DataArray, initial: xr.DataArray | None,
                 dims: Mapping[str, str]) -> dict[str, xr.DataArray]:
        """{suffix: (...) DataArray} of a against b (dims: item_dim and unit_dim)."""
        arguments = (a, b, initial) if self.initial else (a, b)
        result = self.function(*arguments, **self.options, **dims)
        values = list(result.data_vars.values()) if isinstance(result, xr.Dataset) else [result]
        if len(values) != len(self.variables):
            raise ValueError(f"{self.function.__name__} gave {len(values)} results for the "
                             f"{len(self.variables)} variables {list(self.variables)}: make the "
                             f"metric's variables match its results")
        return dict(zip(self.variables, values))


# name -> Metric: the one list of what compare, the compare command and studies offer
METRICS: dict[str, Metric] = {
    "change_alignment": Metric(change_alignment, {
        "change_correlation": Variable("change correlation", 1.0),
        "change_cosine": Variable("change cosine", 1.0),
        "change_relative_error": Variable("change relative error", 0.0)}, initial=True),
    "rsa": Metric(rsa, {"rsa": Variable("RSA (Pearson r of RSMs)", 1.0)}),
    "cka": Metric(cka_similarity, {"cka_similarity": Variable("linear CKA", 1.0)}),
    "cka_debiased": Metric(cka_similarity, {
        "debiased_cka_similarity": Variable("debiased linear CKA", 1.0)}, {"debiased": True}),
    "cka_rbf": Metric(cka_similarity, {"rbf_cka_similarity": Variable("RBF CKA", 1.0)},
                      {"kind": "rbf"}),
    "procrustes": Metric(procrustes_distance, {
        "procrustes_distance": Variable("Procrustes distance", 0.0)}),
    "angular_shape": Metric(angular_shape_distance, {
        "angular_shape_distance": Variable("angular shape distance", 0.0)}),
    "dimensionality": Metric(dimensionality_ratio, {
        "participation_ratio_ratio": Variable("participation ratio, a / b", 1.0),
        "components_difference": Variable("components for 90 % variance, a - b", 0.0)}),
    "cca": Metric(cca_similarity, {"cca_similarity": Variable("mean CCA", 1.0)}),
    "svcca": Metric(svcca_similarity, {"svcca_similarity": Variable("SVCCA", 1.0)}),
}
DEFAULT_METRICS = ("change_alignment", "rsa", "cka", "procrustes")


def metric_names(names: Sequence[str]) -> tuple[str, ...]:
    """The given METRICS names, each once; ValueError naming an unknown one."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}: choose from {', '.join(METRICS)}")
    return tuple(dict.fromkeys(names))


def _brief(values: xr.DataArray, most: int = 8) -> str:
    """[0, 1, 2, ..., 99] (100 values): coordinate values short enough for a one-line error."""
    listed = values.values.tolist()
    if len(listed) <= most:
        return str(listed)
    head = ", ".join(map(str, listed[:most - 2]))
    return f"[{head}, ..., {listed[-1]}] ({len(listed)} values)"


def _check_comparable(a: xr.Dataset, b: xr.Dataset, variables: Sequence[str], item_dim: str
                      ) -> dict[str, str]:
    """Same checkpoints, items and unit sizes in a and b; returns each variable's unit dim."""
    for name, ds in (("a", a), ("b", b)):
        for coord in ("time", item_dim):
            if coord not in ds.coords:
                raise ValueError(f"{name} has no {coord!r} coordinate: compare results in the "
                                 f"layout of repkernel.results")
    if not np.array_equal(a["time"].values, b["time"].values):
        raise ValueError(f"checkpoints differ: a has steps {_brief(a['time'])}, b has "
                         f"{_brief(b['time'])}; compute both with the same checkpoints")
    item_coords = [str(c) for c in a.coords if a[c].dims == (item_dim,) and c in b.coords]
    for coord in [item_dim, *(c for c in item_coords if c != item_dim)]:
        if a[coord].shape != b[coord].shape or not np.array_equal(a[coord].values,
                                                                  b[coord].values):
            raise ValueError(f"items differ: coordinate {coord!r} is {_brief(a[coord])} in a "
                             f"and {_brief(b[coord])} in b; compute both on the same probe "
                             f"patterns")
    units = {}
    for variable in variables:
        for name, ds in (("a", a), ("b", b)):
            if variable not in ds.data_vars:
                raise ValueError(f"{name} has no variable {variable!r}: choose variables from "
                                 f"{sorted(map(str, ds.data_vars))}")
            if not {"time", item_dim} <= set(ds[variable].dims):
                raise ValueError(f"{variable} in {name} has dims {ds[variable].dims}, not time, "
                                 f"{item_dim} and units")
        unit = str(b[variable].dims[-1])
        if unit in ("time", item_dim) or unit not in a[variable].dims:
            raise ValueError(f"{variable} must end with its unit dim in both a and b (as in "
                             f"repkernel.results), got {a[variable].dims} and "
                             f"{b[variable].dims}")
        if a.sizes[unit] != b.sizes[unit]:
            raise ValueError(f"{variable} has {a.sizes[unit]} {unit}s in a and {b.sizes[unit]} "
                             f"in b: compare results of the same network")
        units[variable] = unit
    return units


def _compare_variable(a: xr.DataArray, b: xr.DataArray, metrics: Sequence[str],
                      dims: Mapping[str, str]) -> dict[str, xr.DataArray]:
    unit = dims["unit_dim"]
    if "layer" in b.dims and bool(b.isnull().any()):
        # several hidden layers, narrower ones NaN-padded (repkernel.results): per layer, drop
        # the padding units
        parts = [_compare_variable(a.isel(layer=i) if "layer" in a.dims else a,
                                   b.isel(layer=i), metrics, dims)
                 for i in range(b.sizes["layer"])]
        return {name: xr.concat([part[name] for part in parts], dim="layer")
                for name in parts[0]}
    if bool(b.isnull().any()):
        present = ~b.isnull().all([d for d in b.dims if d != unit])
        a, b = a.sel({unit: present.values}), b.sel({unit: present.values})
    initial = None
    if any(METRICS[metric].initial for metric in metrics):  # without b's time-only coordinates
        initial = b.sel(time=0, drop=True).reset_coords(drop=True)
    out = {}
    for metric in metrics:
        out.update(METRICS[metric](a, b, initial, dims))
    return out


def compare(a: xr.Dataset, b: xr.Dataset,
            metrics: Sequence[str] = DEFAULT_METRICS,
            variables: Sequence[str] = ("hidden", "output"), *,
            item_dim: str = "item") -> xr.Dataset:
    """Compare two results (a = forecast, b = the reference, usually the actual training) per
    checkpoint: one variable ``{variable}_{metric}`` per variable and metric.

    a, b: Datasets in the repkernel.results layout, e.g. hidden(time, [readout,] item, unit),
    output(time, item, output_unit), with identical ``time`` steps, identical item coordinates
    and the same unit sizes (ValueError naming the difference otherwise). Each variable's last
    dim is its unit dim; every other dim is broadcast (a forecast's ``readout``) or matched
    (``seed``, ``layer``). NaN-padded units of narrower layers are dropped per layer.
    metrics: names of METRICS (each Metric row lists the variables it gives), e.g.
      change_alignment  change_correlation, change_cosine, change_relative_error, of
                        dh = x(t) - x_b(0): the initial representation is b at time 0 (the
                        reference's own start), so b needs step 0; nan/inf at time 0
      rsa               rsa (Pearson RSMs compared by Pearson r)
      cka               cka_similarity (linear); cka_debiased, cka_rbf also available
      procrustes        procrustes_distance; angular_shape, cca, svcca also available
    e.g. hidden_cka_similarity(time, readout), output_change_correlation(time, readout).
    """
    metrics = metric_names(metrics)
    units = _check_comparable(a, b, variables, item_dim)
    from_initial = [m for m in metrics if METRICS[m].initial]
    if from_initial and 0 not in b["time"].values:
        raise ValueError(f"{from_initial[0]} measures change from step 0, which b lacks: "
                         f"record step 0 too, or leave {from_initial[0]} out of metrics")
    out: dict[str, xr.DataArray] = {}
    long_names = {suffix: v.long_name for m in metrics for suffix, v in
                  METRICS[m].variables.items()}
    for variable in variables:
        dims = {"item_dim": item_dim, "unit_dim": units[variable]}
        for suffix, value in _compare_variable(a[variable], b[variable], metrics, dims).items():
            name = f"{variable}_{suffix}"
            out[name] = value.rename(name).assign_attrs(
                long_name=f"{variable} {long_names[suffix]}")
    attrs = {"a": str(a.attrs.get("source", "a")), "b": str(b.attrs.get("source", "b")),
             "metrics": ", ".join(metrics), "initial": "b at time 0",
             "version": package_version(),
             "a_config": a.attrs.get("config", "{}"), "b_config": b.attrs.get("config", "{}")}
    return xr.Dataset(out, attrs=attrs)
